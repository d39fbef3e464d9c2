"""Resumable output: a run writes `OUT.parts/` (a manifest, then one atomic file per chunk of input records)
and turns it into OUT once every chunk is there.

Layout of OUT.parts/:
- manifest.json: command, model fingerprint, input fingerprint and record count, the settings that change
  the numbers, records per chunk. A rerun whose model, input or settings differ is refused, naming which.
- chunk-NNNNNN.npz: records [N*chunk, (N+1)*chunk) of the input: id, description, cleaned sequence, status
  (computed / duplicate of an earlier record / failure with its reason) and the outputs of the computed ones.
  Written to a temp name, fsynced and renamed, so a chunk file that exists is complete: a killed run loses at
  most the chunks it was computing, and a rerun computes only the missing ones.
Chunk N belongs to rank N mod world (or shard N mod shards), so ranks and shards never write the same file
and the parts of separate machines can be merged by copying their chunk files together.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from minprot_ds.errors import UserError
from minprot_ds.fileio import atomic_write, read_json, write_json

MANIFEST = "manifest.json"
FORMAT = 1


def parts_dir(out: Path) -> Path:
    return Path(str(out) + ".parts")


@dataclass
class Chunk:
    index: np.ndarray  # int64 record indices (consecutive)
    ids: list[str]
    descriptions: list[str]
    sequences: list[str]
    status: np.ndarray  # records.OK / DUPLICATE / FAILED
    canonical: np.ndarray  # int64
    failures: list[str]  # "" unless FAILED
    windows: np.ndarray  # int32 windows run per record (0 unless computed)
    truncated: np.ndarray  # bool
    values: list[np.ndarray | None]  # per record: the output of a computed record, else None

    def to_bytes(self) -> bytes:
        computed = [i for i, v in enumerate(self.values) if v is not None]
        arrays: dict[str, np.ndarray] = {
            "index": self.index,
            "status": self.status,
            "canonical": self.canonical,
            "windows": self.windows,
            "truncated": self.truncated,
            "computed": np.asarray(computed, dtype=np.int64),
            "ids": _pack(self.ids),
            "descriptions": _pack(self.descriptions),
            "sequences": _pack(self.sequences),
            "failures": _pack(self.failures),
        }
        if computed:
            vals = [self.values[i] for i in computed]
            arrays["rows"] = np.asarray([len(v) if v.ndim == 2 else 0 for v in vals], dtype=np.int64)
            arrays["values"] = np.concatenate([v if v.ndim == 2 else v[None] for v in vals])
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return buf.getvalue()

    @classmethod
    def from_file(cls, path: Path) -> Chunk:
        with np.load(path, allow_pickle=False) as z:
            n = len(z["index"])
            values: list[np.ndarray | None] = [None] * n
            if "values" in z:
                data, rows, at = z["values"], z["rows"], 0
                for i, r in zip(z["computed"].tolist(), rows.tolist()):
                    values[i] = data[at] if r == 0 else data[at : at + r]
                    at += max(r, 1)
            return cls(
                z["index"],
                _unpack(z["ids"], n),
                _unpack(z["descriptions"], n),
                _unpack(z["sequences"], n),
                z["status"],
                z["canonical"],
                _unpack(z["failures"], n),
                z["windows"],
                z["truncated"],
                values,
            )


def _pack(strings: list[str]) -> np.ndarray:
    return np.frombuffer("\n".join(strings).encode(), dtype=np.uint8)


def _unpack(data: np.ndarray, n: int) -> list[str]:
    return data.tobytes().decode().split("\n") if n else []


class Parts:
    def __init__(self, folder: Path):
        self.folder = Path(folder)

    @property
    def manifest_path(self) -> Path:
        return self.folder / MANIFEST

    def chunk_path(self, k: int) -> Path:
        return self.folder / f"chunk-{k:06d}.npz"

    def has(self, k: int) -> bool:
        return self.chunk_path(k).is_file()

    def write(self, k: int, chunk: Chunk) -> None:
        atomic_write(self.chunk_path(k), chunk.to_bytes())

    def read(self, k: int) -> Chunk:
        return Chunk.from_file(self.chunk_path(k))

    def read_manifest(self) -> dict[str, Any] | None:
        if not self.manifest_path.is_file():
            return None
        return read_json(self.manifest_path, f"delete {self.folder} to start again")

    def open(self, manifest: dict[str, Any]) -> int:
        """Start or continue: write the manifest, or check it against the existing one; returns chunks done."""
        old = self.read_manifest()
        if old is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_json(self.manifest_path, manifest)
            return 0
        check_same(old, manifest, self.folder)
        return sum(self.has(k) for k in range(manifest["chunks"]))


def check_same(old: dict[str, Any], new: dict[str, Any], where: Path) -> None:
    """Refuse to mix runs: the first difference in command, model, input or settings, by name."""
    fix = f"rerun with the same options to continue, or pass another --out (or delete {where}) to start again"
    if old.get("format") != new.get("format") or old.get("command") != new.get("command"):
        raise UserError(
            f"{where} holds the parts of a `{old.get('command')}` run, not of this `{new.get('command')}`; {fix}"
        )
    if old["model"]["sha256"] != new["model"]["sha256"]:
        raise UserError(
            f"{where} was computed with another model ({old['model']['path']}, sha256 "
            f"{old['model']['sha256'][:12]}) than --model {new['model']['path']} (sha256 "
            f"{new['model']['sha256'][:12]}); {fix}"
        )
    if old["input"]["sha256"] != new["input"]["sha256"]:
        raise UserError(
            f"{where} was computed from another input ({old['input']['path']}) than --fasta "
            f"{new['input']['path']}: their contents differ; {fix}"
        )
    for key in sorted(set(old["settings"]) | set(new["settings"])):
        a, b = old["settings"].get(key), new["settings"].get(key)
        if a != b:
            raise UserError(f"{where} was computed with --{key.replace('_', '-')} {a}, not {b}; {fix}")
