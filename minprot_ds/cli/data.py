"""`minprot data prepare | inspect`: corpus preparation and inspection (task datasets: cli/tasks.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from minprot_ds.cli.common import console

PERCENTS = (0, 5, 25, 50, 75, 95, 100)


def prepare(
    inputs: Annotated[
        list[Path],
        typer.Argument(help="FASTA files, plain or gzip-compressed (e.g. uniref50.fasta.gz), read as a stream."),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="Corpus folder to create (new or empty, or a corpus to update with --overwrite)."
        ),
    ],
    min_len: Annotated[
        int, typer.Option(help="Drop sequences shorter than this many residues (counted as too_short).")
    ] = 20,
    max_len: Annotated[
        int, typer.Option(help="Drop sequences longer than this many residues (counted as too_long).")
    ] = 512,
    valid_fraction: Annotated[
        float, typer.Option(help="Fraction of sequences for the valid split, chosen by a seeded hash of the sequence.")
    ] = 0.005,
    shard_rows: Annotated[Optional[int], typer.Option(help="Rows per shard (instead of --shard-bytes).")] = None,
    shard_bytes: Annotated[
        Optional[int], typer.Option(help="Approximate bytes per shard (64 MiB unless --shard-rows is given).")
    ] = None,
    workers: Annotated[
        int, typer.Option(help="Processes for parsing, encoding and writing; the output is identical for any value.")
    ] = 1,
    seed: Annotated[int, typer.Option(help="Seed of the train/valid split hash.")] = 0,
    dedup: Annotated[
        bool,
        typer.Option(
            "--dedup/--no-dedup",
            help="Keep only the first of identical sequences (8 bytes of memory per distinct sequence).",
        ),
    ] = True,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="Fail on the first record that would be dropped (length or letters), naming file, record and line.",
        ),
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace a corpus at --out prepared from other inputs or options.")
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar over input bytes (only on a terminal).")] = True,
) -> None:
    """Turn FASTA(.gz) files into Arrow shards plus manifest.json, atomically; a rerun with the same inputs is a
    no-op."""
    from data_prep.corpus import prepare_corpus

    manifest = prepare_corpus(
        inputs,
        out,
        min_len=min_len,
        max_len=max_len,
        valid_fraction=valid_fraction,
        shard_rows=shard_rows,
        shard_bytes=shard_bytes,
        workers=workers,
        seed=seed,
        dedup=dedup,
        strict=strict,
        overwrite=overwrite,
        progress=progress and console.is_terminal,
        log=lambda message: console.print(message, highlight=False, soft_wrap=True),
    )
    _print_summary(out, manifest)


def inspect(
    folder: Annotated[Path, typer.Argument(help="A corpus folder made by `minprot data prepare`.")],
    verify: Annotated[
        bool, typer.Option(help="Also check every shard's size and sha256 against the manifest.")
    ] = False,
) -> None:
    """Summarise a prepared corpus (rows, residues, length percentiles, drops); --verify checks checksums."""
    from data_prep.corpus import verify_corpus
    from minprot_ds.data.manifest import load_manifest

    manifest = verify_corpus(folder) if verify else load_manifest(folder)
    _print_summary(folder, manifest)
    if verify:
        shards = sum(len(s.shards) for s in manifest.splits.values())
        console.print(
            f"[green]verified[/] {shards} shards: sizes and sha256 match the manifest.", highlight=False, soft_wrap=True
        )


def _print_summary(folder: Path, manifest) -> None:
    from data_prep.corpus import length_percentiles

    table = Table(title=f"{folder}  (minprot {manifest.minprot_version}, {manifest.created})")
    table.add_column("split")
    table.add_column("rows", justify="right")
    table.add_column("residues", justify="right")
    table.add_column("shards", justify="right")
    for p in PERCENTS:
        table.add_column(f"p{p}", justify="right")
    for name, split in manifest.splits.items():
        pct = length_percentiles(split.length_histogram, PERCENTS)
        table.add_row(
            name,
            f"{split.rows:,}",
            f"{split.residues:,}",
            str(len(split.shards)),
            *(str(pct[p]) if p in pct else "-" for p in PERCENTS),
        )
    console.print(table)
    drops = Table(title="dropped records")
    drops.add_column("reason")
    drops.add_column("records", justify="right")
    for reason, count in manifest.drops.items():
        drops.add_row(reason, f"{count:,}")
    console.print(drops)


COMMANDS = [("data prepare", prepare), ("data inspect", inspect)]
