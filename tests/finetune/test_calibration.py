"""Thresholds and calibration: the threshold is chosen on the valid split (never on test) and stored for
`predict`; Brier and ECE against hand computations; the reliability plot."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from minprot_ds.finetune.calibration import choose_threshold, plot_title
from minprot_ds.finetune.metrics import Predictions, compute_metrics, read_predictions
from minprot_ds.finetune.tasks import task_spec

DNA, Q3 = task_spec("dna-binding"), task_spec("q3")
PNG = b"\x89PNG\r\n\x1a\n"


def binary(labels: list[int], p1: list[float], threshold: float = 0.5) -> Predictions:
    p = np.asarray(p1, dtype=np.float64)
    return Predictions(
        [f"p{i}" for i in range(len(p))],
        np.asarray(labels),
        np.stack([1 - p, p], axis=1),
        (p > threshold).astype(np.int64),
    )


def test_brier_and_ece_of_a_binary_set_are_the_hand_computation() -> None:
    found = compute_metrics(binary([1, 0, 0, 1, 0, 1], [0.9, 0.95, 0.2, 0.65, 0.05, 0.3]), DNA)
    # Brier: (0.1² + 0.95² + 0.2² + 0.35² + 0.05² + 0.7²) / 6
    assert found["brier"] == pytest.approx((0.01 + 0.9025 + 0.04 + 0.1225 + 0.0025 + 0.49) / 6)
    # ECE, 10 equal-width bins of P(class 1): bin 0.9-1 holds 0.9 and 0.95 (one positive): |1.85 - 1|; the other
    # bins one row each: |0.2 - 0|, |0.65 - 1|, |0.05 - 0|, |0.3 - 1|; over 6 rows.
    assert found["ece"] == pytest.approx((0.85 + 0.2 + 0.35 + 0.05 + 0.7) / 6)


def test_brier_and_ece_of_q3_sum_over_classes_and_take_the_top_label() -> None:
    probs = np.array([[0.7, 0.2, 0.1], [0.3, 0.3, 0.4]])
    pred = Predictions(["a", "a"], np.array([0, 1]), probs, probs.argmax(axis=1), np.array([1, 2]), ["M", "K"])
    found = compute_metrics(pred, Q3)
    assert found["brier"] == pytest.approx(((0.3**2 + 0.2**2 + 0.1**2) + (0.3**2 + 0.7**2 + 0.4**2)) / 2)
    assert found["ece"] == pytest.approx((abs(0.7 - 1) + abs(0.4 - 0)) / 2)  # right at 0.7, wrong at 0.4


def test_the_threshold_is_the_maximum_mcc_cut_of_the_valid_scores() -> None:
    chosen = choose_threshold(binary([0, 0, 1, 1, 1], [0.1, 0.3, 0.35, 0.6, 0.8]))
    assert chosen["source"] == "valid" and chosen["value"] == pytest.approx(0.325) and chosen["valid_mcc"] == 1.0
    assert chosen["valid_mcc_at_0.5"] == pytest.approx(4 / 6)  # tp 2, fp 0, fn 1, tn 2
    # Two cuts share the best MCC (0.577 at 0.15 and at 0.75): the one nearer 0.5 wins.
    assert choose_threshold(binary([0, 1, 0, 1], [0.1, 0.2, 0.7, 0.8]))["value"] == pytest.approx(0.75)
    # One class in the valid split, or none: 0.5, and the reason.
    assert choose_threshold(binary([1, 1], [0.2, 0.9])) | {"rule": ""} == {
        "value": 0.5,
        "source": "default",
        "reason": "the valid split has one class only (2 rows, 2 positives)",
        "rule": "",
    }
    assert choose_threshold(None)["source"] == "default"


@pytest.fixture(scope="module")
def flipped_run(runs, sets, tmp_path_factory) -> Path:
    """Seed 0 of the `seeds` runs (tests/finetune/conftest.py) again, with every test label flipped."""
    from data_prep.tasks import load_task_data
    from minprot_ds.data.task_store import TaskMeta, save_task
    from minprot_ds.finetune.options import FinetuneConfig
    from minprot_ds.finetune.train import run

    root = tmp_path_factory.mktemp("flipped")
    test = load_task_data(sets["dna_test"], "dna-binding", split="test")
    flipped = save_task(
        test.map(lambda r: {"label": 1 - r["label"]}),
        root / "test",
        TaskMeta("dna-binding", "sequence", "PDB186", "full", ["../shared/data"], options={}),
    )
    run(
        FinetuneConfig(
            task="dna-binding",
            model=str(runs.student),
            train=sets["dna_train"],
            valid=sets["dna_valid"],
            test=flipped,
            test_filter="near-identical",
            out=root / "out",
            seed=0,
            epochs=1,
            batch_size=4,
            lr=1e-3,
            tracking=False,
        )
    )
    return root / "out"


@pytest.mark.slow  # the shared `runs` fixture and one more tiny fine-tune
def test_the_threshold_comes_from_valid_and_flipping_test_labels_leaves_it(runs, flipped_run) -> None:
    seed0 = runs.outs["seeds"] / "seed-0"
    original = json.loads((seed0 / "metrics.json").read_text())
    again = json.loads((flipped_run / "metrics.json").read_text())
    assert original["threshold"]["source"] == "valid" and original["threshold"]["valid_rows"] == 10
    assert again["threshold"] == original["threshold"]  # the same value, rule and valid figures
    assert again["test"]["positives"] == original["test"]["n"] - original["test"]["positives"]  # labels did flip
    value = original["threshold"]["value"]
    # The test classes are taken at it, and the model folder stores it for predict.
    pred = read_predictions(seed0 / "predictions.tsv", DNA)
    assert np.array_equal(pred.predicted, (pred.probs[:, 1] > value).astype(int))
    task = json.loads((seed0 / "model" / "minprot_task.json").read_text())
    assert task["threshold"] == value and task["threshold_source"] == "valid"


@pytest.mark.slow
def test_predict_uses_the_stored_threshold_unless_told_and_says_which(runs, tmp_path) -> None:
    from minprot_ds.inference.job import run as predict
    from minprot_ds.inference.options import PredictOptions

    model = runs.outs["seeds"] / "seed-0" / "model"
    stored = json.loads((model / "minprot_task.json").read_text())["threshold"]
    fasta = tmp_path / "in.fasta"
    fasta.write_text(">a\nMKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ\n>b\nGDGTQDNLSGAEKAVQVKVKALPDAQFEVVHSLAKW\n")
    for given, source in ((None, "model (valid)"), (0.9, "--threshold")):
        out = tmp_path / f"{given}.tsv"
        predict(PredictOptions(model=model, fasta=fasta, out=out, progress=False, threshold=given))
        info = json.loads(Path(f"{out}.json").read_text())["info"]
        assert info["threshold"] == (stored if given is None else given) and info["threshold_source"] == source


@pytest.mark.slow
def test_without_a_valid_split_the_threshold_is_the_default_and_the_run_says_so(runs) -> None:
    out = runs.outs["dna_teacher"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["threshold"]["value"] == 0.5 and metrics["threshold"]["source"] == "default"
    assert metrics["threshold"]["reason"] == "no valid split"
    assert json.loads((out / "model" / "minprot_task.json").read_text())["threshold_source"] == "default"
    # Brier and ECE with their CIs, the reliability table behind the plot, and the plot.
    test = metrics["test"]
    low, high = test["ci95"]["brier"]
    assert low <= test["brier"] <= high
    low, high = test["ci95"]["ece"]  # ECE >= 0 and near 0 here: its point may sit just below a percentile CI
    assert 0 <= low <= high <= 1 and 0 <= test["ece"] <= 1
    bins = metrics["calibration"]["reliability"]["test"]
    assert len(bins) == 10 and sum(b["n"] for b in bins) == test["n"]
    assert (out / metrics["calibration"]["plot"]).read_bytes()[:8] == PNG
    # A test folder without a component column (an older one, or any reader's file): proteins are resampled.
    assert test["ci_method"]["method"] == f"percentile bootstrap over proteins ({test['n']} proteins)"
    assert "component" not in (out / "predictions.tsv").read_text().splitlines()[0]
    # q3 has no threshold: the argmax.
    q3 = json.loads((runs.outs["q3_teacher"] / "metrics.json").read_text())
    assert q3["threshold"]["value"] is None and q3["threshold"]["source"] == "argmax"


def test_the_plot_title_names_the_model_once_when_its_folder_is_its_role() -> None:
    assert plot_title("dna-binding", "teacher", "teacher", "PDB186") == "dna-binding: teacher on PDB186"
    assert plot_title("q3", "student", "demo-student", "CASP12") == "q3: student (demo-student) on CASP12"


@pytest.fixture(scope="module")
def components_run(sets, teacher_dir, tmp_path_factory) -> Path:
    """A tiny fine-tune whose test folder carries a `component` column (12 proteins in 6 made-up components of
    2, as `minprot data split` writes it), with the near-identical filter and the baselines."""
    from data_prep.tasks import load_task_data
    from minprot_ds.data.task_store import TaskMeta, save_task
    from minprot_ds.finetune.options import FinetuneConfig
    from minprot_ds.finetune.train import run

    root = tmp_path_factory.mktemp("components")
    test = load_task_data(sets["dna_test"], "dna-binding", split="test")
    test = save_task(
        test.add_column("component", [i // 2 for i in range(test.num_rows)]),
        root / "test",
        TaskMeta("dna-binding", "sequence", "PDB186", "full", ["../shared/data"], options={}),
    )
    quick = dict(epochs=1, batch_size=4, lr=1e-3, bootstrap=200, tracking=False)
    run(
        FinetuneConfig(
            task="dna-binding",
            model=str(teacher_dir),
            train=sets["dna_train"],
            test=test,
            test_filter="near-identical",
            out=root / "out",
            **quick,
        )
    )
    return root / "out"


@pytest.mark.slow  # one tiny fine-tune
def test_a_test_set_with_components_bootstraps_them_for_every_scored_set(components_run: Path) -> None:
    metrics = json.loads((components_run / "metrics.json").read_text())
    pred = read_predictions(components_run / "predictions.tsv", DNA)
    assert pred.groups == [str(i // 2) for i in range(len(pred))] and len(pred) == 12
    scored = {"test": metrics["test"], "test_filtered": metrics["test_filtered"]}
    for name, values in metrics["baselines"].items():
        scored |= {f"baseline {name}": values, f"baseline {name} filtered": values["filtered"]}
    assert len(scored) == 6  # both baselines (homology: the leakage search ran), each on both sets
    for name, values in scored.items():
        method = values["ci_method"]
        assert method["method"].startswith("percentile bootstrap over homology components ("), name
        assert method["unit"] == "homology components", name  # what MLflow's ci_unit param records
        assert method["method"].endswith(f"({method['groups']} components)") and method["resamples"] == 200, name
    assert metrics["test"]["ci_method"]["groups"] == 6
    # And `minprot compare` of the run with itself pairs on the same components.
    from minprot_ds.finetune.compare import compare

    (result,) = compare(components_run, components_run, resamples=50)
    assert result["method"] == "percentile bootstrap over homology components (6 components)"
