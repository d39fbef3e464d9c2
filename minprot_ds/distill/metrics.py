"""Per-step training metrics: losses, optimizer state, throughput, TFLOP/s and MFU, memory."""

from __future__ import annotations

import math
import resource
import sys
import time

import torch

from minprot_ds.distill.flops import mfu, peak_tflops
from minprot_ds.distributed import world_size


def peak_memory_gb() -> float:
    """Peak accelerator memory allocated on this device, or this process's peak RSS on CPU."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (2**30 if sys.platform == "darwin" else 2**20)


def device_name() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


class StepMeter:
    """Turns StepStats into the metrics the run logs; times steps wall-clock (data wait included)."""

    def __init__(self, engine, precision: str, peak: float | None = None):
        self.engine = engine
        self.world = world_size()
        self.peak = peak if peak is not None else peak_tflops(device_name(), precision)
        self.skipped_total = 0
        self.consecutive_skips = 0
        self._last = time.perf_counter()

    def update(self, stats) -> dict[str, float]:
        now = time.perf_counter()
        elapsed, self._last = now - self._last, now
        if stats.skipped:
            self.skipped_total += 1
            self.consecutive_skips += 1
        else:
            self.consecutive_skips = 0
        ds = self.engine.student
        nan = float("nan")
        tflops = stats.flops / elapsed / self.world / 1e12
        real_tokens = stats.residues + 2 * stats.sequences
        metrics = {
            "train/loss": nan if stats.skipped else stats.loss,
            "train/mlm": nan if stats.skipped else stats.mlm,
            "train/kd": nan if stats.skipped else stats.kd,
            "train/cos": nan if stats.skipped else stats.cos,
            "train/lr": ds.get_lr()[0],
            "train/grad_norm": _finite_or_nan(ds.get_global_grad_norm()),
            "train/loss_scale": float(getattr(ds.optimizer, "cur_scale", 1.0) or 1.0),
            "train/skipped_steps": self.skipped_total,
            "perf/step_time_s": elapsed,
            "perf/sequences_per_s": stats.sequences / elapsed,
            "perf/residues_per_s": stats.residues / elapsed,
            "perf/tokens_per_s": stats.tokens / elapsed,
            "perf/padding_fraction": 1.0 - real_tokens / max(stats.tokens, 1),
            "perf/tflops_per_device": tflops,
            "perf/peak_memory_gb": peak_memory_gb(),
        }
        if self.peak:
            metrics["perf/mfu"] = mfu(tflops * 1e12, self.peak)
        return metrics


def _finite_or_nan(value) -> float:
    if value is None:
        return float("nan")
    value = float(value)
    return value if math.isfinite(value) else float("nan")
