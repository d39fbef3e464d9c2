"""The contract between `minprot data prepare` (writer) and the stream (reader): shard schema + manifest.

A prepared corpus is a folder:
    DIR/manifest.json            this file's `Manifest`, written last (its presence means "complete")
    DIR/train/shard-00000.arrow  Arrow IPC stream files, as `datasets` writes them
    DIR/valid/shard-00000.arrow
Each shard holds the columns of `SHARD_FEATURES`: accession (string), tokens (residue token ids as
uint8, ProtBert ids, no [CLS]/[SEP]) and length (number of residues).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import datasets

from minprot_ds.errors import UserError
from minprot_ds.fileio import atomic_write, sha256_file

MANIFEST_NAME = "manifest.json"
FORMAT = "minprot-shards"
FORMAT_VERSION = 1
SPLITS = ("train", "valid")

SHARD_FEATURES = datasets.Features(
    {
        "accession": datasets.Value("string"),
        "tokens": datasets.List(datasets.Value("uint8")),
        "length": datasets.Value("int32"),
    }
)


@dataclasses.dataclass
class ShardInfo:
    path: str  # relative to the corpus folder, e.g. "train/shard-00000.arrow"
    rows: int
    residues: int
    bytes: int
    sha256: str


@dataclasses.dataclass
class SplitInfo:
    rows: int
    residues: int
    shards: list[ShardInfo]
    # Row counts per length bin: bin i counts lengths in [edges[i], edges[i+1]).
    length_histogram: dict[str, list[int]]  # {"edges": [...], "counts": [...]}


@dataclasses.dataclass
class Manifest:
    format: str
    format_version: int
    minprot_version: str
    created: str  # ISO 8601, UTC
    splits: dict[str, SplitInfo]
    drops: dict[str, int]  # records dropped, by reason
    inputs: list[dict[str, Any]]  # name, size, mtime of every input file
    options: dict[str, Any]  # the prepare options that shape the output
    fingerprint: str  # sha256 of inputs + options: equal fingerprints mean rerunning is a no-op

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Manifest:
        splits = {
            name: SplitInfo(
                rows=s["rows"],
                residues=s["residues"],
                shards=[ShardInfo(**shard) for shard in s["shards"]],
                length_histogram=s["length_histogram"],
            )
            for name, s in raw["splits"].items()
        }
        return cls(**{**raw, "splits": splits})


def load_manifest(folder: str | Path) -> Manifest:
    """Read DIR/manifest.json; a missing or unreadable one is a UserError naming the folder."""
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        raise UserError(
            f"{folder} is not a prepared corpus (no {MANIFEST_NAME}); "
            "create one with `minprot data prepare FASTA... --out DIR`."
        )
    try:
        raw = json.loads(path.read_text())
        if raw.get("format") != FORMAT:
            raise ValueError(f"format is {raw.get('format')!r}, expected {FORMAT!r}")
        if raw.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"format_version {raw.get('format_version')} is not {FORMAT_VERSION}")
        return Manifest.from_dict(raw)
    except (ValueError, KeyError, TypeError) as err:
        raise UserError(f"{path} is not a valid minprot manifest ({err}); prepare the corpus again.") from err


def write_manifest(folder: str | Path, manifest: Manifest) -> Path:
    """Write DIR/manifest.json atomically (temp file + rename), so readers never see half of it."""
    return atomic_write(Path(folder) / MANIFEST_NAME, manifest.to_json())


def write_shard(path: str | Path, accessions: list[str], tokens: list, root: str | Path) -> ShardInfo:
    """Write one shard (Arrow IPC stream, `SHARD_FEATURES`, loadable with `datasets.Dataset.from_file`).

    `tokens` is a list of uint8 arrays (residue ids). Built column-wise from numpy buffers, so writing
    costs no Python work per residue. Returns its ShardInfo, with `path` relative to `root`.
    """
    import numpy as np
    import pyarrow as pa

    lengths = np.fromiter((len(t) for t in tokens), dtype=np.int32, count=len(tokens))
    offsets = np.zeros(len(tokens) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    values = np.concatenate(tokens).astype(np.uint8, copy=False) if tokens else np.zeros(0, np.uint8)
    schema = SHARD_FEATURES.arrow_schema
    table = pa.Table.from_arrays(
        [
            pa.array(accessions, type=pa.string()),
            pa.ListArray.from_arrays(pa.array(offsets), pa.array(values)).cast(schema.field("tokens").type),
            pa.array(lengths),
        ],
        schema=schema,
    )
    path = Path(path)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        writer.write_table(table, max_chunksize=max(1, len(tokens)))
    return ShardInfo(
        path=path.relative_to(root).as_posix(),
        rows=len(tokens),
        residues=int(lengths.sum()),
        bytes=path.stat().st_size,
        sha256=sha256_file(path),
    )
