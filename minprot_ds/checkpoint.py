"""Atomic checkpoints of a distillation: DeepSpeed state + data cursor + per-rank RNG + MLflow run id.

Layout of RUN/ckpt:
    global_step{N}/            DeepSpeed's save_checkpoint (save_latest=False), plus
        minprot_rank{r}.pt     each rank's RNG states and loader state
        COMPLETE               JSON written by rank 0 once every rank has finished: the checkpoint counts
    latest                     the tag of the newest complete checkpoint, moved into place by rename

DeepSpeed keeps `client_state` from rank 0 only and saves no RNG, and its own `latest` could name a
checkpoint other ranks are still writing; hence the per-rank files, the marker and our own pointer
(same file name, so DeepSpeed's converters still find it).
"""
from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from minprot_ds.errors import UserError

MARKER = "COMPLETE"
LATEST = "latest"
_TAG = re.compile(r"^global_step(\d+)$")


@dataclasses.dataclass
class TrainState:
    """The global scalars of a run; identical on every rank."""

    step: int = 0
    consumed_samples: int = 0
    epoch: int = 0
    mlflow_run_id: str | None = None
    world_size: int = 1
    grad_accum: int = 1
    model_affecting: dict[str, Any] = dataclasses.field(default_factory=dict)


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def complete_checkpoints(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every complete checkpoint, oldest first; incomplete ones are warned about."""
    found = []
    if not ckpt_dir.is_dir():
        return found
    for child in ckpt_dir.iterdir():
        m = _TAG.match(child.name)
        if not m or not child.is_dir():
            continue
        if (child / MARKER).is_file():
            found.append((int(m.group(1)), child))
        else:
            warnings.warn(f"skipping incomplete checkpoint {child} (no {MARKER} marker: a save was interrupted)")
    return sorted(found)


def read_marker(folder: Path) -> TrainState:
    try:
        return TrainState(**json.loads((folder / MARKER).read_text()))
    except (ValueError, TypeError) as err:
        raise UserError(f"checkpoint {folder} has an unreadable {MARKER} marker ({err}).") from err


class Checkpointer:
    """Saves and finds checkpoints under RUN/ckpt; the training loop only calls save() and latest()."""

    def __init__(self, ckpt_dir: str | Path, keep_last: int = 3, keep_every: int = 0):
        self.dir = Path(ckpt_dir)
        self.keep_last = keep_last
        self.keep_every = keep_every

    def save(self, engine: Any, state: TrainState, loader_state: dict[str, int]) -> Path:
        """Every rank calls this. Returns the checkpoint folder once it is complete."""
        tag = f"global_step{state.step}"
        folder = self.dir / tag
        if _rank() == 0 and folder.exists():  # a stale, incomplete save of the same step
            shutil.rmtree(folder)
        _barrier()
        client_state = {"minprot": dataclasses.asdict(state), "universal_checkpoint_info": {}}
        engine.save_checkpoint(str(self.dir), tag=tag, client_state=client_state, save_latest=False)
        per_rank = {"rng": rng_state(), "loader": loader_state}
        buf = _serialize(per_rank)
        _atomic_write(folder / f"minprot_rank{_rank()}.pt", buf)
        _barrier()  # every rank has written everything
        if _rank() == 0:
            _atomic_write(folder / MARKER, json.dumps(dataclasses.asdict(state), indent=2).encode())
            _atomic_write(self.dir / LATEST, tag.encode())
            self._prune()
        _barrier()
        return folder

    def _prune(self) -> None:
        complete = complete_checkpoints(self.dir)
        keep = {step for step, _ in complete[-self.keep_last:]}
        if self.keep_every:
            keep |= {step for step, _ in complete if step % self.keep_every == 0}
        for step, folder in complete:
            if step not in keep:
                shutil.rmtree(folder, ignore_errors=True)

    def latest(self) -> Path | None:
        """The newest complete checkpoint (what `--resume auto` takes), or None."""
        complete = complete_checkpoints(self.dir)
        return complete[-1][1] if complete else None

    @staticmethod
    def load(engine: Any, folder: Path) -> tuple[TrainState, dict[str, int]]:
        """Every rank calls this: restores DeepSpeed state and this rank's RNG; returns state + loader state."""
        state = read_marker(folder)
        load_path, _ = engine.load_checkpoint(str(folder.parent), tag=folder.name)
        if load_path is None:
            raise UserError(f"DeepSpeed could not load checkpoint {folder}; it may be corrupt: resume from an older one.")
        per_rank_file = folder / f"minprot_rank{_rank()}.pt"
        if not per_rank_file.is_file():
            raise UserError(f"checkpoint {folder} has no {per_rank_file.name}: it was saved with fewer ranks.")
        # Our own file from our own run dir (see resolve_resume), hence weights_only=False for RNG objects.
        per_rank = torch.load(per_rank_file, map_location="cpu", weights_only=False)
        set_rng_state(per_rank["rng"])
        return state, per_rank["loader"]


def _serialize(obj: Any) -> bytes:
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def check_compatible(saved: TrainState, now: dict[str, Any], folder: Path) -> None:
    """A resumed run may change cadences or max steps, never what shapes the model or the data order."""
    for key, value in now.items():
        if key in saved.model_affecting and saved.model_affecting[key] != value:
            raise UserError(
                f"cannot resume from {folder}: {key} was {saved.model_affecting[key]!r} and is now {value!r}; "
                f"restore it, or start a new run dir (or --resume none with a fresh --run-dir)."
            )


def resolve_resume(resume: str, ckpt: Checkpointer) -> Path | None:
    """`auto`: newest complete checkpoint in the run dir (or None); `none`: None; else the given folder."""
    if resume == "none":
        return None
    if resume == "auto":
        return ckpt.latest()
    folder = Path(resume)
    if not (folder / MARKER).is_file():
        raise UserError(f"--resume {resume}: not a complete checkpoint folder (no {MARKER} marker inside).")
    return folder
