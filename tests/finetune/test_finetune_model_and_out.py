"""A fine-tune's --model and --out as users get them wrong: a truncated weights file is named in one line, an
existing --out that is not a fine-tune's output with these options is refused by the one rule for outputs."""

from __future__ import annotations

import shutil
from pathlib import Path


def test_a_truncated_model_is_named_in_one_line(sets: dict[str, Path], teacher_dir: Path, tmp_path: Path, cli_error):
    model = Path(shutil.copytree(teacher_dir, tmp_path / "model"))
    data = (model / "model.safetensors").read_bytes()
    (model / "model.safetensors").write_bytes(data[: len(data) // 2])
    train, test = str(sets["dna_train"]), str(sets["dna_test"])
    args = ["--task", "dna-binding", "--model", str(model), "--train", train, "--test", test, "--no-leakage"]
    msg = cli_error("finetune", *args, "--out", str(tmp_path / "out"))
    assert f"--model: {model / 'model.safetensors'} is not a complete safetensors file" in msg and "truncated" in msg


def test_an_existing_out_that_is_not_ours_is_refused_naming_overwrite(tmp_path: Path, cli_error) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "predictions.tsv").write_text("someone's table\n")  # a fine-tune's file name, not a fine-tune's folder
    args = ["--task", "dna-binding", "--model", "m", "--train", "t", "--test", "t"]
    msg = cli_error("finetune", *args, "--out", str(out))  # refused before anything is read
    assert f"--out {out} already exists" in msg and "pass --overwrite to replace it" in msg
    assert (out / "predictions.tsv").read_text() == "someone's table\n"
    (tmp_path / "file").write_text("data\n")
    assert "is a file; --out names a folder" in cli_error("finetune", *args, "--out", str(tmp_path / "file"))
