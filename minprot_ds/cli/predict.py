"""`minprot predict | embed | merge`: a fine-tuned model or an encoder over a whole FASTA, resumable.

The same commands run under the deepspeed launcher through `launch/predict.py` (every rank a share)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from minprot_ds.cli.common import console
from minprot_ds.inference.options import EmbedOptions, InferenceOptions, PredictOptions
from minprot_ds.options import typer_command


def _start(opts: InferenceOptions) -> int:
    from data_prep.fasta import check_fasta_start

    check_fasta_start(opts.fasta, "--fasta")  # a wrong file is told at once, before torch is imported (~8 s)
    from minprot_ds.inference.job import start

    return start(opts, echo=console.print)


# The options come from PredictOptions and EmbedOptions (minprot_ds/inference/options.py), as launch/predict.py's do.
predict = typer_command(
    PredictOptions,
    _start,
    PredictOptions.__doc__
    + """

    A refused record keeps its row (empty probability, its reason in the `status` column) and is listed in
    OUT.failures.tsv; counts and provenance go to OUT.json (e.g. dna.tsv.json). Rerunning the same command
    after a crash continues from OUT.parts/; an existing OUT that is not this command's needs --overwrite.""",
    "predict",
    launcher=True,
)
embed = typer_command(EmbedOptions, _start, EmbedOptions.__doc__, "embed", launcher=True)


def merge(
    parts: list[Path] = typer.Argument(..., help="OUT.parts folders of the shards (copied from each machine)"),
    out: Path = typer.Option(..., help="the output file (its suffix picks the format, as for predict/embed)"),
    threshold: Optional[float] = typer.Option(
        None, min=0.0, max=1.0, help="predict: the positive label's threshold (default: the run's)"
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing --out that is not this merge's"),
) -> None:
    """Assemble the output of a `--shard i/N` run from its shards' parts folders."""
    from minprot_ds.inference.job import merge as merge_parts

    merge_parts(parts, out, threshold=threshold, echo=console.print, overwrite=overwrite)


COMMANDS = [("predict", predict), ("embed", embed), ("merge", merge)]
