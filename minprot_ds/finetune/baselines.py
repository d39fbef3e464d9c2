"""Two baselines scored on the fine-tune's own splits, so a table shows what the language model adds.

- length: logistic regression on log(sequence length) alone (scikit-learn, fitted on the training rows);
- homology transfer: each test protein takes the label of its best MMseqs2 hit among the training rows
  (the same search as the leakage figures). Its score for class 1 is 0.5 ± identity / 2 (+ when the hit
  is a positive, − when a negative), so ranking follows the hit's label and then its identity; a protein
  without a hit takes the training majority class with score 0.5.
On leaky public benchmarks the homology baseline is strong: the model's rows must be read against it.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression

from data_prep.tasks.overlap import Overlap
from minprot_ds.finetune.metrics import Predictions


def _predictions(ids: list[str], labels: np.ndarray, p1: np.ndarray, predicted: np.ndarray) -> Predictions:
    probs = np.stack([1.0 - p1, p1], axis=1)
    return Predictions(list(ids), np.asarray(labels, dtype=np.int64), probs, np.asarray(predicted, dtype=np.int64))


def length_only(
    train_lengths: np.ndarray,
    train_labels: np.ndarray,
    test_ids: list[str],
    test_lengths: np.ndarray,
    test_labels: np.ndarray,
) -> Predictions:
    y = np.asarray(train_labels)
    if len(np.unique(y)) < 2:  # one class to learn from: predict it
        p1 = np.full(len(test_lengths), float(y[0]) if len(y) else 0.5)
        return _predictions(test_ids, test_labels, p1, (p1 > 0.5).astype(int))
    model = LogisticRegression().fit(np.log(np.asarray(train_lengths, dtype=np.float64))[:, None], y)
    p1 = model.predict_proba(np.log(np.asarray(test_lengths, dtype=np.float64))[:, None])[:, 1]
    return _predictions(test_ids, test_labels, p1, (p1 > 0.5).astype(int))


def homology_transfer(
    overlap: Overlap, train_labels: np.ndarray, test_ids: list[str], test_labels: np.ndarray
) -> Predictions:
    y = np.asarray(train_labels)
    majority = int(np.bincount(y, minlength=2).argmax()) if len(y) else 0
    p1, predicted = np.full(len(test_ids), 0.5), np.full(len(test_ids), majority)
    for i, hit in enumerate(overlap.best):
        if hit is not None:
            predicted[i] = y[hit.target]
            p1[i] = 0.5 + (0.5 if predicted[i] == 1 else -0.5) * hit.identity
    return _predictions(test_ids, test_labels, p1, predicted)
