"""The task model: identical heads for teacher and student, [CLS] or mean pooling, and the model/ folder round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from minprot_ds.errors import UserError
from minprot_ds.finetune.tasks import collate, encode_split, task_spec, whole
from minprot_ds.scoring.heads import (
    HEAD_FILE,
    TASK_FILE,
    build_task_model,
    load_task_model,
    residue_mask,
    save_task_model,
)


def build(model: Path, task: str, seed: int = 0, pooling: str = "cls"):
    spec = task_spec(task)
    return build_task_model(
        str(model), task=spec.name, classes=spec.classes, per_residue=spec.per_residue, seed=seed, pooling=pooling
    )


def test_teacher_and_student_heads_are_bitwise_identical_at_step_0(teacher_dir: Path, student_dir: Path) -> None:
    # The student: 1 layer instead of 2, the same hidden size, weights from another seed.
    torch.manual_seed(123)  # the global RNG must not matter
    teacher = build(teacher_dir, "dna-binding", seed=7)
    torch.manual_seed(456)
    student = build(student_dir, "dna-binding", seed=7)
    assert teacher.encoder.config.num_hidden_layers != student.encoder.config.num_hidden_layers
    assert torch.equal(teacher.head.weight, student.head.weight) and torch.equal(teacher.head.bias, student.head.bias)
    assert not torch.equal(build(teacher_dir, "dna-binding", seed=8).head.weight, teacher.head.weight)
    # Q3's three-class head follows the same rule.
    assert torch.equal(build(teacher_dir, "q3", seed=7).head.weight, build(student_dir, "q3", seed=7).head.weight)


def test_mean_pooling_averages_residues_only(teacher_dir: Path) -> None:
    spec = task_spec("dna-binding")
    model = build(teacher_dir, "dna-binding", pooling="mean").eval()
    mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1]])
    assert residue_mask(mask).int().tolist() == [[0, 1, 1, 1, 0, 0, 0], [0, 1, 1, 1, 1, 1, 0]]
    ids = torch.tensor([[2, 5, 6, 7, 3, 0, 0], [2, 5, 6, 7, 8, 9, 3]])
    with torch.no_grad():
        hidden = model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        expected = model.head(hidden[0, 1:4].mean(0))
        assert torch.allclose(model(ids, mask)[0], expected, atol=1e-6)
    assert spec.num_labels == model(ids, mask).shape[1]
    with pytest.raises(UserError, match="unknown --pooling 'max'; choose one of: cls, mean"):
        build(teacher_dir, "dna-binding", pooling="max")


def test_model_folder_round_trip(shared_data: Path, teacher_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModel

    from data_prep.tasks import load_task_data

    spec = task_spec("q3")
    casp12 = load_task_data(shared_data / "secondary_structure/CASP12_HHblits.csv", "q3").select([17, 1])
    enc = encode_split(casp12, spec)
    batch = collate(enc, whole(enc, [0, 1]), spec)
    model = build(teacher_dir, "q3", seed=3).eval()
    model.info.mlflow_run_id = "abc"
    folder = save_task_model(model, tmp_path / "model", rank=0)
    assert {TASK_FILE, HEAD_FILE, "config.json", "model.safetensors", "vocab.txt"} <= {p.name for p in folder.iterdir()}
    info = json.loads((folder / TASK_FILE).read_text())
    assert (info["task"], info["pooling"], info["per_residue"], info["window"], info["stride"]) == (
        "q3",
        "cls",
        True,
        512,
        256,
    )
    assert info["mlflow_run_id"] == "abc" and info["threshold"] is None and info["minprot_version"]
    again = load_task_model(folder)
    with torch.no_grad():
        logits = model(batch["input_ids"], batch["attention_mask"])
        assert logits.shape == (2, batch["input_ids"].shape[1], 3)
        assert torch.equal(again(batch["input_ids"], batch["attention_mask"]), logits)
        encoder = AutoModel.from_pretrained(folder)  # `embed` reads the encoder like any BERT folder
        assert torch.equal(
            encoder(**{k: batch[k] for k in ("input_ids", "attention_mask")}).last_hidden_state,
            model.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state,
        )
    with pytest.raises(UserError, match=f"has no {TASK_FILE}; pass the model/ folder"):
        load_task_model(teacher_dir)
