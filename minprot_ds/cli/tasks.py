"""`minprot data swissprot|task|split|reduce|random-subset|conflicts|overlap`: downstream task datasets."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from minprot_ds.cli.common import console
from minprot_ds.options import option, typer_command
from minprot_ds.outputs import check_out

_FORMATS = "auto|netsurfp-csv|flip|deeploc-fasta|deeploc-csv|dna-fasta|labelled-csv"


def _print_summary(title: str, data, level: str, dropped: dict[str, dict[str, int]], long: int | None = None) -> None:
    from minprot_ds.data.task_store import split_table

    rows = split_table(data, level)
    table = Table(title=title)
    for key in rows[0]:
        table.add_column(key, justify="left" if key == "split" else "right")
    if level == "sequence":
        table.add_column("% positive", justify="right")
    for row in rows:
        cells = [str(v) for v in row.values()]
        if level == "sequence":
            cells.append(f"{100 * row['positive'] / max(row['rows'], 1):.1f}")
        table.add_row(*cells)
    console.print(table)
    for kind, counts in dropped.items():
        for reason, n in sorted(counts.items(), key=lambda kv: -kv[1]):
            console.print(f"  {kind}: {n} {reason}", highlight=False)
    if long:
        console.print(
            f"  note: {long} sequences longer than 512 residues kept (the fine-tune job scores them by "
            "overlapping windows; --long truncate cuts them)"
        )


def _save(data, out: Path, meta) -> None:
    import datasets

    from minprot_ds.data.task_store import save_task

    datasets.disable_progress_bars()  # the summary table above says what was written
    save_task(data, out, meta)
    console.print(f"wrote {out}")


def swissprot(
    files: list[Path] = typer.Argument(..., help="UniProt flat file(s): uniprot_sprot.dat or .dat.gz"),
    organism: str = typer.Option(..., help="human | c-elegans | bacteria-archaea | an NCBI taxid (e.g. 10090)"),
    out: Path = typer.Option(..., help="task folder to write (datasets save_to_disk + minprot_task.json)"),
    seed: int = typer.Option(0, help="seed of the component-wise, label-stratified 85/7.5/7.5 train/valid/test split"),
    identity: float = typer.Option(
        0.3,
        help="identity that links two proteins; whole connected components go to one split, so no test protein "
        "has a homolog in train (as `minprot data split`)",
    ),
    coverage: float = typer.Option(0.8, help="fraction of the shorter protein a linking alignment must cover"),
    sensitivity: float = typer.Option(7.5, help="mmseqs -s of the all-vs-all search and of the leakage check"),
    threads: Optional[int] = typer.Option(None, help="mmseqs threads (default: all cores)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing, non-empty --out"),
) -> None:
    """DNA-binding task from reviewed, complete (no Fragment flag) Swiss-Prot entries of 20-512 residues: label 1 iff
    keyword DNA-binding (KW-0238); split by connected components of an MMseqs2 search, checked for leakage (split.json,
    leakage.json)."""
    check_out(out, folder=True, overwrite=overwrite)
    from data_prep.tasks.split import write_reports
    from data_prep.tasks.swissprot import build_swissprot
    from minprot_ds.data.task_store import TaskMeta

    data, excluded, report, leakage = build_swissprot(
        files, organism, seed, identity=identity, coverage=coverage, sensitivity=sensitivity, threads=threads
    )
    _print_summary(f"Swiss-Prot DNA-binding, {organism}", data, "sequence", {"excluded": excluded})
    _print_split(report, leakage)
    meta = TaskMeta(
        "dna-binding",
        "sequence",
        f"swissprot-{organism}",
        "full",
        [str(f) for f in files],
        excluded=excluded,
        options={
            "organism": organism,
            "seed": seed,
            "split": {"identity": identity, "coverage": coverage, "sensitivity": sensitivity},
        },
    )
    _save(data, out, meta)
    write_reports(out, report, leakage)


def task(
    files: list[Path] = typer.Argument(
        ..., help="data file(s) of one format, a folder of them (e.g. PDB14189_P/_N), or a FLIP split folder"
    ),
    out: Path = typer.Option(..., help="task folder to write"),
    fmt: str = typer.Option("auto", "--format", help=_FORMATS),
    task_name: Optional[str] = typer.Option(
        None, "--task", help="dna-binding | membrane | q3 (default: what the format carries)"
    ),
    name: Optional[str] = typer.Option(
        None,
        help="dataset name for reports (default, as `data split`: the inputs' names joined with '+', a file's "
        "without its extension)",
    ),
    strict: bool = typer.Option(False, help="fail on the first malformed record instead of skipping and counting"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing, non-empty --out"),
) -> None:
    """Convert benchmark files into a task folder the fine-tune jobs read.

    Formats: NetSurfP-2.0 CSV (CASP12/CB513/TS115, Q3), FLIP secondary-structure folder, DeepLoc FASTA and CSV
    (membrane M=1 / soluble S=0; U excluded), DNA-binding FASTA (label from `|1`/`|2` headers, 2 = negative, or from
    `_P`/`_N`, `-posi`/`-nega` file names), and any CSV/TSV with sequence|seq and label|binding columns (optional
    id|identifier), which is how Deep-WET files come in.

    The DNA-binding benchmark PDB14189 -> PDB2272: put PDB2272_P.txt and PDB2272_N.txt (from
    github.com/diaodiao1/DNA-binding-proteins, data/) in one folder, then `minprot data task
    ../shared/data/dna_binding/pdb14189 --out tasks/pdb14189` and `minprot data task PDB2272_DIR --out tasks/pdb2272`
    (or pass those folders to `minprot finetune`).
    """
    check_out(out, folder=True, overwrite=overwrite)
    from data_prep.tasks.formats import FORMATS, read_inputs
    from data_prep.tasks.split import pooled_name
    from minprot_ds.data.task_store import TaskMeta

    report = read_inputs(files, fmt, task=task_name, strict=strict)
    title = name or pooled_name(files)
    _print_summary(
        f"{title} ({report.format})",
        report.data,
        report.level,
        {"skipped": report.skipped, "excluded": report.excluded},
        report.long,
    )
    for reason, where in report.first_skipped.items():
        console.print(f"  first {reason}: {where}", highlight=False)
    spec = FORMATS[report.format]
    task_of = task_name or (spec.tasks[0] if len(spec.tasks) == 1 else None)
    meta = TaskMeta(
        task_of,
        report.level,
        title,
        "full",
        report.sources,
        report.skipped,
        report.excluded,
        {"format": report.format, "strict": strict},
    )
    _save(report.data, out, meta)


@dataclasses.dataclass
class SplitOptions:
    """Pool labelled set(s) and split them into train / valid / test with no homolog across the splits: connected
    components of an all-vs-all MMseqs2 search go whole to one split, drawn per label; the leakage measure then
    checks test -> train and valid -> train (split.json, leakage.json beside the task folder)."""

    inputs: list[Path] = option(
        help="labelled set(s), each in any format `data task` reads or a task folder; pooled, identical sequences "
        "kept once, those whose copies disagree on the label dropped (label_conflicts.tsv)",
        positional=True,
        metavar="INPUT",
    )
    task: str = option(help="dna-binding | membrane | q3")
    out: Path = option(help="task folder to write (train, valid, test; what `minprot finetune --train/--test` reads)")
    valid: float = option(0.075, "fraction of the proteins for the valid split, drawn per label", min=0.0, max=0.5)
    test: float = option(0.075, "fraction of the proteins for the test split, drawn per label", min=0.0, max=0.5)
    identity: float = option(
        0.3, "identity (MMseqs2 fident) at which two proteins are linked and kept in one split", min=0.0, max=1.0
    )
    coverage: float = option(0.8, "fraction of the shorter protein a linking alignment must cover", min=0.0, max=1.0)
    sensitivity: float = option(
        7.5, "mmseqs -s of the all-vs-all search and of the leakage check (7.5: most sensitive)", min=1.0, max=7.5
    )
    min_length: Optional[int] = option(None, "drop proteins shorter than this (counted)", min=1)
    max_length: Optional[int] = option(None, "drop proteins longer than this (counted), e.g. 512", min=1)
    seed: int = option(0, "seed of the order in which components are drawn")
    name: Optional[str] = option(
        None, "dataset name for reports (default: the inputs' names joined with '+', a file's without its extension)"
    )
    threads: Optional[int] = option(None, "mmseqs threads (default: all cores)", min=1)
    strict: bool = option(False, "fail on the first malformed record instead of skipping and counting")
    overwrite: bool = option(False, "replace an existing, non-empty --out")


def _split(opts: SplitOptions) -> None:
    check_out(opts.out, folder=True, overwrite=opts.overwrite)
    from data_prep.tasks.formats import TASKS
    from data_prep.tasks.split import (
        SplitSettings,
        length_filter,
        pool,
        pooled_name,
        read_labelled,
        removals,
        split_and_check,
        write_conflicts,
        write_reports,
    )
    from minprot_ds.data.task_store import TaskMeta

    read = read_labelled(opts.inputs, opts.task, strict=opts.strict)
    level = TASKS[opts.task]
    pooled = pool(read.parts, level)
    excluded = dict(read.excluded)
    if pooled.duplicates:
        excluded["duplicate sequence with the same label (kept once)"] = pooled.duplicates
    if pooled.conflicts:
        excluded["identical sequences with different labels (label_conflicts.tsv)"] = sum(map(len, pooled.conflicts))
    data, outside = length_filter(pooled.data, opts.min_length, opts.max_length)
    if outside:
        excluded[f"outside {opts.min_length or 1}-{opts.max_length or 'any'} residues"] = outside
    fractions = {"train": 1.0 - opts.valid - opts.test, "valid": opts.valid, "test": opts.test}
    how = SplitSettings(
        fractions,
        identity=opts.identity,
        coverage=opts.coverage,
        sensitivity=opts.sensitivity,
        seed=opts.seed,
        threads=opts.threads,
    )
    split, report, leakage = split_and_check(data, level, how)
    excluded.update(removals(report))
    title = opts.name or pooled_name(opts.inputs)
    dropped = {"skipped": dict(read.skipped), "excluded": excluded}
    _print_summary(f"{title}: split without homologs across", split, level, dropped)
    _print_split(report, leakage)
    options = {k: v for k, v in dataclasses.asdict(opts).items() if k not in ("inputs", "out", "overwrite", "name")}
    meta = TaskMeta(opts.task, level, title, "full", read.sources, dict(read.skipped), excluded, {"split": options})
    _save(split, opts.out, meta)
    write_reports(opts.out, report, leakage)
    if pooled.conflicts:
        console.print(
            f"  {len(pooled.conflicts)} sequences occur with different labels: wrote "
            f"{write_conflicts(pooled.conflicts, opts.out / 'label_conflicts.tsv')}"
        )


split_cmd = typer_command(SplitOptions, _split, SplitOptions.__doc__, "data split")


def _print_split(report: dict, leakage: dict) -> None:
    console.print(
        f"  {report['proteins']} proteins, {report['links']} links at >= {report['identity']:.0%} identity over "
        f"{report['coverage_of_shorter']:.0%} of the shorter (mmseqs -s {report['sensitivity']}), "
        f"{report['components']} components (largest {report['largest_component']}); "
        f"{report['removed_to_cut_links']} proteins removed to cut links across splits, "
        f"{report['removed_by_the_leakage_check']} by the leakage check",
        highlight=False,
        soft_wrap=True,
    )
    for name, row in report["fractions"].items():
        console.print(
            f"  {name}: {row['achieved']:.2%} of the proteins (requested {row['requested']:.2%})", highlight=False
        )
    for side in ("test->train", "valid->train"):
        found = leakage[side]
        before = found["before_removal"]
        console.print(
            f"  leakage {side}: {found['homologs']} of {found['query_sequences']} with a homolog after the check "
            f"removed the {before['homologs']} the components missed ({before['near_identical']} near-identical)",
            highlight=False,
        )


def reduce_cmd(
    folder: Path = typer.Argument(..., help="task folder to reduce"),
    out: Path = typer.Option(..., help="folder for the reduced set (SUB)"),
    identity: float = typer.Option(0.85, help="minimum sequence identity within a cluster (mmseqs --min-seq-id)"),
    coverage: float = typer.Option(0.8, help="minimum alignment coverage (mmseqs -c)"),
    threads: Optional[int] = typer.Option(None, help="mmseqs threads (default: all cores)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing, non-empty --out"),
) -> None:
    """SUB: cluster the train and valid splits with `mmseqs easy-cluster` and keep one representative per cluster; the
    test split is kept unchanged."""
    check_out(out, folder=True, overwrite=overwrite)
    from data_prep.tasks.mmseqs import reduce
    from minprot_ds.data.task_store import load_task_folder

    data, meta = load_task_folder(folder)
    level = meta.level if meta else ("sequence" if "label" in _columns(data) else "residue")
    sub = reduce(data, identity, coverage=coverage, threads=threads)
    _print_summary(f"SUB of {folder} at {identity:.0%} identity", sub, level, {})
    _save(sub, out, _derived(meta, level, folder, "sub", {"identity": identity, "coverage": coverage}))


def random_subset_cmd(
    folder: Path = typer.Argument(..., help="task folder to sample from"),
    like: Path = typer.Option(..., help="folder whose split sizes to copy (the SUB made from FOLDER)"),
    out: Path = typer.Option(..., help="folder for the random control (CUT)"),
    seed: int = typer.Option(0, help="sampling seed"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing, non-empty --out"),
) -> None:
    """CUT: a seeded random subset with, per split and label, as many rows as --like (the control for SUB); the test
    split is kept unchanged."""
    check_out(out, folder=True, overwrite=overwrite)
    from data_prep.tasks.mmseqs import random_subset
    from minprot_ds.data.task_store import load_task_folder

    data, meta = load_task_folder(folder)
    model, _ = load_task_folder(like)
    level = meta.level if meta else ("sequence" if "label" in _columns(data) else "residue")
    cut = random_subset(data, model, seed)
    _print_summary(f"CUT of {folder} like {like}", cut, level, {})
    _save(cut, out, _derived(meta, level, folder, "cut", {"like": str(like), "seed": seed}))


def conflicts_cmd(
    folder: Path = typer.Argument(..., help="task folder (dna-binding or membrane)"),
    identity: float = typer.Option(
        0.9, min=0.0, max=1.0, help="minimum sequence identity of a pair (mmseqs --min-seq-id)"
    ),
    coverage: float = typer.Option(0.8, min=0.0, max=1.0, help="minimum alignment coverage (mmseqs -c)"),
    out: Optional[Path] = typer.Option(None, help="write the full table: .md for markdown, otherwise TSV"),
    threads: Optional[int] = typer.Option(None, min=1, help="mmseqs threads (default: all cores)"),
    show: int = typer.Option(20, min=0, help="rows to print"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing --out"),
) -> None:
    """Pairs of near-identical sequences with different labels (MMseqs2 all-vs-all search)."""
    from data_prep.tasks.conflicts import find_conflicts, write_report
    from minprot_ds.data.task_store import load_task_folder

    if out is not None:  # before the search: a report that cannot be written, or would replace a file, is told now
        check_out(out, overwrite=overwrite)
    data, _ = load_task_folder(folder)
    found = find_conflicts(data, identity, coverage=coverage, threads=threads)
    table = Table(title=f"{len(found)} label conflicts at >= {identity:.0%} identity in {folder}")
    for col in ("id_a", "split_a", "label_a", "id_b", "split_b", "label_b", "identity", "aligned"):
        table.add_column(col)
    for c in found[:show]:
        table.add_row(
            c.id_a, c.split_a, str(c.label_a), c.id_b, c.split_b, str(c.label_b), f"{c.identity:.3f}", str(c.aligned)
        )
    console.print(table)
    if out is not None:
        console.print(f"wrote {write_report(found, out, str(folder), identity)}")


def overlap_cmd(
    query: Path = typer.Argument(
        ..., help="the test side: a task folder (its test split, if it has one) or any data file"
    ),
    target: Path = typer.Argument(
        ..., help="the training side: a task folder (its train split, if it has one) or any data file"
    ),
    out: Path = typer.Option(..., help="folder for overlap.json (the counts) and hits.tsv (every MMseqs2 hit)"),
    task_name: Optional[str] = typer.Option(
        None, "--task", help="dna-binding | membrane | q3 (needed only where a file's format carries several)"
    ),
    near_identity: float = typer.Option(
        0.95, help="identity over --coverage of the query that counts as near-identical"
    ),
    homolog_identity: float = typer.Option(0.30, help="identity over --coverage of the query that counts as a homolog"),
    coverage: float = typer.Option(0.80, help="fraction of the query protein an alignment must cover"),
    sensitivity: float = typer.Option(7.5, help="mmseqs -s of the search (7.5: its most sensitive preset)"),
    threads: Optional[int] = typer.Option(None, help="mmseqs threads (default: all cores)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing, non-empty --out"),
) -> None:
    """How many QUERY sequences occur in TARGET: exact copies, near-identical and homologous ones (MMseqs2
    easy-search)."""
    check_out(out, folder=True, overwrite=overwrite)
    from data_prep.tasks.overlap import Thresholds, measure, write_hits
    from minprot_ds.fileio import write_json

    thresholds = Thresholds(near_identity, homolog_identity, coverage)
    thresholds.check()
    q, t = _sequences(query, "test", task_name), _sequences(target, "train", task_name)
    found = measure(q["sequence"], t["sequence"], thresholds, sensitivity=sensitivity, threads=threads)
    out.mkdir(parents=True, exist_ok=True)
    summary = found.summary() | {"query": str(query), "target": str(target)}
    write_json(out / "overlap.json", summary)
    write_hits(found, q["id"], t["id"], out / "hits.tsv")
    n = max(found.query_sequences, 1)
    console.print(
        f"{found.query_sequences} query sequences against {found.target_sequences}: {found.exact} exact "
        f"({found.exact / n:.0%}), {found.near_identical} near-identical ({found.near_identical / n:.0%}), "
        f"{found.homologs} homologs ({found.homologs / n:.0%}); wrote {out / 'overlap.json'}",
        highlight=False,
        soft_wrap=True,
    )


def _sequences(path: Path, split: str, task: str | None):
    """One split of a task folder or a data file: the columns id and sequence."""
    from data_prep.tasks.formats import is_dataset_folder, read_inputs
    from data_prep.tasks.load import pick_split
    from minprot_ds.data.task_store import load_task_folder
    from minprot_ds.errors import UserError

    if not path.exists():
        raise UserError(f"{path} does not exist; pass a task folder made by `minprot data ...` or a data file")
    data = load_task_folder(path)[0] if is_dataset_folder(path) else read_inputs([path], task=task).data
    return pick_split(data, split, path)


def _columns(data) -> list[str]:
    return next(iter(data.values())).column_names if hasattr(data, "values") else data.column_names


def _derived(meta, level: str, folder: Path, variant: str, options: dict):
    from minprot_ds.data.task_store import TaskMeta

    if meta is None:
        return TaskMeta(None, level, folder.name, variant, [str(folder)], options=options)
    return TaskMeta(meta.task, meta.level, meta.name, variant, [str(folder)], options=meta.options | {variant: options})


COMMANDS = [
    ("data swissprot", swissprot),
    ("data task", task),
    ("data split", split_cmd),
    ("data reduce", reduce_cmd),
    ("data random-subset", random_subset_cmd),
    ("data conflicts", conflicts_cmd),
    ("data overlap", overlap_cmd),
]
