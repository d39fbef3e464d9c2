"""The process group on the ground floor: join it, ask who we are, find a free port.

Every job (distillation, fine-tuning, benchmarks) joins through `init_distributed`; every module asks
`rank()` / `world_size()` here, which answer 0 / 1 for a plain process without a group.
"""
from __future__ import annotations

import os
import socket
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


def init_distributed() -> tuple[int, int]:
    """Join the launcher's process group (gloo on CPU, NCCL on GPUs); a plain process is a group of one.

    Works under DeepSpeed's launcher and under torchrun (both export RANK, WORLD_SIZE, MASTER_ADDR/PORT).
    """
    import deepspeed
    from deepspeed.accelerator import get_accelerator

    if "RANK" not in os.environ:  # `python launch/distill.py`: one process, no launcher
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(free_port()))
    deepspeed.init_distributed()
    if get_accelerator().device_name() == "cpu":
        _unlink_shm_buffer()
    return rank(), world_size()


def _unlink_shm_buffer() -> None:
    """On CPU, DeepSpeed maps a 69 MB /dev/shm buffer per rank and never unlinks it, so every run
    (a crashed one too) would leave its buffers in RAM. Once every rank has mapped its peers' (init
    returns only then; the barrier waits for all), the names can go: the mappings stay."""
    dist.barrier()
    name = "deepspeed_allreduce_buffer_{}_{}_{}_{}".format(
        os.getuid(), os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT"), dist.get_rank())
    Path("/dev/shm", name).unlink(missing_ok=True)
