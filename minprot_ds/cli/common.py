"""What every CLI command shares: a rich console, and UserError turned into a message and exit 1."""
from __future__ import annotations

import sys

import click
import typer
from rich.console import Console

from minprot_ds.errors import UserError

console = Console(stderr=True)


def run_cli(app: typer.Typer, args: list[str] | None = None) -> None:
    """Run a typer app (on `args`, default sys.argv); a UserError prints as one red line on stderr and
    exits with status 1."""
    try:
        code = app(args=args, standalone_mode=False)
    except click.ClickException as err:  # usage errors: click's own message and exit status 2
        err.show()
        sys.exit(err.exit_code)
    except UserError as err:
        console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except typer.Exit as exit_:
        sys.exit(exit_.exit_code)
    except typer.Abort:
        console.print("aborted")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
