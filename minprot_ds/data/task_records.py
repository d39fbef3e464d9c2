"""The record contract every task reader and builder yields, and the skip bookkeeping they share.

Columns: `id` (string), `sequence` (string, uppercase, U/Z/O/B mapped to X as in the corpus) and either
`label` (int, sequence-level tasks) or `labels` (one int per residue, -100 where masked or unknown; Q3).
A folder made by `minprot data split` or `data swissprot` adds `component` (int): the protein's homology component
(connected component of the split's search, data_prep/tasks/split.py), which the fine-tune's bootstrap resamples
whole. It is optional: readers and older folders have none, and every job works without it.
"""

from __future__ import annotations

import collections
import dataclasses
import re
from typing import Literal

import datasets

from minprot_ds.errors import UserError
from minprot_ds.vocab import MAX_RESIDUES, rare_to_x

Q3_CLASSES = ("H", "E", "C")
COMPONENT = "component"  # optional column: the protein's homology component  # label id == index: helix, strand, coil

Level = Literal["sequence", "residue"]

SEQUENCE_FEATURES = datasets.Features(
    {"id": datasets.Value("string"), "sequence": datasets.Value("string"), "label": datasets.Value("int64")}
)
RESIDUE_FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "sequence": datasets.Value("string"),
        "labels": datasets.List(datasets.Value("int64")),
    }
)

# Reasons a record is dropped. Malformed ones fail under strict; excluded ones never do (by design).
EMPTY = "empty record"
NUCLEOTIDE = "nucleotide sequence"
INVALID_RESIDUES = "invalid residue letters"
LENGTH_MISMATCH = "residue/label length mismatch"
UNKNOWN_LABEL = "unknown label"
MISSING_LABEL = "missing label"

_NOT_VOCAB = re.compile(r"[^LAGVESIKRDTPNQFYMHCWXUBZO]")
_NUCLEOTIDES = frozenset("ACGTUN")


def features_for(level: Level) -> datasets.Features:
    return SEQUENCE_FEATURES if level == "sequence" else RESIDUE_FEATURES


def label_column(level: Level) -> str:
    return "label" if level == "sequence" else "labels"


def clean_sequence(raw: str) -> tuple[str, str | None]:
    """(sequence, None) for a usable protein sequence, else ("", reason); keeps the residue count."""
    seq = "".join(raw.split()).upper()
    if not seq:
        return "", EMPTY
    # A real protein made only of A/C/G/T/U/N letters does not occur at benchmark lengths; DNA strings do
    # (PDB1075 lists 7 DNA chains among its "proteins").
    if len(seq) >= 10 and set(seq) <= _NUCLEOTIDES:
        return "", NUCLEOTIDE
    if _NOT_VOCAB.search(seq):
        return "", INVALID_RESIDUES
    return rare_to_x(seq), None


@dataclasses.dataclass
class Records:
    """Rows collected by a reader, and what it dropped: `skipped` (malformed) and `excluded` (by design).

    Under strict, the first malformed record raises a UserError naming it; exclusions never raise.
    """

    level: Level
    strict: bool = False
    ids: list[str] = dataclasses.field(default_factory=list)
    sequences: list[str] = dataclasses.field(default_factory=list)
    labels: list = dataclasses.field(default_factory=list)
    splits: list[str] = dataclasses.field(default_factory=list)
    skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    excluded: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    first_skipped: dict[str, str] = dataclasses.field(default_factory=dict)  # reason -> record named

    def add(self, rid: str, sequence: str, label: int | list[int], split: str = "") -> None:
        self.ids.append(rid)
        self.sequences.append(sequence)
        self.labels.append(label)
        self.splits.append(split)

    def skip(self, where: str, reason: str, detail: str = "") -> None:
        """Drop a malformed record; `where` names it as "FILE line N (record ID)"."""
        if self.strict:
            extra = f" ({detail})" if detail else ""
            raise UserError(
                f"{where}: {reason}{extra}; fix or remove the record, or run without --strict to skip and count such "
                "records"
            )
        self.skipped[reason] += 1
        self.first_skipped.setdefault(reason, where)

    def exclude(self, reason: str) -> None:
        self.excluded[reason] += 1

    def __len__(self) -> int:
        return len(self.ids)

    def long_count(self) -> int:
        return sum(len(s) > MAX_RESIDUES for s in self.sequences)

    def to_dataset(self) -> datasets.Dataset | datasets.DatasetDict:
        """A Dataset, or a DatasetDict when the source named several splits (FLIP, DeepLoc train+test)."""

        def build(idx: list[int]) -> datasets.Dataset:
            return datasets.Dataset.from_dict(
                {
                    "id": [self.ids[i] for i in idx],
                    "sequence": [self.sequences[i] for i in idx],
                    label_column(self.level): [self.labels[i] for i in idx],
                },
                features=features_for(self.level),
            )

        names = list(dict.fromkeys(self.splits))
        if len(names) <= 1:  # one split (e.g. a DeepLoc test file) is just a dataset
            return build(list(range(len(self))))
        return datasets.DatasetDict(
            {name: build([i for i, s in enumerate(self.splits) if s == name]) for name in names}
        )
