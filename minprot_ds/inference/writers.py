"""Output files, one row (or dataset) per input record in input order, chosen by OUT's suffix.

predict, per protein (dna-binding, membrane): .tsv / .parquet with id, description, length, probability,
label, windows. predict, per residue (q3): .parquet (one row per protein, list columns), .ss3 (header,
sequence, states), .tsv (one row per residue). embed: .h5 (bio_embeddings' layout: one dataset per protein,
the id in attribute `original_id`), .npz (one array per id), .parquet (id, description, length, embedding).
Records without an output (failures) get no row; they are listed in OUT.failures.tsv.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from minprot_ds.errors import UserError

PREDICT_PROTEIN = (".tsv", ".parquet")
PREDICT_RESIDUE = (".parquet", ".ss3", ".tsv")
EMBED = (".h5", ".npz", ".parquet")


@dataclass
class Row:
    id: str
    description: str
    sequence: str
    value: np.ndarray  # [C] / [L, C] probabilities, or an embedding [H] / [L, H]
    windows: int
    truncated: bool


def check_suffix(out: Path, allowed: tuple[str, ...], what: str) -> str:
    suffix = Path(out).suffix.lower()
    if suffix not in allowed:
        raise UserError(
            f"--out {out}: {what} writes {', '.join(allowed)} files; name the output with one of these suffixes"
        )
    return suffix


def h5_name(rid: str) -> str:
    """An HDF5 dataset name for an id ('/' separates groups in HDF5, so it is escaped, as is '%')."""
    return rid.replace("%", "%25").replace("/", "%2F") or "%"


def label_of(probs: np.ndarray, classes: list[str], threshold: float | None) -> str:
    """The positive class when P(class 1) > threshold (as `finetune` decides), else argmax without a threshold."""
    if threshold is None:
        return classes[int(np.argmax(probs))]
    return classes[1] if float(probs[1]) > threshold else classes[0]


class Writer:
    def __init__(self, path: Path, meta: dict[str, Any]):
        self.path, self.meta = Path(path), meta

    def add(self, row: Row) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class ProteinTsv(Writer):
    def __init__(self, path, meta, classes: list[str], threshold: float):
        super().__init__(path, meta)
        self.classes, self.threshold = classes, threshold
        self.fh = open(path, "w")
        self.fh.write("id\tdescription\tlength\tprobability\tlabel\twindows\n")

    def add(self, row):
        label = label_of(row.value, self.classes, self.threshold)
        self.fh.write(
            f"{row.id}\t{row.description}\t{len(row.sequence)}\t{float(row.value[1]):.6g}\t{label}\t{row.windows}\n"
        )

    def close(self):
        self.fh.close()


class ArrowWriter(Writer):
    """Parquet in row groups of `group` rows; the run's provenance in the schema metadata (key 'minprot')."""

    group = 1024

    def __init__(self, path, meta):
        super().__init__(path, meta)
        self.rows: list[dict[str, Any]] = []
        self.writer = None

    def add_dict(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if len(self.rows) >= self.group:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self.rows and self.writer is not None:
            return
        table = pa.Table.from_pylist(self.rows, schema=self.schema())
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, table.schema)
        self.writer.write_table(table)
        self.rows = []

    def schema(self):
        raise NotImplementedError

    def close(self):
        self._flush()
        self.writer.close()


class ProteinParquet(ArrowWriter):
    def __init__(self, path, meta, classes, threshold):
        super().__init__(path, meta)
        self.classes, self.threshold = classes, threshold

    def schema(self):
        import pyarrow as pa

        return pa.schema(
            [
                ("id", pa.string()),
                ("description", pa.string()),
                ("length", pa.int64()),
                ("probability", pa.float64()),
                ("label", pa.string()),
                ("windows", pa.int32()),
            ],
            metadata={"minprot": json.dumps(self.meta)},
        )

    def add(self, row):
        self.add_dict(
            {
                "id": row.id,
                "description": row.description,
                "length": len(row.sequence),
                "probability": float(row.value[1]),
                "label": label_of(row.value, self.classes, self.threshold),
                "windows": row.windows,
            }
        )


class ResidueParquet(ArrowWriter):
    def __init__(self, path, meta, classes):
        super().__init__(path, meta)
        self.classes = classes

    def schema(self):
        import pyarrow as pa

        fields = [
            ("id", pa.string()),
            ("description", pa.string()),
            ("length", pa.int64()),
            ("sequence", pa.string()),
            ("states", pa.string()),
        ]
        fields += [(f"prob_{c}", pa.list_(pa.float32())) for c in self.classes]
        return pa.schema(fields + [("windows", pa.int32())], metadata={"minprot": json.dumps(self.meta)})

    def add(self, row):
        d = {
            "id": row.id,
            "description": row.description,
            "length": len(row.sequence),
            "sequence": row.sequence,
            "states": states(row.value, self.classes),
            "windows": row.windows,
        }
        for c, name in enumerate(self.classes):
            d[f"prob_{name}"] = row.value[:, c].astype(np.float32)
        self.add_dict(d)


def states(probs: np.ndarray, classes: list[str]) -> str:
    return "".join(np.asarray(classes)[probs.argmax(axis=1)])


class ResidueSs3(Writer):
    def __init__(self, path, meta, classes):
        super().__init__(path, meta)
        self.classes = classes
        self.fh = open(path, "w")

    def add(self, row):
        header = f"{row.id} {row.description}".rstrip()
        self.fh.write(f">{header}\n{row.sequence[: len(row.value)]}\n{states(row.value, self.classes)}\n")

    def close(self):
        self.fh.close()


class ResidueTsv(Writer):
    def __init__(self, path, meta, classes):
        super().__init__(path, meta)
        self.classes = classes
        self.fh = open(path, "w")
        self.fh.write("id\tposition\tresidue\tstate\t" + "\t".join(f"prob_{c}" for c in classes) + "\n")

    def add(self, row):
        names = np.asarray(self.classes)[row.value.argmax(axis=1)]
        for i, (p, s) in enumerate(zip(row.value, names)):
            self.fh.write(f"{row.id}\t{i + 1}\t{row.sequence[i]}\t{s}\t" + "\t".join(f"{x:.6g}" for x in p) + "\n")

    def close(self):
        self.fh.close()


class EmbedH5(Writer):
    def __init__(self, path, meta):
        import h5py

        super().__init__(path, meta)
        self.file = h5py.File(path, "w", track_order=True)  # iteration in input order
        self.file.attrs["minprot"] = json.dumps(meta)

    def add(self, row):
        ds = self.file.create_dataset(h5_name(row.id), data=row.value)
        ds.attrs["original_id"] = row.id
        ds.attrs["description"] = row.description
        ds.attrs["length"] = len(row.sequence)
        ds.attrs["windows"] = row.windows

    def close(self):
        self.file.close()


class EmbedNpz(Writer):
    """One array per id, streamed into the zip (np.savez would hold every array in memory at once)."""

    def __init__(self, path, meta):
        super().__init__(path, meta)
        self.zip = zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True)

    def add(self, row):
        with self.zip.open(f"{row.id}.npy", "w", force_zip64=True) as fh:
            np.lib.format.write_array(fh, np.ascontiguousarray(row.value), allow_pickle=False)

    def close(self):
        self.zip.close()


class EmbedParquet(ArrowWriter):
    group = 256

    def __init__(self, path, meta, per_residue: bool):
        super().__init__(path, meta)
        self.per_residue = per_residue

    def schema(self):
        import pyarrow as pa

        item = pa.float16() if self.meta["settings"].get("half") else pa.float32()
        col = pa.list_(pa.list_(item)) if self.per_residue else pa.list_(item)
        return pa.schema(
            [
                ("id", pa.string()),
                ("description", pa.string()),
                ("length", pa.int64()),
                ("embedding", col),
                ("windows", pa.int32()),
            ],
            metadata={"minprot": json.dumps(self.meta)},
        )

    def add(self, row):
        self.add_dict(
            {
                "id": row.id,
                "description": row.description,
                "length": len(row.sequence),
                "embedding": list(row.value) if self.per_residue else row.value,
                "windows": row.windows,
            }
        )


def open_writer(command: str, path: Path, meta: dict[str, Any], info: dict[str, Any]) -> Writer:
    """The writer for OUT's suffix; `info` holds classes/threshold/per_residue."""
    if command == "embed":
        suffix = check_suffix(path, EMBED, "embed")
        if suffix == ".h5":
            return EmbedH5(path, meta)
        if suffix == ".npz":
            return EmbedNpz(path, meta)
        return EmbedParquet(path, meta, info["per_residue"])
    if info["per_residue"]:
        suffix = check_suffix(path, PREDICT_RESIDUE, f"predict for {info['task']} (per residue)")
        cls = {".parquet": ResidueParquet, ".ss3": ResidueSs3, ".tsv": ResidueTsv}[suffix]
        return cls(path, meta, info["classes"])
    suffix = check_suffix(path, PREDICT_PROTEIN, f"predict for {info['task']}")
    cls = ProteinParquet if suffix == ".parquet" else ProteinTsv
    return cls(path, meta, info["classes"], info["threshold"])
