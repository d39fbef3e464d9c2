"""Atomic file writes (a reader, or a crash, never sees half a file, only the old one or the new one), and a
file's sha256."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from minprot_ds.errors import UserError


def atomic_write(path: str | Path, data: bytes | str) -> Path:
    """Write to a temp file in the same folder, fsync it, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # open(), not mkstemp: the umask's permissions
    try:
        with open(tmp, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def sha256_file(path: str | Path, digest: Any = None) -> str:
    """The sha256 of a file's bytes, read in 16 MiB blocks; `digest` given: the file's bytes are added to it
    (to hash several files as one) and its hex digest so far is returned."""
    digest = hashlib.sha256() if digest is None else digest
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json(path: str | Path, document: Any) -> Path:
    """`document` as indented JSON, atomically; dataclasses, numpy values and paths are converted."""
    return atomic_write(path, json.dumps(document, indent=2, default=_jsonable) + "\n")


def read_json(path: str | Path, what: str = "") -> Any:
    """A JSON file's document; an unreadable or corrupt file is one UserError naming it (and `what` it is)."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except OSError as err:
        raise UserError(f"cannot read {path}{what and ' (' + what + ')'}: {err.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(
            f"{path}{what and ' (' + what + ')'} is not valid JSON ({err}); restore or regenerate it"
        ) from None


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if hasattr(value, "tolist"):  # numpy scalars and arrays, tensors
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
