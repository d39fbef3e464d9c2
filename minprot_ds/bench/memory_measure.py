"""The memory plan's predictions, measured: peak memory of a few real distillation steps in this process,
and the process's resident memory read from /proc (what `minprot bench memory --measure` and
benchmarks/memory_phases.py report beside the plan in `minprot_ds.bench.memory`)."""

from __future__ import annotations

from typing import Any

from minprot_ds.bench.memory import MMAP_THRESHOLD, Plan
from minprot_ds.bench.throughput import RunInputs, Setting, build_setting
from minprot_ds.distill.engine import untimed
from minprot_ds.distributed import init_distributed


def _status_bytes(pid: int | str, field: str) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(f"no {field} in /proc/{pid}/status")


def peak_rss(pid: int | str = "self") -> int:
    """A process's peak resident set size in bytes (Linux: VmHWM of /proc/PID/status)."""
    return _status_bytes(pid, "VmHWM")


def rss(pid: int | str = "self") -> int:
    """A process's resident set size now, in bytes (VmRSS)."""
    return _status_bytes(pid, "VmRSS")


def live_allocations() -> None:
    """From now on, this process's RSS follows what it allocates: glibc maps blocks of `MMAP_THRESHOLD` bytes
    and more and unmaps them when freed (`LIVE_ALLOCATIONS_ENV` does the same for a process started with it)."""
    import ctypes

    m_mmap_threshold = -3  # malloc.h
    if ctypes.CDLL("libc.so.6").mallopt(m_mmap_threshold, MMAP_THRESHOLD) != 1:
        raise OSError("glibc refused mallopt(M_MMAP_THRESHOLD)")


def measure(
    teacher: str,
    student_layers: int,
    plan: Plan,
    *,
    corpus: str,
    max_tokens: int,
    max_rows: int,
    steps: int = 2,
    phase_timer: Any = None,
    unmap_freed: bool = True,
) -> dict[str, Any]:
    """What the plan predicts, measured: peak memory of `steps` distillation steps of this process (one rank).

    GPU: `torch.cuda.max_memory_allocated`. CPU: peak RSS minus the peak before the models were built (the
    interpreter, torch and DeepSpeed themselves), with freed blocks given back at once (`live_allocations`;
    `unmap_freed=False` keeps glibc's default). Run it in a fresh process: the CPU peak never goes down.
    `phase_timer(name)` wraps the build ("build") and each phase of every step (`DistillEngine.step`); a timer
    that resets the kernel's peak (/proc/self/clear_refs) leaves in measured_bytes only the peak since its
    last reset, so it must keep the peaks it reads itself (benchmarks/memory_phases.py does).
    Returns measured bytes, the baseline it is above and the padded tokens of the largest micro-batch seen.
    """
    import torch

    phase_timer = phase_timer or untimed

    init_distributed()
    import deepspeed.runtime.zero.stage3  # noqa: F401  (code the build would import, so outside the baseline)
    import deepspeed.runtime.zero.stage_1_and_2  # noqa: F401
    import transformers.models.bert.modeling_bert  # noqa: F401
    import transformers.models.esm.modeling_esm  # noqa: F401

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    elif unmap_freed:
        live_allocations()
    before = 0 if cuda else peak_rss()
    setting = Setting(max_tokens, max_rows, plan.stage, plan.checkpointing, "eager", plan.precision)
    inputs = RunInputs(teacher=teacher, student_layers=student_layers, corpus=corpus, steps=steps, warmup=0, repeats=1)
    with phase_timer("build"):
        engine, stream = build_setting(setting, inputs, planned_steps=steps + 1)
    batches, padded = iter(stream), 0
    for _ in range(steps):
        micro = next(batches)
        padded = max([padded, *(int(b["input_ids"].numel()) for b in micro)])
        engine.step(micro, phase_timer=phase_timer)
    peak = torch.cuda.max_memory_allocated() if cuda else peak_rss() - before
    scope = (
        "max_memory_allocated" if cuda else "peak RSS - baseline" + (", freed blocks unmapped" if unmap_freed else "")
    )
    return {"measured_bytes": peak, "baseline_bytes": before, "padded_tokens": padded, "scope": scope}
