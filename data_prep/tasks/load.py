"""The one entry point the fine-tune jobs call: a task folder or any reader input -> a checked dataset; and what
reports call an input."""

from __future__ import annotations

from pathlib import Path

import datasets

from data_prep.tasks.formats import check_task, is_dataset_folder, read_inputs
from minprot_ds.data.task_records import label_column
from minprot_ds.data.task_store import load_task_folder
from minprot_ds.errors import UserError


def input_name(path: str | Path) -> str:
    """An input's default name in reports: a file's name before its first dot (PDB186 for PDB186.txt), a folder's
    whole name."""
    path = Path(path)
    return path.name.split(".")[0] if path.is_file() else path.name


def load_task_data(
    path: str | Path, task: str, *, strict: bool = False, split: str | None = None
) -> datasets.Dataset | datasets.DatasetDict:
    """Columns id, sequence and `label` (dna-binding, membrane) or `labels` (q3, -100 = ignore).

    `path` is a folder made by `minprot data ...`, a data file any reader takes (format detected), a FLIP
    split folder, or a folder of raw files of one format (PDB14189_P.txt + PDB14189_N.txt).
    `split` picks one split of a multi-split source ("train", "valid", "test"); a single-split source is
    returned as is, so `--test PDB186.txt` and `--test folder/` both work.
    """
    level = check_task(task)
    path = Path(path)
    if is_dataset_folder(path):
        data, meta = load_task_folder(path)
        if meta is not None and meta.task is not None and meta.task != task:
            raise UserError(f"{path} holds a {meta.task} dataset, not one for task {task}; pass the right folder")
    else:
        data = read_inputs([path], task=task, strict=strict).data
    column = label_column(level)
    parts = data.values() if isinstance(data, datasets.DatasetDict) else [data]
    for part in parts:
        missing = {"id", "sequence", column} - set(part.column_names)
        if missing:
            raise UserError(
                f"{path} lacks the column(s) {', '.join(sorted(missing))} that task {task} needs (has "
                f"{', '.join(part.column_names)})"
            )
    return pick_split(data, split, path)


def pick_split(
    data: datasets.Dataset | datasets.DatasetDict, split: str | None, path: Path
) -> datasets.Dataset | datasets.DatasetDict:
    if split is None or isinstance(data, datasets.Dataset):
        return data
    if split in data:
        return data[split]
    if len(data) == 1:
        return next(iter(data.values()))
    raise UserError(f"{path} has no split {split!r} (it has {', '.join(data)}); pick one of those")
