"""SUB / CUT and label conflicts with the real MMseqs2 binary on a constructed set of near-duplicates."""

from __future__ import annotations

import shutil
from pathlib import Path

import datasets
import numpy as np
import pytest
from typer.testing import CliRunner

from data_prep.tasks.conflicts import find_conflicts, to_markdown
from data_prep.tasks.mmseqs import easy_search, random_subset, reduce
from minprot_ds.cli import app
from minprot_ds.data.task_records import SEQUENCE_FEATURES
from minprot_ds.data.task_store import TaskMeta, save_task
from minprot_ds.errors import UserError

needs_mmseqs = pytest.mark.skipif(
    shutil.which("mmseqs") is None, reason="needs the mmseqs binary (apt-get install mmseqs2), which is not on PATH"
)
AMINO = np.array(list("ACDEFGHIKLMNPQRSTVWY"))


def _family_set() -> datasets.DatasetDict:
    """8 unrelated families of 3 members (98% identical); family 0's members disagree on the label."""
    rng = np.random.default_rng(7)
    rows: dict[str, dict[str, list]] = {s: {"id": [], "sequence": [], "label": []} for s in ("train", "test")}
    for fam in range(8):
        base = rng.choice(AMINO, 120)
        for member in range(3):
            seq = base.copy()
            seq[rng.choice(120, 2, replace=False)] = rng.choice(AMINO, 2)
            split = "test" if member == 2 and fam % 2 else "train"
            rows[split]["id"].append(f"f{fam}m{member}")
            rows[split]["sequence"].append("".join(seq))
            rows[split]["label"].append(member % 2 if fam == 0 else fam % 2)
    return datasets.DatasetDict({s: datasets.Dataset.from_dict(r, features=SEQUENCE_FEATURES) for s, r in rows.items()})


@needs_mmseqs
@pytest.mark.slow  # each mmseqs easy-cluster/easy-search run takes ~8 s even on 24 sequences
def test_sub_keeps_one_per_family_and_cut_matches_its_size(tmp_path: Path) -> None:
    data = _family_set()
    sub = reduce(data, 0.85, threads=1)
    ids = sub["train"]["id"]
    assert len(ids) == 8 and len({i.split("m")[0] for i in ids}) == 8  # one per family
    cut = random_subset(data, sub, seed=1)
    assert random_subset(data, sub, seed=1)["train"]["id"] == cut["train"]["id"]
    # Full, SUB and CUT share one test split, and CUT has SUB's rows of each label.
    assert data["test"]["id"] == sub["test"]["id"] == cut["test"]["id"] and data["test"].num_rows == 4
    for split in sub:
        assert sorted(cut[split]["label"]) == sorted(sub[split]["label"]), split
    # At 99.9% identity nothing clusters with anything but itself.
    assert sum(ds.num_rows for ds in reduce(data, 0.999, threads=1).values()) == 24


@needs_mmseqs
@pytest.mark.slow
def test_conflicts_find_the_disagreeing_family() -> None:
    found = find_conflicts(_family_set(), 0.9, threads=1)
    assert {(c.id_a, c.id_b) for c in found} == {("f0m0", "f0m1"), ("f0m1", "f0m2")}
    assert all(0.95 <= c.identity < 1.0 and c.label_a != c.label_b for c in found)
    md = to_markdown(found, "families", 0.9)
    assert "2 pair(s) of sequences at least 90% identical" in md and "| f0m0 | train | 0 | f0m1 | train | 1 |" in md


@needs_mmseqs
@pytest.mark.slow
def test_easy_search_all_against_all_and_query_against_target() -> None:
    train = _family_set()["train"].select(range(4))
    family = [rid.split("m")[0] for rid in train["id"]]  # f0, f0, f0, f1
    seqs = train["sequence"]
    hits = list(easy_search(seqs, None, ("query", "target", "fident", "qlen"), ("-s", "7.5"), threads=1))
    assert all(len(h) == 4 for h in hits)
    pairs = {(int(q), int(t)) for q, t, *_ in hits}
    assert pairs == {(a, b) for a in range(4) for b in range(4) if family[a] == family[b]}
    assert all(int(qlen) == 120 and (float(fident) == 1.0) == (q == t) for q, t, fident, qlen in hits)
    # Against another set, the targets are that set's rows: f0m2 and f1m0 against f0m0 and f0m1.
    hits = list(easy_search(seqs[2:], seqs[:2], ("query", "target"), threads=1))
    assert sorted((int(q), int(t)) for q, t in hits) == [(0, 0), (0, 1)]


@needs_mmseqs
@pytest.mark.slow
def test_cli_reduce_random_subset_conflicts(tmp_path: Path) -> None:
    full = tmp_path / "full"
    save_task(_family_set(), full, TaskMeta("dna-binding", "sequence", "families", "full", []))
    runner = CliRunner()
    for args in (
        ["reduce", str(full), "--identity", "0.85", "--out", str(tmp_path / "sub"), "--threads", "1"],
        ["random-subset", str(full), "--like", str(tmp_path / "sub"), "--out", str(tmp_path / "cut")],
        ["conflicts", str(full), "--out", str(tmp_path / "c.tsv"), "--threads", "1"],
    ):
        result = runner.invoke(app, ["data", *args])
        assert result.exit_code == 0, (args, result.output, result.exception)
    assert '"variant": "cut"' in (tmp_path / "cut/minprot_task.json").read_text()
    assert (tmp_path / "c.tsv").read_text().count("\n") == 3  # header + 2 pairs
    # An existing report is replaced only with --overwrite, and that is said before the search runs.
    again = runner.invoke(app, ["data", "conflicts", str(full), "--out", str(tmp_path / "c.tsv")])
    assert isinstance(again.exception, UserError) and "pass --overwrite to replace it" in str(again.exception)
    assert (tmp_path / "c.tsv").read_text().count("\n") == 3


def test_missing_binary_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINPROT_MMSEQS", "mmseqs-not-installed-here")
    with pytest.raises(
        UserError,
        match=r"mmseqs binary was not found on PATH; install MMseqs2 \(Debian/Ubuntu: `apt-get install mmseqs2`",
    ):
        reduce(_family_set(), 0.85)


def test_bad_fraction_and_mismatched_like() -> None:
    data = _family_set()
    with pytest.raises(UserError, match=r"--identity must be a fraction in \(0, 1\], got 85"):
        reduce(data, 85)
    with pytest.raises(UserError, match=r"--like has splits train but the dataset has train, test"):
        random_subset(data, datasets.DatasetDict({"train": data["train"]}))
