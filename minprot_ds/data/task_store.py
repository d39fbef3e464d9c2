"""Task folders: a `datasets` folder (`save_to_disk`) plus `minprot_task.json` saying what it holds.

The metadata lets the fine-tune jobs and reports name a dataset and its variant (full / sub / cut)
without guessing from paths.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import shutil
from pathlib import Path
from typing import Any

import datasets

from minprot_ds.data.task_records import Level, label_column
from minprot_ds.errors import UserError
from minprot_ds.fileio import read_json
from minprot_ds.vocab import IGNORE_INDEX

META_NAME = "minprot_task.json"


@dataclasses.dataclass
class TaskMeta:
    task: str | None  # dna-binding | membrane | q3 | None (a labelled CSV read without --task)
    level: Level
    name: str  # dataset name for reports, e.g. "PDB14189", "swissprot-human"
    variant: str  # "full", "sub" (MMseqs2 representatives) or "cut" (random control)
    sources: list[str]
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)
    excluded: dict[str, int] = dataclasses.field(default_factory=dict)
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    created: str = ""


def split_table(data: datasets.Dataset | datasets.DatasetDict, level: Level) -> list[dict[str, Any]]:
    """Per split: rows, and positives (sequence tasks) or labelled residues per class (Q3)."""
    parts = data.items() if isinstance(data, datasets.DatasetDict) else [("all", data)]
    rows = []
    for name, ds in parts:
        labels = ds[label_column(level)]
        if level == "sequence":
            pos = int(sum(labels))
            rows.append({"split": name, "rows": ds.num_rows, "positive": pos, "negative": ds.num_rows - pos})
        else:
            flat = [x for row in labels for x in row]
            rows.append(
                {
                    "split": name,
                    "rows": ds.num_rows,
                    "residues": len(flat),
                    "H": flat.count(0),
                    "E": flat.count(1),
                    "C": flat.count(2),
                    "masked": flat.count(IGNORE_INDEX),
                }
            )
    return rows


def save_task(data: datasets.Dataset | datasets.DatasetDict, out: str | Path, meta: TaskMeta) -> Path:
    """Write the folder (replacing one made before by us); refuses to overwrite a foreign folder."""
    out = Path(out)
    if out.exists():
        if not (out / META_NAME).is_file():
            raise UserError(f"{out} exists and is not a task folder made by `minprot data`; choose another --out")
        shutil.rmtree(out)
    # datasets 5.2 writes an empty split as zero shards and then cannot load it back: force one shard.
    if isinstance(data, datasets.DatasetDict):
        data.save_to_disk(str(out), num_shards={name: 1 for name, ds in data.items() if ds.num_rows == 0})
    else:
        data.save_to_disk(str(out), num_shards=1 if data.num_rows == 0 else None)
    meta.created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    body = dataclasses.asdict(meta) | {"splits": split_table(data, meta.level)}
    (out / META_NAME).write_text(json.dumps(body, indent=2) + "\n")
    return out


def read_meta(folder: Path) -> TaskMeta | None:
    path = folder / META_NAME
    if not path.is_file():
        return None
    raw = read_json(path, "a task folder's metadata; rebuild the folder with `minprot data ...`")
    fields = {f.name for f in dataclasses.fields(TaskMeta)}
    return TaskMeta(**{k: v for k, v in raw.items() if k in fields})


def load_task_folder(folder: str | Path) -> tuple[datasets.Dataset | datasets.DatasetDict, TaskMeta | None]:
    folder = Path(folder)
    try:
        data = datasets.load_from_disk(str(folder))
    except (FileNotFoundError, ValueError) as err:
        raise UserError(
            f"{folder} is not a readable `datasets` folder ({err}); rebuild it with `minprot data ...`"
        ) from None
    return data, read_meta(folder)


def as_dict(data: datasets.Dataset | datasets.DatasetDict) -> datasets.DatasetDict:
    return data if isinstance(data, datasets.DatasetDict) else datasets.DatasetDict({"all": data})
