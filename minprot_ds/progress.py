"""Rank-0 progress bars (rich): `_Bar`, the bar every job's progress is built on, and the distillation's steps
(`TrainProgress`). A predict/embed run's proteins and residues are `minprot_ds.inference.progress`."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class _Bar:
    """One rich bar on stderr, shown only where `enabled` (rank 0): `label`, the bar, `columns`, elapsed, ETA, info."""

    def __init__(
        self,
        label: str,
        columns: list[ProgressColumn],
        *,
        total: int,
        completed: int = 0,
        enabled: bool = True,
        **fields: str,
    ):
        self.enabled = enabled
        self.console = Console(stderr=True)
        self._progress = Progress(
            TextColumn(f"[bold]{label}"),
            BarColumn(),
            *columns,
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=self.console,
            disable=not enabled,
            transient=False,
        )
        self._task = self._progress.add_task(label, total=total, completed=completed, info="", **fields)

    def __enter__(self):
        if self.enabled:
            self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self._progress.stop()


class TrainProgress(_Bar):
    def __init__(self, total: int, start: int = 0, enabled: bool = True):
        super().__init__("distill", [MofNCompleteColumn()], total=total, completed=start, enabled=enabled)

    def update(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        info = (
            f"loss {metrics['train/loss']:.4f}  {metrics['perf/residues_per_s']:,.0f} res/s  "
            f"{metrics['perf/tflops_per_device']:.3g} TFLOP/s"
        )
        self._progress.update(self._task, completed=step, info=info)

    def note(self, text: str) -> None:
        if self.enabled:
            self.console.print(text, soft_wrap=True)  # paths in notes stay copyable
