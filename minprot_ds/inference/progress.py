"""The progress bar of a predict/embed run: proteins done of total, proteins/s, residues/s, ETA (rich)."""
from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class InferenceProgress:
    """Advances by residues (what the time goes with), shows proteins; the ETA is on residues."""

    def __init__(self, proteins: int, residues: int, enabled: bool = True, label: str = "predict"):
        self.enabled = enabled
        self.proteins, self.done_proteins, self.done_residues = proteins, 0, 0
        self._start = time.perf_counter()
        self._progress = Progress(
            TextColumn(f"[bold]{label}"), BarColumn(), TextColumn("{task.fields[prot]}"), TimeElapsedColumn(),
            TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
            console=Console(stderr=True), disable=not enabled, transient=False,
        )
        self._task = self._progress.add_task(label, total=max(residues, 1), prot=f"0/{proteins}", info="")

    def __enter__(self) -> "InferenceProgress":
        if self.enabled:
            self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self._progress.stop()

    def update(self, proteins: int, residues: int) -> None:
        self.done_proteins += proteins
        self.done_residues += residues
        if not self.enabled:
            return
        seconds = max(time.perf_counter() - self._start, 1e-9)
        info = f"{self.done_proteins / seconds:,.1f} proteins/s  {self.done_residues / seconds:,.0f} residues/s"
        self._progress.update(self._task, completed=self.done_residues, prot=f"{self.done_proteins}/{self.proteins} proteins",
                              info=info)
