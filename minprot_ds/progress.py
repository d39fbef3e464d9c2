"""The rank-0 progress bar of a training run: step, ETA, loss and throughput (rich)."""
from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class TrainProgress:
    def __init__(self, total: int, start: int = 0, enabled: bool = True):
        self.enabled = enabled
        self.console = Console(stderr=True)
        self._progress = Progress(
            TextColumn("[bold]distill"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
            console=self.console, disable=not enabled, transient=False,
        )
        self._task = self._progress.add_task("steps", total=total, completed=start, info="")

    def __enter__(self) -> "TrainProgress":
        if self.enabled:
            self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self._progress.stop()

    def update(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        info = (f"loss {metrics['train/loss']:.4f}  {metrics['perf/residues_per_s']:,.0f} res/s  "
                f"{metrics['perf/tflops_per_device']:.3g} TFLOP/s")
        self._progress.update(self._task, completed=step, info=info)

    def note(self, text: str) -> None:
        if self.enabled:
            self.console.print(text, soft_wrap=True)  # paths in notes stay copyable
