"""The progress bar of a predict/embed run: proteins done of total, proteins/s, residues/s, ETA (rich)."""

from __future__ import annotations

import time

from rich.progress import TextColumn

from minprot_ds.progress import _Bar


class InferenceProgress(_Bar):
    """Advances by residues (what the time goes with), shows proteins; the ETA is on residues."""

    def __init__(self, proteins: int, residues: int, enabled: bool = True, label: str = "predict"):
        super().__init__(
            label, [TextColumn("{task.fields[prot]}")], total=max(residues, 1), enabled=enabled, prot=f"0/{proteins}"
        )
        self.proteins, self.done_proteins, self.done_residues = proteins, 0, 0
        self._start = time.perf_counter()

    def update(self, proteins: int, residues: int) -> None:
        self.done_proteins += proteins
        self.done_residues += residues
        if not self.enabled:
            return
        seconds = max(time.perf_counter() - self._start, 1e-9)
        info = f"{self.done_proteins / seconds:,.1f} proteins/s  {self.done_residues / seconds:,.0f} residues/s"
        if self.plain:  # a chunk at a time, as whole lines (not a terminal: a log file)
            self.line(self.done_residues, f"residues, {self.done_proteins}/{self.proteins} proteins  {info}")
            return
        self._progress.update(
            self._task, completed=self.done_residues, prot=f"{self.done_proteins}/{self.proteins} proteins", info=info
        )
