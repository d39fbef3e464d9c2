"""Where a distillation step's time goes, by operator family: the engine's step and the naive loop's.

`torch.profiler` records a few steps of a loop after warm-up. Each recorded op's *self* time (its own
time, its children's excluded, so nothing counts twice) goes to one family:

- optimizer: anything run inside the optimizer's `step` (torch optimizers mark it with a profiler range);
- gemm: matrix multiplies (mm, addmm, bmm, ...), the FLOPs that dominate BERT;
- attention: scaled-dot-product attention kernels;
- softmax_norm: softmax, log-softmax and layer norm, forward and backward;
- indexing_copy: copies, casts, gathers, masked selects, concatenation, embedding lookups;
- elementwise: the rest of aten's arithmetic (add, mul, GELU, dropout, reductions, ...);
- communication: collectives (gloo / NCCL);
- other: Python-level ranges and anything unmatched.

Reported per padded token, so two loops with different padding compare on the same footing, with the
achieved FLOP rate of the step's GEMMs (the profiler's FLOP counts over their self time) beside a lone
`torch.addmm` (or `matmul`) of the heaviest GEMM shape the step ran: how far the step's matrix
multiplies are from what the hardware gives one matrix multiply of that size on its own.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

FAMILIES = ("gemm", "attention", "softmax_norm", "elementwise", "indexing_copy", "optimizer", "communication", "other")
_GEMM = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addmv", "aten::mv", "aten::addbmm")
_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("attention", ("scaled_dot_product", "flash_attention", "efficient_attention")),
    ("softmax_norm", ("softmax", "layer_norm")),
    (
        "communication",
        ("gloo", "nccl", "c10d::", "all_reduce", "allreduce", "all_gather", "reduce_scatter", "broadcast"),
    ),
    (
        "indexing_copy",
        (
            "copy",
            "_to_copy",
            "aten::to",
            "clone",
            "contiguous",
            "index",
            "gather",
            "scatter",
            "masked",
            "nonzero",
            "aten::cat",
            "embedding",
            "select",
            "slice",
            "aten::pad",
            "constant_pad",
            "flatten",
            "unflatten",
            "narrow",
            "split",
            "chunk",
            "stack",
            "fill_",
            "zero_",
            "empty",
            "resize_",
        ),
    ),
)


def op_family(name: str, in_optimizer: bool = False) -> str:
    """The family of a profiler event name (see the module docstring)."""
    if in_optimizer:
        return "optimizer"
    if name in _GEMM:
        return "gemm"
    for family, patterns in _RULES:
        if any(p in name for p in patterns):
            return family
    return "elementwise" if name.startswith("aten::") else "other"


def _inside_optimizer(event) -> bool:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith("Optimizer.step"):
            return True
        parent = parent.cpu_parent
    return False


@dataclass
class LoopProfile:
    """Self time per family over the profiled steps, and what those steps processed."""

    label: str
    steps: int
    seconds: float  # wall time of the profiled steps (the profiler's own overhead included)
    tokens: int  # padded tokens
    residues: int
    self_s: dict[str, float]  # family -> summed self time
    gemm_flops: float
    gemm_shapes: list[dict[str, Any]] = field(default_factory=list)  # heaviest first: name, shapes, seconds, calls

    @property
    def profiled_s(self) -> float:
        return sum(self.self_s.values())

    def share(self, family: str) -> float:
        return self.self_s.get(family, 0.0) / self.profiled_s if self.profiled_s else 0.0

    def us_per_token(self, family: str) -> float:
        return 1e6 * self.self_s.get(family, 0.0) / self.tokens

    @property
    def untracked_s(self) -> float:
        """Wall time no op accounts for: Python, numpy (the engine's in-process batch building), waits."""
        return max(self.seconds - self.profiled_s, 0.0)

    @property
    def gemm_gflops_per_s(self) -> float:
        gemm_s = self.self_s.get("gemm", 0.0)
        return self.gemm_flops / gemm_s / 1e9 if gemm_s else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "steps": self.steps,
            "seconds": self.seconds,
            "tokens": self.tokens,
            "residues": self.residues,
            "self_s": self.self_s,
            "profiled_s": self.profiled_s,
            "untracked_s": self.untracked_s,
            "share": {f: self.share(f) for f in FAMILIES},
            "us_per_padded_token": {f: self.us_per_token(f) for f in FAMILIES},
            "gemm_flops": self.gemm_flops,
            "gemm_gflops_per_s": self.gemm_gflops_per_s,
            "gemm_shapes": self.gemm_shapes,
        }


def profile_loop(label: str, step: Callable[[], tuple[int, int]], *, steps: int, warmup: int = 1) -> LoopProfile:
    """Profile `steps` calls of `step()` (each returns the padded tokens and residues it processed) after
    `warmup` unprofiled ones. On a GPU an op's time is that of the kernels it launched (self device
    time); on a CPU, its self CPU time."""
    for _ in range(warmup):
        step()
    on_gpu = torch.cuda.is_available()
    tokens = residues = 0
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if on_gpu else [])]
    with profile(activities=activities, record_shapes=True, with_flops=True) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            t, r = step()
            tokens, residues = tokens + t, residues + r
        if on_gpu:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
    self_s: dict[str, float] = defaultdict(float)
    flops = 0.0
    shapes: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0])
    for event in prof.events():
        if event.device_type != torch.autograd.DeviceType.CPU:
            continue  # a GPU kernel: its time is in the self device time of the op that launched it
        family = op_family(event.name, _inside_optimizer(event))
        seconds_self = (event.self_device_time_total if on_gpu else event.self_cpu_time_total) / 1e6
        self_s[family] += seconds_self
        if family == "gemm":
            flops += event.flops or 0
            key = (event.name, str(event.input_shapes))
            shapes[key][0] += seconds_self
            shapes[key][1] += 1
    heaviest = sorted(shapes.items(), key=lambda kv: -kv[1][0])[:5]
    return LoopProfile(
        label,
        steps,
        seconds,
        tokens,
        residues,
        dict(self_s),
        flops,
        [{"op": name, "input_shapes": shape, "seconds": s, "calls": n} for (name, shape), (s, n) in heaviest],
    )


def mm_operands(op: str, input_shapes: list[list[int]]) -> tuple[list[int], list[int]] | None:
    """The two matrix operands of a recorded GEMM ([M, K] and [K, N], batched for bmm), or None."""
    mats = [s for s in input_shapes if len(s) in (2, 3)]
    if op in ("aten::addmm", "aten::baddbmm") and len(mats) >= 3:
        mats = mats[1:]
    if len(mats) >= 2 and mats[0][-1] == mats[1][-2]:
        return mats[0], mats[1]
    return None


def bare_gemm_gflops(
    a_shape: list[int],
    b_shape: list[int],
    *,
    bias: bool = False,
    repeats: int = 7,
    min_seconds: float = 0.2,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
) -> float:
    """GFLOP/s of a lone matrix multiply of these shapes, plus a bias row as addmm adds it (median of
    repeats, each at least min_seconds)."""
    a, b = torch.randn(a_shape, dtype=dtype, device=device), torch.randn(b_shape, dtype=dtype, device=device)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    flops = 2.0 * a.shape[-2] * a.shape[-1] * b.shape[-1] * (a.shape[0] if a.dim() == 3 else 1)
    if bias and a.dim() == 2:
        c = torch.randn(b.shape[-1], dtype=dtype, device=device)
        run = lambda: torch.addmm(c, a, b)  # noqa: E731
    else:
        run = lambda: torch.matmul(a, b)  # noqa: E731
    run()
    sync()
    rates = []
    for _ in range(repeats):
        n, t0 = 0, time.perf_counter()
        while True:
            run()
            n += 1
            sync()
            elapsed = time.perf_counter() - t0
            if elapsed >= min_seconds:
                break
        rates.append(flops * n / elapsed / 1e9)
    return statistics.median(rates)
