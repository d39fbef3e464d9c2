"""How much of a test set its training set already contains: exact copies, near-identical and homologous
sequences, found with the real MMseqs2 (`easy-search`).

Per query (test) sequence, its best hit among the targets (training rows) decides its class, and the classes
nest: exact (identical after normalisation: upper case, U/Z/O/B read as X, as the corpus does) ⊆
near-identical (≥ 95% identity over ≥ 80% of the query) ⊆ homologs (≥ 30% identity over ≥ 80% of the query).
Coverage is the query's: a test protein mostly covered by a training protein leaks, whatever else the
training protein holds. Exact copies are counted by hashing, so a copy too short for MMseqs2's k-mer
prefilter still counts.
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Sequence
from pathlib import Path

from data_prep.tasks.mmseqs import _check_fraction, easy_search
from minprot_ds.errors import UserError
from minprot_ds.vocab import rare_to_x

SENSITIVITY = 7.5  # MMseqs2's most sensitive preset; its default 5.7 misses about 1 homolog in 10 (DESIGN.md)
HITS_COLUMNS = ("query", "target", "identity", "query_coverage", "target_coverage", "evalue", "bits")


@dataclasses.dataclass(frozen=True)
class Thresholds:
    near_identity: float = 0.95
    homolog_identity: float = 0.30
    coverage: float = 0.80

    def check(self) -> None:
        _check_fraction("--near-identity", self.near_identity)
        _check_fraction("--homolog-identity", self.homolog_identity)
        _check_fraction("--coverage", self.coverage)
        if self.near_identity < self.homolog_identity:
            raise UserError(
                f"--near-identity {self.near_identity} is below --homolog-identity {self.homolog_identity}; "
                "near-identical copies are the closest homologs, so raise --near-identity or lower --homolog-identity"
            )


@dataclasses.dataclass(frozen=True)
class Hit:
    query: int  # row index in the query list
    target: int
    identity: float  # fraction of identical aligned residues (MMseqs2 fident)
    query_coverage: float
    target_coverage: float
    evalue: float
    bits: float


@dataclasses.dataclass
class Overlap:
    """The counts (what overlap.json holds) and, per query row, its class and best hit."""

    query_sequences: int
    target_sequences: int
    exact: int
    near_identical: int
    homologs: int
    thresholds: Thresholds
    classes: list[str]  # per query: "exact" | "near-identical" | "homolog" | "none"
    best: list[Hit | None]  # per query: the best-scoring hit (bits), None when MMseqs2 found none
    hits: list[Hit]
    sensitivity: float = SENSITIVITY

    def summary(self) -> dict:
        """overlap.json / metrics.json's `leakage`: counts and the thresholds that define them."""
        return {
            "query_sequences": self.query_sequences,
            "target_sequences": self.target_sequences,
            "exact": self.exact,
            "near_identical": self.near_identical,
            "homologs": self.homologs,
            "thresholds": dataclasses.asdict(self.thresholds),
            "tool": f"mmseqs easy-search -s {self.sensitivity}",
        }

    def rows_passing(self, test_filter: str) -> list[int]:
        """Query rows kept by `--test-filter`: none (all), near-identical (drop exact and near-identical), homologs."""
        drop = {
            "none": set(),
            "near-identical": {"exact", "near-identical"},
            "homologs": {"exact", "near-identical", "homolog"},
        }[test_filter]
        return [i for i, c in enumerate(self.classes) if c not in drop]


def normalise(sequence: str) -> str:
    return rare_to_x("".join(sequence.split()).upper())


def search(
    queries: Sequence[str],
    targets: Sequence[str],
    *,
    sensitivity: float = SENSITIVITY,
    threads: int | None = None,
    max_seqs: int | None = None,
) -> list[Hit]:
    """Every hit `mmseqs easy-search -s SENSITIVITY` reports (default E-value), by row indices; MMseqs2's
    prefilter keeps 300 hits per query unless `max_seqs` says otherwise."""
    options = ["-s", str(sensitivity)] + ([] if max_seqs is None else ["--max-seqs", str(max_seqs)])
    rows = easy_search(
        [normalise(s) for s in queries],
        [normalise(s) for s in targets],
        ("query", "target", "fident", "qcov", "tcov", "evalue", "bits"),
        options,
        threads=threads,
    )
    return [
        Hit(int(q), int(t), float(ident), float(qcov), float(tcov), float(evalue), float(bits))
        for q, t, ident, qcov, tcov, evalue, bits in rows
    ]


def measure(
    queries: Sequence[str],
    targets: Sequence[str],
    thresholds: Thresholds = Thresholds(),
    *,
    sensitivity: float = SENSITIVITY,
    threads: int | None = None,
) -> Overlap:
    """Classify every query sequence by its closest target (see the module's docstring)."""
    thresholds.check()
    target_set = {normalise(s) for s in targets}
    hits = search(queries, targets, sensitivity=sensitivity, threads=threads) if queries and targets else []
    best: list[Hit | None] = [None] * len(queries)
    near = [False] * len(queries)
    homolog = [False] * len(queries)
    for h in hits:
        if best[h.query] is None or h.bits > best[h.query].bits:
            best[h.query] = h
        if h.query_coverage >= thresholds.coverage:
            near[h.query] |= h.identity >= thresholds.near_identity
            homolog[h.query] |= h.identity >= thresholds.homolog_identity
    classes = []
    for i, seq in enumerate(queries):
        if normalise(seq) in target_set:
            classes.append("exact")
        elif near[i]:
            classes.append("near-identical")
        elif homolog[i]:
            classes.append("homolog")
        else:
            classes.append("none")
    exact = classes.count("exact")
    near_identical = exact + classes.count("near-identical")
    return Overlap(
        len(queries),
        len(targets),
        exact,
        near_identical,
        near_identical + classes.count("homolog"),
        thresholds,
        classes,
        best,
        hits,
        sensitivity,
    )


def write_hits(overlap: Overlap, query_ids: Sequence[str], target_ids: Sequence[str], path: Path) -> Path:
    """hits.tsv: every MMseqs2 hit with the records' own ids."""
    with open(path, "w", newline="") as handle:
        out = csv.writer(handle, delimiter="\t", lineterminator="\n")
        out.writerow(HITS_COLUMNS)
        for h in overlap.hits:
            out.writerow(
                [
                    query_ids[h.query],
                    target_ids[h.target],
                    f"{h.identity:.3f}",
                    f"{h.query_coverage:.3f}",
                    f"{h.target_coverage:.3f}",
                    f"{h.evalue:.3g}",
                    f"{h.bits:g}",
                ]
            )
    return path
