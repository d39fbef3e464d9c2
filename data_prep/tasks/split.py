"""Leak-free train / valid / test splits by construction (`minprot data split`, and inside `data swissprot`).

The method (GraphPart's idea, Teufel et al. 2023):
1. a sensitive all-vs-all MMseqs2 search (`easy-search -s 7.5`); two proteins are linked when an alignment
   reaches `identity` (fraction of identical aligned residues) over `coverage` of the **shorter** protein,
   so a fragment inside a longer protein links to it (MMseqs2's `-c` with cov-mode 0 asks it of both, and
   cov-mode 5 compares lengths only: the hits are filtered here on qcov/tcov instead);
2. connected components of those links (single linkage: transitive, unlike greedy clusters);
3. whole components go to one split, drawn in a seeded order per (majority) label toward the requested
   fractions; a component too large for the room left in test or valid goes to train;
4. when that leaves test or valid short (single linkage joined much of the set into large components),
   a connected piece of the largest such component is carved out for the short split, and the proteins on
   its side with the most links into the rest are removed one at a time until no link crosses the split;
   the removed proteins are counted and listed;
5. the project's leakage measure (data_prep/tasks/overlap.py) runs test -> train and valid -> train; the
   few test or valid proteins it still finds with a homolog in train (hits the all-vs-all search missed)
   are removed, counted and named in leakage.json, so the split written has no homolog across it.
Each row keeps its component (step 2) in a `component` column; the fine-tune resamples components whole for
its confidence intervals (a piece carved off in step 4 keeps its component's id).
"""

from __future__ import annotations

import collections
import csv
import dataclasses
from collections.abc import Sequence
from pathlib import Path

import datasets
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from data_prep.tasks.formats import check_task, is_dataset_folder, read_inputs
from data_prep.tasks.load import input_name, load_task_data
from data_prep.tasks.mmseqs import _check_fraction, easy_search
from data_prep.tasks.overlap import SENSITIVITY, Thresholds, measure, normalise
from minprot_ds.data.task_records import COMPONENT, Q3_CLASSES, Level, features_for, label_column
from minprot_ds.errors import UserError
from minprot_ds.fileio import write_json

SPLITS = ("train", "valid", "test")
DEFAULT_SENSITIVITY = SENSITIVITY  # the leakage measure's: the split and its check search alike
SHORT_TOLERANCE = 0.05  # a test/valid share more than 5% under its target is filled by carving (step 4)


@dataclasses.dataclass(frozen=True)
class SplitSettings:
    """How a split is drawn: the requested share of each split, when two proteins are linked (`identity` over
    `coverage` of the shorter, found at MMseqs2 -s `sensitivity`), the seed of the draw, and mmseqs's threads."""

    fractions: dict[str, float]
    identity: float = 0.3
    coverage: float = 0.8
    sensitivity: float = DEFAULT_SENSITIVITY
    seed: int = 0
    threads: int | None = None

    def check(self) -> None:
        if abs(sum(self.fractions.values()) - 1.0) > 1e-6 or min(self.fractions.values()) < 0:
            raise UserError(
                f"the split fractions {self.fractions} must be non-negative and sum to 1; lower --valid or --test"
            )


@dataclasses.dataclass
class Partition:
    """Row indices per split, the proteins removed to cut links, and what the split's report says."""

    parts: dict[str, list[int]]
    removed: list[int]
    components: int
    largest_component: int
    too_large_for_split: int  # components larger than the test or valid share of their label: all to train
    carved: int  # components cut in step 4
    component: list[int]  # each row's connected component (before carving)


def homology_links(
    sequences: Sequence[str],
    identity: float = 0.3,
    coverage: float = 0.8,
    *,
    sensitivity: float = DEFAULT_SENSITIVITY,
    threads: int | None = None,
) -> np.ndarray:
    """Pairs (i, j), i < j, of rows whose alignment reaches `identity` over `coverage` of the shorter one
    (all-vs-all `mmseqs easy-search -s SENSITIVITY`); each pair once."""
    _check_fraction("--identity", identity)
    _check_fraction("--coverage", coverage)
    if len(sequences) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    hits = easy_search(
        sequences,
        None,
        ("query", "target", "fident", "qcov", "tcov", "qlen", "tlen"),
        ("-s", str(sensitivity)),
        threads=threads,
    )
    pairs = set()
    for q, t, fident, qcov, tcov, qlen, tlen in hits:
        a, b = int(q), int(t)
        if a == b or float(fident) < identity:
            continue
        shorter = float(qcov) if int(qlen) <= int(tlen) else float(tcov)
        if shorter >= coverage:
            pairs.add((min(a, b), max(a, b)))
    return np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)


def components_of(n: int, links: np.ndarray) -> np.ndarray:
    """The connected component of every row (single linkage over `links`)."""
    graph = coo_matrix((np.ones(len(links)), (links[:, 0], links[:, 1])), shape=(n, n)) if len(links) else None
    if graph is None:
        return np.arange(n)
    return connected_components(graph, directed=False)[1]


def _carve(
    members: list[int], size: int, neighbours: dict[int, set[int]], rng: np.random.Generator
) -> tuple[list[int], list[int]]:
    """A connected piece of about `size` rows of one component, grown from a seeded row by adding the neighbour with
    the most links into the piece (a compact piece has few links out), and the rows of that piece removed, most
    links into the rest first, until none of it links to the rest of the component."""
    inside = set(members)
    start = members[int(rng.integers(len(members)))]
    piece, grown = [start], {start}
    pull = collections.Counter({r: 1 for r in neighbours[start] & inside})
    while pull and len(piece) < size:
        row = min(pull, key=lambda r: (-pull[r], r))
        del pull[row]
        piece.append(row)
        grown.add(row)
        for other in neighbours[row] & inside:
            if other not in grown:
                pull[other] += 1
    side = set(piece)
    rest = inside - side
    removed = []
    while True:
        cross = {row: len(neighbours[row] & rest) for row in side}
        worst = max(sorted(cross), key=lambda r: cross[r], default=None)
        if worst is None or cross[worst] == 0:
            break
        side.discard(worst)
        removed.append(worst)
    return sorted(side), removed


def partition(
    labels: Sequence[int],
    links: np.ndarray,
    fractions: dict[str, float],
    seed: int = 0,
) -> Partition:
    """Rows per split with no link across splits (see the module's docstring); `labels` stratify the draw
    (pass one value for every row of a per-residue task)."""
    n = len(labels)
    component = components_of(n, links)
    members: dict[int, list[int]] = collections.defaultdict(list)
    for i, c in enumerate(component.tolist()):
        members[c].append(i)
    neighbours: dict[int, set[int]] = collections.defaultdict(set)
    for a, b in links.tolist():
        neighbours[a].add(b)
        neighbours[b].add(a)
    by_label: dict[int, list[int]] = collections.defaultdict(list)
    for c, rows in members.items():
        votes = [labels[i] for i in rows]
        by_label[max(sorted(set(votes)), key=votes.count)].append(c)
    rng = np.random.default_rng(seed)
    small = [name for name in fractions if name != "train"]
    parts: dict[str, list[int]] = {name: [] for name in fractions}
    removed: list[int] = []
    too_large = carved = 0
    for y in sorted(by_label):
        comps = by_label[y]
        order = [comps[k] for k in rng.permutation(len(comps))]
        total = sum(len(members[c]) for c in comps)
        targets = {name: round(total * fractions[name]) for name in small}
        filled = dict.fromkeys(small, 0)
        to_train = []
        for c in order:
            size = len(members[c])
            room = [name for name in small if filled[name] + size <= targets[name]]
            if room:  # the split furthest from its target takes it
                name = max(room, key=lambda s: (targets[s] - filled[s], s))
                parts[name].extend(members[c])
                filled[name] += size
            else:
                too_large += size > max(targets.values(), default=0)
                to_train.append(c)
        for name in small:
            short = targets[name] - filled[name]
            if short > max(1, SHORT_TOLERANCE * targets[name]) and to_train:
                biggest = max(to_train, key=lambda c: (len(members[c]), -c))
                if len(members[biggest]) > short:
                    piece, cut = _carve(members[biggest], short, neighbours, rng)
                    parts[name].extend(piece)
                    removed.extend(cut)
                    filled[name] += len(piece)
                    taken = set(piece) | set(cut)
                    members[biggest] = [r for r in members[biggest] if r not in taken]
                    carved += 1
        for c in to_train:
            parts["train"].extend(members[c])
    sizes = np.bincount(component) if n else np.zeros(1, dtype=np.int64)
    return Partition(
        {name: sorted(rows) for name, rows in parts.items()},
        sorted(removed),
        int(component.max() + 1) if n else 0,
        int(sizes.max()),
        int(too_large),
        carved,
        component.tolist(),
    )


def fractions_report(labels: Sequence[int], parts: dict[str, list[int]], fractions: dict[str, float]) -> dict:
    """Per split: rows, the share of all kept rows it holds against the requested fraction, and per label."""
    kept = sum(len(rows) for rows in parts.values())
    totals = collections.Counter(labels[i] for rows in parts.values() for i in rows)
    out = {}
    for name, rows in parts.items():
        per_label = collections.Counter(labels[i] for i in rows)
        out[name] = {
            "rows": len(rows),
            "requested": fractions[name],
            "achieved": round(len(rows) / max(kept, 1), 4),
            "by_label": {
                str(y): {
                    "rows": per_label[y],
                    "achieved": round(per_label[y] / max(totals[y], 1), 4),
                }
                for y in sorted(totals)
            },
        }
    return out


@dataclasses.dataclass
class Pooled:
    """Several inputs as one set: identical sequences kept once; those whose copies disagree on the label dropped."""

    data: datasets.Dataset
    duplicates: int  # extra copies of a sequence with the same label, dropped
    conflicts: list[list[tuple[str, str]]]  # per sequence whose copies disagree: (id, label) of every copy


def pool(parts: Sequence[datasets.Dataset], level: Level) -> Pooled:
    """One dataset of the rows of `parts` in order; a sequence occurring again (after normalisation) is kept
    once, under its first id, when every copy has the same label, and not at all when they disagree."""
    column = label_column(level)
    copies: dict[str, list[tuple[str, object]]] = {}
    for part in parts:
        for rid, seq, label in zip(part["id"], part["sequence"], part[column]):
            copies.setdefault(normalise(seq), []).append((rid, label))
    kept: dict[str, list] = {"id": [], "sequence": [], column: []}
    duplicates, conflicts = 0, []
    for seq, rows in copies.items():
        if any(label != rows[0][1] for _, label in rows[1:]):
            conflicts.append([(rid, _label_text(label)) for rid, label in rows])
            continue
        duplicates += len(rows) - 1
        kept["id"].append(rows[0][0])
        kept["sequence"].append(seq)
        kept[column].append(rows[0][1])
    return Pooled(datasets.Dataset.from_dict(kept, features=features_for(level)), duplicates, conflicts)


def _label_text(label: object) -> str:
    if isinstance(label, list):  # per residue: H/E/C, '-' where masked
        return "".join(Q3_CLASSES[x] if 0 <= x < len(Q3_CLASSES) else "-" for x in label)
    return str(label)


def write_conflicts(conflicts: list[list[tuple[str, str]]], path: Path) -> Path:
    """label_conflicts.tsv: one line per copy of each sequence whose copies disagree on the label."""
    with open(path, "w", newline="") as handle:
        out = csv.writer(handle, delimiter="\t", lineterminator="\n")
        out.writerow(("group", "id", "label"))
        for k, rows in enumerate(conflicts):
            out.writerows((k, rid, label) for rid, label in rows)
    return path


def split_dataset(
    data: datasets.Dataset, level: Level, how: SplitSettings
) -> tuple[datasets.DatasetDict, dict, dict[str, list[int]]]:
    """The train / valid / test splits (see the module's docstring) with each row's connected component in the
    `component` column (what the fine-tune's bootstrap resamples whole), split.json's report and each split's
    rows."""
    how.check()
    labels = labels_of(data, level)
    links = homology_links(
        data["sequence"], how.identity, how.coverage, sensitivity=how.sensitivity, threads=how.threads
    )
    found = partition(labels, links, how.fractions, how.seed)
    data = data.add_column(COMPONENT, found.component)
    split = datasets.DatasetDict({name: data.select(found.parts[name]) for name in SPLITS})
    ids = data["id"]
    report = {
        "method": "connected components of an all-vs-all mmseqs easy-search; whole components to one split",
        "identity": how.identity,
        "coverage_of_shorter": how.coverage,
        "sensitivity": how.sensitivity,
        "seed": how.seed,
        "proteins": data.num_rows,
        "links": len(links),
        "components": found.components,
        "largest_component": found.largest_component,
        "components_too_large_for_test_or_valid": found.too_large_for_split,
        "components_carved": found.carved,
        "removed_to_cut_links": len(found.removed),
        "removed_ids": [ids[i] for i in found.removed],
        "fractions": fractions_report(labels, found.parts, how.fractions),
    }
    return split, report, found.parts


def measure_leakage(
    split: datasets.DatasetDict,
    thresholds: Thresholds,
    *,
    sensitivity: float = DEFAULT_SENSITIVITY,
    threads: int | None = None,
) -> tuple[datasets.DatasetDict, dict, dict[str, list[int]]]:
    """The project's leakage measure test -> train and valid -> train (leakage.json). A test or valid protein it
    finds with a homolog in train is one the all-vs-all search missed (its E-values are computed against another
    database, and its prefilter keeps 300 candidates a protein): it is removed, counted and named, so the split
    written has none; a measure taken again on it finds none (only the queries leave, and each query's class
    depends on train alone). Returns the split kept, leakage.json and the rows kept of each checked split."""
    result: dict = {}
    removed: dict[str, list[str]] = {}
    kept_rows: dict[str, list[int]] = {}
    kept_parts = dict(split)
    for side in ("test", "valid"):
        found = measure(
            split[side]["sequence"], split["train"]["sequence"], thresholds, sensitivity=sensitivity, threads=threads
        )
        leaking = [i for i, c in enumerate(found.classes) if c != "none"]
        removed[side] = [split[side]["id"][i] for i in leaking]
        keep = [i for i, c in enumerate(found.classes) if c == "none"]
        kept_rows[side] = keep
        kept_parts[side] = split[side].select(keep)
        result[f"{side}->train"] = found.summary() | {
            "query_sequences": len(keep),
            "exact": 0,
            "near_identical": 0,
            "homologs": 0,
            "before_removal": {
                k: found.summary()[k] for k in ("query_sequences", "exact", "near_identical", "homologs")
            },
        }
    result["removed_by_the_check"] = removed
    return datasets.DatasetDict({name: kept_parts[name] for name in SPLITS}), result, kept_rows


def split_and_check(
    data: datasets.Dataset, level: Level, how: SplitSettings
) -> tuple[datasets.DatasetDict, dict, dict]:
    """`split_dataset`, then `measure_leakage` at the split's own identity, coverage and sensitivity:
    (splits, split.json, leakage.json)."""
    thresholds = Thresholds(max(0.95, how.identity), how.identity, how.coverage)
    thresholds.check()  # before the expensive search
    split, report, parts = split_dataset(data, level, how)
    checked, leakage, kept_rows = measure_leakage(split, thresholds, sensitivity=how.sensitivity, threads=how.threads)
    gone = sum(map(len, leakage["removed_by_the_check"].values()))
    report["removed_by_the_leakage_check"] = gone
    if gone:
        parts = {
            name: [parts[name][i] for i in kept_rows[name]] if name in kept_rows else parts[name] for name in parts
        }
        report["fractions"] = fractions_report(labels_of(data, level), parts, how.fractions)
    return checked, report, leakage


def removals(report: dict) -> dict[str, int]:
    """The proteins a split removed, by reason, as a task folder's `excluded` counts them."""
    reasons = {
        "removed_to_cut_links": "removed to cut homology links across splits (split.json)",
        "removed_by_the_leakage_check": "removed: a homolog in train the all-vs-all search missed (leakage.json)",
    }
    return {why: report[key] for key, why in reasons.items() if report.get(key)}


def labels_of(data: datasets.Dataset, level: Level) -> list[int]:
    """The label each row is stratified by: its own (sequence tasks) or one for all (per-residue tasks)."""
    return data["label"] if level == "sequence" else [0] * data.num_rows


def write_reports(out: Path, report: dict, leakage: dict) -> None:
    """split.json (method, components, removed proteins, fractions reached) and leakage.json beside the split."""
    write_json(out / "split.json", report)
    write_json(out / "leakage.json", leakage)


@dataclasses.dataclass
class Inputs:
    """What `data split` read: one dataset per input, and the records dropped on the way, by reason."""

    parts: list[datasets.Dataset]
    sources: list[str]
    skipped: collections.Counter
    excluded: collections.Counter


def read_labelled(paths: Sequence[Path], task: str, *, strict: bool = False) -> Inputs:
    """Every input as `data task` and `finetune` read it (a task folder, a data file of any format, a folder of
    files); all splits of a multi-split input are pooled."""
    check_task(task)
    parts, sources = [], []
    skipped: collections.Counter = collections.Counter()
    excluded: collections.Counter = collections.Counter()
    for path in map(Path, paths):
        if is_dataset_folder(path):
            data = load_task_data(path, task)
            sources.append(str(path))
        else:
            report = read_inputs([path], task=task, strict=strict)
            data = report.data
            sources.extend(report.sources)
            skipped.update(report.skipped)
            excluded.update(report.excluded)
        parts.extend(data.values() if isinstance(data, datasets.DatasetDict) else [data])
    return Inputs(parts, sources, skipped, excluded)


def pooled_name(paths: Sequence[Path]) -> str:
    """A pooled set's default name for reports (`data split`, `data task`): its inputs' names (`input_name`: a
    file's without its extension) joined with "+" (pdb14189+uniswiss_train)."""
    return "+".join(map(input_name, paths))


def length_filter(data: datasets.Dataset, low: int | None, high: int | None) -> tuple[datasets.Dataset, int]:
    """The rows of `low`..`high` residues (either bound optional), and how many fell outside."""
    if low is None and high is None:
        return data, 0
    lengths = [len(s) for s in data["sequence"]]
    keep = [i for i, n in enumerate(lengths) if (low is None or n >= low) and (high is None or n <= high)]
    return data.select(keep), data.num_rows - len(keep)
