"""What differs between the downstream tasks: the head, the label layout, and how a batch is built.

dna-binding and membrane: one label per sequence, a linear head on [CLS] (BertForSequenceClassification,
which puts BERT's pooler before the linear layer). q3: one label per residue, a linear head on every
token (BertForTokenClassification); residue i sits at token i + 1, behind [CLS], and [CLS], [SEP] and
padding carry -100 so the loss and the metrics ignore them.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from minprot_ds.errors import UserError
from data_prep.tasks.records import Q3_CLASSES
from minprot_ds.vocab import CLS_ID, IGNORE_INDEX, INVALID, MAX_RESIDUES, PAD_ID, SEP_ID, UNK_ID, VOCAB_SIZE, encode



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


# --- the model ------------------------------------------------------------------------------------------

_EXPECTED = (
    "pass a folder holding config.json and weights (as save_pretrained writes, e.g. an exported student) "
    "or a Hugging Face hub id such as Rostlab/prot_bert"
)


def _looks_like_path(name: str) -> bool:
    # Hub ids are "name" or "org/name"; anything absolute, relative-looking or deeper is a path.
    return os.path.isabs(name) or name.startswith((".", "~")) or name.count("/") > 1 or Path(name).exists()


def load_model(name_or_path: str, spec: TaskSpec) -> torch.nn.Module:
    """ProtBert-format encoder + a fresh linear head for the task, fp32, every layer trainable."""
    from transformers import BertForSequenceClassification, BertForTokenClassification
    from transformers.utils import logging as hf_logging

    name = str(name_or_path)
    if _looks_like_path(name):
        folder = Path(name).expanduser()
        if not folder.is_dir():
            raise UserError(f"--model {folder} does not exist; {_EXPECTED}")
        if not (folder / "config.json").is_file():
            raise UserError(f"--model {folder} has no config.json; {_EXPECTED}")
        name = str(folder)
    cls = BertForTokenClassification if spec.per_residue else BertForSequenceClassification
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "newly initialised head" warning is expected; we check ourselves
    try:
        model, info = cls.from_pretrained(name, num_labels=spec.num_labels, output_loading_info=True)
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"cannot load --model {name!r} ({first}); {_EXPECTED}") from err
    finally:
        hf_logging.set_verbosity(verbosity)
    if model.config.vocab_size != VOCAB_SIZE:
        raise UserError(
            f"--model {name!r} has a vocabulary of {model.config.vocab_size} tokens, not ProtBert's {VOCAB_SIZE}; "
            "pass a ProtBert-format model (Rostlab/prot_bert or a minprot student)"
        )
    # Only the head (and BERT's pooler, absent from MLM checkpoints) may start random: a missing encoder
    # means the folder is not a BERT checkpoint at all.
    missing = [k for k in info.get("missing_keys", []) if k.startswith("bert.") and not k.startswith("bert.pooler.")]
    if missing:
        raise UserError(
            f"--model {name!r} lacks encoder weights ({', '.join(sorted(missing)[:3])}"
            f"{' …' if len(missing) > 3 else ''}); it must be a BERT checkpoint in ProtBert's layout"
        )
    model.config.id2label = dict(enumerate(spec.classes))
    model.config.label2id = {c: i for i, c in enumerate(spec.classes)}
    model.config.minprot_task = spec.name
    model.requires_grad_(True)
    return model.float()


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


def encode_split(data, spec: TaskSpec, limit: int | None = None) -> Encoded:
    """Token ids via ProtBert's byte table (same ids as its tokenizer on space-joined residues)."""
    if limit is not None:
        data = data.select(range(min(limit, data.num_rows)))
    ids, sequences, labels = data["id"], data["sequence"], data[spec.label_column]
    tokens, out_labels, truncated = [], [], 0
    for seq, label in zip(sequences, labels):
        tok = encode(seq[:MAX_RESIDUES]).astype(np.int64)
        tok[tok == INVALID] = UNK_ID
        truncated += len(seq) > MAX_RESIDUES
        tokens.append(tok)
        out_labels.append(np.asarray(label[:MAX_RESIDUES], dtype=np.int64) if spec.per_residue else int(label))
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


def eval_batches(lengths: np.ndarray, batch_size: int) -> Iterator[list[int]]:
    """Batches in length order (least padding); callers put results back by row index."""
    order = np.argsort(lengths, kind="stable")
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size].tolist()
