"""The `minprot` command: one typer app. Every cli module lists its commands the same way, as
`COMMANDS = [("name", function), ...]`, a name of two words ("data prepare") placing a command in a group.

Commands import their job inside their function, when they run: `minprot --help` and usage errors then load
neither torch nor the jobs (scripts/check_layers.py allows such imports here, and elsewhere only with a reason)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import typer

from minprot_ds import __version__
from minprot_ds.cli import bench, data, finetune, jobs, predict, tasks
from minprot_ds.cli.common import run_cli
from minprot_ds.progress import quiet_libraries

GROUPS = {
    "data": "Prepare and inspect corpora and task datasets.",
    "bench": "Hardware throughput benchmarks and the memory plan of the distillation.",
}
MODULES = (data, tasks, bench, jobs, finetune, predict)


def _show_version(value: bool) -> None:
    if value:
        print(f"minprot {__version__}")
        raise typer.Exit(0)


def _main_options(
    version: bool = typer.Option(
        False, "--version", help="Print the version and exit.", is_eager=True, callback=_show_version
    ),
) -> None:
    """Distil ProtBert into a smaller student on DeepSpeed, and measure it downstream."""


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="minprot",
        help="Distil ProtBert into a smaller student on DeepSpeed, and measure it downstream.",
        no_args_is_help=True,
        rich_markup_mode="rich",
        pretty_exceptions_enable=False,
    )
    app.callback()(_main_options)
    groups = {name: typer.Typer(help=help, no_args_is_help=True) for name, help in GROUPS.items()}
    for name, group in groups.items():
        app.add_typer(group, name=name)
    for module in MODULES:
        for name, function in module.COMMANDS:
            *group, command = name.split()
            (groups[group[0]] if group else app).command(command)(_quiet(function))
    return app


def _quiet(function: Callable[..., Any]) -> Callable[..., Any]:
    """The command, with the libraries' noise silenced at its source first (progress.quiet_libraries): once its
    options are parsed, so --help and usage errors stay instant."""

    @functools.wraps(function)  # typer reads the options from the signature wraps carries over
    def command(*args: Any, **kwargs: Any) -> Any:
        quiet_libraries()
        return function(*args, **kwargs)

    return command


app = build_app()


def main() -> None:
    run_cli(app)
