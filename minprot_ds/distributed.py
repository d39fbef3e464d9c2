"""The process group on the ground floor: join it, ask who we are, find a free port.

Every job (distillation, fine-tuning, benchmarks) joins through `init_distributed`; every module asks
`rank()` / `world_size()` here, which answer 0 / 1 for a plain process without a group.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import torch.distributed as dist


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now (for a launcher's or a server's master port)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def any_rank(flag: bool) -> bool:
    """True on every rank if `flag` is true on any: one all-reduce, on the accelerator (NCCL reduces
    device tensors only; gloo on CPU takes either)."""
    import torch
    from deepspeed.accelerator import get_accelerator

    t = torch.tensor([1.0 if flag else 0.0], device=get_accelerator().current_device_name())
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def broadcast_object(obj):
    """Rank 0's `obj` on every rank."""
    box = [obj]
    if dist.is_initialized():
        dist.broadcast_object_list(box, src=0)
    return box[0]


def init_distributed() -> tuple[int, int]:
    """Join the launcher's process group (gloo on CPU, NCCL on GPUs); a plain process is a group of one.

    Works under DeepSpeed's launcher and under torchrun (both export RANK, WORLD_SIZE, MASTER_ADDR/PORT).
    """
    import deepspeed
    from deepspeed.accelerator import get_accelerator

    if "RANK" not in os.environ:  # `python launch/distill.py`: one process, no launcher
        os.environ.update(
            RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port())
        )
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        _join_torchrun_attempt(get_accelerator().communication_backend_name())
    with _without_build_notice():
        deepspeed.init_distributed()
    if get_accelerator().device_name() == "cpu":
        _unlink_shm_buffer()
    else:  # this rank's GPU before any collective (NCCL works on the current device; DeepSpeed sets it later)
        get_accelerator().set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return rank(), world_size()


_BUILT = re.compile(r"DeepSpeed \S+ built successfully\n?")


@contextlib.contextmanager
def _without_build_notice() -> Iterator[None]:
    """Drop the one line DeepSpeed prints on every rank as it loads its CPU shared-memory op ("DeepSpeed
    deepspeed.ops.comm.deepspeed_shm_comm_op built successfully": a bare print(), no logger to filter);
    anything else printed meanwhile is passed on unchanged."""
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            yield
    finally:
        sys.stdout.write("".join(s for s in printed.getvalue().splitlines(keepends=True) if not _BUILT.fullmatch(s)))


def restart_count() -> int | None:
    """How often torch elastic has restarted this job's workers (None when not run by torchrun)."""
    value = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    return int(value) if value is not None else None


def _join_torchrun_attempt(backend: str) -> None:
    """Under torchrun, join through torchrun's own TCPStore with one key prefix per restart attempt.

    torchrun's agent keeps a single store for the whole job and its workers connect to it, so the keys a
    failed attempt left there (gloo/NCCL peer addresses of DeepSpeed's groups) are read again by the next
    attempt, which then connects to dead peers ("connectFullMesh ... Connection refused", or hangs:
    pytorch#135712). A prefix per attempt gives every restart a clean namespace in the same store.
    (Setting TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 for torchrun works too: then each attempt has its own store.)
    """
    from datetime import timedelta

    store = dist.TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        int(os.environ["WORLD_SIZE"]),
        is_master=False,
        timeout=timedelta(minutes=10),
    )
    dist.init_process_group(
        backend,
        store=dist.PrefixStore(f"minprot/attempt{restart_count()}", store),
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
    )


def end_torchrun_job() -> None:
    """A deterministic failure (a UserError: bad config, bad data, a diverged run) would fail again on every
    restart: under torchrun, stop the agent (our parent) too, so the job ends now instead of K restarts later.
    The agent shuts the other workers down and exits non-zero."""
    import signal

    if os.environ.get("TORCHELASTIC_RUN_ID") and int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0")) > 0:
        os.kill(os.getppid(), signal.SIGTERM)


def _unlink_shm_buffer() -> None:
    """On CPU, DeepSpeed maps a 69 MB /dev/shm buffer per rank and never unlinks it, so every run
    (a crashed one too) would leave its buffers in RAM. Once every rank has mapped its peers' (init
    returns only then; the barrier waits for all), the names can go: the mappings stay."""
    dist.barrier()
    name = "deepspeed_allreduce_buffer_{}_{}_{}_{}".format(
        os.getuid(), os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT"), dist.get_rank()
    )
    Path("/dev/shm", name).unlink(missing_ok=True)
