"""The decision threshold of a binary task, chosen on the valid split, and the reliability plot of a scored set.

Rule: predict class 1 when P(class 1) > t, with t the candidate of maximum MCC on the valid split. Candidates are
0.5 and the midpoints between consecutive distinct valid scores (every way of cutting the valid rows, each at
the middle of its gap); ties go to the candidate nearest 0.5, then to the lower one, so the choice is a pure
function of the valid scores and labels. The test set never enters it. Without a valid split, or with one
class only in it, t = 0.5 and the source says "default". Per-residue and multi-class tasks take the argmax.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from minprot_ds.finetune.metrics import CALIBRATION_BINS, Predictions, calibration_terms, reliability
from minprot_ds.vocab import IGNORE_INDEX

DEFAULT_THRESHOLD = 0.5
RULE = (
    "maximum MCC on the valid split over 0.5 and the midpoints between consecutive distinct valid scores; "
    "ties to the candidate nearest 0.5, then the lower; class 1 when P(class 1) > threshold"
)


def _mcc(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, tn: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        denominator = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
        return np.where(denominator > 0, (tp * tn - fp * fn) / denominator, 0.0)  # sklearn: 0 when undefined


def choose_threshold(valid: Predictions | None) -> dict:
    """{"value", "source" ("valid" | "default"), "rule", ...}: the threshold for a binary task (module docstring)."""
    if valid is None:
        return {"value": DEFAULT_THRESHOLD, "source": "default", "reason": "no valid split", "rule": RULE}
    keep = valid.labels != IGNORE_INDEX
    y, score = valid.labels[keep], valid.probs[keep, 1].astype(np.float64)
    positives = int((y == 1).sum())
    if positives == 0 or positives == len(y):
        return {
            "value": DEFAULT_THRESHOLD,
            "source": "default",
            "reason": f"the valid split has one class only ({len(y)} rows, {positives} positives)",
            "rule": RULE,
        }
    distinct = np.unique(score)
    candidates = np.unique(np.r_[DEFAULT_THRESHOLD, (distinct[1:] + distinct[:-1]) / 2])
    # rows at or below each candidate: predicted 0
    all_below = np.searchsorted(np.sort(score), candidates, side="right")
    pos_below = np.searchsorted(np.sort(score[y == 1]), candidates, side="right")
    fn = pos_below.astype(np.float64)
    tp = positives - fn
    tn = (all_below - pos_below).astype(np.float64)
    fp = (len(y) - positives) - tn
    mcc = _mcc(tp, fp, fn, tn)
    best = np.flatnonzero(mcc >= mcc.max() - 1e-12)
    pick = best[np.lexsort((candidates[best], np.abs(candidates[best] - DEFAULT_THRESHOLD)))[0]]
    at_default = int(np.flatnonzero(candidates == DEFAULT_THRESHOLD)[0])
    return {
        "value": float(candidates[pick]),
        "source": "valid",
        "rule": RULE,
        "valid_rows": len(y),
        "valid_positives": positives,
        "valid_mcc": float(mcc[pick]),
        "valid_mcc_at_0.5": float(mcc[at_default]),
    }


def apply_threshold(pred: Predictions, threshold: float) -> Predictions:
    """The same rows, predicted class 1 where P(class 1) > threshold (binary sequence tasks)."""
    predicted = (pred.probs[:, 1] > threshold).astype(np.int64)
    return dataclasses.replace(pred, predicted=predicted)


def reliability_table(pred: Predictions) -> list[dict]:
    keep = pred.labels != IGNORE_INDEX
    return reliability(calibration_terms(pred.labels[keep], pred.probs[keep], pred.predicted[keep]))


def plot_title(task: str, role: str, model_name: str, test_label: str) -> str:
    """ "dna-binding: student (demo-student) on PDB186"; the model's folder name once when it is its role."""
    who = role if model_name in ("", role) else f"{role} ({model_name})"
    return f"{task}: {who} on {test_label}"


def reliability_plot(curves: dict[str, list[dict]], binary: bool, title: str, path: Path) -> Path:
    """A reliability diagram (one curve per scored set, point size by rows in the bin) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.0, 5.0))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    for (name, bins), marker in zip(curves.items(), "os^D"):
        shown = [b for b in bins if b["n"] > 0 and math.isfinite(b["stated"])]
        total = sum(b["n"] for b in bins) or 1
        ax.plot(
            [b["stated"] for b in shown], [b["observed"] for b in shown], marker=marker, label=f"{name} (n={total})"
        )
        for b in shown:
            ax.annotate(
                str(b["n"]), (b["stated"], b["observed"]), fontsize=7, xytext=(3, -9), textcoords="offset points"
            )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    what = "P(class 1)" if binary else "P(predicted class)"
    ax.set_xlabel(f"mean {what} in the bin ({CALIBRATION_BINS} equal-width bins)")
    ax.set_ylabel("fraction of positives" if binary else "fraction predicted right")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
