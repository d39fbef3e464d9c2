"""Swiss-Prot DNA-binding builder on Biopython's real flat files, its split, and the task folders it writes."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
import pytest
from typer.testing import CliRunner

from data_prep.tasks import load_task_data
from data_prep.tasks.split import partition
from data_prep.tasks.swissprot import FRAGMENT, SPLIT_FRACTIONS, build_swissprot, is_fragment
from minprot_ds.cli import app
from minprot_ds.errors import UserError


@pytest.fixture(scope="module")
def dat_files(shared_data: Path) -> list[Path]:
    return sorted((shared_data / "swissprot").glob("*.dat"))


def _all(data: datasets.DatasetDict) -> dict[str, int]:
    return {i: y for ds in data.values() for i, y in zip(ds["id"], ds["label"])}


def test_human_keeps_reviewed_20_to_512_and_labels_fos(dat_files: list[Path]) -> None:
    data, excluded, report, leakage = build_swissprot(dat_files, "human", seed=0)
    labels = _all(data)
    assert labels["P01100"] == 1  # FOS_HUMAN: keyword DNA-binding
    assert "P00750" not in labels  # TPA_HUMAN, 562 residues
    assert "Q7Z739" not in labels  # YTHD3_HUMAN, 585 residues
    assert sum(labels.values()) == 1 and len(labels) == 6
    assert excluded == {"outside 20-512 residues": 4, "other organism": 13, "unreviewed (TrEMBL) entry": 2}
    assert report["proteins"] == 6 and report["sensitivity"] == 7.5
    assert leakage["test->train"]["homologs"] == 0 and leakage["valid->train"]["homologs"] == 0


def test_bacteria_archaea_and_taxid(dat_files: list[Path]) -> None:
    data, excluded, _, _ = build_swissprot(dat_files, "bacteria-archaea")
    assert excluded[FRAGMENT] == 1
    labels = _all(data)
    assert labels["Q51481"] == 1  # NIRQ_PSEAE
    assert "P0CK95" not in labels and "H2CNN8" not in labels  # 1,520 residues; unreviewed
    assert (
        "P56540" not in labels and "Q51858" in labels
    )  # CbbQ: the entry flagged Fragment goes, the complete one stays
    mouse, *_ = build_swissprot(dat_files, "10090")
    assert list(_all(mouse)) == ["P60904"]


def test_unknown_organism_and_empty_result(dat_files: list[Path]) -> None:
    with pytest.raises(UserError, match=r"unknown --organism 'mouse'"):
        build_swissprot(dat_files, "mouse")
    with pytest.raises(UserError, match=r"no reviewed c-elegans entries"):
        build_swissprot(dat_files, "c-elegans")


def test_split_is_stratified_seeded_and_complete() -> None:
    labels = [1] * 40 + [0] * 400
    no_links = np.zeros((0, 2), dtype=np.int64)  # every row its own component: the split is stratified by label alone
    a, b, c = (partition(labels, no_links, SPLIT_FRACTIONS, seed).parts for seed in (1, 1, 2))
    assert a == b and a != c
    assert sorted(i for rows in a.values() for i in rows) == list(range(440))
    assert {k: len(v) for k, v in a.items()} == {"train": 374, "valid": 33, "test": 33}
    assert [sum(labels[i] for i in a[k]) for k in ("train", "valid", "test")] == [34, 3, 3]


def test_fragment_flag_is_read_from_the_description() -> None:
    assert is_fragment("RecName: Full=Protein CbbQ; Flags: Fragment;")
    assert is_fragment("RecName: Full=X; Flags: Precursor; Fragment;") and is_fragment("Flags: Fragments;")
    assert not is_fragment("RecName: Full=Fragmentin; Flags: Precursor;") and not is_fragment("RecName: Full=Y;")


def test_cli_writes_a_task_folder_the_finetune_loads(dat_files: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "human"
    result = CliRunner().invoke(
        app, ["data", "swissprot", *map(str, dat_files), "--organism", "human", "--out", str(out), "--seed", "3"]
    )
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "minprot_task.json").read_text())
    assert meta["task"] == "dna-binding" and meta["variant"] == "full" and meta["options"]["seed"] == 3
    assert json.loads((out / "leakage.json").read_text())["test->train"]["homologs"] == 0
    assert json.loads((out / "split.json").read_text())["coverage_of_shorter"] == 0.8
    data = load_task_data(out, "dna-binding")
    assert set(data) == {"train", "valid", "test"}
    assert data["train"].column_names == ["id", "sequence", "label", "component"]  # the bootstrap's groups
    report = json.loads((out / "split.json").read_text())
    comps = {name: set(part["component"]) for name, part in data.items()}
    assert len(set().union(*comps.values())) <= report["components"]
    assert len((comps["test"] | comps["valid"]) & comps["train"]) <= report["components_carved"]
    assert load_task_data(out, "dna-binding", split="train").num_rows == data["train"].num_rows
    with pytest.raises(UserError, match=r"holds a dna-binding dataset, not one for task q3"):
        load_task_data(out, "q3")
