"""Helpers every benchmark script shares: a median-of-repeats timer, a rich table, JSON with machine info.

Scripts in benchmarks/ import it as `from common import ...` (Python puts the script's folder on
sys.path when it runs `python benchmarks/<name>.py`).
"""

from __future__ import annotations

import dataclasses
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

# UniRef50-like lengths (4,173 real lengths within 20-512 aa) for synthetic corpora, when ../shared is there.
SHARED_LENGTHS = (
    Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lengths" / "uniref50_like_lengths.txt"
)


@dataclasses.dataclass
class Timing:
    """Seconds of each timed repeat: wall clock and CPU (this process plus reaped child processes).

    On a shared machine CPU seconds are the steadier figure: another user's load stretches wall time
    but not the CPU time this process spends.
    """

    wall: list[float]
    cpu: list[float]

    @property
    def wall_median(self) -> float:
        return statistics.median(self.wall)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu)

    def as_dict(self) -> dict[str, Any]:
        return {
            "wall_s": self.wall,
            "cpu_s": self.cpu,
            "wall_median_s": self.wall_median,
            "cpu_median_s": self.cpu_median,
        }


def _cpu_seconds() -> float:
    # Children count once they are reaped, so a process pool shut down inside `fn` is included.
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def time_repeats(
    fn: Callable[[], Any], repeats: int, warmup: int = 1, setup: Callable[[], Any] | None = None
) -> Timing:
    """Call `fn` warmup + repeats times and time the last `repeats` calls; `setup` runs untimed before each."""
    wall, cpu = [], []
    for i in range(warmup + repeats):
        if setup is not None:
            setup()
        w0, c0 = time.perf_counter(), _cpu_seconds()
        fn()
        w1, c1 = time.perf_counter(), _cpu_seconds()
        if i >= warmup:
            wall.append(w1 - w0)
            cpu.append(c1 - c0)
    return Timing(wall, cpu)


def machine_info() -> dict[str, Any]:
    """What a reader needs to compare figures across machines: the throughput benchmark's hardware facts
    (device, cores, load average, CPU capability, torch) plus host, platform and library versions."""
    import numpy

    from minprot_ds.bench.throughput import hardware_info

    return {
        **hardware_info(),
        "host": platform.node(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "numpy": numpy.__version__,
    }


def make_console() -> Console:
    """A console at least 120 columns wide, so tables stay on one line each in logs and pipes too."""
    probe = Console(soft_wrap=True)  # soft_wrap: paths and commands printed stay on one line
    return Console(width=max(probe.width, 120), soft_wrap=True) if not probe.is_terminal else probe


def print_table(
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    console: Console | None = None,
    text_columns: int = 1,
) -> None:
    """A rich table: the first `text_columns` columns left-aligned, the others (numbers) right-aligned;
    None shows as an em dash."""
    table = Table(title=title)
    for i, name in enumerate(columns):
        text = i < text_columns
        table.add_column(name, justify="left" if text else "right", no_wrap=text)
    for row in rows:
        table.add_row(*("—" if cell is None else str(cell) for cell in row))
    (console or make_console()).print(table)


def write_json(path: str | Path, benchmark: str, payload: dict[str, Any]) -> Path:
    """Write payload with the benchmark name, a UTC timestamp and machine info, atomically."""
    from minprot_ds.bench.report import write_benchmark_json

    return write_benchmark_json(path, benchmark, {"machine": machine_info(), **payload})


def fmt_rate(per_s: float | None) -> str | None:
    """1.23e7 → '12.3 M'; the table's unit is in its column header."""
    if per_s is None:
        return None
    for scale, suffix in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(per_s) >= scale:
            return f"{per_s / scale:.3g}{suffix}"
    return f"{per_s:.3g}"
