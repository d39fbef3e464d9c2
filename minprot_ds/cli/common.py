"""What every CLI command shares: a rich console, usage errors as typer's usage message and exit 2,
and UserError turned into one line and exit 1 (never a traceback)."""

from __future__ import annotations

import sys

import click
import typer
from rich.console import Console

from minprot_ds.errors import UserError

try:  # typer >= 0.20 vendors click: its usage errors are its own classes, not click's
    from typer._click.exceptions import ClickException as _TyperClickException
except ImportError:  # older typer raises click's own
    _TyperClickException = click.ClickException

USAGE_ERRORS = tuple({click.ClickException, _TyperClickException})


def make_console(**options) -> Console:
    """A console that never wraps what it prints (soft_wrap): commands and paths users copy stay on one
    line, the terminal folds long lines itself. Tables still fit the console's width."""
    return Console(soft_wrap=True, **options)


console = make_console(stderr=True)


def run_cli(app: typer.Typer, args: list[str] | None = None) -> None:
    """Run a typer app (on `args`, default sys.argv). Usage mistakes (unknown command or option, missing
    argument, bad value) print typer's usage message and exit 2; a UserError prints as one red line on
    stderr and exits 1."""
    try:
        code = app(args=args, standalone_mode=False)
    except USAGE_ERRORS as err:
        err.show()
        sys.exit(err.exit_code)
    except UserError as err:
        console.print(f"[bold red]error:[/] {err}", highlight=False)
        sys.exit(1)
    except typer.Exit as exit_:
        sys.exit(exit_.exit_code)
    except typer.Abort:
        console.print("aborted")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
