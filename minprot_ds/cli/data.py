"""`minprot data ...`: corpus preparation and inspection (task-set commands register here too)."""
from __future__ import annotations

import typer

data_app = typer.Typer(help="Prepare and inspect corpora and task datasets.", no_args_is_help=True)
