"""benchmarks/rehearsal.py in its reduced form: ProtBert's width (hidden 1024, FFN 4096, 16 heads, 40,000
positions) with 2 teacher layers, ZeRO-2 on 2 CPU ranks under the real launcher, 2 steps, an exact resume
from step 1, `minprot export`, a reload with AutoModelForMaskedLM, two fine-tune steps, `minprot predict` and
`minprot embed` of a few DeepLoc proteins. The full-size run is the command in docs/rehearsal-and-memory.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.rehearsal]
REPO = Path(__file__).resolve().parents[2]


def test_reduced_rehearsal_resumes_exactly_and_exports_a_loadable_student(tmp_path):
    if not (REPO.parent / "shared" / "reference" / "prot_bert" / "config.json").is_file():
        pytest.skip("needs ../shared/reference/prot_bert/config.json (ProtBert's config), which is absent")
    out = tmp_path / "rehearsal.json"
    cmd = [
        sys.executable,
        str(REPO / "benchmarks" / "rehearsal.py"),
        "--work",
        str(tmp_path / "work"),
        "--out",
        str(out),
        "--teacher-layers",
        "2",
        "--stages",
        "2",
        "--steps",
        "2",
        "--keep",
        "1",
        "--sequences",
        "120",
        "--skip",
        "universal",
        "--timeout",
        "900",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    (stage,) = result["stages"]
    assert stage["resume"]["losses_equal"] and stage["resume"]["weights_equal"]
    assert sorted(stage["peak_rss_gb_per_rank"]) == ["0", "1"] and all(
        v > 0 for v in stage["peak_rss_gb_per_rank"].values()
    )
    assert stage["checkpoint_gb"] > 0 and all(v is not None for v in stage["save_s"].values())
    assert stage["resume"]["load_s"] is not None
    export = result["export"]
    assert export["parameters"] == result["student_parameters_flop_model"] == 54_642_718
    assert result["teacher"]["parameters"] == 67_238_942  # 2 of ProtBert's layers, its 40,000-position table
    assert len(export["filled_mask"]) == 1
    assert result["finetune"]["metrics"]["task"] == "dna-binding"
    inference = result["inference"]
    assert inference["input"]["proteins"] == 8 and inference["input"]["longest"] > 512  # one protein is windowed
    assert inference["predict"]["rows"] == 8
    assert inference["embed"]["proteins"] == 8 and inference["embed"]["dims"] == [1024]
    assert "exact resume (losses, weights)" in proc.stdout and "predict (8 DeepLoc proteins" in proc.stdout
