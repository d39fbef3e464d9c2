"""benchmarks/distillation_value.py --quick: every variant (teacher, pruned and the five trained students, two
seeds each) through the real data preparation (MMseqs2 homolog removal), the teacher's MLM pre-training, the real
distillation job and the scoring; the JSON has each variant's metrics with their CIs, retention and the paired
distill - mlm-only difference. A second invocation on the same --work reuses every cached result."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
VARIANTS = ["teacher", "pruned", "mlm-only", "distill", "distill-random-init", "distill-kd-all", "minprotbert-loss"]
METRICS = ["mlm_ce", "perplexity", "mlm_accuracy", "probe_accuracy", "probe_mcc"]


def test_quick_run_covers_every_variant_with_cis(shared_data, tmp_path):
    if shutil.which("mmseqs") is None:
        pytest.skip("needs the mmseqs binary (MMseqs2) on PATH: bash scripts/setup.sh --with-mmseqs")
    out, work = tmp_path / "dv.json", tmp_path / "work"
    cmd = [sys.executable, str(REPO / "benchmarks" / "distillation_value.py"), "--quick", "--work", str(work)]
    proc = subprocess.run([*cmd, "--out", str(out)], capture_output=True, text=True, cwd=REPO, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["benchmark"] == "distillation_value" and result["quick"] is True
    assert [v["name"] for v in result["variants"]] == VARIANTS
    for v in result["variants"]:
        assert v["seeds"] == ([0] if v["name"] in ("teacher", "pruned") else [0, 1])
        for m in METRICS:
            stat = v["metrics"][m]
            assert set(stat) == {"mean", "ci_low", "ci_high"}
            if m.startswith("mlm"):  # the probe's MCC is undefined when a model predicts one class only
                assert stat["ci_low"] <= stat["mean"] <= stat["ci_high"], (v["name"], m, stat)
        assert v["cost"]["parameters"] > 0
        if v["name"] != "teacher":
            assert math.isfinite(v["retention"]["mlm_accuracy"]["mean"])
    students = [v for v in result["variants"] if v["name"] not in ("teacher", "pruned")]
    assert len({v["cost"]["parameters"] for v in students + [result["variants"][1]]}) == 1  # one student shape
    assert result["variants"][0]["cost"]["parameters"] > students[0]["cost"]["parameters"]
    timed = result["speed"]["models"]
    assert list(timed) == ["teacher", "student"] and timed["teacher"]["speedup_over_teacher"]["median"] == 1.0
    assert all(len(t["wall_s"]) == result["speed"]["rounds"] and t["residues_per_s"] > 0 for t in timed.values())
    diff = result["comparisons"]["distill - mlm-only"]
    assert set(diff) == set(METRICS) and all(set(d) == {"mean", "ci_low", "ci_high"} for d in diff.values())
    assert sorted(result["curves"]) == sorted(VARIANTS[2:]) and all(len(c) == 2 for c in result["curves"].values())
    counts = result["counts"]
    assert counts["held_out"] > 0 and counts["train"] > 0 and counts["probe"]["test"] > 0
    assert counts["train"] == counts["train_before_homolog_removal"] - counts["train_removed_homologs"]
    assert Path(result["plot"]).is_file() and Path(result["plot"]).stat().st_size > 0

    again = subprocess.run([*cmd, "--out", str(tmp_path / "again.json")], capture_output=True, text=True, cwd=REPO)
    assert again.returncode == 0, again.stderr[-3000:]
    assert not any(f"training {v}, seed" in again.stdout for v in VARIANTS)  # every unit came from the cache
    assert json.loads((tmp_path / "again.json").read_text())["variants"] == result["variants"]
