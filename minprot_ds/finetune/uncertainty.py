"""How sure a test metric is, and whether a student keeps the teacher's: percentile-bootstrap 95% CIs over
proteins (or homology components), paired teacher-vs-student differences, DeLong, McNemar, and a verdict.

Resampling is a pure function of the seed: `np.random.default_rng(seed).integers(0, G, size=(B, G))` draws B
resamples of the G groups (proteins; homology components when the rows carry one), and a row weighs as often
as its group was drawn. Per-residue tasks (q3) group residues by protein: a protein's residues move together,
so a CI never pretends residues of one chain are independent. A paired comparison applies the same draws to
both models. The CI is the 2.5th and 97.5th percentile of the resampled metric (resamples where it is
undefined, e.g. one class only for ROC-AUC, left out).

`compute_metrics` (scikit-learn) is the reference: each resample's metrics here are computed at once for a
chunk of resamples from weighted counts, and tests/finetune/test_uncertainty.py checks them against
`compute_metrics` on the resampled rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from minprot_ds.finetune.metrics import CALIBRATION_BINS, Predictions, calibration_terms, compute_metrics
from minprot_ds.finetune.tasks import TaskSpec
from minprot_ds.vocab import IGNORE_INDEX

RESAMPLES = 1000
SEED = 0
LEVEL = 0.95
MARGIN = 0.98  # MinProtBert's claim: the student keeps at least 98% of the teacher's metric
CI_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc", "mcc", "brier", "ece")
LOWER_IS_BETTER = ("brier", "ece")  # calibration errors: no "keeps 98%" verdict is drawn on them
_CHUNK_CELLS = 4_000_000  # rows × resamples weighed at once (32 MB of float64)


@dataclass
class Draws:
    """B resamples of G groups: `counts[b, g]` is how often resample b drew group g; `group[i]` is row i's."""

    counts: np.ndarray  # int [B, G]
    group: np.ndarray  # int [N]
    unit: str  # "proteins" or "homology components"
    seed: int

    @property
    def resamples(self) -> int:
        return len(self.counts)

    def method(self) -> dict:
        groups = int(self.counts.shape[1])
        return {
            "method": f"percentile bootstrap over {self.unit} ({groups} {self.unit.split()[-1]})",
            "unit": self.unit,
            "resamples": self.resamples,
            "groups": groups,
            "seed": self.seed,
            "level": LEVEL,
        }


def draw(groups: Sequence[str], *, resamples: int = RESAMPLES, seed: int = SEED, unit: str = "proteins") -> Draws:
    """Resamples of the distinct `groups` (one label per row: a protein id, or a component id)."""
    names, group = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
    g = len(names)
    picks = np.random.default_rng(seed).integers(0, g, size=(resamples, g)) if g else np.zeros((resamples, 0), int)
    flat = (picks + np.arange(resamples)[:, None] * g).ravel()
    counts = np.bincount(flat, minlength=resamples * g).reshape(resamples, g)
    return Draws(counts, group.reshape(-1), unit, seed)


COMPONENTS = "homology components"


def units(pred: Predictions) -> tuple[Sequence[str], str]:
    """What a bootstrap of `pred` resamples: its homology components when the rows carry them (a test set made by
    `minprot data split` or `data swissprot`), else its proteins."""
    return (pred.ids, "proteins") if pred.groups is None else (pred.groups, COMPONENTS)


def _labelled(pred: Predictions, draws: Draws) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    keep = pred.labels != IGNORE_INDEX
    return pred.labels[keep], pred.probs[keep], pred.predicted[keep], draws.group[keep]


def _from_confusion(cm: np.ndarray, binary: bool) -> dict[str, np.ndarray]:
    """cm [B, L, L] (true, predicted) -> scikit-learn's accuracy, precision, recall, f1 (binary: of class 1;
    else macro, zero_division=0) and MCC (its multiclass formula), one value per resample."""
    with np.errstate(divide="ignore", invalid="ignore"):
        total = cm.sum(axis=(1, 2)).astype(np.float64)
        tp = np.diagonal(cm, axis1=1, axis2=2).astype(np.float64)
        true, predicted = cm.sum(axis=2).astype(np.float64), cm.sum(axis=1).astype(np.float64)
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(true > 0, tp / true, 0.0)
        f1 = np.where(true + predicted > 0, 2 * tp / (true + predicted), 0.0)
        correct = tp.sum(axis=1)
        cov = correct * total - (true * predicted).sum(axis=1)
        denominator = np.sqrt((total**2 - (predicted**2).sum(axis=1)) * (total**2 - (true**2).sum(axis=1)))
        out = {
            "accuracy": correct / total,
            "mcc": np.where(denominator > 0, cov / denominator, 0.0),
        }
    if binary:  # as compute_metrics: undefined where a resample predicts no positive (precision), holds none
        # (recall), or neither (F1)
        return out | {
            "precision": np.where(predicted[:, 1] > 0, precision[:, 1], np.nan),
            "recall": np.where(true[:, 1] > 0, recall[:, 1], np.nan),
            "f1": np.where(true[:, 1] + predicted[:, 1] > 0, f1[:, 1], np.nan),
        }
    return out | {"precision": precision.mean(axis=1), "recall": recall.mean(axis=1), "f1": f1.mean(axis=1)}


def _ranking(score: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC-AUC and average precision (scikit-learn's definitions, ties included) of each weighted resample."""
    order = np.argsort(-score, kind="mergesort")
    s = score[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # distinct scores, highest first
    w = weights[:, order]
    pos = np.add.reduceat(w * positive[order], starts, axis=1)
    neg = np.add.reduceat(w * ~positive[order], starts, axis=1)
    n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
    tps, fps = np.cumsum(pos, axis=1), np.cumsum(neg, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        # a positive beats every negative scored lower, and half of those tied with it
        below = n_neg[:, None] - fps
        auc = (pos * (below + 0.5 * neg)).sum(axis=1) / (n_pos * n_neg)
        precision = np.where(tps + fps > 0, tps / (tps + fps), 0.0)
        ap = (pos * precision).sum(axis=1) / n_pos
    defined = (n_pos > 0) & (n_neg > 0)
    return np.where(defined, auc, np.nan), np.where(n_pos > 0, ap, np.nan)


def _calibration(
    y: np.ndarray, probs: np.ndarray, yhat: np.ndarray, group: np.ndarray, draws: Draws
) -> dict[str, np.ndarray]:
    """Brier and ECE of each resample from per-group sums (metrics.calibration_terms: the same definitions)."""
    terms = calibration_terms(y, probs, yhat)
    g, bins = draws.counts.shape[1], CALIBRATION_BINS
    per_group = np.zeros((g, 2 + 2 * bins))  # rows, squared error, then stated and observed sums per bin
    np.add.at(per_group[:, 0], group, 1.0)
    np.add.at(per_group[:, 1], group, terms.squared_error)
    np.add.at(per_group, (group, 2 + terms.bin), terms.stated)
    np.add.at(per_group, (group, 2 + bins + terms.bin), terms.observed)
    sums = draws.counts @ per_group
    with np.errstate(divide="ignore", invalid="ignore"):
        n = np.where(sums[:, 0] > 0, sums[:, 0], np.nan)
        return {
            "brier": sums[:, 1] / n,
            "ece": np.abs(sums[:, 2 : 2 + bins] - sums[:, 2 + bins :]).sum(axis=1) / n,
        }


def resampled_metrics(pred: Predictions, spec: TaskSpec, draws: Draws) -> dict[str, np.ndarray]:
    """Each CI metric on each resample: {metric: float [B]} (NaN where a resample leaves it undefined)."""
    y, probs, yhat, group = _labelled(pred, draws)
    n_labels = spec.num_labels
    g = draws.counts.shape[1]
    per_group = np.zeros((g, n_labels * n_labels))
    np.add.at(per_group, (group, y * n_labels + yhat), 1.0)
    cm = (draws.counts @ per_group).reshape(-1, n_labels, n_labels)
    out = _from_confusion(cm, binary=not spec.per_residue)
    out |= _calibration(y, probs, yhat, group, draws)
    aucs, aps = [], []
    chunk = max(1, _CHUNK_CELLS // max(1, len(y)))
    for first in range(0, draws.resamples, chunk):
        weights = draws.counts[first : first + chunk][:, group].astype(np.float64)
        if not spec.per_residue:
            auc, ap = _ranking(probs[:, 1], y == 1, weights)
        else:  # one-vs-rest macro ROC-AUC of renormalised probabilities, as compute_metrics (NaN unless all present)
            normalised = probs / probs.sum(axis=1, keepdims=True)
            per_class = [_ranking(normalised[:, k], y == k, weights)[0] for k in range(n_labels)]
            auc, ap = np.mean(per_class, axis=0), np.full(len(weights), np.nan)
        aucs.append(auc)
        aps.append(ap)
    out["roc_auc"] = np.concatenate(aucs) if aucs else np.zeros(0)
    if not spec.per_residue:
        out["pr_auc"] = np.concatenate(aps) if aps else np.zeros(0)
    return out


def percentile_interval(values: np.ndarray) -> list[float]:
    """The central LEVEL interval of the defined resampled values ([nan, nan] when none is defined)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if not len(values):
        return [math.nan, math.nan]
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return [float(low), float(high)]


def confidence_intervals(
    pred: Predictions,
    spec: TaskSpec,
    *,
    groups: Sequence[str] | None = None,
    unit: str = "proteins",
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> dict:
    """{"ci95": {metric: [low, high]}, "ci_method": {...}} for a scored set; `groups` (default: `units(pred)`, the
    rows' homology components when they carry them, else their proteins) are what is resampled."""
    if groups is None:
        groups, unit = units(pred)
    draws = draw(groups, resamples=resamples, seed=seed, unit=unit)
    found = resampled_metrics(pred, spec, draws)
    return {"ci95": {k: percentile_interval(found[k]) for k in CI_METRICS if k in found}, "ci_method": draws.method()}


CI_UNIT = "ci_unit"  # the MLflow param naming what a run's CIs resample (Draws.unit), which `minprot report` groups by


def flat_intervals(ci95: dict[str, list[float]], prefix: str) -> dict[str, float]:
    """{"accuracy": [lo, hi]} -> {"prefix/accuracy_ci_low": lo, "prefix/accuracy_ci_high": hi}: MLflow names."""
    out = {}
    for name, (low, high) in ci95.items():
        out |= {f"{prefix}/{name}_ci_low": low, f"{prefix}/{name}_ci_high": high}
    return out


# ---- paired: teacher and student on the same rows ----


def delong(labels: np.ndarray, score_a: np.ndarray, score_b: np.ndarray) -> dict[str, float]:
    """DeLong's test of two correlated ROC-AUCs on the same rows (the fast form of Sun & Xu 2014, midranks from
    scipy): the AUCs, their difference's standard error and the two-sided p-value."""
    positive = np.asarray(labels) == 1
    m, n = int(positive.sum()), int((~positive).sum())
    if m == 0 or n == 0:
        return {"auc_a": math.nan, "auc_b": math.nan, "se": math.nan, "z": math.nan, "p": math.nan}
    v10, v01, aucs = [], [], []
    for score in (np.asarray(score_a, np.float64), np.asarray(score_b, np.float64)):
        x, y = score[positive], score[~positive]
        rank_all = stats.rankdata(np.r_[x, y])
        rank_x, rank_y = stats.rankdata(x), stats.rankdata(y)
        aucs.append((rank_all[:m].sum() - m * (m + 1) / 2) / (m * n))
        v10.append((rank_all[:m] - rank_x) / n)  # per positive: share of negatives it beats
        v01.append(1.0 - (rank_all[m:] - rank_y) / m)  # per negative: share of positives beating it
    s10, s01 = np.cov(np.array(v10)), np.cov(np.array(v01))
    contrast = np.array([1.0, -1.0])
    variance = float(contrast @ (s10 / m + s01 / n) @ contrast)
    diff = aucs[0] - aucs[1]
    if variance <= 0:
        p = 1.0 if diff == 0 else 0.0
        return {"auc_a": aucs[0], "auc_b": aucs[1], "se": 0.0, "z": math.nan, "p": p}
    z = diff / math.sqrt(variance)
    return {
        "auc_a": aucs[0],
        "auc_b": aucs[1],
        "se": math.sqrt(variance),
        "z": z,
        "p": float(2 * stats.norm.sf(abs(z))),
    }


def mcnemar(labels: np.ndarray, predicted_a: np.ndarray, predicted_b: np.ndarray) -> dict[str, float]:
    """McNemar's exact test of paired accuracy (scipy's binomial test on the discordant rows) and its mid-p."""
    right_a, right_b = predicted_a == labels, predicted_b == labels
    only_a, only_b = int((right_a & ~right_b).sum()), int((~right_a & right_b).sum())
    n = only_a + only_b
    if n == 0:
        return {"only_a": 0, "only_b": 0, "p": 1.0, "mid_p": 1.0}
    k = min(only_a, only_b)
    exact = stats.binomtest(k, n, 0.5).pvalue
    mid = min(1.0, 2 * stats.binom.cdf(k, n, 0.5) - stats.binom.pmf(k, n, 0.5))  # Fagerland et al. 2013
    return {"only_a": only_a, "only_b": only_b, "p": float(exact), "mid_p": float(mid)}


def verdict(low: float, high: float) -> str:
    """non-inferior when the whole CI of student − margin × teacher is above 0, inferior when below."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return "undefined"
    return "non-inferior" if low > 0 else "inferior" if high < 0 else "inconclusive"


def paired(
    teacher: Predictions,
    student: Predictions,
    spec: TaskSpec,
    *,
    groups: Sequence[str] | None = None,
    unit: str = "proteins",
    resamples: int = RESAMPLES,
    seed: int = SEED,
    margin: float = MARGIN,
) -> dict:
    """Teacher vs student on the same rows (the caller checks they are): per metric both values, the student −
    teacher difference and its paired CI, the non-inferiority statistic student − margin × teacher with its CI
    and verdict (not for the calibration errors, where lower is better); DeLong for ROC-AUC and McNemar for
    accuracy on sequence-level binary tasks. `groups` default to `units(teacher)` (the caller checks the student's
    agree)."""
    if groups is None:
        groups, unit = units(teacher)
    draws = draw(groups, resamples=resamples, seed=seed, unit=unit)
    point_t, point_s = compute_metrics(teacher, spec), compute_metrics(student, spec)
    boot_t, boot_s = resampled_metrics(teacher, spec, draws), resampled_metrics(student, spec, draws)
    metrics = {}
    for name in CI_METRICS:
        if name not in boot_t or name in LOWER_IS_BETTER:
            continue
        t, s = float(point_t[name]), float(point_s[name])
        low, high = percentile_interval(boot_s[name] - margin * boot_t[name])
        metrics[name] = {
            "teacher": t,
            "student": s,
            "difference": s - t,
            "difference_ci95": percentile_interval(boot_s[name] - boot_t[name]),
            "non_inferiority": s - margin * t,
            "non_inferiority_ci95": [low, high],
            "verdict": verdict(low, high),
        }
    out = {"margin": margin, "statistic": f"student - {margin:g} x teacher", **draws.method(), "metrics": metrics}
    if not spec.per_residue and spec.num_labels == 2:
        keep = teacher.labels != IGNORE_INDEX
        y = teacher.labels[keep]
        out["delong_roc_auc"] = delong(y, student.probs[keep, 1], teacher.probs[keep, 1])
        out["mcnemar_accuracy"] = mcnemar(y, student.predicted[keep], teacher.predicted[keep])
    return out
