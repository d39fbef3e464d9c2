"""The CIs and the paired verdicts (minprot_ds/finetune/uncertainty.py): against a hand computation, against
scikit-learn's metrics on each resample, and on synthetic prediction files with a known difference."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from minprot_ds.finetune.metrics import Predictions, compute_metrics, read_predictions, write_predictions
from minprot_ds.finetune.tasks import task_spec
from minprot_ds.finetune.uncertainty import (
    CI_METRICS,
    confidence_intervals,
    delong,
    draw,
    mcnemar,
    paired,
    resampled_metrics,
)
from minprot_ds.vocab import IGNORE_INDEX

DNA, Q3 = task_spec("dna-binding"), task_spec("q3")


def binary(n: int, accuracy: float, seed: int, labels: np.ndarray | None = None) -> Predictions:
    """n proteins (ids sorted, so group g is row g) whose predictions are right with probability `accuracy`;
    scores rounded to 2 digits so ties occur."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n) if labels is None else labels
    right = rng.random(n) < accuracy
    predicted = np.where(right, y, 1 - y)
    margin = rng.random(n) * 0.5
    p1 = np.round(np.where(predicted == 1, 0.5 + margin, 0.5 - margin).clip(0.001, 0.999), 2)
    return Predictions([f"p{i:05d}" for i in range(n)], y, np.stack([1 - p1, p1], axis=1), (p1 > 0.5).astype(int))


def q3(proteins: int, seed: int) -> Predictions:
    rng = np.random.default_rng(seed)
    ids, labels = [], []
    for i in range(proteins):
        length = int(rng.integers(5, 40))
        ids += [f"q{i}"] * length
        labels.append(rng.integers(0, 3, length))
    y = np.concatenate(labels)
    y[::13] = IGNORE_INDEX  # unlabelled residues count nowhere
    probs = rng.random((len(y), 3)) + np.eye(3)[np.where(y < 0, 0, y)] * rng.random((len(y), 1))
    probs = np.round(probs / probs.sum(axis=1, keepdims=True), 3)
    return Predictions(ids, y, probs, probs.argmax(axis=1), np.arange(1, len(y) + 1), ["A"] * len(y))


def resample(pred: Predictions, rows: np.ndarray) -> Predictions:
    return Predictions(
        [pred.ids[i] for i in rows],
        pred.labels[rows],
        pred.probs[rows],
        pred.predicted[rows],
        None if pred.positions is None else pred.positions[rows],
        None if pred.residues is None else [pred.residues[i] for i in rows],
    )


def test_accuracy_ci_on_a_prediction_file_is_the_hand_computation(tmp_path) -> None:
    path = write_predictions(binary(60, 0.8, seed=1), DNA, tmp_path / "predictions.tsv")
    pred = read_predictions(path, DNA)
    found = confidence_intervals(pred, DNA, resamples=500, seed=7)
    # By hand: 500 resamples of the 60 proteins from default_rng(7), the 2.5th and 97.5th percentiles.
    correct = (pred.labels == pred.predicted).astype(float)
    picks = np.random.default_rng(7).integers(0, 60, size=(500, 60))
    by_hand = np.percentile(correct[picks].mean(axis=1), [2.5, 97.5])
    assert found["ci95"]["accuracy"] == pytest.approx(by_hand, abs=1e-12)
    assert found["ci_method"] == {
        "method": "percentile bootstrap over proteins (60 proteins)",
        "unit": "proteins",
        "resamples": 500,
        "groups": 60,
        "seed": 7,
        "level": 0.95,
    }


@pytest.mark.parametrize("kind", ["binary", "q3"])
def test_each_resample_equals_sklearn_on_the_resampled_rows(kind: str) -> None:
    spec, pred = (DNA, binary(80, 0.75, seed=2)) if kind == "binary" else (Q3, q3(25, seed=3))
    draws = draw(pred.ids, resamples=25, seed=5)
    found = resampled_metrics(pred, spec, draws)
    assert set(found) == {k for k in CI_METRICS if k in compute_metrics(pred, spec)}
    for b in range(draws.resamples):
        rows = np.repeat(np.arange(len(pred)), draws.counts[b][draws.group])  # a protein's rows move together
        expected = compute_metrics(resample(pred, rows), spec)
        for name, values in found.items():
            assert values[b] == pytest.approx(expected[name], abs=1e-9, nan_ok=True), (name, b)


def test_precision_is_undefined_where_nothing_is_predicted_positive() -> None:
    """A model (or a length baseline) that predicts no positive has no precision, in the point estimate and in
    every resample, so its CI is undefined too; recall and F1 are 0, as they are defined."""
    pred = binary(40, 0.8, seed=9)
    pred.predicted = np.zeros_like(pred.predicted)
    point, found = compute_metrics(pred, DNA), confidence_intervals(pred, DNA, resamples=100)
    assert np.isnan(point["precision"]) and np.isnan(found["ci95"]["precision"]).all()
    assert point["recall"] == point["f1"] == 0.0 and found["ci95"]["recall"] == [0.0, 0.0]


def test_recall_is_undefined_where_the_set_holds_no_positive() -> None:
    """A test set (or a resample) with no positive has no recall; F1 is undefined only when nothing is predicted
    positive either, else 0 (every positive prediction is wrong)."""
    pred = binary(40, 0.8, seed=9)
    pred.labels = np.zeros_like(pred.labels)
    point = compute_metrics(pred, DNA)
    assert np.isnan(point["recall"]) and point["f1"] == 0.0 and point["precision"] == 0.0
    pred.predicted = np.zeros_like(pred.predicted)
    point, found = compute_metrics(pred, DNA), confidence_intervals(pred, DNA, resamples=50)
    assert np.isnan(point["recall"]) and np.isnan(point["f1"]) and np.isnan(found["ci95"]["recall"]).all()


def test_q3_resamples_proteins_not_residues() -> None:
    pred = q3(25, seed=4)
    method = confidence_intervals(pred, Q3, resamples=50)["ci_method"]
    assert method["groups"] == 25 and method["method"] == "percentile bootstrap over proteins (25 proteins)"


@pytest.mark.parametrize("kind", ["binary", "q3"])
def test_a_ci_contains_its_point_estimate(kind: str) -> None:
    spec, pred = (DNA, binary(150, 0.8, seed=6)) if kind == "binary" else (Q3, q3(40, seed=6))
    point, found = compute_metrics(pred, spec), confidence_intervals(pred, spec)
    for name, (low, high) in found["ci95"].items():
        assert low <= point[name] <= high, (name, low, point[name], high)
        assert high - low > 0, name


def test_homology_components_are_resampled_whole() -> None:
    pred = binary(40, 0.8, seed=8)
    components = [f"c{i // 4}" for i in range(40)]  # 10 components of 4 proteins
    found = confidence_intervals(pred, DNA, groups=components, unit="homology components", resamples=200)
    assert found["ci_method"]["groups"] == 10 and "homology components" in found["ci_method"]["method"]


def test_a_prediction_file_with_components_resamples_them_whole_as_by_hand(tmp_path) -> None:
    """Rows carrying a component (predictions.tsv's `component` column, as a `data split` test set gives): the CI
    draws whole components, by default, and equals the hand computation with the same seed."""
    pred = binary(30, 0.7, seed=13)
    sizes = [1, 2, 3, 4, 5, 6, 9]  # 7 components of unequal size
    pred.groups = [str(k) for k, size in enumerate(sizes) for _ in range(size)]
    path = write_predictions(pred, DNA, tmp_path / "predictions.tsv")
    assert path.read_text().splitlines()[0].split("\t")[-1] == "component"
    read = read_predictions(path, DNA)
    assert read.groups == pred.groups
    found = confidence_intervals(read, DNA, resamples=400, seed=3)
    assert found["ci_method"]["method"] == "percentile bootstrap over homology components (7 components)"
    assert found["ci_method"]["groups"] == 7 and found["ci_method"]["resamples"] == 400
    # By hand: components drawn with replacement, each bringing all its rows.
    group = np.repeat(np.arange(7), sizes)
    right = np.bincount(group, weights=(read.labels == read.predicted).astype(float))
    size = np.bincount(group).astype(float)
    picks = np.random.default_rng(3).integers(0, 7, size=(400, 7))
    by_hand = np.percentile(right[picks].sum(axis=1) / size[picks].sum(axis=1), [2.5, 97.5])
    assert found["ci95"]["accuracy"] == pytest.approx(by_hand, abs=1e-12)


def test_two_components_of_identical_rows_give_a_zero_width_ci() -> None:
    """Every resample of two components holding the same rows has the same metrics: a CI over components has
    no width, while one over the proteins it hides does."""
    half = binary(20, 0.7, seed=14)
    both = resample(half, np.r_[np.arange(20), np.arange(20)])
    both.ids = [f"{rid}-{copy}" for copy in "ab" for rid in half.ids]
    over_proteins = confidence_intervals(both, DNA, resamples=300)
    both.groups = ["a"] * 20 + ["b"] * 20
    over_components = confidence_intervals(both, DNA, resamples=300)
    point = compute_metrics(half, DNA)
    for name in ("accuracy", "f1", "roc_auc", "mcc", "brier"):
        assert over_components["ci95"][name] == pytest.approx([point[name]] * 2, abs=1e-12), name
        low, high = over_proteins["ci95"][name]
        assert high - low > 0.05, name


@pytest.mark.parametrize(
    ("n", "student_accuracy", "expected"),
    [
        (3000, 0.90, "non-inferior"),  # the same skill on many proteins: S − 0.98 T is clearly above 0
        (3000, 0.70, "inferior"),  # 20 points worse
        (40, 0.88, "inconclusive"),  # close, on too few proteins to tell
    ],
)
def test_paired_verdict_on_prediction_files(tmp_path, n: int, student_accuracy: float, expected: str) -> None:
    teacher = binary(n, 0.90, seed=10)
    student = binary(n, student_accuracy, seed=11, labels=teacher.labels)
    files = [write_predictions(p, DNA, tmp_path / f"{who}.tsv") for who, p in (("t", teacher), ("s", student))]
    teacher, student = (read_predictions(f, DNA) for f in files)
    result = paired(teacher, student, DNA, resamples=500)
    row = result["metrics"]["accuracy"]
    assert row["verdict"] == expected, row
    assert result["margin"] == 0.98 and result["statistic"] == "student - 0.98 x teacher"
    low, high = row["difference_ci95"]
    assert low <= row["difference"] <= high
    assert row["non_inferiority"] == pytest.approx(row["student"] - 0.98 * row["teacher"])


def test_delong_agrees_with_the_paired_bootstrap() -> None:
    rng = np.random.default_rng(12)
    n = 400
    y = rng.integers(0, 2, n)
    shared = rng.normal(size=n)  # the two models' scores are correlated, as teacher and student are
    a = y * 1.0 + shared + 0.6 * rng.normal(size=n)
    b = y * 0.8 + shared + 0.6 * rng.normal(size=n)
    found = delong(y, a, b)
    assert found["auc_a"] == pytest.approx(skm.roc_auc_score(y, a))
    assert found["auc_b"] == pytest.approx(skm.roc_auc_score(y, b))
    # The paired bootstrap of the same difference (ROC-AUC is rank-based: a logistic squash keeps it).
    ids, draws = [f"p{i:04d}" for i in range(n)], draw([f"p{i:04d}" for i in range(n)], resamples=2000, seed=1)
    aucs = []
    for score in (a, b):
        p1 = 1 / (1 + np.exp(-score))
        aucs.append(resampled_metrics(Predictions(ids, y, np.stack([1 - p1, p1], 1), (p1 > 0.5) * 1), DNA, draws))
    differences = aucs[0]["roc_auc"] - aucs[1]["roc_auc"]
    assert found["se"] == pytest.approx(np.std(differences, ddof=1), rel=0.1)
    assert found["p"] < 0.05 and np.percentile(differences, 2.5) > 0  # both see a better than b
    # The same scores twice: no difference at all.
    assert delong(y, a, a)["p"] == 1.0


def test_mcnemar_is_the_binomial_test_of_the_discordant_rows() -> None:
    y = np.zeros(30, dtype=int)
    a = np.r_[np.zeros(20), np.ones(10)].astype(int)  # right on 20
    b = np.r_[np.zeros(12), np.ones(18)].astype(int)  # right on 12, all of them among a's
    found = mcnemar(y, a, b)
    assert (found["only_a"], found["only_b"]) == (8, 0)
    assert found["p"] == pytest.approx(2 * 0.5**8)  # exact: both tails of Binomial(8, 1/2) at 0
    assert found["mid_p"] == pytest.approx(0.5**8)  # mid-p: half the observed outcome's probability
