"""What differs between the downstream tasks: the label layout and how a batch is built (the head: heads.py).

dna-binding and membrane: one label per sequence. q3: one label per residue; residue i sits at token i + 1,
behind [CLS], and [CLS], [SEP] and padding carry -100 so the loss and the metrics ignore them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from minprot_ds.data.task_records import COMPONENT, Q3_CLASSES
from minprot_ds.errors import UserError
from minprot_ds.vocab import IGNORE_INDEX, INVALID, PROTBERT, UNK_ID, Vocabulary, encode


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
    """A split ready for batching: whole proteins as token ids without specials, and their labels."""

    ids: list[str]
    sequences: list[str]
    tokens: list[np.ndarray]  # residue token ids, the whole protein
    labels: list  # int per sequence, or an int array per residue
    components: list[str] | None = None  # each protein's homology component (a `data split` folder's column)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(t) for t in self.tokens], dtype=np.int64)

    def longer_than(self, window: int) -> int:
        return int((self.lengths > window).sum())


def sample_rows(labels: Sequence, limit: int | None, seed: int, per_residue: bool) -> list[int]:
    """Row indices of a capped run: a seeded sample of `limit` rows, label-stratified for sequence tasks.

    Each class gets its share of `limit` (largest remainders), at least one row when `limit` allows, so a
    capped run never holds one class only; rows keep their original order. No cap: every row.
    """
    n = len(labels)
    if limit is None or limit >= n:
        return list(range(n))
    if limit < 1:
        raise UserError(f"--max-train-samples / --max-eval-samples must be at least 1 (got {limit})")
    rng = np.random.default_rng(seed)
    if per_residue:
        return sorted(rng.choice(n, size=limit, replace=False).tolist())
    y = np.asarray(labels)
    classes, counts = np.unique(y, return_counts=True)
    share = counts * limit / n
    take = np.floor(share).astype(int)
    if limit >= len(classes):
        take = np.maximum(take, 1)
    for k in np.argsort(-(share - np.floor(share)), kind="stable"):  # largest remainders first
        if take.sum() >= limit:
            break
        take[k] += 1
    while take.sum() > limit:  # the floor of one row per class overshot: trim the largest class
        take[np.argmax(take)] -= 1
    picked = [rng.choice(np.nonzero(y == c)[0], size=int(t), replace=False) for c, t in zip(classes, take)]
    return sorted(int(i) for i in np.concatenate(picked))


def encode_split(data, spec: TaskSpec, limit: int | None = None, seed: int = 0) -> Encoded:
    """Token ids via ProtBert's byte table (same ids as its tokenizer on space-joined residues)."""
    if limit is not None:
        data = data.select(sample_rows(data[spec.label_column], limit, seed, spec.per_residue))
    ids, sequences, labels = data["id"], data["sequence"], data[spec.label_column]
    components = [str(c) for c in data[COMPONENT]] if COMPONENT in data.column_names else None
    tokens, out_labels = [], []
    for seq, label in zip(sequences, labels):
        tok = encode(seq).astype(np.int64)
        tok[tok == INVALID] = UNK_ID
        tokens.append(tok)
        out_labels.append(np.asarray(label, dtype=np.int64) if spec.per_residue else int(label))
    return Encoded(list(ids), list(sequences), tokens, out_labels, components)


Piece = tuple[int, int, int]  # (row, first residue, one past the last): a protein or a window of it


def crop_pieces(
    lengths: np.ndarray, rows: Sequence[int], window: int, seed: int, epoch: int, random: bool
) -> list[Piece]:
    """Training inputs: a protein longer than `window` is cut to `window` residues at an offset drawn from
    (seed, epoch, row) when `random`, else at its start (`--long truncate`)."""
    pieces = []
    for i in rows:
        n = int(lengths[i])
        start = 0
        if n > window and random:
            start = int(np.random.default_rng([seed, epoch, int(i)]).integers(0, n - window + 1))
        pieces.append((int(i), start, min(n, start + window)))
    return pieces


def collate(
    enc: Encoded, pieces: Sequence[Piece], spec: TaskSpec, vocab: Vocabulary = PROTBERT
) -> dict[str, torch.Tensor]:
    """[CLS] residues [SEP] of each piece (ESM-2: <cls> residues <eos>), padded to the longest piece of the batch,
    in `vocab`'s ids (the encoded splits hold ProtBert's)."""
    width = max(end - start for _, start, end in pieces) + 2
    input_ids = np.full((len(pieces), width), vocab.pad_id, dtype=np.int64)
    mask = np.zeros((len(pieces), width), dtype=np.int64)
    token_labels = np.full((len(pieces), width), IGNORE_INDEX, dtype=np.int64)
    for r, (i, start, end) in enumerate(pieces):
        n = end - start
        input_ids[r, 0], input_ids[r, n + 1] = vocab.bos_id, vocab.eos_id
        input_ids[r, 1 : n + 1] = vocab.remap(enc.tokens[i][start:end])
        mask[r, : n + 2] = 1
        if spec.per_residue:
            token_labels[r, 1 : n + 1] = enc.labels[i][start:end]
    labels = token_labels if spec.per_residue else np.array([enc.labels[i] for i, _, _ in pieces], dtype=np.int64)
    return {
        "input_ids": torch.from_numpy(input_ids),
        "attention_mask": torch.from_numpy(mask),
        "labels": torch.from_numpy(labels),
    }


def whole(enc: Encoded, rows: Sequence[int]) -> list[Piece]:
    """Each row as one piece (no cropping)."""
    return [(int(i), 0, len(enc.tokens[i])) for i in rows]


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
        chunk = order[start : start + step]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size].tolist() for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches
