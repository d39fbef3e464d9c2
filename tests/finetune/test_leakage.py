"""Train/test overlap on the real PDB1075 -> PDB186 benchmark with the real MMseqs2: the command, and a fine-tune's
metrics.json, filtered test set and leakage search sensitivity."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from data_prep.tasks import load_task_data
from data_prep.tasks.overlap import normalise
from minprot_ds.cli import app
from minprot_ds.finetune.metrics import Predictions, compute_metrics, json_safe, read_predictions
from minprot_ds.finetune.tasks import task_spec
from minprot_ds.finetune.uncertainty import confidence_intervals

pytestmark = pytest.mark.slow  # MMseqs2 searches and a fine-tune on all of PDB1075 (~1 min on 2 busy cores)


@pytest.fixture(scope="module")
def pdb(shared_data: Path) -> dict[str, Path]:
    folder = shared_data / "dna_binding/pdb1075_pdb186"
    return {"train": folder / "Training_dataset_PDB1075.txt", "test": folder / "independent_test_dataset_PDB186.txt"}


def verbatim(pdb: dict[str, Path]) -> set[str]:
    """PDB186 ids whose sequence occurs in PDB1075, by plain set membership (no MMseqs2)."""
    train = {normalise(s) for s in load_task_data(pdb["train"], "dna-binding")["sequence"]}
    test = load_task_data(pdb["test"], "dna-binding")
    return {rid for rid, seq in zip(test["id"], test["sequence"]) if normalise(seq) in train}


@pytest.fixture(scope="module")
def overlap_dir(pdb: dict[str, Path], tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("overlap")
    result = CliRunner().invoke(app, ["data", "overlap", str(pdb["test"]), str(pdb["train"]), "--out", str(out)])
    assert result.exit_code == 0, (result.output, result.exception)
    return out


def test_overlap_command_counts_the_verbatim_copies(pdb: dict[str, Path], overlap_dir: Path) -> None:
    tmp_path = overlap_dir
    found = json.loads((tmp_path / "overlap.json").read_text())
    copies = verbatim(pdb)
    assert found["exact"] == len(copies) >= 75 and found["query_sequences"] == 186
    assert found["exact"] <= found["near_identical"] <= found["homologs"] <= 186
    with open(tmp_path / "hits.tsv", newline="") as handle:
        hits = list(csv.DictReader(handle, delimiter="\t"))
    full = {h["query"] for h in hits if float(h["identity"]) == 1.0 and float(h["query_coverage"]) == 1.0}
    assert copies <= full  # MMseqs2 finds every verbatim copy too


def test_finetune_reports_leakage_and_scores_the_filtered_test_set(
    pdb, overlap_dir: Path, teacher_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ft"
    result = CliRunner().invoke(
        app,
        [
            "finetune",
            "--task",
            "dna-binding",
            "--model",
            str(teacher_dir),
            "--train",
            str(pdb["train"]),
            "--test",
            str(pdb["test"]),
            "--out",
            str(out),
            "--epochs",
            "1",
            "--batch-size",
            "64",
            "--lr",
            "1e-3",
            "--window",
            "128",
            "--stride",
            "64",
            "--test-filter",
            "near-identical",
        ],
    )
    assert result.exit_code == 0, (result.output, result.exception)
    metrics = json.loads((out / "metrics.json").read_text())
    leakage = metrics["leakage"]["test"]
    command = json.loads((overlap_dir / "overlap.json").read_text())
    assert {k: leakage[k] for k in ("exact", "near_identical", "homologs")} == {
        k: command[k] for k in ("exact", "near_identical", "homologs")
    }
    assert leakage["exact"] == len(verbatim(pdb))
    # The filtered test set: no exact or near-identical copy of a training row is left in it.
    with open(out / "leakage.tsv", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    kept = {r["id"] for r in rows if r["kept"] == "1"}
    assert len(rows) == 186 and not kept & verbatim(pdb)
    assert all(r["class"] in ("homolog", "none") for r in rows if r["kept"] == "1")
    filtered = metrics["test_filtered"]
    assert filtered["filter"] == "near-identical" and filtered["rows"] == len(kept) == 186 - leakage["near_identical"]
    assert metrics["leakage"]["test_rows_passing"] == len(kept)
    spec = task_spec("dna-binding")
    pred = read_predictions(out / "predictions.tsv", spec)
    keep = np.array([i in kept for i in pred.ids])
    sub = Predictions([i for i in pred.ids if i in kept], pred.labels[keep], pred.probs[keep], pred.predicted[keep])
    again = json_safe(compute_metrics(sub, spec))
    assert {k: filtered[k] for k in again} == again
    # Every scored set carries its 95% CIs: the filtered one is the bootstrap of its own proteins.
    assert filtered["ci95"] == json_safe(confidence_intervals(sub, spec)["ci95"])
    for scored in (metrics["test"], filtered, *metrics["baselines"].values()):
        assert set(scored["ci95"]) >= {"accuracy", "roc_auc", "mcc"} and scored["ci_method"]["resamples"] == 1000
    assert metrics["test"]["n"] == 186 and metrics["coverage"]["residue_coverage"] == 1.0


def test_leakage_sensitivity_reaches_the_fine_tunes_search(sets, teacher_dir: Path, tmp_path: Path) -> None:
    """--leakage-sensitivity is the -s of the fine-tune's leakage search: at 1, MMseqs2's prefilter misses the
    distant homologs in dna_train (1B6WA's) that the default, 7.5, finds for three dna_remote rows."""

    def finetune(*flags: str) -> tuple[dict, dict[str, str]]:
        out = tmp_path / f"ft{len(list(tmp_path.iterdir()))}"
        args = ["--task", "dna-binding", "--model", str(teacher_dir), "--out", str(out), "--epochs", "1"]
        args += ["--train", str(sets["dna_train"]), "--test", str(sets["dna_remote"]), "--batch-size", "4", *flags]
        result = CliRunner().invoke(app, ["finetune", *args])
        assert result.exit_code == 0, (result.output, result.exception)
        with open(out / "leakage.tsv", newline="") as handle:
            closest = {r["id"]: r["closest_train_id"] for r in csv.DictReader(handle, delimiter="\t")}
        return json.loads((out / "metrics.json").read_text())["leakage"]["test"], closest

    leakage, closest = finetune()
    assert leakage["tool"] == "mmseqs easy-search -s 7.5" and len(closest) == 6
    assert {rid: train for rid, train in closest.items() if train} == dict.fromkeys(
        ("3V9RA", "3VH5A", "3B0CT"), "1B6WA"
    )
    leakage, closest = finetune("--leakage-sensitivity", "1")
    assert leakage["tool"] == "mmseqs easy-search -s 1.0" and len(closest) == 6
    assert not any(closest.values())
