"""Which reader a file needs (by name, header or first record), and reading one or more files into a dataset."""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import datasets

from data_prep.tasks import readers
from minprot_ds.data.task_records import Level, Records
from minprot_ds.errors import UserError

TASKS: dict[str, Level] = {"dna-binding": "sequence", "membrane": "sequence", "q3": "residue"}


@dataclasses.dataclass(frozen=True)
class Format:
    name: str
    read: Callable[[Path, Records], None]
    level: Level
    tasks: tuple[str, ...]  # the tasks whose labels it carries
    about: str


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format(
            "netsurfp-csv", readers.read_netsurfp_csv, "residue", ("q3",), "NetSurfP-2.0 CSV (CASP12, CB513, TS115)"
        ),
        Format("flip", readers.read_flip, "residue", ("q3",), "FLIP secondary-structure split folder"),
        Format("deeploc-fasta", readers.read_deeploc_fasta, "sequence", ("membrane",), "DeepLoc FASTA (…-M/-S/-U)"),
        Format(
            "deeploc-csv", readers.read_deeploc_csv, "sequence", ("membrane",), "DeepLoc CSV (input, loc, membrane)"
        ),
        Format(
            "dna-fasta",
            readers.read_dna_fasta,
            "sequence",
            ("dna-binding",),
            "DNA-binding FASTA (|1/|2 or _P/_N files)",
        ),
        Format(
            "labelled-csv",
            readers.read_labelled_table,
            "sequence",
            ("dna-binding", "membrane"),
            "CSV/TSV with sequence and label columns",
        ),
    )
}
_DATASET_MARKERS = ("dataset_dict.json", "dataset_info.json", "state.json")


@dataclasses.dataclass
class ReadReport:
    """A reader's result: the data and what was dropped, by reason."""

    data: datasets.Dataset | datasets.DatasetDict
    format: str
    level: Level
    sources: list[str]
    skipped: dict[str, int]
    excluded: dict[str, int]
    first_skipped: dict[str, str]  # reason -> the first record dropped for it
    long: int  # sequences over 512 residues (kept; the fine-tune job truncates)

    @property
    def rows(self) -> int:
        data = self.data
        return sum(d.num_rows for d in data.values()) if isinstance(data, datasets.DatasetDict) else data.num_rows


def is_dataset_folder(path: Path) -> bool:
    return path.is_dir() and any((path / m).is_file() for m in _DATASET_MARKERS)


def _first_line(path: Path) -> str:
    with open(path, encoding="utf-8-sig", errors="replace") as handle:
        for line in handle:
            if line.strip():
                return line.strip()
    return ""


def detect_format(path: Path) -> str:
    """The format name of a file or a FLIP folder; a UserError says what to do when it is none of them."""
    if not path.exists():
        raise UserError(f"{path} does not exist; pass a task folder made by `minprot data ...` or a data file")
    if readers.flip_folder(path) is not None and (path.is_dir() or path.name in readers.FLIP_FILES):
        return "flip"
    if path.is_dir():
        raise UserError(
            f"{path} is a folder but neither a `minprot data` task folder nor a FLIP split folder; pass its files"
        )
    name = path.name.lower()
    if name.endswith((".dat", ".dat.gz")):
        raise UserError(
            f"{path} looks like a Swiss-Prot flat file; build a task folder first with "
            f"`minprot data swissprot {path} --organism human --out DIR`"
        )
    first = _first_line(path)
    if not first:
        raise UserError(f"{path} is empty")
    if first.startswith(">"):
        parts = first[1:].split()
        if len(parts) >= 2 and parts[1].rsplit("-", 1)[-1] in ("M", "S", "U") and "-" in parts[1]:
            return "deeploc-fasta"
        return "dna-fasta"
    header = {h.strip().lower() for h in first.replace("\t", ",").split(",")}
    if {"input", "dssp3"} <= header:
        return "netsurfp-csv"
    if {"input", "membrane"} <= header:
        return "deeploc-csv"
    if header & {"sequence", "seq"} and header & {"label", "binding"}:
        return "labelled-csv"
    raise UserError(
        f"cannot tell the format of {path} (first line {first[:60]!r}); pass --format with one of: {', '.join(FORMATS)}"
    )


def _expand(paths: Sequence[Path]) -> list[Path]:
    """Files to read: folders of raw files (e.g. PDB14189_P.txt + PDB14189_N.txt) expand to their files."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir() and readers.flip_folder(path) is None:
            inner = sorted(
                p for p in path.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() != ".md"
            )
            if not inner:
                raise UserError(f"{path} is an empty folder; pass the data files")
            files.extend(inner)
        else:
            files.append(path)
    return files


def read_inputs(
    paths: Sequence[str | Path], fmt: str = "auto", *, task: str | None = None, strict: bool = False
) -> ReadReport:
    """Read files of one format (detected per file when `fmt` is "auto") into one dataset."""
    files = _expand([Path(p) for p in paths])
    if not files:
        raise UserError("no input files given")
    if fmt != "auto" and fmt not in FORMATS:
        raise UserError(f"unknown --format {fmt!r}; choose auto or one of: {', '.join(FORMATS)}")
    names = [detect_format(f) if fmt == "auto" else fmt for f in files]
    if len(set(names)) > 1:
        listing = ", ".join(f"{f.name}: {n}" for f, n in zip(files, names))
        raise UserError(f"the inputs mix formats ({listing}); read each format into its own task folder")
    spec = FORMATS[names[0]]
    if task is not None:
        check_task(task)
        if task not in spec.tasks:
            raise UserError(
                f"{files[0]} is {spec.about} ({spec.name}), which carries labels for {'/'.join(spec.tasks)}, not for "
                f"--task {task}"
            )
    records = Records(level=spec.level, strict=strict)
    if spec.name == "flip":
        files = list(dict.fromkeys(readers.flip_folder(f) for f in files))
    for file in files:
        spec.read(file, records)
    if not len(records):
        dropped = collections.Counter(records.skipped) + collections.Counter(records.excluded)
        why = ", ".join(f"{n} {reason}" for reason, n in dropped.most_common()) or "no records"
        raise UserError(f"no usable records in {', '.join(map(str, files))} as {spec.name} ({why})")
    return ReadReport(
        data=records.to_dataset(),
        format=spec.name,
        level=spec.level,
        sources=[str(f) for f in files],
        skipped=dict(records.skipped),
        excluded=dict(records.excluded),
        first_skipped=dict(records.first_skipped),
        long=records.long_count(),
    )


def check_task(task: str) -> Level:
    if task not in TASKS:
        raise UserError(f"unknown task {task!r}; choose one of: {', '.join(TASKS)}")
    return TASKS[task]
