"""benchmarks/rehearsal.py in its reduced form: ProtBert's width (hidden 1024, FFN 4096, 16 heads, 40,000
positions) -- or ESM-2 150M's (hidden 640, FFN 2560, 20 heads, rotary, 33 tokens) -- with 2 teacher layers, ZeRO-2
on 2 CPU ranks under the real launcher, 2 steps, an exact resume from step 1, `minprot export`, a reload with
AutoModelForMaskedLM, two fine-tune steps, `minprot predict` and `minprot embed` of a few DeepLoc proteins, one
longer than the model's window. The full-size runs are the commands in docs/rehearsal-and-memory.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.rehearsal]
REPO = Path(__file__).resolve().parents[2]


# teacher preset -> (teacher parameters, student parameters, window, embedding width), counted by hand: 2 of
# ProtBert's layers with its 40,000-position table; 2 of ESM-2 150M's layers (no position table; the student keeps
# its one layer's 20 contact-head columns of the teacher's 40).
SHAPES = {
    "protbert": (67_238_942, 54_642_718, 512, 1024),
    "esm2-150m": (10_281_034, 5_357_494, 1022, 640),
}


@pytest.mark.parametrize("teacher", sorted(SHAPES))
def test_reduced_rehearsal_resumes_exactly_and_exports_a_loadable_student(tmp_path, teacher):
    if teacher == "protbert" and not (REPO.parent / "shared" / "reference" / "prot_bert" / "config.json").is_file():
        pytest.skip("needs ../shared/reference/prot_bert/config.json (ProtBert's config), which is absent")
    if not (REPO.parent / "shared" / "data" / "deeploc").is_dir():
        pytest.skip("needs ../shared/data (PDB1075/PDB186 to fine-tune, DeepLoc to predict and embed), which is absent")
    teacher_params, student_params, window, width = SHAPES[teacher]
    out = tmp_path / "rehearsal.json"
    cmd = [
        sys.executable,
        str(REPO / "benchmarks" / "rehearsal.py"),
        "--teacher",
        teacher,
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
    assert export["parameters"] == result["student_parameters_flop_model"] == student_params
    assert result["teacher"]["parameters"] == teacher_params
    assert len(export["filled_mask"]) == 1
    assert result["finetune"]["metrics"]["task"] == "dna-binding"
    inference = result["inference"]
    assert inference["input"]["proteins"] == 8 and inference["input"]["longest"] > window  # one protein is windowed
    assert inference["predict"]["rows"] == 8
    assert inference["embed"]["proteins"] == 8 and inference["embed"]["dims"] == [width]
    assert (
        f"rehearsal at {teacher}'s size" in proc.stdout
        and "exact resume (losses, weights)" in proc.stdout
        and "predict (8 DeepLoc proteins" in proc.stdout
    )
