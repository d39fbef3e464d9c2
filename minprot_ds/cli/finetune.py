"""`minprot finetune` (one downstream job, teacher or student), `minprot report` (tables from MLflow) and
`minprot compare` (teacher vs student on the same test rows)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from minprot_ds.cli.common import console
from minprot_ds.finetune.options import CompareOptions, FinetuneConfig
from minprot_ds.options import typer_command


def _finetune(cfg: FinetuneConfig) -> int:
    from minprot_ds.finetune.train import start

    return start(cfg, echo=console.print)


# The options come from FinetuneConfig (minprot_ds/finetune/options.py), as launch/finetune.py's do.
finetune = typer_command(
    FinetuneConfig,
    _finetune,
    "Fine-tune a ProtBert-format model on one downstream task and record the run in MLflow.",
    "finetune",
    launcher=True,
)


def report(
    out: Path = typer.Option(..., help="folder for report.md, report.json and the PNG charts"),
    tracking_uri: Optional[list[str]] = typer.Option(
        None,
        help="MLflow store(s): a URI, a fine-tune --out folder or an mlflow.db "
        "(repeatable; default $MLFLOW_TRACKING_URI)",
    ),
    experiment: Optional[list[str]] = typer.Option(None, help="experiment(s) to read (repeatable; default: all)"),
) -> None:
    """Tables A–D (metrics with CIs on the full and leak-free test rows, runtime and saving, dataset variants,
    organisms) from finished fine-tune runs; runs are averaged only when every option that changes the numbers
    and what their CIs resample (proteins or homology components) are equal (a `setting` column names what
    differs)."""
    from minprot_ds.finetune.report import build_report

    path = build_report(tracking_uri, out, experiment)
    console.print(f"report written to {path}")


def _compare(opts: CompareOptions) -> int:
    from minprot_ds.finetune.compare import run_compare

    run_compare(
        opts.teacher,
        opts.student,
        margin=opts.margin,
        resamples=opts.bootstrap,
        seed=opts.seed,
        json_out=opts.json,
        echo=print,
    )
    return 0


compare = typer_command(CompareOptions, _compare, CompareOptions.__doc__, "compare")

COMMANDS = [("finetune", finetune), ("report", report), ("compare", compare)]
