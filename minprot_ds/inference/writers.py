"""Output files in input order, chosen by OUT's suffix.

predict, per protein (dna-binding, membrane): .tsv / .parquet with id, description, length, probability,
label, windows. predict, per residue (q3): .parquet (one row per protein, list columns), .ss3 (header,
sequence, states), .tsv (one row per residue). embed: .h5 (bio_embeddings' layout: one dataset per protein,
the id in attribute `original_id`), .npz (one array per id), .parquet (id, description, length, embedding).
Tables (predict's .tsv/.parquet per protein, q3's .parquet, embed's .parquet) hold one row per input record in
input order: a record that failed has an empty probability (or embedding) and its reason in the `status` column
(`ok` otherwise). Formats keyed by id or residue (.h5, .npz, .ss3, q3's per-residue .tsv) hold only the records
with an output. Every failure is also listed in OUT.failures.tsv. TSV fields are escaped (backslash, tab,
newline and carriage return as backslash escapes), so a tab in a FASTA description cannot shift a column.
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
    value: np.ndarray | None  # [C] / [L, C] probabilities, or an embedding [H] / [L, H]; None: failed
    windows: int
    truncated: bool
    status: str = "ok"  # or why the record has no output


def tsv_field(text: str) -> str:
    """A TSV field: backslash, tab, newline and carriage return escaped (as PostgreSQL's text format does)."""
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def check_suffix(out: Path, allowed: tuple[str, ...], what: str) -> str:
    suffix = Path(out).suffix.lower()
    if suffix not in allowed:
        raise UserError(
            f"--out {out}: {what} writes {', '.join(allowed)} files; name the output with one of these suffixes"
        )
    return suffix


def h5_name(rid: str) -> str:
    """An HDF5 dataset name for an id ('/' separates groups in HDF5, and '.'/'..' name groups, so they are
    escaped, as is '%')."""
    name = rid.replace("%", "%25").replace("/", "%2F")
    if name in (".", ".."):
        return name.replace(".", "%2E")
    return name or "%"


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
        self.fh.write("id\tdescription\tlength\tprobability\tlabel\twindows\tstatus\n")

    def add(self, row):
        if row.value is None:
            prob = label = ""
        else:
            prob, label = f"{float(row.value[1]):.6g}", label_of(row.value, self.classes, self.threshold)
        fields = [tsv_field(row.id), tsv_field(row.description), str(len(row.sequence)), prob, label]
        self.fh.write("\t".join([*fields, str(row.windows), tsv_field(row.status)]) + "\n")

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
                ("status", pa.string()),
            ],
            metadata={"minprot": json.dumps(self.meta)},
        )

    def add(self, row):
        self.add_dict(
            {
                "id": row.id,
                "description": row.description,
                "length": len(row.sequence),
                "probability": None if row.value is None else float(row.value[1]),
                "label": None if row.value is None else label_of(row.value, self.classes, self.threshold),
                "windows": row.windows,
                "status": row.status,
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
        fields += [("windows", pa.int32()), ("status", pa.string())]
        return pa.schema(fields, metadata={"minprot": json.dumps(self.meta)})

    def add(self, row):
        failed = row.value is None
        d = {
            "id": row.id,
            "description": row.description,
            "length": len(row.sequence),
            "sequence": row.sequence,
            "states": None if failed else states(row.value, self.classes),
            "windows": row.windows,
            "status": row.status,
        }
        for c, name in enumerate(self.classes):
            d[f"prob_{name}"] = None if failed else row.value[:, c].astype(np.float32)
        self.add_dict(d)


def states(probs: np.ndarray, classes: list[str]) -> str:
    return "".join(np.asarray(classes)[probs.argmax(axis=1)])


class ResidueSs3(Writer):
    def __init__(self, path, meta, classes):
        super().__init__(path, meta)
        self.classes = classes
        self.fh = open(path, "w")

    def add(self, row):
        if row.value is None:
            return
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
        if row.value is None:
            return
        names = np.asarray(self.classes)[row.value.argmax(axis=1)]
        rid = tsv_field(row.id)
        for i, (p, s) in enumerate(zip(row.value, names)):
            self.fh.write(f"{rid}\t{i + 1}\t{row.sequence[i]}\t{s}\t" + "\t".join(f"{x:.6g}" for x in p) + "\n")

    def close(self):
        self.fh.close()


class EmbedH5(Writer):
    def __init__(self, path, meta):
        import h5py

        super().__init__(path, meta)
        self.file = h5py.File(path, "w", track_order=True)  # iteration in input order
        self.file.attrs["minprot"] = json.dumps(meta)

    def add(self, row):
        if row.value is None:
            return
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
        if row.value is None:
            return
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
                ("status", pa.string()),
            ],
            metadata={"minprot": json.dumps(self.meta)},
        )

    def add(self, row):
        self.add_dict(
            {
                "id": row.id,
                "description": row.description,
                "length": len(row.sequence),
                "embedding": None if row.value is None else list(row.value) if self.per_residue else row.value,
                "windows": row.windows,
                "status": row.status,
            }
        )


def output_suffix(command: str, out: Path, info: dict[str, Any]) -> str:
    """OUT's suffix, refused in one line when the command's output cannot take it (checked on the name the user
    gave, before any temporary file is named after it)."""
    if command == "embed":
        return check_suffix(out, EMBED, "embed")
    if info["per_residue"]:
        return check_suffix(out, PREDICT_RESIDUE, f"predict for {info['task']} (per residue)")
    return check_suffix(out, PREDICT_PROTEIN, f"predict for {info['task']}")


def open_writer(command: str, path: Path, meta: dict[str, Any], info: dict[str, Any]) -> Writer:
    """The writer for the suffix of `path` (checked already by `output_suffix`); `info` holds
    classes/threshold/per_residue."""
    suffix = output_suffix(command, path, info)
    if command == "embed":
        if suffix == ".parquet":
            return EmbedParquet(path, meta, info["per_residue"])
        return {".h5": EmbedH5, ".npz": EmbedNpz}[suffix](path, meta)
    if info["per_residue"]:
        cls = {".parquet": ResidueParquet, ".ss3": ResidueSs3, ".tsv": ResidueTsv}[suffix]
        return cls(path, meta, info["classes"])
    cls = ProteinParquet if suffix == ".parquet" else ProteinTsv
    return cls(path, meta, info["classes"], info["threshold"])
