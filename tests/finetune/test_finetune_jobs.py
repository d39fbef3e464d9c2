"""Fine-tune jobs end to end on a tiny model and real benchmark records: outputs, metrics recomputed with
scikit-learn from predictions.tsv, the saved model, and the MLflow run with its links to the distillation."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from sklearn import metrics as skm

from minprot_ds.finetune.metrics import compute_metrics, json_safe, read_predictions
from minprot_ds.finetune.tasks import task_spec
from minprot_ds.finetune.uncertainty import confidence_intervals
from minprot_ds.scoring.heads import load_task_model

pytestmark = pytest.mark.slow  # the shared `runs` fixture fine-tunes five models (~1 min on 2 busy cores)


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def the_run(uri: str, out: Path):
    run_id = json.loads((out / "metrics.json").read_text())["mlflow_run_id"]
    return MlflowClient(tracking_uri=uri).get_run(run_id)


def test_dna_binding_metrics_equal_sklearn_on_predictions(runs) -> None:
    out = runs.outs["dna_teacher"]
    metrics = json.loads((out / "metrics.json").read_text())
    table = rows(out / "predictions.tsv")
    assert list(table[0]) == ["id", "label", "score", "prediction"] and len(table) == 12  # 6 + 6 PDB186 records
    y = np.array([int(r["label"]) for r in table])
    score = np.array([float(r["score"]) for r in table])
    yhat = np.array([int(r["prediction"]) for r in table])
    assert sorted(set(y)) == [0, 1] and np.array_equal(yhat, (score > 0.5).astype(int))
    test = metrics["test"]
    assert test["accuracy"] == pytest.approx(skm.accuracy_score(y, yhat))
    precision = np.nan if test["precision"] is None else test["precision"]  # undefined when no positive predicted
    assert precision == pytest.approx(skm.precision_score(y, yhat, zero_division=np.nan), nan_ok=True)
    assert test["recall"] == pytest.approx(skm.recall_score(y, yhat, zero_division=0))
    assert test["f1"] == pytest.approx(skm.f1_score(y, yhat, zero_division=0))
    assert test["roc_auc"] == pytest.approx(skm.roc_auc_score(y, score))
    assert test["mcc"] == pytest.approx(skm.matthews_corrcoef(y, yhat))
    runtime = metrics["runtime"]
    assert runtime["train_seconds"] > 0 and runtime["inference_samples_per_second"] > 0
    assert metrics["rows"] == {"train": 20, "valid": 0, "test": 12} and metrics["model_role"] == "teacher"
    # The model reloads with its head, its task description and the tokenizer files.
    model = load_task_model(out / "model")
    assert model.info.classes == ["non-binding", "DNA-binding"] and model.info.mlflow_run_id == metrics["mlflow_run_id"]
    assert model.info.pooling == "cls" and model.info.threshold == 0.5 and model.head.out_features == 2
    assert (out / "model" / "vocab.txt").read_text().split()[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def test_q3_predicts_every_residue_and_scores_labelled_ones(runs, sets) -> None:
    from data_prep.tasks import load_task_data

    out = runs.outs["q3_teacher"]
    test = load_task_data(sets["q3_test"], "q3", split="test")
    table = rows(out / "predictions.tsv")
    # One row per residue of each test chain, CASP12's 563-residue chain too (overlapping windows).
    assert len(table) == sum(len(s) for s in test["sequence"]) and max(len(s) for s in test["sequence"]) > 512
    first = test[0]
    mine = [r for r in table if r["id"] == first["id"]]
    assert [int(r["position"]) for r in mine] == list(range(1, len(first["sequence"]) + 1))
    assert "".join(r["residue"] for r in mine) == first["sequence"]
    assert [int(r["label"]) for r in mine] == first["labels"]  # residue i <-> token i + 1, masks kept as -100

    y = np.array([int(r["label"]) for r in table])
    keep = y != -100
    probs = np.array([[float(r[f"p_{c}"]) for c in "HEC"] for r in table])
    yhat = np.array([int(r["prediction"]) for r in table])
    metrics = json.loads((out / "metrics.json").read_text())
    q3 = metrics["test"]
    assert q3["n"] == int(keep.sum()) < len(table)
    assert q3["accuracy"] == pytest.approx(skm.accuracy_score(y[keep], yhat[keep]))
    assert q3["mcc"] == pytest.approx(skm.matthews_corrcoef(y[keep], yhat[keep]))
    assert q3["roc_auc"] == pytest.approx(
        skm.roc_auc_score(y[keep], probs[keep] / probs[keep].sum(1, keepdims=True), multi_class="ovr", labels=[0, 1, 2])
    )
    p, r, f, _ = skm.precision_recall_fscore_support(y[keep], yhat[keep], labels=[0, 1, 2], zero_division=0)
    for i, c in enumerate("HEC"):
        assert q3["per_class"][c] == pytest.approx(
            {"precision": p[i], "recall": r[i], "f1": f[i], "support": int((y[keep] == i).sum())}
        )
    assert q3["f1"] == pytest.approx(f.mean())
    coverage = metrics["coverage"]
    assert coverage["residue_coverage"] == 1.0 and coverage["sequences_longer_than_window"] == 1
    assert coverage["labelled_residues_scored"] == coverage["labelled_residues"] == q3["n"]
    assert metrics["valid"]["valid/accuracy"] == pytest.approx(q3["accuracy"])
    assert load_task_model(out / "model").info.per_residue


def test_metrics_json_is_the_function_of_predictions_tsv(runs) -> None:
    for name, task in (("dna_student", "dna-binding"), ("mem_student", "membrane"), ("q3_teacher", "q3")):
        spec = task_spec(task)
        out = runs.outs[name]
        again = compute_metrics(read_predictions(out / "predictions.tsv", spec), spec)
        written = json.loads((out / "metrics.json").read_text())["test"]
        # Exactly equal (JSON round-trips floats); undefined values (NaN) are written as null.
        assert {k: written[k] for k in again} == json_safe(again), name
        # The CIs too: the same seeded bootstrap over the file's proteins.
        cis = confidence_intervals(read_predictions(out / "predictions.tsv", spec), spec)
        assert written["ci95"] == json_safe(cis["ci95"]) and written["ci_method"] == cis["ci_method"], name


def test_student_run_links_to_its_distillation_run(runs) -> None:
    run = the_run(runs.uri, runs.outs["dna_student"])
    tags = run.data.tags
    assert tags["mlflow.parentRunId"] == runs.distill_run_id
    assert tags["minprot.distill_run_id"] == runs.distill_run_id and tags["minprot.distill_step"] == "10"
    assert (tags["minprot.task"], tags["minprot.dataset"], tags["minprot.model_role"]) == (
        "dna-binding",
        "PDB1075",
        "student",
    )
    assert run.data.params["lr"] == "0.001" and run.data.params["model.layers"] == "1"
    assert run.data.metrics["test/mcc"] == pytest.approx(
        json.loads((runs.outs["dna_student"] / "metrics.json").read_text())["test"]["mcc"]
    )
    artifacts = {a.path for a in MlflowClient(tracking_uri=runs.uri).list_artifacts(run.info.run_id)}
    assert {"metrics.json", "predictions.tsv"} <= artifacts


def test_teacher_run_has_no_parent_and_default_store_keeps_plain_tag(runs) -> None:
    teacher = the_run(runs.uri, runs.outs["dna_teacher"]).data.tags
    assert teacher["minprot.model_role"] == "teacher" and "mlflow.parentRunId" not in teacher
    assert "minprot.distill_run_id" not in teacher
    # The membrane job used the default store (SQLite under --out): the distillation run is not there.
    out = runs.outs["mem_student"]
    assert (out / "mlflow.db").is_file()
    tags = the_run(f"sqlite:///{out / 'mlflow.db'}", out).data.tags
    assert tags["minprot.distill_run_id"] == runs.distill_run_id and "mlflow.parentRunId" not in tags
    assert (tags["minprot.task"], tags["minprot.dataset"]) == ("membrane", "DeepLoc")


def test_sub_variant_and_organism_are_tagged(runs) -> None:
    tags = the_run(runs.uri, runs.outs["sub_student"]).data.tags
    assert tags["minprot.dataset"] == "swissprot-human" and tags["minprot.dataset_variant"] == "sub"
    assert tags["minprot.dataset_label"] == "swissprot-human SUB 85%" and tags["minprot.organism"] == "human"
