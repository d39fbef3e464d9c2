"""Inputs users get wrong: each fails before training, in one sentence naming the flag, path and fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from minprot_ds.cli import app
from minprot_ds.errors import UserError


def finetune(*args: str) -> str:
    result = CliRunner().invoke(app, ["finetune", *args])
    assert result.exit_code != 0
    assert isinstance(result.exception, UserError), (result.output, result.exception)
    return str(result.exception)


def test_data_file_of_another_task(shared_data: Path, teacher_dir: Path, tmp_path: Path) -> None:
    deeploc = shared_data / "deeploc/deeploc_test_set.fasta"
    message = finetune(
        "--task",
        "dna-binding",
        "--model",
        str(teacher_dir),
        "--train",
        str(deeploc),
        "--test",
        str(deeploc),
        "--out",
        str(tmp_path / "out"),
    )
    assert "deeploc_test_set.fasta is DeepLoc FASTA" in message and "not for --task dna-binding" in message
    assert not (tmp_path / "out").exists()


def test_task_folder_of_another_task(sets: dict[str, Path], teacher_dir: Path, tmp_path: Path) -> None:
    message = finetune(
        "--task",
        "q3",
        "--model",
        str(teacher_dir),
        "--train",
        str(sets["dna_train"]),
        "--test",
        str(sets["q3_test"]),
        "--out",
        str(tmp_path / "out"),
    )
    assert message == f"{sets['dna_train']} holds a dna-binding dataset, not one for task q3; pass the right folder"


def test_missing_model_and_missing_data(sets: dict[str, Path], teacher_dir: Path, tmp_path: Path) -> None:
    message = finetune(
        "--task",
        "dna-binding",
        "--model",
        str(tmp_path / "no_model"),
        "--train",
        str(sets["dna_train"]),
        "--test",
        str(sets["dna_test"]),
        "--out",
        str(tmp_path / "out"),
    )
    assert message.startswith(f"--model {tmp_path / 'no_model'} does not exist; pass a folder holding config.json")
    message = finetune(
        "--task",
        "dna-binding",
        "--model",
        str(teacher_dir),
        "--train",
        str(tmp_path / "train.fasta"),
        "--test",
        str(sets["dna_test"]),
        "--out",
        str(tmp_path / "out"),
    )
    assert message.startswith(f"--train {tmp_path / 'train.fasta'} does not exist")


def test_bad_role_and_deepspeed_config(sets: dict[str, Path], teacher_dir: Path, tmp_path: Path) -> None:
    common = [
        "--task",
        "dna-binding",
        "--model",
        str(teacher_dir),
        "--train",
        str(sets["dna_train"]),
        "--test",
        str(sets["dna_test"]),
        "--out",
        str(tmp_path / "out"),
    ]
    assert "unknown --role 'pupil'; choose one of: teacher, student, auto" in finetune(*common, "--role", "pupil")
    ds = tmp_path / "ds.json"
    ds.write_text(json.dumps({"optimizer": {"type": "Adam"}, "zero_optimization": {"stage": 2}}))
    assert "sets 'optimizer'; remove it" in finetune(*common, "--deepspeed", str(ds))
    assert "does not exist; presets are in ds_configs/" in finetune(*common, "--deepspeed", str(tmp_path / "x.json"))


def test_report_needs_a_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    result = CliRunner().invoke(app, ["report", "--out", str(tmp_path / "r")])
    assert str(result.exception).startswith("no MLflow store given; pass --tracking-uri")
    result = CliRunner().invoke(app, ["report", "--tracking-uri", str(tmp_path), "--out", str(tmp_path / "r")])
    assert f"--tracking-uri {tmp_path} is neither a URI nor a folder holding mlflow.db" in str(result.exception)


def test_window_long_filter_and_seed_options(sets: dict[str, Path], teacher_dir: Path, tmp_path: Path) -> None:
    common = [
        "--task",
        "dna-binding",
        "--model",
        str(teacher_dir),
        "--train",
        str(sets["dna_train"]),
        "--test",
        str(sets["dna_test"]),
        "--out",
        str(tmp_path / "out"),
    ]
    assert "unknown --long 'cut'; choose one of: window, truncate" in finetune(*common, "--long", "cut")
    assert "unknown --test-filter 'all'; choose one of: none, near-identical, homologs" in finetune(
        *common, "--test-filter", "all"
    )
    assert "--test-filter homologs needs the leakage search; drop --no-leakage" in finetune(
        *common, "--test-filter", "homologs", "--no-leakage"
    )
    assert "--stride 600 must be between 1 and --window 512" in finetune(*common, "--stride", "600")
    # The tiny model has 1024 positions: a 1100-residue window does not fit.
    assert (
        "--window 1100 needs 1102 positions with [CLS] and [SEP], but --model has 1024; pass --window 1022"
        in finetune(*common, "--window", "1100", "--stride", "500")
    )
    assert "--seeds '0,x' must be comma-separated integers" in finetune(*common, "--seeds", "0,x")
    assert "unknown --pooling 'max'" in finetune(*common, "--pooling", "max")
