"""Readers for the public downstream formats; each appends one file's records to a shared `Records`.

Formats (details and quirks in ../shared/data/README.md):
  netsurfp-csv   NetSurfP-2.0 CSV as ProtTrans ships it (CASP12, CB513, TS115): `input, dssp3, dssp8,
                 disorder, cb513_mask`; residues and labels space-separated; Q3 labels H/E/C.
  flip           FLIP's NetSurfP split folder: sequences.fasta, sampled.fasta (HEC + SET/VALIDATION), mask.fasta.
  deeploc-fasta  `>Q9H400 Cell.membrane-M test`: M membrane (1), S soluble (0), U excluded from Q2.
  deeploc-csv    ProtTrans's DeepLoc CSV `input, loc, membrane` (some residues fused into two-letter tokens).
  dna-fasta      DNA-binding benchmarks: label from `|1`/`|2` in the header (2 = negative) or from the file
                 name (`*_P`/`*_N`, `*-posi`/`*-nega`), as in PDB14189, PDB2272, PDB1075, PDB186, UniSwiss.
  labelled-csv   any CSV/TSV with columns (any case) sequence|seq, label|binding and optionally id|identifier.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from pathlib import Path

from data_prep.tasks.fasta import read_fasta
from minprot_ds.data.task_records import (
    EMPTY,
    LENGTH_MISMATCH,
    MISSING_LABEL,
    Q3_CLASSES,
    UNKNOWN_LABEL,
    Records,
    clean_sequence,
)
from minprot_ds.errors import UserError
from minprot_ds.vocab import IGNORE_INDEX

# NetSurfP-2.0 mask columns: a residue is scored only where each present column is 1. `disorder` 0.0
# marks residues unresolved in the structure (ProtTrans's notebooks set those labels to -100);
# `cb513_mask` 0.0 marks residues outside the original CB513 chains.
NETSURFP_MASKS = ("disorder", "cb513_mask")
FLIP_FILES = ("sequences.fasta", "sampled.fasta", "mask.fasta")
MEMBRANE = {"M": 1, "S": 0}
EXCLUDED_U = "membrane label U (unknown), excluded from Q2"

_Q3 = {c: i for i, c in enumerate(Q3_CLASSES)}
_HEADER_LABEL = re.compile(r"^(?P<id>[^|\s]+)\|(?P<label>[^|\s]*)")
_POSITIVE_NAME = re.compile(r"(?:^|[_\-.])(p|pos|posi|positive)$", re.IGNORECASE)
_NEGATIVE_NAME = re.compile(r"(?:^|[_\-.])(n|neg|nega|negative)$", re.IGNORECASE)
_DNA_HEADER_LABELS = {"1": 1, "2": 0}  # PDB1075/PDB186/PDB2272 convention: 1 binds DNA, 2 does not


def open_table(path: Path) -> tuple[list[str], Iterator[tuple[int, list[str]]]]:
    """(lower-cased header, (line, row) pairs) of a CSV/TSV; tolerates a BOM and `", "` separators."""
    handle = open(path, encoding="utf-8-sig", newline="")
    sample = handle.read(4096)
    handle.seek(0)
    if path.suffix.lower() in (".tsv", ".tab") or ("\t" in sample.split("\n", 1)[0]):
        delimiter = "\t"
    else:
        delimiter = ","
    reader = csv.reader(handle, delimiter=delimiter, skipinitialspace=True)
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        handle.close()
        raise UserError(f"{path} is empty; expected a header line with the column names") from None

    def rows() -> Iterator[tuple[int, list[str]]]:
        with handle:
            for row in reader:
                if any(cell.strip() for cell in row):
                    yield reader.line_num, row

    return header, rows()


def _column(path: Path, header: list[str], names: tuple[str, ...], required: bool = True) -> int | None:
    for name in names:
        if name in header:
            return header.index(name)
    if required:
        raise UserError(
            f"{path} has no {' / '.join(names)} column (found: {', '.join(header)}); rename the column or pick "
            "another --format"
        )
    return None


def _row_id(path: Path, row: list[str], index: int | None, number: int) -> str:
    if index is not None and index < len(row) and row[index].strip():
        return row[index].strip()
    return f"{path.stem}-{number}"


def read_netsurfp_csv(path: Path, out: Records) -> None:
    header, rows = open_table(path)
    c_input = _column(path, header, ("input",))
    c_q3 = _column(path, header, ("dssp3",))
    c_id = _column(path, header, ("id",), required=False)
    masks = [header.index(m) for m in NETSURFP_MASKS if m in header]
    for number, (line, row) in enumerate(rows):
        rid = _row_id(path, row, c_id, number)
        where = f"{path} line {line} (record {rid})"
        if len(row) < len(header):
            out.skip(where, EMPTY, f"{len(row)} of {len(header)} columns")
            continue
        residues = row[c_input].split()
        seq, problem = clean_sequence("".join(residues))
        if problem:
            out.skip(where, problem)
            continue
        if any(len(r) != 1 for r in residues):
            out.skip(where, LENGTH_MISMATCH, "a residue token longer than one letter")
            continue
        tags = row[c_q3].split()
        mask_rows = [row[m].split() for m in masks]
        if len(tags) != len(seq) or any(len(m) != len(seq) for m in mask_rows):
            out.skip(where, LENGTH_MISMATCH, f"{len(seq)} residues, {len(tags)} labels")
            continue
        unknown = sorted({t for t in tags if t not in _Q3})
        if unknown:
            out.skip(where, UNKNOWN_LABEL, f"Q3 labels {unknown}, expected H/E/C")
            continue
        labels = [_Q3[t] if all(float(m[i]) != 0.0 for m in mask_rows) else IGNORE_INDEX for i, t in enumerate(tags)]
        out.add(rid, seq, labels)


def flip_folder(path: Path) -> Path | None:
    """The FLIP split folder `path` is or lies in, or None."""
    folder = path if path.is_dir() else path.parent
    if all((folder / name).is_file() for name in FLIP_FILES[:2]):
        return folder
    return None


def read_flip(path: Path, out: Records) -> None:
    folder = flip_folder(path)
    if folder is None:
        raise UserError(
            f"{path} is not a FLIP split folder; it needs {' and '.join(FLIP_FILES[:2])} (mask.fasta optional)"
        )
    sequences = {r.id: r for r in read_fasta(folder / "sequences.fasta")}
    masks = {r.id: r.sequence for r in read_fasta(folder / "mask.fasta")} if (folder / "mask.fasta").is_file() else {}
    for rec in read_fasta(folder / "sampled.fasta"):
        where = f"{folder / 'sampled.fasta'} line {rec.line} (record {rec.id or '<no id>'})"
        fields = dict(f.split("=", 1) for f in rec.header.split()[1:] if "=" in f)
        split = "valid" if fields.get("VALIDATION", "").lower() == "true" else fields.get("SET", "train").lower()
        seq_rec = sequences.get(rec.id)
        if seq_rec is None:
            out.skip(where, EMPTY, "no sequence in sequences.fasta")
            continue
        seq, problem = clean_sequence(seq_rec.sequence)
        if problem:
            out.skip(where, problem)
            continue
        tags, mask = rec.sequence, masks.get(rec.id, "1" * len(seq))
        if len(tags) != len(seq) or len(mask) != len(seq):
            out.skip(where, LENGTH_MISMATCH, f"{len(seq)} residues, {len(tags)} labels, {len(mask)} mask")
            continue
        unknown = sorted(set(tags) - set(_Q3))
        if unknown:
            out.skip(where, UNKNOWN_LABEL, f"Q3 labels {unknown}, expected H/E/C")
            continue
        out.add(rec.id, seq, [_Q3[t] if m == "1" else IGNORE_INDEX for t, m in zip(tags, mask)], split)


def read_deeploc_fasta(path: Path, out: Records) -> None:
    for rec in read_fasta(path):
        where = f"{path} line {rec.line} (record {rec.id or '<no id>'})"
        parts = rec.header.split()
        seq, problem = clean_sequence(rec.sequence)
        if problem:
            out.skip(where, problem)
            continue
        if len(parts) < 2 or "-" not in parts[1]:
            out.skip(where, MISSING_LABEL, "expected '>ID Location-M|S|U [test]'")
            continue
        tag = parts[1].rsplit("-", 1)[1]
        if tag == "U":
            out.exclude(EXCLUDED_U)
            continue
        if tag not in MEMBRANE:
            out.skip(where, UNKNOWN_LABEL, f"membrane label {tag!r}, expected M, S or U")
            continue
        out.add(parts[0], seq, MEMBRANE[tag], "test" if "test" in parts[2:] else "train")


def _clean_rows(path: Path, out: Records, header: list[str], rows, c_id: int | None, c_seq: int, *, needed: int):
    """(id, where, row, sequence) of each table row with `needed` columns and a clean sequence; the
    other rows are skipped with their reason."""
    for number, (line, row) in enumerate(rows):
        rid = _row_id(path, row, c_id, number)
        where = f"{path} line {line} (record {rid})"
        if len(row) < needed:
            out.skip(where, EMPTY, f"{len(row)} of {len(header)} columns")
            continue
        seq, problem = clean_sequence(row[c_seq])
        if problem:
            out.skip(where, problem)
            continue
        yield rid, where, row, seq


def read_deeploc_csv(path: Path, out: Records) -> None:
    header, rows = open_table(path)
    c_input = _column(path, header, ("input",))
    c_label = _column(path, header, ("membrane",))
    c_id = _column(path, header, ("id",), required=False)
    # Some residues are fused into two-letter tokens ("S L" -> "SL"): clean_sequence's joining undoes it.
    for rid, where, row, seq in _clean_rows(path, out, header, rows, c_id, c_input, needed=len(header)):
        tag = row[c_label].strip()
        if tag == "U":
            out.exclude(EXCLUDED_U)
            continue
        if tag not in MEMBRANE:
            out.skip(where, UNKNOWN_LABEL, f"membrane label {tag!r}, expected M, S or U")
            continue
        out.add(rid, seq, MEMBRANE[tag])


def label_from_name(path: Path) -> int | None:
    """1 for `*_P`, `*-posi`, `*_positive`; 0 for `*_N`, `*-nega`, `*_negative`; None otherwise."""
    if _POSITIVE_NAME.search(path.stem):
        return 1
    if _NEGATIVE_NAME.search(path.stem):
        return 0
    return None


def dna_header_id(word: str) -> str:
    """A header's first word as the DNA-binding benchmarks' records are named: `1ABC_A|1` -> `1ABC_A` (the
    `|1`/`|2` label tag dropped, as `read_dna_fasta` does); any other word unchanged (`sp|P12345|NAME` too)."""
    match = _HEADER_LABEL.match(word)
    if match and match.end() == len(word) and match["label"] in _DNA_HEADER_LABELS:
        return match["id"]
    return word


def read_dna_fasta(path: Path, out: Records) -> None:
    from_name = label_from_name(path)
    for rec in read_fasta(path):
        match = _HEADER_LABEL.match(rec.header)
        rid = match["id"] if match else rec.id
        where = f"{path} line {rec.line} (record {rid or '<no id>'})"
        seq, problem = clean_sequence(rec.sequence)
        if problem:
            out.skip(where, problem)
            continue
        label = from_name
        if match:
            tag = match["label"]
            if tag not in _DNA_HEADER_LABELS:
                out.skip(where, UNKNOWN_LABEL, f"header label |{tag}, expected |1 (binding) or |2 (non-binding)")
                continue
            if from_name is not None and _DNA_HEADER_LABELS[tag] != from_name:
                out.skip(where, UNKNOWN_LABEL, f"header says |{tag} but the file name says label {from_name}")
                continue
            label = _DNA_HEADER_LABELS[tag]
        if label is None:
            out.skip(where, MISSING_LABEL, "no |1/|2 in the header and no _P/_N or -posi/-nega in the file name")
            continue
        out.add(rid, seq, label)


_TRUE = {"1", "1.0", "true", "yes", "positive", "pos"}
_FALSE = {"0", "0.0", "false", "no", "negative", "neg"}


def read_labelled_table(path: Path, out: Records) -> None:
    header, rows = open_table(path)
    c_seq = _column(path, header, ("sequence", "seq"))
    c_label = _column(path, header, ("label", "binding"))
    c_id = _column(path, header, ("id", "identifier"), required=False)
    for rid, where, row, seq in _clean_rows(path, out, header, rows, c_id, c_seq, needed=max(c_seq, c_label) + 1):
        tag = row[c_label].strip().lower()
        if tag in _TRUE:
            out.add(rid, seq, 1)
        elif tag in _FALSE:
            out.add(rid, seq, 0)
        elif not tag:
            out.skip(where, MISSING_LABEL)
        else:
            out.skip(where, UNKNOWN_LABEL, f"label {row[c_label]!r}, expected 0/1 (or true/false)")
