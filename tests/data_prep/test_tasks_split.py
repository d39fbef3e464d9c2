"""`minprot data split`: connected components of a sensitive MMseqs2 search, whole components to one split, the
carving of large components, pooling with duplicates and label conflicts, and the leakage check on PDB14189."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import datasets
import numpy as np
import pytest
from typer.testing import CliRunner

from data_prep.tasks import load_task_data
from data_prep.tasks.mmseqs import mmseqs_binary
from data_prep.tasks.split import homology_links, partition, pool, pooled_name
from minprot_ds.cli import app
from minprot_ds.data.task_records import SEQUENCE_FEATURES

FRACTIONS = {"train": 0.85, "valid": 0.075, "test": 0.075}


def _no_link_across(parts: dict[str, list[int]], links: np.ndarray) -> bool:
    """No link joins two kept proteins in different splits (removed proteins are in none)."""
    split_of = {i: name for name, rows in parts.items() for i in rows}
    return all(a not in split_of or b not in split_of or split_of[a] == split_of[b] for a, b in links.tolist())


def test_components_stay_whole_and_labels_reach_their_fractions() -> None:
    rng = np.random.default_rng(0)
    n = 2000
    comp = rng.integers(0, 700, size=n)  # 700 families of 1 to ~8 members
    links = np.array([(i, j) for i in range(n) for j in range(i + 1, min(n, i + 40)) if comp[i] == comp[j]])
    labels = [int(c % 4 == 0) for c in comp]
    found = partition(labels, links, FRACTIONS, seed=1)
    assert sorted(i for rows in found.parts.values() for i in rows) == list(range(n)) and found.removed == []
    assert _no_link_across(found.parts, links)
    for name in ("valid", "test"):  # within one family's size of the target, per label
        for y in (0, 1):
            target = 0.075 * sum(1 for v in labels if v == y)
            assert abs(sum(1 for i in found.parts[name] if labels[i] == y) - target) <= 10
    assert (
        found == partition(labels, links, FRACTIONS, seed=1)
        and found.parts != partition(labels, links, FRACTIONS, 2).parts
    )


def test_a_giant_component_is_carved_and_the_fewest_boundary_proteins_removed() -> None:
    # 400 proteins in one chain (each linked to the next two): whole components cannot fill test or valid.
    n = 400
    links = np.array([(i, j) for i in range(n) for j in (i + 1, i + 2) if j < n])
    found = partition([0] * n, links, FRACTIONS, seed=0)
    assert found.carved == 2 and found.largest_component == n and found.components == 1
    assert _no_link_across(found.parts, links)
    # A piece of a chain has at most two ends, each with two links out: a handful of removals, not dozens.
    assert 1 <= len(found.removed) <= 8
    assert abs(len(found.parts["test"]) - 30) <= 4 and abs(len(found.parts["valid"]) - 30) <= 4
    kept = sorted(i for rows in found.parts.values() for i in rows)
    assert sorted(kept + found.removed) == list(range(n))


def test_links_need_coverage_of_the_shorter_protein_only() -> None:
    rng = np.random.default_rng(3)
    aa = np.array(list("ACDEFGHIKLMNPQRSTVWY"))
    long = "".join(rng.choice(aa, 203))
    fragment = long[50:160]  # 110 residues inside the 203: 100% identity over all of the shorter, 54% of the longer
    other = "".join(rng.choice(aa, 150))
    assert homology_links([long, other, fragment]).tolist() == [[0, 2]]


def test_a_pooled_set_is_named_after_all_its_inputs() -> None:
    assert pooled_name([Path("/d/pdb14189"), Path("uniswiss_train")]) == "pdb14189+uniswiss_train"
    assert pooled_name([Path("PDB186.txt")]) == "PDB186.txt"


def test_pooling_keeps_one_copy_and_drops_conflicting_labels() -> None:
    a = datasets.Dataset.from_dict(
        {"id": ["a1", "a2", "a3"], "sequence": ["MKVL", "MKVLA", "GGGG"], "label": [1, 0, 1]},
        features=SEQUENCE_FEATURES,
    )
    b = datasets.Dataset.from_dict(
        {"id": ["b1", "b2"], "sequence": ["MKVL", "MKVLA"], "label": [1, 1]}, features=SEQUENCE_FEATURES
    )
    pooled = pool([a, b], "sequence")
    assert pooled.data["id"] == ["a1", "a3"] and pooled.duplicates == 1
    assert pooled.conflicts == [[("a2", "0"), ("b2", "1")]]


@pytest.fixture(scope="module")
def pdb14189_split(shared_data: Path, tmp_path_factory) -> Path:
    """One `data split` of PDB14189's 20-512-residue proteins (about 10,500), shared by the tests below."""
    out = tmp_path_factory.mktemp("split") / "pdb14189"
    result = CliRunner().invoke(
        app,
        [
            "data",
            "split",
            str(shared_data / "dna_binding" / "pdb14189"),
            "--task",
            "dna-binding",
            "--min-length",
            "20",
            "--max-length",
            "512",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.slow
def test_pdb14189_split_has_no_homolog_across_by_the_projects_measure(pdb14189_split: Path) -> None:
    leakage = json.loads((pdb14189_split / "leakage.json").read_text())
    for side in ("test->train", "valid->train"):
        assert leakage[side]["homologs"] == 0 and leakage[side]["query_sequences"] > 700, leakage
        assert leakage[side]["tool"] == "mmseqs easy-search -s 7.5"
        # The components alone leave at most 1% for the check to remove (the old clusters: 17%).
        before = leakage[side]["before_removal"]
        assert before["homologs"] <= 0.01 * before["query_sequences"], leakage
        name = side.split("-")[0]
        assert len(leakage["removed_by_the_check"][name]) == before["homologs"]
    report = json.loads((pdb14189_split / "split.json").read_text())
    meta = json.loads((pdb14189_split / "minprot_task.json").read_text())
    kept_rows = sum(row["rows"] for row in meta["splits"])
    assert meta["excluded"]["outside 20-512 residues"] > 3000 and sum(meta["excluded"].values()) + kept_rows == 14189
    kept = sum(row["rows"] for row in report["fractions"].values())
    assert kept + report["removed_to_cut_links"] + report["removed_by_the_leakage_check"] == report["proteins"]
    assert report["proteins"] <= 10539
    for name in ("valid", "test"):
        assert abs(report["fractions"][name]["achieved"] - 0.075) < 0.01, report["fractions"]
    data = load_task_data(pdb14189_split, "dna-binding")  # what `finetune --train DIR --test DIR` reads
    assert set(data) == {"train", "valid", "test"}
    # Each protein's homology component (what the fine-tune's bootstrap resamples): a component spans two
    # splits only where step 4 carved it.
    comps = {name: set(part["component"]) for name, part in data.items()}
    assert data["test"].features["component"].dtype == "int64"
    assert len(set().union(*comps.values())) <= report["components"]
    assert len((comps["test"] | comps["valid"]) & comps["train"]) <= report["components_carved"]
    assert len(comps["test"]) < data["test"].num_rows  # some test components hold several proteins
    assert meta["name"] == "pdb14189"  # one input: its name
    assert load_task_data(pdb14189_split, "dna-binding", split="test").num_rows == report["fractions"]["test"]["rows"]


@pytest.mark.slow
def test_pdb14189_split_passes_an_independent_mmseqs_search(pdb14189_split: Path, tmp_path: Path) -> None:
    data = load_task_data(pdb14189_split, "dna-binding")
    for name in ("test", "train"):
        with open(tmp_path / f"{name}.fasta", "w") as handle:
            handle.writelines(f">{i}\n{s}\n" for i, s in enumerate(data[name]["sequence"]))
    subprocess.run(
        [
            mmseqs_binary(),
            "easy-search",
            "test.fasta",
            "train.fasta",
            "hits.m8",
            "tmp",
            "-s",
            "7.5",
            "-v",
            "1",
            "--format-output",
            "query,target,fident,qcov",
        ],
        cwd=tmp_path,
        check=True,
    )
    leaking = set()
    for line in (tmp_path / "hits.m8").read_text().splitlines():
        q, _t, fident, qcov = line.split("\t")
        if float(fident) >= 0.3 and float(qcov) >= 0.8:
            leaking.add(q)
    assert len(leaking) <= 0.01 * data["test"].num_rows, f"{len(leaking)} of {data['test'].num_rows} test proteins"


def test_near_identity_below_homolog_identity_is_refused(cli_error, tmp_path: Path) -> None:
    err = cli_error(
        "data",
        "overlap",
        "a.fasta",
        "b.fasta",
        "--out",
        str(tmp_path / "o"),
        "--near-identity",
        "0.2",
        "--homolog-identity",
        "0.3",
    )
    assert "--near-identity 0.2 is below --homolog-identity 0.3" in err
