"""Scoring a split with the task model: every residue of every protein, through overlapping windows.

A protein longer than the window is cut into windows of `window` residues every `stride` residues
(`minprot_ds.scoring.windows`, the one rule for long proteins): a residue takes the prediction of the window where
it sits most centrally, and a protein's class probabilities are the mean of its windows' probabilities
weighted by the residues each window owns. `--long truncate` scores only the first window (the old
behaviour), and the coverage figures say how much was left out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from minprot_ds.errors import UserError
from minprot_ds.finetune.metrics import Predictions
from minprot_ds.finetune.tasks import Encoded, TaskSpec
from minprot_ds.scoring.forward import WindowSettings
from minprot_ds.scoring.forward import score as forward
from minprot_ds.scoring.models import TaskScorer
from minprot_ds.scoring.windows import FINETUNE_LONG_MODES, check_window, plan_protein
from minprot_ds.vocab import IGNORE_INDEX


@dataclass
class Scored:
    predictions: Predictions
    loss: float  # mean cross-entropy of the reported probabilities (labelled rows / residues)
    coverage: dict
    row_of: np.ndarray  # the split's row index of each prediction row


def score(
    module: torch.nn.Module,
    enc: Encoded,
    spec: TaskSpec,
    *,
    batch_size: int,
    device: torch.device,
    window: int,
    stride: int,
    long: str = "window",
    aggregate: str = "mean",
) -> Scored:
    """Predictions for every row (every covered residue for per-residue tasks), the loss and the coverage.

    The forward is `minprot predict`'s (scoring.forward.score, one code path): windows sorted by length in
    batches of at most `batch_size` full windows' tokens, stitched by minprot_ds.scoring.windows. Every rank runs the
    same batches, so ZeRO-3's gathers stay in step.
    """

    check_window(window, stride, long=long, long_modes=FINETUNE_LONG_MODES, aggregate=aggregate)
    plans = [plan_protein(len(t), window, stride, long) for t in enc.tokens]
    pieces = sum(len(ws) for ws in plans)
    module.eval()
    with torch.no_grad():  # not inference_mode: ZeRO-3 gathers parameters in its forward hooks
        scored = forward(
            TaskScorer(module, spec.per_residue),
            dict(enumerate(enc.sequences)),
            WindowSettings(window, stride, long, aggregate),
            batch_size * (window + 2),
            device,
        )
    if scored.failures:
        i, why = next(iter(scored.failures.items()))
        raise UserError(f"row {enc.ids[i]} could not be scored ({why}); use a smaller --batch-size")
    per_row = [scored.outputs[i].astype(np.float64) for i in range(len(enc))]
    lengths = enc.lengths
    covered = np.array([ws[-1].end for ws in plans], dtype=np.int64)
    coverage = {
        "long": long,
        "window": window,
        "stride": stride,
        "aggregate": aggregate,
        "windows": pieces,
        "sequences": len(enc),
        "sequences_longer_than_window": int((lengths > window).sum()),
        "sequences_fully_scored": int((covered == lengths).sum()),
        "residues": int(lengths.sum()),
        "residues_scored": int(covered.sum()),
    }
    coverage["residue_coverage"] = coverage["residues_scored"] / coverage["residues"] if len(enc) else math.nan
    coverage["sequence_coverage"] = coverage["sequences_fully_scored"] / len(enc) if len(enc) else math.nan
    if not spec.per_residue:
        probs = np.stack(per_row) if per_row else np.zeros((0, spec.num_labels))
        labels = np.asarray(enc.labels, dtype=np.int64)
        pred = Predictions(enc.ids, labels, probs, probs.argmax(axis=1), groups=enc.components)
        return Scored(pred, _cross_entropy(probs, labels), coverage, np.arange(len(enc)))
    ids, positions, residues, labels = [], [], [], []
    for i, (rid, n) in enumerate(zip(enc.ids, covered)):
        ids.extend([rid] * int(n))
        positions.extend(range(1, int(n) + 1))
        residues.extend(enc.sequences[i][:n])
        labels.append(enc.labels[i][:n])
    probs = np.concatenate(per_row) if per_row else np.zeros((0, spec.num_labels))
    y = np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64)
    everything = np.concatenate(enc.labels) if len(enc) else np.zeros(0, dtype=np.int64)
    coverage["labelled_residues"] = int((everything != IGNORE_INDEX).sum())
    coverage["labelled_residues_scored"] = int((y != IGNORE_INDEX).sum())
    row_of = np.repeat(np.arange(len(enc)), covered)
    groups = None if enc.components is None else [enc.components[i] for i in row_of]
    pred = Predictions(ids, y, probs, probs.argmax(axis=1), np.asarray(positions, dtype=np.int64), residues, groups)
    return Scored(pred, _cross_entropy(probs, y), coverage, row_of)


def _cross_entropy(probs: np.ndarray, labels: np.ndarray) -> float:
    keep = labels != IGNORE_INDEX
    if not keep.any():
        return math.nan
    return float(-np.log(np.clip(probs[keep, labels[keep]], 1e-12, None)).mean())
