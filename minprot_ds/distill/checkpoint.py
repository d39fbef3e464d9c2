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
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from minprot_ds.distributed import any_rank, barrier, rank, world_size
from minprot_ds.errors import UserError
from minprot_ds.fileio import atomic_write

# Test-only fault injection: "STEP:RANK:POINT" kills that rank with SIGKILL at POINT of the save of STEP
# (POINT: deepspeed = after DeepSpeed's files, rank_file = after this rank's file, marker = after the
# COMPLETE marker, before the latest pointer), or stops it with SIGSTOP once that save is complete
# (POINT: stop; the signal tests then know where the run is). Several specs: comma-separated; a spec ending
# in "@K" fires only in torchrun's restart attempt K. The crash and signal tests use it; nothing else should.
FAULT_ENV = "MINPROT_FAULT_CHECKPOINT"
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


def seed_rng(seed: int, global_rank: int, step: int = 0) -> None:
    """Seed the training RNG (dropout; python and numpy for good measure) from the data seed and the rank,
    so that it never depends on what ran before in the process (launcher, topology, restarts)."""
    value = int(np.random.SeedSequence([seed, global_rank, step]).generate_state(1)[0])
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)  # every device's generator too


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
            warnings.warn(
                f"skipping incomplete checkpoint {child} (no {MARKER} marker: a save was interrupted)", stacklevel=2
            )
    return sorted(found)


def read_marker(folder: Path) -> TrainState:
    try:
        return TrainState(**json.loads((folder / MARKER).read_text()))
    except (ValueError, TypeError) as err:
        raise UserError(f"checkpoint {folder} has an unreadable {MARKER} marker ({err}).") from err


class Checkpointer:
    """Owns resume and cadence (as torchtitan's CheckpointManager): the loop calls `load` once at the
    start and `save(state, force=...)` after every step; this decides whether a save is due.

    `engine` is the DeepSpeed engine, `stream` the training stream (its cursor is saved per rank),
    `seed` the data seed the training RNG (dropout) is seeded from on a fresh start.
    """

    def __init__(
        self,
        ckpt_dir: str | Path,
        options: Any,
        *,
        engine: Any,
        stream: Any,
        seed: int,
        model_affecting: dict[str, Any],
        grad_accum: int,
    ):
        self.dir = Path(ckpt_dir)
        self.options = options  # config.checkpoint: every_steps, every_minutes, keep_last, keep_every
        self.engine, self.stream, self.seed = engine, stream, seed
        self.model_affecting, self.grad_accum = model_affecting, grad_accum
        self.last_saved: Path | None = None
        self.load_s: float | None = None  # seconds the resume took (None on a fresh start)
        self.save_s: float | None = None  # seconds the last save took (what a collective timeout must outlast)
        self._last_time = time.monotonic()

    # --- resume ----------------------------------------------------------------------------------
    def load(self, resume: str = "auto") -> TrainState:
        """Every rank calls this once, before the first step. `resume`: auto (the newest complete
        checkpoint, if any), none (a fresh run; refused if the run dir has checkpoints) or a folder.
        Restores DeepSpeed state, the data cursor and this rank's RNG, or seeds the RNG on a fresh start."""
        fresh = TrainState(world_size=world_size(), grad_accum=self.grad_accum, model_affecting=self.model_affecting)
        folder = self._resolve(resume)
        if folder is None:
            seed_rng(self.seed, rank())
            return fresh
        started = time.monotonic()
        saved = read_marker(folder)
        check_compatible(saved, self.model_affecting, folder)
        same_layout = (saved.world_size, saved.grad_accum) == (world_size(), self.grad_accum)
        if not same_layout:
            folder = self._universal(folder, saved)
        load_path, _ = self.engine.load_checkpoint(str(folder.parent), tag=folder.name)
        if load_path is None:
            raise UserError(
                f"DeepSpeed could not load checkpoint {folder}; it may be corrupt: resume from an older one."
            )
        # Our own file from our own run dir (see _resolve), hence weights_only=False for RNG objects.
        per_rank = torch.load(
            folder / f"minprot_rank{rank() if same_layout else 0}.pt", map_location="cpu", weights_only=False
        )
        self.stream.load_state_dict(per_rank["loader"])
        if same_layout:
            set_rng_state(per_rank["rng"])
        else:  # the loader state is global; RNG streams of another layout cannot be carried over
            warnings.warn(
                f"resuming {folder} on another world size: data order kept, RNG states reseeded", stacklevel=2
            )
            seed_rng(self.seed, rank(), saved.step)
        self.last_saved = folder
        self.load_s = time.monotonic() - started
        return dataclasses.replace(
            saved, world_size=fresh.world_size, grad_accum=self.grad_accum, model_affecting=self.model_affecting
        )

    def _resolve(self, resume: str) -> Path | None:
        if resume == "none":
            if self.latest() is not None:
                raise UserError(
                    f"run dir {self.dir.parent} already has checkpoints; resume it (--resume auto) "
                    "or choose a new --run-dir."
                )
            return None
        if resume == "auto":
            return self.latest()
        folder = Path(resume)
        if not (folder / MARKER).is_file():
            raise UserError(f"--resume {resume}: not a complete checkpoint folder (no {MARKER} marker inside).")
        return folder

    def _universal(self, folder: Path, saved: TrainState) -> Path:
        """Resume on another number of ranks: same global batch (ranks x accumulation), DeepSpeed's universal
        checkpoint (converted once by rank 0), and the same global sample order from the saved cursor."""
        world, grad_accum = world_size(), self.grad_accum
        if saved.world_size * saved.grad_accum != world * grad_accum:
            raise UserError(
                f"checkpoint {folder} was written with {saved.world_size} ranks x {saved.grad_accum} accumulation "
                f"steps (global batch of {saved.world_size * saved.grad_accum} micro-batches); this job has {world} x "
                f"{grad_accum}. Keep ranks x gradient_accumulation_steps equal (set gradient_accumulation_steps in "
                "the DeepSpeed config)."
            )
        error = ""
        if rank() == 0:
            try:
                to_universal(folder)
            except UserError as err:
                error = str(err)
        if any_rank(bool(error)):  # every rank waits for rank 0's conversion
            raise UserError(error or f"rank 0 could not convert {folder} to a universal checkpoint; see its log.")
        # DeepSpeed reads this switch of its config only when loading (engine.load_universal_checkpoint()).
        self.engine._config.load_universal_checkpoint = True
        return universal_path(folder)

    # --- save --------------------------------------------------------------------------------------
    def save(self, state: TrainState, *, force: bool = False) -> Path | None:
        """Every rank calls this after every step. Saves when forced (the last step, a stop signal) or due
        (checkpoint.every_steps, checkpoint.every_minutes: rank 0's clock decides for all); returns the
        complete checkpoint folder, or None when no save was due."""
        o = self.options
        due = force or bool(o.every_steps and state.step % o.every_steps == 0)
        if not due and o.every_minutes:
            late = time.monotonic() - self._last_time > 60 * o.every_minutes
            due = any_rank(late and rank() == 0)
        if not due:
            return None
        started = time.monotonic()
        self.last_saved = self.write(state)
        self._last_time = time.monotonic()
        self.save_s = self._last_time - started
        return self.last_saved

    def write(self, state: TrainState) -> Path:
        """Every rank calls this. Returns the checkpoint folder once it is complete."""
        tag = f"global_step{state.step}"
        folder = self.dir / tag
        if rank() == 0 and folder.exists():  # a stale, incomplete save of the same step
            shutil.rmtree(folder)
        barrier()
        client_state = {"minprot": dataclasses.asdict(state), "universal_checkpoint_info": {}}
        self.engine.save_checkpoint(str(self.dir), tag=tag, client_state=client_state, save_latest=False)
        _fault(state.step, "deepspeed")
        per_rank = {"rng": rng_state(), "loader": self.stream.state_dict()}
        atomic_write(folder / f"minprot_rank{rank()}.pt", _serialize(per_rank))
        _fault(state.step, "rank_file")
        barrier()  # every rank has written everything
        if rank() == 0:
            atomic_write(folder / MARKER, json.dumps(dataclasses.asdict(state), indent=2).encode())
            _fault(state.step, "marker")
            atomic_write(self.dir / LATEST, tag.encode())
            self._prune()
        barrier()
        _fault(state.step, "stop")
        return folder

    def _prune(self) -> None:
        complete = complete_checkpoints(self.dir)
        keep = {step for step, _ in complete[-self.options.keep_last :]}
        if self.options.keep_every:
            keep |= {step for step, _ in complete if step % self.options.keep_every == 0}
        for step, folder in complete:
            if step not in keep:
                shutil.rmtree(folder, ignore_errors=True)
                shutil.rmtree(universal_path(folder), ignore_errors=True)

    def latest(self) -> Path | None:
        """The newest complete checkpoint (what `--resume auto` takes), or None."""
        return latest_checkpoint(self.dir)


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    complete = complete_checkpoints(Path(ckpt_dir))
    return complete[-1][1] if complete else None


def universal_path(folder: Path) -> Path:
    return folder.with_name(folder.name + "_universal")


def to_universal(folder: Path) -> Path:
    """DeepSpeed's universal form of a checkpoint (loadable on any number of ranks), made once beside it.

    Rank 0 runs DeepSpeed's converter into a temporary folder, copies our marker and per-rank files
    in, and renames it into place, so a half-converted folder is never taken for a finished one.
    """
    out = universal_path(folder)
    if (out / MARKER).is_file():
        return out
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [
        sys.executable,
        "-m",
        "deepspeed.checkpoint.ds_to_universal",
        "--input_folder",
        str(folder),
        "--output_folder",
        str(tmp),
        "--num_extract_workers",
        "1",
        "--num_merge_workers",
        "1",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise UserError(f"converting {folder} to a universal checkpoint failed: {proc.stderr.strip()[-500:]}")
    for extra in [MARKER, *(p.name for p in folder.glob("minprot_rank*.pt"))]:
        shutil.copy2(folder / extra, tmp / extra)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


def _fault(step: int, point: str) -> None:
    here = f"{step}:{rank()}:{point}"
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    for spec in filter(None, os.environ.get(FAULT_ENV, "").split(",")):
        where, _, only_attempt = spec.partition("@")  # "@K": only in torchrun's attempt K (restart count)
        if where == here and (not only_attempt or only_attempt == attempt):
            os.kill(os.getpid(), signal.SIGSTOP if point == "stop" else signal.SIGKILL)


def _serialize(obj: Any) -> bytes:
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


# Model-affecting settings added after checkpoints were written: the value those checkpoints ran with.
PREDATING = {"loss.normalize": "micro-batch"}


def check_compatible(saved: TrainState, now: dict[str, Any], folder: Path) -> None:
    """A resumed run may change cadences or max steps, never what shapes the model or the data order."""
    before = {**PREDATING, **saved.model_affecting} if saved.model_affecting else {}
    for key, value in now.items():
        if key in before and before[key] != value:
            raise UserError(
                f"cannot resume from {folder}: {key} was {before[key]!r} and is now {value!r}; "
                f"restore it, or start a new run dir (or --resume none with a fresh --run-dir)."
            )
