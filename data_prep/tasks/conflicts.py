"""Label conflicts: pairs of sequences at least X% identical (MMseqs2 all-vs-all search) whose labels
differ, such as the RPS27 / RPS27L pair the MinProtBert report found by hand."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import datasets

from data_prep.tasks.mmseqs import _check_fraction, easy_search, flatten
from minprot_ds.errors import UserError
from minprot_ds.fileio import atomic_write


@dataclasses.dataclass(frozen=True)
class Conflict:
    id_a: str
    split_a: str
    label_a: int
    id_b: str
    split_b: str
    label_b: int
    identity: float  # fraction of identical aligned residues (mmseqs fident)
    aligned: int  # alignment length
    len_a: int
    len_b: int


def find_conflicts(
    data: datasets.Dataset | datasets.DatasetDict,
    identity: float = 0.9,
    *,
    coverage: float = 0.8,
    threads: int | None = None,
) -> list[Conflict]:
    """Each unordered pair once (its best alignment), most identical first."""
    _check_fraction("--identity", identity)
    _check_fraction("--coverage", coverage)
    whole = data if isinstance(data, datasets.DatasetDict) else datasets.DatasetDict({"all": data})
    for name, ds in whole.items():
        if "label" not in ds.column_names:
            raise UserError(
                f"split {name} has no sequence-level `label` column; conflicts apply to dna-binding and membrane sets"
            )
    seqs, split_of, row_of = flatten(whole)
    ids = [x for name in whole for x in whole[name]["id"]]
    labels = [x for name in whole for x in whole[name]["label"]]
    hits = easy_search(
        seqs,
        None,
        ("query", "target", "fident", "alnlen", "qlen", "tlen"),
        ("--min-seq-id", str(identity), "-c", str(coverage)),
        threads=threads,
    )
    best: dict[tuple[int, int], Conflict] = {}
    for q, t, fident, alnlen, _qlen, _tlen in hits:  # the lengths are the rows' own
        a, b = sorted((int(q), int(t)))
        if a == b or labels[a] == labels[b] or float(fident) < identity:
            continue
        pair = Conflict(
            ids[a],
            split_of[a],
            labels[a],
            ids[b],
            split_of[b],
            labels[b],
            float(fident),
            int(alnlen),
            len(seqs[a]),
            len(seqs[b]),
        )
        if (a, b) not in best or pair.identity > best[(a, b)].identity:
            best[(a, b)] = pair
    return sorted(best.values(), key=lambda c: (-c.identity, c.id_a, c.id_b))


_COLUMNS = ("id_a", "split_a", "label_a", "id_b", "split_b", "label_b", "identity", "aligned", "len_a", "len_b")


def _cells(c: Conflict) -> list[str]:
    return [str(getattr(c, k)) if k != "identity" else f"{c.identity:.3f}" for k in _COLUMNS]


def to_tsv(conflicts: list[Conflict]) -> str:
    return "\n".join(["\t".join(_COLUMNS), *("\t".join(_cells(c)) for c in conflicts)]) + "\n"


def to_markdown(conflicts: list[Conflict], title: str, identity: float) -> str:
    lines = [
        f"# Label conflicts in {title}",
        "",
        f"{len(conflicts)} pair(s) of sequences at least {identity:.0%} identical (MMseqs2 easy-search) with "
        "different labels.",
        "",
        "| " + " | ".join(_COLUMNS) + " |",
        "|" + "---|" * len(_COLUMNS),
    ]
    lines += ["| " + " | ".join(_cells(c)) + " |" for c in conflicts]
    return "\n".join(lines) + "\n"


def write_report(conflicts: list[Conflict], out: str | Path, title: str, identity: float) -> Path:
    """Markdown for `.md`, tab-separated values for anything else (`.tsv`)."""
    out = Path(out)
    text = to_markdown(conflicts, title, identity) if out.suffix.lower() == ".md" else to_tsv(conflicts)
    return atomic_write(out, text)
