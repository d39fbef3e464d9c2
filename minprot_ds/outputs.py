"""Where a command writes (`--out`): one rule for every command, checked before any compute.

- The location must be writable: its folder exists or can be made, a file can be created in it (tried, not
  guessed from permission bits: root ignores them, /proc refuses anyway), and `--out` is not a folder when a
  file is meant (nor a file when a folder is).
- An existing `--out` is replaced only when this command made it with the same inputs and settings (the
  caller says how it knows: a summary, a manifest) or when the user passes `--overwrite`; otherwise one
  sentence refuses, naming `--overwrite`.
Writes themselves stay atomic (fileio.atomic_write); this module only decides whether they may happen.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from minprot_ds.errors import UserError


def check_out(
    path: str | Path,
    *,
    flag: str = "--out",
    folder: bool = False,
    overwrite: bool = False,
    ours: bool | Callable[[Path], bool] = False,
    overwrite_flag: str = "--overwrite",
) -> Path:
    """Refuse an `--out` that cannot be written, or that exists and is not ours to replace; returns it.

    folder: `--out` names a folder (an existing empty folder is free to use). ours: True, or a function of the
    path, when the existing output was made by this command with the same inputs and settings."""
    out = Path(path)
    if out.exists() or out.is_symlink():
        if folder and not out.is_dir():
            raise UserError(f"{flag} {out} is a file; {flag} names a folder: pass a new or empty folder")
        if not folder and out.is_dir():
            raise UserError(f"{flag} {out} is a folder; {flag} names a file: pass a file name in it")
        empty = folder and out.is_dir() and not any(out.iterdir())
        if not (empty or overwrite or (ours(out) if callable(ours) else ours)):
            raise UserError(
                f"{flag} {out} already exists and is not this command's output for the same inputs and settings; "
                f"pass {overwrite_flag} to replace it, or choose another {flag}"
            )
    writable_folder(out if folder else out.parent, flag, shown=out)
    return out


def writable_folder(where: Path, flag: str = "--out", *, shown: Path | None = None) -> Path:
    """Prove that `where` exists or can be made, and that a file can be created there; one UserError if not.

    Nothing is left behind: a folder that does not exist yet is tried through its nearest existing parent
    (made later by the job that writes, after its inputs have been checked)."""
    shown = where if shown is None else shown
    where = Path(where) if str(where) else Path(".")
    existing = next((p for p in [where, *where.parents] if p.exists()), Path("."))
    if not existing.is_dir():
        raise UserError(f"{flag} {shown}: {existing} is a file, not a folder; choose another {flag}")
    probe = existing / f".minprot-probe-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise UserError(f"{flag} {shown}: cannot write in {existing} ({err.strerror}); choose another {flag}") from None
    return where
