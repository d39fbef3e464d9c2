"""benchmarks/inference.py at a tiny size, for each family: the real `embed` / `predict` path and the naive loop
run on the same proteins, agree, and the table and JSON have every setting (no assertion on speed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("preset, layers", [("tiny", None), ("esm2-150m", 2)])
def test_embed_and_predict_agree_with_the_naive_loop(preset, layers, tmp_path):
    out = tmp_path / "inference.json"
    cmd = [
        sys.executable,
        str(REPO / "benchmarks" / "inference.py"),
        "--preset",
        preset,
        *(["--layers", str(layers)] if layers else []),
        "--proteins",
        "6",
        "--repeats",
        "1",
        "--max-tokens",
        "1024",
        "--json",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    results = report["results"]
    assert [(r["mode"], r["model"]) for r in results] == [
        (m, role) for m in ("embed", "predict") for role in ("teacher", "student")
    ]
    for r in results:
        assert r["max_tokens"] == 1024 and r["minprot_residues_per_s"] > 0 and r["naive_residues_per_s"] > 0
        assert r["max_abs_diff"] < 1e-4, r  # the same numbers by both paths: the naive loop read the family right
    assert f"inference, {preset}" in proc.stdout
