"""The `minprot` command: one typer app with a sub-app per area (data, ...)."""
from __future__ import annotations

import typer

from minprot_ds.cli.common import run_cli
from minprot_ds.cli import tasks as _tasks  # noqa: F401  (registers task-dataset commands on data_app)
from minprot_ds.cli import bench, finetune, jobs, predict
from minprot_ds.cli.data import data_app

app = typer.Typer(
    name="minprot",
    help="Distil ProtBert into a smaller student on DeepSpeed, and measure it downstream.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
app.add_typer(data_app, name="data")
app.add_typer(bench.bench_app, name="bench")
jobs.register(app)
finetune.register(app)
predict.register(app)


def main() -> None:
    run_cli(app)
