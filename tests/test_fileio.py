"""Atomic writes: the file is either the old one or the new one, and no temp file is left behind; a file's sha256."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from minprot_ds.fileio import atomic_write, sha256_file, write_json


@dataclasses.dataclass
class Point:
    x: int


def test_write_json_converts_and_replaces(tmp_path):
    path = tmp_path / "sub" / "out.json"
    write_json(path, {"a": 1})
    write_json(path, {"p": Point(2), "n": np.float32(0.5), "arr": np.arange(3), "path": Path("/x")})
    assert json.loads(path.read_text()) == {"p": {"x": 2}, "n": 0.5, "arr": [0, 1, 2], "path": "/x"}
    assert [p.name for p in path.parent.iterdir()] == ["out.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = atomic_write(tmp_path / "f.bin", b"old")
    with pytest.raises(TypeError, match="object is not JSON serialisable"):
        write_json(path, {"bad": object()})

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr("os.fsync", fail)
    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, "new")
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_sha256_file_alone_and_into_a_running_digest(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"x" * (3 << 20) + b"tail")
    b.write_bytes(b"")
    assert sha256_file(a) == hashlib.sha256(a.read_bytes()).hexdigest()
    assert sha256_file(b) == hashlib.sha256(b"").hexdigest()
    running = hashlib.sha256(b"prefix")
    assert sha256_file(a, running) == hashlib.sha256(b"prefix" + a.read_bytes()).hexdigest() == running.hexdigest()
