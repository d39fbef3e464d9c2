"""Predictions as a table (predictions.tsv) and the metrics computed from it with scikit-learn.

The job and the tests call the same `compute_metrics` on the same columns, so metrics.json can always be
recomputed from predictions.tsv. Sequence tasks: one row per sequence, `score` = P(label 1).
Q3: one row per residue (`position` 1-based), `score` = P(predicted class) and `p_H`/`p_E`/`p_C` the three
class probabilities; residues without a label (mask column, unknown) keep label -100 and no metric counts them.

Calibration (`calibration_terms`, the one definition the bootstrap reuses): binary tasks score P(class 1) —
Brier = mean (P(class 1) − label)², ECE = Σ over CALIBRATION_BINS equal-width bins of [0, 1] of (rows in the bin
/ rows) × |mean P(class 1) − fraction of positives| in it. Q3 (several classes): Brier sums over the classes
(Brier's original multi-class score), and ECE is the top-label one (Guo et al. 2017): confidence = P(predicted
class), observed = fraction predicted right, in the same bins.

A `component` column (the homology component of the row's protein, written when the test set carries one, e.g.
a `minprot data split` folder) is what the bootstrap resamples whole (`Predictions.groups`).
"""

from __future__ import annotations

import csv
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn import metrics as skm

from minprot_ds.data.task_records import COMPONENT
from minprot_ds.finetune.tasks import TaskSpec
from minprot_ds.vocab import IGNORE_INDEX


@dataclass
class Predictions:
    ids: list[str]
    labels: np.ndarray  # int [N]
    probs: np.ndarray  # float [N, C], rows sum to 1
    predicted: np.ndarray  # int [N]: argmax of probs (as written in the file, when read back)
    positions: np.ndarray | None = None  # int [N], residue tasks only (1-based)
    residues: list[str] | None = None
    groups: list[str] | None = None  # per row: its protein's homology component, when the test set has one

    def __len__(self) -> int:
        return len(self.ids)


CALIBRATION_BINS = 10  # equal-width bins of [0, 1]; a probability of exactly 1 falls in the last


@dataclass
class CalibrationTerms:
    """Per labelled row: its squared error (Brier), its bin, the probability it states and whether it came true."""

    squared_error: np.ndarray  # float [N]
    bin: np.ndarray  # int [N], 0 .. CALIBRATION_BINS - 1
    stated: np.ndarray  # float [N]: P(class 1) (binary) or P(predicted class) (several classes)
    observed: np.ndarray  # float [N]: label == 1 (binary) or prediction right (several classes)


def calibration_terms(labels: np.ndarray, probs: np.ndarray, predicted: np.ndarray) -> CalibrationTerms:
    """The terms of Brier and ECE for labelled rows (labels, probs [N, C], predicted as in the file)."""
    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64).reshape(len(labels), -1)
    if probs.shape[1] == 2:
        stated = probs[:, 1]
        observed = (labels == 1).astype(np.float64)
        squared = (stated - observed) ** 2
    else:
        onehot = np.zeros_like(probs)
        onehot[np.arange(len(labels)), labels] = 1.0
        squared = ((probs - onehot) ** 2).sum(axis=1)
        stated = probs[np.arange(len(labels)), predicted]
        observed = (predicted == labels).astype(np.float64)
    bins = np.minimum((stated * CALIBRATION_BINS).astype(np.int64), CALIBRATION_BINS - 1).clip(0)
    return CalibrationTerms(squared, bins, stated, observed)


def brier_and_ece(terms: CalibrationTerms) -> tuple[float, float]:
    n = len(terms.bin)
    if n == 0:
        return math.nan, math.nan
    stated = np.bincount(terms.bin, terms.stated, minlength=CALIBRATION_BINS)
    observed = np.bincount(terms.bin, terms.observed, minlength=CALIBRATION_BINS)
    return float(terms.squared_error.mean()), float(np.abs(stated - observed).sum() / n)


def reliability(terms: CalibrationTerms) -> list[dict]:
    """The reliability table: per bin its range, rows, mean stated probability and observed frequency."""
    count = np.bincount(terms.bin, minlength=CALIBRATION_BINS)
    stated = np.bincount(terms.bin, terms.stated, minlength=CALIBRATION_BINS)
    observed = np.bincount(terms.bin, terms.observed, minlength=CALIBRATION_BINS)
    return [
        {
            "low": b / CALIBRATION_BINS,
            "high": (b + 1) / CALIBRATION_BINS,
            "n": int(count[b]),
            "stated": float(stated[b] / count[b]) if count[b] else math.nan,
            "observed": float(observed[b] / count[b]) if count[b] else math.nan,
        }
        for b in range(CALIBRATION_BINS)
    ]


def columns(spec: TaskSpec, groups: bool = False) -> list[str]:
    tail = [COMPONENT] if groups else []
    if spec.per_residue:
        return ["id", "position", "residue", "label", "score", "prediction", *(f"p_{c}" for c in spec.classes), *tail]
    return ["id", "label", "score", "prediction", *tail]


def write_predictions(pred: Predictions, spec: TaskSpec, path: Path) -> Path:
    predicted = pred.predicted
    tail = (lambda i: []) if pred.groups is None else (lambda i: [pred.groups[i]])
    with open(path, "w", newline="") as handle:
        out = csv.writer(handle, delimiter="\t", lineterminator="\n")
        out.writerow(columns(spec, pred.groups is not None))
        for i, rid in enumerate(pred.ids):
            if spec.per_residue:
                probs = [f"{p:.6g}" for p in pred.probs[i]]
                out.writerow(
                    [
                        rid,
                        int(pred.positions[i]),
                        pred.residues[i],
                        int(pred.labels[i]),
                        f"{pred.probs[i, predicted[i]]:.6g}",
                        int(predicted[i]),
                        *probs,
                        *tail(i),
                    ]
                )
            else:
                out.writerow([rid, int(pred.labels[i]), f"{pred.probs[i, 1]:.6g}", int(predicted[i]), *tail(i)])
    return path


def read_predictions(path: Path, spec: TaskSpec) -> Predictions:
    """predictions.tsv back into columns (probabilities as written, 6 significant digits; `groups` from the
    component column when the file has one)."""
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        rows = list(reader)
        groups = [r[COMPONENT] for r in rows] if COMPONENT in (reader.fieldnames or ()) else None
    ids = [r["id"] for r in rows]
    labels = np.array([int(r["label"]) for r in rows], dtype=np.int64)
    predicted = np.array([int(r["prediction"]) for r in rows], dtype=np.int64)
    if spec.per_residue:
        probs = np.array([[float(r[f"p_{c}"]) for c in spec.classes] for r in rows], dtype=np.float64)
        return Predictions(
            ids,
            labels,
            probs.reshape(-1, spec.num_labels),
            predicted,
            np.array([int(r["position"]) for r in rows], dtype=np.int64),
            [r["residue"] for r in rows],
            groups,
        )
    score = np.array([float(r["score"]) for r in rows], dtype=np.float64)
    return Predictions(ids, labels, np.stack([1.0 - score, score], axis=1).reshape(-1, 2), predicted, groups=groups)


def compute_metrics(pred: Predictions, spec: TaskSpec) -> dict:
    """accuracy, precision, recall, f1, roc_auc, mcc, brier, ece (+ pr_auc = average precision and the positive
    rate for binary tasks, per-class scores for Q3); NaN where undefined."""
    with warnings.catch_warnings():  # one class in a tiny set: sklearn warns, the NaN / 0 says it already
        warnings.simplefilter("ignore", UserWarning)
        return _compute(pred, spec)


def _compute(pred: Predictions, spec: TaskSpec) -> dict:
    keep = pred.labels != IGNORE_INDEX
    y, probs, yhat = pred.labels[keep], pred.probs[keep], pred.predicted[keep]
    present = np.unique(y)
    out: dict = {"n": int(keep.sum())}
    if len(y) == 0:
        return out | {k: math.nan for k in ("accuracy", "precision", "recall", "f1", "roc_auc", "mcc", "brier", "ece")}
    brier, ece = brier_and_ece(calibration_terms(y, probs, yhat))
    if not spec.per_residue:
        out |= {
            "positives": int((y == 1).sum()),
            "accuracy": skm.accuracy_score(y, yhat),
            # no positive predicted (a length baseline that never crosses the threshold): precision is undefined;
            # no positive in the set: recall is; neither predicted nor present: F1 is
            "precision": skm.precision_score(y, yhat, zero_division=np.nan),
            "recall": skm.recall_score(y, yhat, zero_division=np.nan),
            "f1": skm.f1_score(y, yhat, zero_division=np.nan),
            "roc_auc": skm.roc_auc_score(y, probs[:, 1]) if len(present) == 2 else math.nan,
            "pr_auc": skm.average_precision_score(y, probs[:, 1]) if len(present) == 2 else math.nan,
            "positive_rate": float((y == 1).mean()),
            "mcc": skm.matthews_corrcoef(y, yhat),
            "brier": brier,
            "ece": ece,
        }
        return {k: float(v) if not isinstance(v, int) else v for k, v in out.items()}
    labels = list(range(spec.num_labels))
    p, r, f, support = skm.precision_recall_fscore_support(y, yhat, labels=labels, zero_division=0)
    out |= {
        "accuracy": float(skm.accuracy_score(y, yhat)),  # Q3: per-residue accuracy
        "precision": float(np.mean(p)),  # macro over H/E/C
        "recall": float(np.mean(r)),
        "f1": float(np.mean(f)),
        "roc_auc": float(
            skm.roc_auc_score(
                y, probs / probs.sum(axis=1, keepdims=True), multi_class="ovr", average="macro", labels=labels
            )
        )
        if len(present) == spec.num_labels
        else math.nan,  # one-vs-rest needs every class present
        "mcc": float(skm.matthews_corrcoef(y, yhat)),
        "brier": brier,
        "ece": ece,
        "per_class": {
            c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(support[i])}
            for i, c in enumerate(spec.classes)
        },
    }
    return out


def flat_metrics(metrics: dict, prefix: str) -> dict[str, float]:
    """{"per_class": {"H": {"f1": x}}} -> {"prefix/f1_H": x}: the MLflow metric names."""
    flat = {}
    for key, value in metrics.items():
        if key == "per_class":
            for cls, scores in value.items():
                flat.update({f"{prefix}/{name}_{cls}": v for name, v in scores.items()})
        elif isinstance(value, (int, float)):
            flat[f"{prefix}/{key}"] = float(value)
    return flat


def json_safe(obj: object) -> object:
    """NaN and infinities become None: JSON has no NaN, and null reads as "undefined" (e.g. ROC-AUC of one class)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj
