"""The job's inputs: train / valid / test sets from task folders or raw files, and what to call them in reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import datasets

from data_prep.tasks import load_task_data
from data_prep.tasks.load import input_name, pick_split
from minprot_ds.data.task_store import read_meta
from minprot_ds.errors import UserError


@dataclass(frozen=True)
class DatasetInfo:
    """How runs name a dataset: `name` (PDB14189, swissprot-human), `variant` (full / sub / cut), organism."""

    name: str
    variant: str = "full"
    organism: str = ""
    identity: float | None = None  # SUB's clustering identity

    @property
    def label(self) -> str:
        """e.g. "swissprot-human SUB 85%"."""
        tail = "" if self.variant == "full" else f" {self.variant.upper()}"
        if self.identity is not None:
            tail += f" {self.identity:.0%}"
        return self.name + tail


@dataclass
class TaskInputs:
    train: datasets.Dataset
    valid: datasets.Dataset | None
    test: datasets.Dataset
    dataset: DatasetInfo
    test_dataset: DatasetInfo
    sources: dict[str, str] = field(default_factory=dict)


def describe(path: Path, override: str | None = None) -> DatasetInfo:
    """From the folder's minprot_task.json when there is one, else the file or folder name."""
    meta = read_meta(path) if path.is_dir() else None
    if meta is None:
        return DatasetInfo(override or input_name(path))
    identity = None
    sub = meta.options.get("sub") if isinstance(meta.options, dict) else None
    if meta.variant == "sub" and isinstance(sub, dict) and "identity" in sub:
        identity = float(sub["identity"])
    return DatasetInfo(override or meta.name, meta.variant or "full", str(meta.options.get("organism", "")), identity)


def _one(data: datasets.Dataset | datasets.DatasetDict, split: str, path: Path, flag: str) -> datasets.Dataset:
    if isinstance(data, datasets.Dataset):
        return data
    raise UserError(  # load_task_data returns a single split when asked for one, unless the split is ambiguous
        f"{flag} {path} holds the splits {', '.join(data)} and none is {split!r}; pass a folder or file with a "
        f"{split} split"
    )


def load_inputs(
    task: str,
    train: Path,
    test: Path,
    valid: Path | None = None,
    *,
    dataset_name: str | None = None,
    strict: bool = False,
) -> TaskInputs:
    """--train's "train" split, --valid's "valid" split (else --train's own valid split, if any), --test's "test"."""
    for flag, path in (("--train", train), ("--valid", valid), ("--test", test)):
        if path is not None and not Path(path).exists():
            raise UserError(
                f"{flag} {path} does not exist; pass a task folder made by `minprot data ...` or a data file"
            )
    whole = load_task_data(train, task, strict=strict)  # read once: raw files are parsed on every call
    train_data = _one(pick_split(whole, "train", Path(train)), "train", train, "--train")
    valid_data = None
    if valid is not None:
        valid_data = _one(load_task_data(valid, task, strict=strict, split="valid"), "valid", valid, "--valid")
    elif isinstance(whole, datasets.DatasetDict) and "valid" in whole:
        valid_data = whole["valid"]
    test_data = _one(load_task_data(test, task, strict=strict, split="test"), "test", test, "--test")
    for flag, data, path in (("--train", train_data, train), ("--test", test_data, test)):
        if data.num_rows == 0:
            raise UserError(f"{flag} {path} has no {flag[2:]} records; pass a non-empty set")
    sources = {"train": str(train), "test": str(test)} | ({"valid": str(valid)} if valid is not None else {})
    return TaskInputs(
        train_data, valid_data, test_data, describe(Path(train), dataset_name), describe(Path(test)), sources
    )
