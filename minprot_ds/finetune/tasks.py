"""What differs between the downstream tasks: the label layout and how a batch is built (the head: heads.py).

dna-binding and membrane: one label per sequence. q3: one label per residue; residue i sits at token i + 1,
behind [CLS], and [CLS], [SEP] and padding carry -100 so the loss and the metrics ignore them.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from minprot_ds.errors import UserError
from data_prep.tasks.records import Q3_CLASSES
from minprot_ds.vocab import CLS_ID, IGNORE_INDEX, INVALID, MAX_RESIDUES, PAD_ID, SEP_ID, UNK_ID, encode


@dataclass(frozen=True)
class TaskSpec:
    name: str
    per_residue: bool
    classes: tuple[str, ...]  # class names, index == label id

    @property
    def num_labels(self) -> int:
        return len(self.classes)

    @property
    def label_column(self) -> str:
        return "labels" if self.per_residue else "label"


TASKS: dict[str, TaskSpec] = {
    "dna-binding": TaskSpec("dna-binding", False, ("non-binding", "DNA-binding")),
    "membrane": TaskSpec("membrane", False, ("soluble", "membrane")),
    "q3": TaskSpec("q3", True, Q3_CLASSES),
}


def task_spec(task: str) -> TaskSpec:
    if task not in TASKS:
        raise UserError(f"unknown --task {task!r}; choose one of: {', '.join(TASKS)}")
    return TASKS[task]


# --- encoding and batches -------------------------------------------------------------------------------

@dataclass
class Encoded:
    """A split ready for batching: token ids without specials (truncated), and labels."""

    ids: list[str]
    sequences: list[str]
    tokens: list[np.ndarray]  # residue token ids, at most MAX_RESIDUES each
    labels: list  # int per sequence, or an int array per residue (truncated like tokens)
    truncated: int  # sequences cut to MAX_RESIDUES

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(t) for t in self.tokens], dtype=np.int64)


def encode_split(data, spec: TaskSpec, limit: int | None = None, max_residues: int | None = MAX_RESIDUES) -> Encoded:
    """Token ids via ProtBert's byte table (same ids as its tokenizer on space-joined residues); sequences cut
    to `max_residues` (training), or whole (None: evaluation, where long proteins are scored by windows)."""
    if limit is not None:
        data = data.select(range(min(limit, data.num_rows)))
    ids, sequences, labels = data["id"], data["sequence"], data[spec.label_column]
    tokens, out_labels, truncated = [], [], 0
    for seq, label in zip(sequences, labels):
        cut = len(seq) if max_residues is None else max_residues
        tok = encode(seq[:cut]).astype(np.int64)
        tok[tok == INVALID] = UNK_ID
        truncated += len(seq) > cut
        tokens.append(tok)
        out_labels.append(np.asarray(label[:cut], dtype=np.int64) if spec.per_residue else int(label))
    return Encoded(list(ids), list(sequences), tokens, out_labels, truncated)


def collate(enc: Encoded, rows: Sequence[int], spec: TaskSpec) -> dict[str, torch.Tensor]:
    """[CLS] residues [SEP], padded to the longest row of the batch."""
    width = max(len(enc.tokens[i]) for i in rows) + 2
    input_ids = np.full((len(rows), width), PAD_ID, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    token_labels = np.full((len(rows), width), IGNORE_INDEX, dtype=np.int64)
    for r, i in enumerate(rows):
        n = len(enc.tokens[i])
        input_ids[r, 0], input_ids[r, 1:n + 1], input_ids[r, n + 1] = CLS_ID, enc.tokens[i], SEP_ID
        mask[r, :n + 2] = 1
        if spec.per_residue:
            token_labels[r, 1:n + 1] = enc.labels[i]
    labels = token_labels if spec.per_residue else np.array([enc.labels[i] for i in rows], dtype=np.int64)
    return {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(mask),
            "labels": torch.from_numpy(labels)}


def train_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int, pool: int = 50) -> list[list[int]]:
    """Shuffled batches of similar lengths: shuffle, sort within pools of `pool` batches, shuffle batches.

    Padding shrinks to a few residues per row while each batch still mixes the whole set across epochs;
    the order is a pure function of (seed, epoch).
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    batches: list[list[int]] = []
    step = batch_size * pool
    for start in range(0, len(order), step):
        chunk = order[start:start + step]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i:i + batch_size].tolist() for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches
