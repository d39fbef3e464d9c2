"""What every CLI command shares: a rich console, usage errors as typer's usage message and exit 2,
and UserError turned into one line and exit 1 (never a traceback)."""

from __future__ import annotations

import sys

import click
import typer
from rich.console import Console

from minprot_ds.errors import UserError, os_error_line

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


def _no_flag_placeholders(command) -> None:
    """Flags take no value: no `<bool>` placeholder beside them in --help (typer shows one by default)."""
    # --help itself is made on first use and kept (get_help_option caches it): make it now, to reach it too.
    help_option = command.get_help_option(command.context_class(command)) if hasattr(command, "context_class") else None
    for param in [*getattr(command, "params", []), *([help_option] if help_option is not None else [])]:
        if getattr(param, "is_flag", False):
            param.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        _no_flag_placeholders(sub)


def run_cli(app: typer.Typer, args: list[str] | None = None) -> None:
    """Run a typer app (on `args`, default sys.argv). Usage mistakes (unknown command or option, missing
    argument, bad value) print typer's usage message and exit 2; a UserError prints as one red line on
    stderr and exits 1, as does an OSError (the file and the reason); Ctrl-C says that a rerun resumes."""
    command = typer.main.get_command(app)
    _no_flag_placeholders(command)
    try:
        code = command.main(args=args, prog_name=app.info.name, standalone_mode=False)
    except USAGE_ERRORS as err:
        err.show()
        sys.exit(err.exit_code)
    except UserError as err:
        console.print(f"[bold red]error:[/] {err}", highlight=False)
        sys.exit(1)
    except OSError as err:  # a file the user named could not be read or written: say which, no traceback
        console.print(f"[bold red]error:[/]{os_error_line(err).removeprefix('error:')}", highlight=False)
        sys.exit(1)
    except KeyboardInterrupt:
        console.print("interrupted; rerun the same command to resume (finished work is kept)", highlight=False)
        sys.exit(130)
    except typer.Exit as exit_:
        sys.exit(exit_.exit_code)
    except typer.Abort:
        console.print("aborted")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
