"""The naive distillation loop the throughput benchmark compares against, written the way a user of plain
transformers + PyTorch would (DistilBERT's `distiller.py` recipe), on the same models and corpus.

What makes it naive (each is something the engine does differently):
- random batches of a fixed number of rows, padded to the longest row (no length bucketing);
- full teacher and student forwards with `output_hidden_states=True` (every layer's states kept);
- the MLM head on every token (HF's `BertForMaskedLM` with `labels=`), KD over every non-pad token;
- the eager DistilBERT loss (KLDivLoss "batchmean" · τ², CosineEmbeddingLoss on the last hidden states);
- plain `torch.optim.AdamW`, gradient clipping at 1.0, no DeepSpeed.
Its precision is the compared run's, so the ratio measures the engine, not the number format: fp32, or
bf16/fp16 the way a plain PyTorch user (and MinProtBert's own loop) runs half precision: the teacher
in that dtype, the fp32 student under `torch.autocast`, fp16 with a `GradScaler`.
The losses are weighted as the engine's run config weighs them, so the two optimise comparable objectives.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from minprot_ds import vocab
from minprot_ds.data.shards import ShardedCorpus
from minprot_ds.ds_config import PRECISIONS
from minprot_ds.models.family import family_of
from minprot_ds.models.masked_lm import build_student


@dataclass
class NaiveResult:
    """Median over repeats of `steps` steps each (one batch a step), data loading included."""

    batch_size: int
    steps: int
    repeats: int
    sequences_per_s: float
    residues_per_s: float
    tokens_per_s: float  # padded tokens
    padding_fraction: float
    step_time_s: float
    residues_per_cpu_s: float
    precision: str = "fp32"  # fp32, or bf16/fp16 (teacher in that dtype, student under autocast)
    repeat_residues_per_s: list[float] = field(default_factory=list)


class NaiveBatches:
    """Random rows (with a seeded generator), padded to the longest with torch, masked DataCollator-style
    (15% of residues; 80% [MASK], 10% random residue, 10% kept)."""

    def __init__(
        self,
        corpus_dir: str | Path,
        batch_size: int,
        seed: int = 0,
        mask_probability: float = 0.15,
        family_vocab: vocab.Vocabulary = vocab.PROTBERT,
    ):
        self.corpus = ShardedCorpus(corpus_dir, "train")
        self.family_vocab = family_vocab  # the batch is built in the corpus's ProtBert ids, then remapped to these
        self.batch_size = batch_size
        self.mask_probability = mask_probability
        self.generator = torch.Generator().manual_seed(seed)
        self.standard = torch.from_numpy(vocab.STANDARD_RESIDUE_IDS.astype(np.int64))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while True:
            order = torch.randperm(len(self.corpus), generator=self.generator).numpy()
            for start in range(0, len(order) - self.batch_size + 1, self.batch_size):
                yield self.collate(order[start : start + self.batch_size])

    def collate(self, rows: np.ndarray) -> dict[str, Any]:
        rows = np.sort(rows)
        seqs = [torch.tensor([vocab.CLS_ID, *t.tolist(), vocab.SEP_ID]) for t in self.corpus.tokens(rows)]
        ids = nn.utils.rnn.pad_sequence(seqs, batch_first=True, padding_value=vocab.PAD_ID)
        attention = (ids != vocab.PAD_ID).long()
        special = (ids == vocab.PAD_ID) | (ids == vocab.CLS_ID) | (ids == vocab.SEP_ID)
        g = self.generator
        chance = torch.full(ids.shape, self.mask_probability).masked_fill_(special, 0.0)
        selected = torch.bernoulli(chance, generator=g).bool()
        labels = ids.masked_fill(~selected, vocab.IGNORE_INDEX)
        to_mask = torch.bernoulli(torch.full(ids.shape, 0.8), generator=g).bool() & selected
        ids = ids.masked_fill(to_mask, vocab.MASK_ID)
        to_random = torch.bernoulli(torch.full(ids.shape, 0.5), generator=g).bool() & selected & ~to_mask
        ids[to_random] = self.standard[torch.randint(len(self.standard), (int(to_random.sum()),), generator=g)]
        residues = sum(len(s) - 2 for s in seqs)
        remap = torch.from_numpy(self.family_vocab.from_protbert.astype(np.int64))
        labels = torch.where(labels == vocab.IGNORE_INDEX, labels, remap[labels.clamp_min(0)])
        ids = remap[ids]
        return {"input_ids": ids, "attention_mask": attention, "labels": labels, "num_residues": residues}


def distilbert_loss(
    student_out, teacher_out, batch: dict[str, Any], temperature: float, weights: tuple[float, float, float]
) -> torch.Tensor:
    """DistilBERT's distiller.py maths: KD over every non-pad token, MLM from HF's head, cosine on the
    last hidden states of non-pad tokens."""
    s_logits, t_logits = student_out.logits, teacher_out.logits
    mask = batch["attention_mask"].unsqueeze(-1).expand_as(s_logits).bool()
    vocab_size = s_logits.size(-1)
    s_sel = torch.masked_select(s_logits, mask).view(-1, vocab_size)
    t_sel = torch.masked_select(t_logits, mask).view(-1, vocab_size)
    kd = (
        nn.KLDivLoss(reduction="batchmean")(
            F.log_softmax(s_sel / temperature, dim=-1), F.softmax(t_sel / temperature, dim=-1)
        )
        * temperature**2
    )
    mlm = student_out.loss
    s_h, t_h = student_out.hidden_states[-1], teacher_out.hidden_states[-1]
    hmask = batch["attention_mask"].unsqueeze(-1).expand_as(s_h).bool()
    dim = s_h.size(-1)
    s_h = torch.masked_select(s_h, hmask).view(-1, dim)
    t_h = torch.masked_select(t_h, hmask).view(-1, dim)
    cos = nn.CosineEmbeddingLoss(reduction="mean")(s_h, t_h, s_h.new_ones(s_h.size(0)))
    w_mlm, w_kd, w_cos = weights
    return w_mlm * mlm + w_kd * kd + w_cos * cos


class NaiveLoop:
    """The naive loop's models, optimizer and batches, built once; `window(steps)` times `steps` steps.

    The throughput benchmark alternates its windows with the engine's, so the ratio compares rates
    measured seconds apart rather than minutes apart (this matters on shared or throttling machines).
    """

    def __init__(
        self,
        teacher_dir: str | Path,
        corpus_dir: str | Path,
        *,
        student_layers: int,
        batch_size: int = 16,
        lr: float = 5e-5,
        temperature: float = 2.0,
        weights: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3),
        seed: int = 0,
        precision: str = "fp32",
    ):
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.precision, self.dtype = precision, PRECISIONS[precision]
        family = family_of(teacher_dir, "teacher model folder")
        teacher = family.masked_lm_class.from_pretrained(str(teacher_dir), dtype=torch.float32)
        self.student = build_student(teacher, num_layers=student_layers, strategy="alternate", seed=seed)
        self.student.to(self.device).train()
        self.teacher = teacher.to(self.device, self.dtype).eval()
        self.optimizer = torch.optim.AdamW(self.student.parameters(), lr=lr, weight_decay=0.01)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=precision == "fp16")
        self.batches = iter(NaiveBatches(corpus_dir, batch_size, seed=seed, family_vocab=family.vocab))
        self.batch_size, self.temperature, self.weights = batch_size, temperature, weights
        self.windows: list[dict[str, float]] = []

    def step(self) -> dict[str, Any]:
        batch = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in next(self.batches).items()}
        ids, att = batch["input_ids"], batch["attention_mask"]
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.precision != "fp32"):
            with torch.no_grad():
                t_out = self.teacher(input_ids=ids, attention_mask=att, output_hidden_states=True)
            s_out = self.student(input_ids=ids, attention_mask=att, labels=batch["labels"], output_hidden_states=True)
            loss = distilbert_loss(s_out, t_out, batch, self.temperature, self.weights)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        nn.utils.clip_grad_norm_(self.student.parameters(), 1.0)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return batch

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def window(self, steps: int) -> dict[str, float]:
        """Time `steps` steps (data loading included); the window is also kept in `self.windows`."""
        self._sync()
        w0, c0 = time.perf_counter(), time.process_time()
        rows = residues = tokens = 0
        for _ in range(steps):
            batch = self.step()
            rows += batch["input_ids"].shape[0]
            residues += batch["num_residues"]
            tokens += batch["input_ids"].numel()
        self._sync()
        w = dict(
            wall=time.perf_counter() - w0, cpu=time.process_time() - c0, rows=rows, residues=residues, tokens=tokens
        )
        self.windows.append(w)
        return w

    def result(self, steps: int) -> NaiveResult:
        """The median window of those timed so far."""
        runs = self.windows
        med = sorted(runs, key=lambda r: r["residues"] / r["wall"])[len(runs) // 2]
        return NaiveResult(
            batch_size=self.batch_size,
            steps=steps,
            repeats=len(runs),
            sequences_per_s=med["rows"] / med["wall"],
            residues_per_s=med["residues"] / med["wall"],
            tokens_per_s=med["tokens"] / med["wall"],
            padding_fraction=1.0 - (med["residues"] + 2 * med["rows"]) / med["tokens"],
            step_time_s=med["wall"] / steps,
            residues_per_cpu_s=float(np.median([r["residues"] / r["cpu"] for r in runs])),
            precision=self.precision,
            repeat_residues_per_s=[r["residues"] / r["wall"] for r in runs],
        )
