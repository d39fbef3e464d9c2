"""`minprot predict | embed | merge`: a fine-tuned model or an encoder over a whole FASTA, resumable.

The same commands run under the deepspeed launcher through `launch/predict.py` (every rank a share)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from minprot_ds.cli.common import console
from minprot_ds.inference.job import DEFAULT_CHUNK, DEFAULT_CHUNK_PER_RESIDUE, DEFAULT_MAX_TOKENS

_MAX_TOKENS = typer.Option(DEFAULT_MAX_TOKENS, help="padded tokens per batch (rows x (longest + 2)); results do not depend on it")
_WINDOW = typer.Option(None, help="residues per window for long proteins (default: the fine-tuned model's, else 512)")
_STRIDE = typer.Option(None, help="residues between window starts (default: the model's, else 256)")
_LONG = typer.Option("window", help="proteins longer than --window: window (overlapping windows, stitched) | "
                     "truncate (first --window residues; counted) | skip (listed as failures)")
_PRECISION = typer.Option("auto", help="auto (bf16 on GPUs that have it, fp16 on older GPUs, fp32 on CPU) | fp32 | fp16 | bf16")
_DEDUPE = typer.Option(False, help="rename repeated ids id_2, id_3, ... instead of refusing the file")
_CHUNK = typer.Option(None, help=f"input records per resumable chunk of OUT.parts/ (default {DEFAULT_CHUNK}; "
                      f"{DEFAULT_CHUNK_PER_RESIDUE} for per-residue outputs)")
_SHARD = typer.Option(None, help="i/N: compute only this machine's share; then `minprot merge` the parts folders")
_MLFLOW = typer.Option(False, help="log the run to MLflow (tagged with the fine-tune run that made the model)")
_URI = typer.Option(None, help="MLflow store (default: SQLite beside --out)")
_PROGRESS = typer.Option(True, help="show the progress bar")


def predict(
    model: Path = typer.Option(..., help="a fine-tune's model/ folder (it carries its task, head and threshold)"),
    fasta: Path = typer.Option(..., help="input FASTA, plain or .gz (read as a stream)"),
    out: Path = typer.Option(..., help="dna-binding/membrane: .tsv or .parquet; q3: .parquet, .ss3 or .tsv (per residue)"),
    threshold: Optional[float] = typer.Option(None, help="probability for the positive label (default: the model's)"),
    max_tokens: int = _MAX_TOKENS, window: Optional[int] = _WINDOW, stride: Optional[int] = _STRIDE, long: str = _LONG,
    precision: str = _PRECISION, dedupe_ids: bool = _DEDUPE, chunk_records: Optional[int] = _CHUNK, shard: Optional[str] = _SHARD,
    mlflow: bool = _MLFLOW, tracking_uri: Optional[str] = _URI, progress: bool = _PROGRESS,
) -> None:
    """Score every protein of a FASTA with a fine-tuned model: one row per record, in input order.

    Refused records go to OUT.failures.tsv; counts and provenance to OUT's .json. Rerunning the same
    command after a crash continues from OUT.parts/.
    """
    from minprot_ds.inference.job import JobConfig, run

    run(JobConfig("predict", model, fasta, out, max_tokens=max_tokens, window=window, stride=stride, long=long,
                  precision=precision, threshold=threshold, dedupe_ids=dedupe_ids, chunk_records=chunk_records,
                  shard=shard, mlflow=mlflow, tracking_uri=tracking_uri, progress=progress), echo=console.print)


def embed(
    model: Path = typer.Option(..., help="a Hugging Face BERT folder: teacher, exported student or a fine-tune's model/"),
    fasta: Path = typer.Option(..., help="input FASTA, plain or .gz (read as a stream)"),
    out: Path = typer.Option(..., help=".h5 (bio_embeddings layout: a dataset per protein, attribute original_id), .npz or .parquet"),
    pool: str = typer.Option("mean", help="per-protein vector: mean over residues (specials and padding excluded) | cls"),
    per_residue: bool = typer.Option(False, "--per-residue", help="store L x H per protein instead of one vector"),
    layers: str = typer.Option("-1", help="comma-separated hidden states (0 = embeddings, -1 = last), concatenated"),
    half: bool = typer.Option(False, "--half", help="store fp16"),
    max_tokens: int = _MAX_TOKENS, window: Optional[int] = _WINDOW, stride: Optional[int] = _STRIDE, long: str = _LONG,
    precision: str = _PRECISION, dedupe_ids: bool = _DEDUPE, chunk_records: Optional[int] = _CHUNK, shard: Optional[str] = _SHARD,
    mlflow: bool = _MLFLOW, tracking_uri: Optional[str] = _URI, progress: bool = _PROGRESS,
) -> None:
    """Embed every protein of a FASTA with an encoder's hidden states, in input order."""
    from minprot_ds.errors import UserError
    from minprot_ds.inference.job import JobConfig, run

    try:
        layer_list = tuple(int(x) for x in layers.split(","))
    except ValueError:
        raise UserError(f"--layers {layers!r} is not a comma-separated list of integers (e.g. -1 or -1,-2)") from None
    run(JobConfig("embed", model, fasta, out, max_tokens=max_tokens, window=window, stride=stride, long=long,
                  precision=precision, pool=pool, layers=layer_list, per_residue=per_residue, half=half,
                  dedupe_ids=dedupe_ids, chunk_records=chunk_records, shard=shard, mlflow=mlflow,
                  tracking_uri=tracking_uri, progress=progress), echo=console.print)


def merge(
    parts: list[Path] = typer.Argument(..., help="OUT.parts folders of the shards (copied from each machine)"),
    out: Path = typer.Option(..., help="the output file (its suffix picks the format, as for predict/embed)"),
    threshold: Optional[float] = typer.Option(None, help="predict: the positive label's threshold (default: the run's)"),
) -> None:
    """Assemble the output of a `--shard i/N` run from its shards' parts folders."""
    from minprot_ds.inference.job import merge as merge_parts

    merge_parts(parts, out, threshold=threshold, echo=console.print)


def register(app: typer.Typer) -> None:
    app.command("predict")(predict)
    app.command("embed")(embed)
    app.command("merge")(merge)
