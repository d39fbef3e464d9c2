"""Rank-0 progress (rich): `_Bar`, what every job's progress is built on, and the distillation's steps
(`TrainProgress`). A predict/embed run's proteins and residues are `minprot_ds.inference.progress`.

On a terminal it is a live bar. Where stderr is not a terminal (a Slurm log, nohup, CI), a bar would print
once, at the end, cut to 80 columns; there the same progress is whole plain lines instead, one every
`log_every` steps (step/total, loss, speed, elapsed, ETA), so that an operator tailing the log sees the run."""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from datetime import timedelta

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
        self.plain = enabled and not self.console.is_terminal  # whole lines instead of a live bar
        self.label = label
        self.total = total
        self._started = time.monotonic()
        self._start_count = completed
        self._progress = Progress(
            TextColumn(f"[bold]{label}"),
            BarColumn(),
            *columns,
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=self.console,
            disable=not enabled or self.plain,
            transient=False,
        )
        self._task = self._progress.add_task(label, total=total, completed=completed, info="", **fields)

    def __enter__(self):
        if self.enabled and not self.plain:
            self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled and not self.plain:
            self._progress.stop()

    def line(self, done: int, info: str) -> None:
        """One whole plain line: `label done/total  info  elapsed H:MM:SS  eta H:MM:SS` (the ETA from the pace
        since this process started)."""
        elapsed = time.monotonic() - self._started
        pace = elapsed / max(done - self._start_count, 1)
        eta = pace * max(self.total - done, 0) if done > self._start_count else float("nan")
        print(
            f"{self.label} {done}/{self.total}  {info}  elapsed {_clock(elapsed)}  eta {_clock(eta)}",
            file=sys.stderr,
            flush=True,
        )

    def note(self, text: str) -> None:
        """A line beside the progress (a checkpoint, an evaluation, a signal): above the bar, or plain."""
        if not self.enabled:
            return
        if self.plain:
            print(text, file=sys.stderr, flush=True)
        else:
            self.console.print(text, soft_wrap=True, highlight=False)  # paths in notes stay copyable


def quiet_libraries() -> None:
    """Silence, at their source, library messages that say nothing to the user of a job. Called where every job
    starts (options.launch for a launch script's ranks, cli.build_app for every `minprot` command), before the
    libraries load; cheap (it imports no torch), and calling it again changes nothing.

    - DeepSpeed's calls of torch's deprecated `all_gather_into_tensor` (a FutureWarning per rank);
    - DeepSpeed's "Setting accelerator to CPU" at import (logged to stdout, ahead of a command's table or JSON):
      where no GPU is usable the jobs pick the CPU themselves and say so;
    - where stderr is not a terminal (a log file), the per-load "Loading weights" / "Writing model shards" bars
      of transformers, the Hugging Face hub's download bars and the `datasets` library's ("Flattening the
      indices", "Map", "Saving the dataset"): in a file they are junk lines, printed at the end.
    """
    warnings.filterwarnings(
        "ignore", message=r"`torch\.distributed\.all_gather_into_tensor` is deprecated", category=FutureWarning
    )
    deepspeed_log = logging.getLogger("DeepSpeed")  # DeepSpeed's own logger (deepspeed.utils.logging), made early
    if _deepspeed_cpu_fallback not in deepspeed_log.filters:
        deepspeed_log.addFilter(_deepspeed_cpu_fallback)
    if not sys.stderr.isatty():
        from huggingface_hub.utils import disable_progress_bars  # third-party, light; transformers reads it

        disable_progress_bars()
        hf_logging = sys.modules.get("transformers.utils.logging")
        if hf_logging is not None:  # transformers read the hub's setting when it was imported: tell it too
            hf_logging.disable_progress_bar()
        # datasets (1.4 s to import) reads its switch from the environment when imported; a user's value stays
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
        datasets_tqdm = sys.modules.get("datasets.utils.tqdm")
        if datasets_tqdm is not None and os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] == "1":
            datasets_tqdm.disable_progress_bars()


def _deepspeed_cpu_fallback(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Setting accelerator to CPU.")


def _clock(seconds: float) -> str:
    return "?" if seconds != seconds else str(timedelta(seconds=round(seconds)))


class TrainProgress(_Bar):
    """The distillation's steps; plain lines every `log_every` steps (and at the last) where not a terminal."""

    def __init__(self, total: int, start: int = 0, enabled: bool = True, log_every: int = 10):
        super().__init__("distill", [MofNCompleteColumn()], total=total, completed=start, enabled=enabled)
        self.log_every = log_every

    def update(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        info = (
            f"loss {metrics['train/loss']:.4f}  {metrics['perf/residues_per_s']:,.0f} res/s  "
            f"{metrics['perf/tflops_per_device']:.3g} TFLOP/s"
        )
        if self.plain:
            if step % self.log_every == 0 or step == self.total:
                self.line(step, info)
        else:
            self._progress.update(self._task, completed=step, info=info)
