"""The demo teacher's MLM pre-training (minprot_ds/distill/pretrain.py): short runs, whose one-cycle warm-up
once divided by zero (`minprot demo --teacher-steps 10`, `pretrain-teacher --steps 10`), run to their end."""

from __future__ import annotations

import json
import math

import pytest

from data_prep.corpus import prepare_corpus
from minprot_ds.distill.demo import synthetic_fasta
from minprot_ds.distill.pretrain import pretrain_teacher
from minprot_ds.models.masked_lm import save_random_protbert


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain")
    prepare_corpus([synthetic_fasta(root / "syn.fasta", sequences=200)], root / "corpus", valid_fraction=0.1)
    return root / "corpus"


@pytest.mark.parametrize("steps", [1, 3, 4, 10])
def test_short_pre_trainings_run_to_their_end(corpus, tmp_path, steps):
    teacher = save_random_protbert(
        tmp_path / "teacher", num_layers=1, hidden_size=32, num_heads=4, intermediate_size=64
    )
    before = (teacher / "model.safetensors").read_bytes()
    lines: list[str] = []
    accuracy = pretrain_teacher(teacher, corpus, steps=steps, max_tokens=1024, log=lines.append)
    assert 0.0 <= accuracy <= 1.0 and not math.isnan(accuracy)
    assert lines[-1].startswith(f"teacher pre-training step {steps}/{steps}: MLM loss ")
    assert (teacher / "model.safetensors").read_bytes() != before  # trained and saved back
    assert json.loads((teacher / "config.json").read_text())["num_hidden_layers"] == 1
