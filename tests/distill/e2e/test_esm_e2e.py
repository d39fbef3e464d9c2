"""An ESM-2 teacher through the real deepspeed launcher on 2 CPU ranks (ZeRO-2, hidden dropout 0.1): it distils,
resumes bitwise from a checkpoint, and the exported student is an EsmForMaskedLM of half its layers that fills a mask.
The launcher, checkpoint and resume machinery are the BERT suite's (test_resume_e2e); only the family differs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from tests.distill.e2e.test_resume_e2e import COMMON, STEPS, assert_same_run, losses_and_weights

pytestmark = pytest.mark.slow


def test_esm2_teacher_distils_resumes_exactly_and_exports(assets, launch, mlflow_history, tmp_path):
    from transformers import EsmForMaskedLM, pipeline

    from minprot_ds.distill.export import export_checkpoint
    from minprot_ds.vocab import ESM2

    # Two launches, not three (CI time): the whole run, then a copy of it stopped at its step-8 checkpoint
    # (its later checkpoints, student and summary removed) resumed to the end: the same losses and weights.
    whole = tmp_path / "whole"
    assert launch(whole, *COMMON, steps=STEPS, teacher="esm_teacher").returncode == 0
    stopped = Path(
        shutil.copytree(
            whole, tmp_path / "stopped", ignore=shutil.ignore_patterns("student", "summary.json", "global_step12")
        )
    )
    resume = ("--resume", str(stopped / "ckpt" / "global_step8"))
    assert launch(stopped, *COMMON, *resume, steps=STEPS, teacher="esm_teacher").returncode == 0
    assert json.loads((stopped / "summary.json").read_text())["step"] == STEPS
    assert_same_run(losses_and_weights(whole, mlflow_history), losses_and_weights(stopped, mlflow_history))

    summary = json.loads((whole / "summary.json").read_text())
    assert summary["teacher_unchanged"] is True
    student_dir = Path(summary["student"])
    student = EsmForMaskedLM.from_pretrained(student_dir)
    teacher_config = json.loads((assets["esm_teacher"] / "config.json").read_text())
    assert student.config.num_hidden_layers * 2 == teacher_config["num_hidden_layers"]
    assert student.config.hidden_dropout_prob == 0.1 and student.config.token_dropout
    assert (student_dir / "vocab.txt").read_text().split() == list(ESM2.tokens)
    meta = json.loads((student_dir / "minprot.json").read_text())
    assert meta["teacher_layers"] == [0, 3] and meta["step"] == STEPS
    fill = pipeline("fill-mask", model=str(student_dir), device=-1)
    preds = fill("MKTAY<mask>AKQR")
    assert len(preds) == 5 and all(len(p["token_str"].strip()) == 1 for p in preds), preds

    # `minprot export` of the newest checkpoint gives the same student, as an ESM-2 folder.
    again = EsmForMaskedLM.from_pretrained(export_checkpoint(whole, tmp_path / "exported"))
    for (name, a), (_, b) in zip(student.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name
