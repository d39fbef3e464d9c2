"""`minprot data swissprot|reduce|random-subset|...`: downstream task datasets (registered on data_app)."""
from __future__ import annotations

from minprot_ds.cli.data import data_app  # noqa: F401
