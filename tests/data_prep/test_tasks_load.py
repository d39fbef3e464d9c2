"""`load_task_data`, the fine-tune jobs' entry point: files, raw folders, task folders, splits, errors."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest
from typer.testing import CliRunner

from data_prep.tasks import load_task_data
from minprot_ds.cli import app
from minprot_ds.errors import UserError


def test_benchmark_pairs_load_from_raw_files(shared_data: Path) -> None:
    pdb = shared_data / "dna_binding/pdb1075_pdb186"
    train = load_task_data(pdb / "Training_dataset_PDB1075.txt", "dna-binding", split="train")
    test = load_task_data(pdb / "independent_test_dataset_PDB186.txt", "dna-binding", split="test")
    assert (train.num_rows, test.num_rows) == (1067, 186)
    # PDB14189 (and PDB2272, same convention) as a folder of _P/_N files:
    big = load_task_data(shared_data / "dna_binding/pdb14189", "dna-binding")
    assert isinstance(big, datasets.Dataset) and big.num_rows == 14189


def test_q3_splits_from_flip_and_strict(shared_data: Path) -> None:
    valid = load_task_data(shared_data / "secondary_structure/flip_sampled", "q3", split="valid")
    assert valid.num_rows == 1080 and valid.column_names == ["id", "sequence", "labels"]
    with pytest.raises(UserError, match=r"no split 'dev' \(it has train, valid, test\)"):
        load_task_data(shared_data / "secondary_structure/flip_sampled", "q3", split="dev")
    with pytest.raises(UserError, match=r"line 3 \(record 1AOII\): nucleotide sequence"):
        load_task_data(
            shared_data / "dna_binding/pdb1075_pdb186/Training_dataset_PDB1075.txt", "dna-binding", strict=True
        )


def test_task_command_round_trip(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "cb513"
    result = CliRunner().invoke(
        app, ["data", "task", str(shared_data / "secondary_structure/CB513_HHblits.csv"), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    data = load_task_data(out, "q3", split="test")  # a single-split folder serves any split
    assert data.num_rows == 511 and data.features["labels"].feature.dtype == "int64"


def test_task_command_names_a_pooled_set_after_every_input(tmp_path: Path) -> None:
    """As `data split` names a pooled set: the inputs' names joined with '+', a file's without its extension."""
    files = {"X_P.txt": "MKVLAAGIRRSTLEQWDFGHK", "X_N.txt": "MSTNPKPQRKTKRNTNRRPQDV"}  # labels from _P / _N
    for name, seq in files.items():
        (tmp_path / name).write_text(f">{name[:3]}\n{seq}\n")

    def name_of(*args: str) -> str:
        out = tmp_path / f"task{len(list(tmp_path.glob('task*')))}"
        result = CliRunner().invoke(app, ["data", "task", *args, "--out", str(out)])
        assert result.exit_code == 0, (result.output, result.exception)
        return json.loads((out / "minprot_task.json").read_text())["name"]

    both = [str(tmp_path / name) for name in files]
    assert name_of(*both) == "X_P+X_N"
    assert name_of(both[0]) == "X_P"
    assert name_of(*both, "--name", "X") == "X"


def test_bad_paths_and_tasks(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"does not exist"):
        load_task_data(tmp_path / "nope.csv", "q3")
    with pytest.raises(UserError, match=r"unknown task 'ss8'"):
        load_task_data(tmp_path, "ss8")
    with pytest.raises(UserError, match=r"is an empty folder"):
        load_task_data(tmp_path, "q3")
    (tmp_path / "x.txt").write_text("hello\n")
    with pytest.raises(UserError, match=r"cannot tell the format of .*x.txt"):
        load_task_data(tmp_path / "x.txt", "membrane")


def test_cli_refuses_foreign_out_folder(shared_data: Path, tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    result = CliRunner().invoke(
        app, ["data", "task", str(shared_data / "secondary_structure/CASP12_HHblits.csv"), "--out", str(tmp_path)]
    )
    # the one rule for outputs (minprot_ds/outputs.py): refused before any reading, naming --overwrite
    assert isinstance(result.exception, UserError) and "pass --overwrite to replace it" in str(result.exception)
    assert (tmp_path / "keep.txt").read_text() == "mine"
