"""The exact-resume training stream: which micro-batches each rank consumes at each optimizer step.

The run is one infinite sequence of micro-batches: the plans of epochs 0, 1, 2, ... concatenated (see
`batching.plan_epoch`; nothing there depends on ranks). With K = world_size x grad_accum micro-batches
per optimizer step, step s is micro-batches [sK, (s+1)K), and rank r takes sK + r*grad_accum + a for a
in range(grad_accum). The whole position is `consumed_samples` (rows of all ranks, across epochs) at a
step boundary, so 2 ranks x accum 1 and 1 rank x accum 2 consume the same samples at every step, and a
cursor saved with one layout loads in another whenever it falls on a step boundary there.

A torch DataLoader (map-style dataset keyed by micro-batch, sampler starting at the cursor) builds the
batches, so `num_workers` processes share the work in a fixed order without duplicating or dropping any.
Epochs are planned in the training process when first needed (~5 s for 43M rows): `planned_steps(n)`
plans epochs 0..n-1, and resuming in epoch e plans epochs 0..e (their micro-batch counts place the
cursor); the two most recent plans are kept.
"""

from __future__ import annotations

import math
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from minprot_ds.data.batching import BatchingOptions, EpochPlan, pad_batch, plan_epoch
from minprot_ds.data.masking import MaskingOptions, loss_labels, mask_residues
from minprot_ds.data.shards import ShardedCorpus
from minprot_ds.errors import UserError
from minprot_ds.vocab import PROTBERT, Vocabulary

MicroBatch = dict[str, Any]


class MicroBatchKey(NamedTuple):
    """What a worker needs to build one micro-batch: the rows travel with the key, so workers never
    plan an epoch themselves."""

    epoch: int
    index: int  # micro-batch index within the epoch
    rows: np.ndarray  # global row ids


def pack_micro_batch(
    corpus: ShardedCorpus,
    rows: np.ndarray,
    *,
    epoch: int,
    seed: int,
    batching: BatchingOptions,
    masking: MaskingOptions,
    vocab: Vocabulary = PROTBERT,
) -> dict[str, Any]:
    """A padded, masked micro-batch in compact numpy form (uint8 ids): what a DataLoader worker builds
    and pickles to the training process, ~8x smaller than int64 tensors in shared memory.

    The corpus holds ProtBert ids; batching and masking work on them, and the finished batch is remapped to
    `vocab`'s ids (ESM-2's for an ESM-2 teacher) through its fixed table, so one corpus serves every family and
    a sample is masked at the same positions whichever family reads it."""
    rows = np.asarray(rows, dtype=np.int64)
    lengths = corpus.lengths[rows].astype(np.int64)
    ids = pad_batch(corpus.tokens(rows), lengths, batching)
    inputs, labels = mask_residues(ids, lengths, rows, seed=seed, epoch=epoch, options=masking)
    return {
        "input_ids": vocab.remap(inputs),
        "labels": vocab.remap(labels),  # unselected positions hold the family's pad id
        "pad_id": vocab.pad_id,
        "lengths": lengths,
        "sample_index": rows,
        "epoch": int(epoch),
    }


def finish_micro_batch(packed: dict[str, Any]) -> MicroBatch:
    """The micro-batch the engine consumes (int64 tensors + bookkeeping scalars) from its compact form."""
    inputs, lengths = packed["input_ids"], packed["lengths"]
    attention = (np.arange(inputs.shape[1])[None, :] < (lengths + 2)[:, None]).astype(np.int64)
    num_residues = int(lengths.sum())
    num_tokens = int(inputs.size)
    return {
        "input_ids": torch.from_numpy(inputs.astype(np.int64)),
        "attention_mask": torch.from_numpy(attention),
        "labels": torch.from_numpy(loss_labels(packed["labels"], unselected=packed["pad_id"])),
        "sample_index": torch.from_numpy(packed["sample_index"]),
        "epoch": packed["epoch"],
        "num_residues": num_residues,
        "num_tokens": num_tokens,
        "padding_fraction": 1.0 - (num_residues + 2 * len(lengths)) / num_tokens,
    }


def build_micro_batch(
    corpus: ShardedCorpus,
    rows: np.ndarray,
    *,
    epoch: int,
    seed: int,
    batching: BatchingOptions,
    masking: MaskingOptions,
    vocab: Vocabulary = PROTBERT,
) -> MicroBatch:
    """The tensors of one micro-batch (padded, masked, in `vocab`'s ids) plus its bookkeeping scalars."""
    packed = pack_micro_batch(corpus, rows, epoch=epoch, seed=seed, batching=batching, masking=masking, vocab=vocab)
    return finish_micro_batch(packed)


def _keep(packed: dict[str, Any]) -> dict[str, Any]:
    """DataLoader collate_fn: leave numpy arrays alone (its default turns them into shared-memory
    tensors in the worker, which costs more than building the batch)."""
    return packed


class _Plans:
    """Epoch plans of one split, planned on demand: the two most recent are kept whole, every epoch's
    micro-batch count is kept forever (the map between global micro-batch index and epoch)."""

    def __init__(self, lengths: np.ndarray, batching: BatchingOptions, seed: int) -> None:
        self.lengths = lengths
        self.batching = batching
        self.seed = seed
        self._plans: dict[int, tuple[EpochPlan, np.ndarray]] = {}
        self._counts: list[int] = []  # micro-batches of epochs 0..len-1

    def plan(self, epoch: int) -> tuple[EpochPlan, np.ndarray]:
        """(plan, cumulative samples before each micro-batch) of an epoch."""
        if epoch not in self._plans:
            plan = plan_epoch(self.lengths, self.batching, seed=self.seed, epoch=epoch)
            if len(self._plans) >= 2:
                del self._plans[min(self._plans)]
            self._plans[epoch] = (plan, plan.cumulative_samples)
        return self._plans[epoch]

    def count(self, epoch: int) -> int:
        while len(self._counts) <= epoch:
            self._counts.append(len(self.plan(len(self._counts))[0]))
        return self._counts[epoch]

    def first_index(self, epoch: int) -> int:
        """Global index of the epoch's first micro-batch."""
        return sum(self.count(e) for e in range(epoch))

    def locate(self, index: int) -> tuple[int, int]:
        """(epoch, index within epoch) of a global micro-batch index."""
        epoch = 0
        while index >= self.count(epoch):
            index -= self.count(epoch)
            epoch += 1
        return epoch, index

    def consumed_before(self, index: int) -> int:
        """Samples in global micro-batches [0, index)."""
        epoch, local = self.locate(index)
        return epoch * len(self.lengths) + int(self.plan(epoch)[1][local])


class MicroBatchDataset(Dataset):
    """Map-style dataset over micro-batches of a split; picklable cheaply (workers reopen the mapped
    shards instead of receiving them) and stateless, so any worker builds any key identically."""

    def __init__(
        self,
        corpus_dir: str | Path,
        split: str,
        *,
        seed: int,
        batching: BatchingOptions,
        masking: MaskingOptions,
        corpus: ShardedCorpus | None = None,
        vocab: Vocabulary = PROTBERT,
    ) -> None:
        self.corpus_dir, self.split = Path(corpus_dir), split
        self.seed, self.batching, self.masking, self.vocab = seed, batching, masking, vocab
        self._corpus = corpus

    @property
    def corpus(self) -> ShardedCorpus:
        if self._corpus is None:
            self._corpus = ShardedCorpus(self.corpus_dir, self.split)
        return self._corpus

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_corpus": None}

    def __getitem__(self, key: MicroBatchKey) -> dict[str, Any]:
        """The compact micro-batch of a key (see `pack_micro_batch`; `finish_micro_batch` completes it)."""
        return pack_micro_batch(
            self.corpus,
            key.rows,
            epoch=key.epoch,
            seed=self.seed,
            batching=self.batching,
            masking=self.masking,
            vocab=self.vocab,
        )


class _RankSampler(Sampler):
    """This rank's micro-batch keys from a global step onwards, forever, in consumption order."""

    def __init__(self, plans: _Plans, start_step: int, rank: int, world_size: int, grad_accum: int) -> None:
        self.plans, self.start_step = plans, start_step
        self.rank, self.world_size, self.grad_accum = rank, world_size, grad_accum

    def __iter__(self) -> Iterator[MicroBatchKey]:
        k = self.world_size * self.grad_accum
        first = self.start_step * k + self.rank * self.grad_accum
        epoch, local = self.plans.locate(first)
        while True:
            for _ in range(self.grad_accum):
                while local >= self.plans.count(epoch):  # steps may straddle epochs
                    local -= self.plans.count(epoch)
                    epoch += 1
                yield MicroBatchKey(epoch, local, self.plans.plan(epoch)[0].batch(local))
                local += 1
            local += k - self.grad_accum  # skip the other ranks' micro-batches of the step


def _worker_signals(worker_id: int) -> None:
    """Preemption signals reach every process of a job (SLURM signals the whole step). A DataLoader
    worker killed by one makes the training process fail before it can checkpoint, so workers leave
    quietly (exit 0) and the training process, which finishes its step and checkpoints, decides."""
    for sig in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, lambda *_: os._exit(0))


class DistillStream:
    """Per optimizer step, the `grad_accum` micro-batches this rank trains on; resumable exactly.

    `state_dict()` counts only steps already handed out by `iter(stream)`. One iterator is live at a
    time: `iter(stream)` or `load_state_dict` stops any older one (start a new `iter(stream)` after
    loading a state).
    """

    def __init__(
        self,
        corpus_dir: str | Path,
        split: str = "train",
        *,
        seed: int,
        batching: BatchingOptions,
        masking: MaskingOptions,
        rank: int = 0,
        world_size: int = 1,
        grad_accum: int = 1,
        num_workers: int = 0,
        vocab: Vocabulary = PROTBERT,
    ) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise UserError(f"rank {rank} is not in [0, world_size={world_size}); check the launcher's arguments.")
        if grad_accum < 1 or num_workers < 0:
            raise UserError(
                f"grad_accum must be >= 1 and num_workers >= 0, got grad_accum={grad_accum}, num_workers={num_workers}."
            )
        if seed < 0:
            raise UserError(f"the data seed must be a non-negative integer, got {seed}.")
        self.corpus = ShardedCorpus(corpus_dir, split)
        batching.check_fits(self.corpus.max_length)
        self.rank, self.world_size, self.grad_accum = rank, world_size, grad_accum
        self.num_workers = num_workers
        self.dataset = MicroBatchDataset(
            corpus_dir, split, seed=seed, batching=batching, masking=masking, corpus=self.corpus, vocab=vocab
        )
        self._plans = _Plans(self.corpus.lengths, batching, seed)
        self._step = 0  # optimizer steps handed out
        self._generation = 0  # bumped by load_state_dict: older iterators stop

    @property
    def micro_batches_per_step(self) -> int:
        return self.world_size * self.grad_accum

    @property
    def rows_per_epoch(self) -> int:
        return len(self.corpus)

    def planned_steps(self, epochs: int) -> int:
        """Optimizer steps of a run of `epochs` epochs (the last one may be partial), for the LR schedule."""
        total = sum(self._plans.count(e) for e in range(epochs))
        return math.ceil(total / self.micro_batches_per_step)

    @property
    def consumed_samples(self) -> int:
        return self._plans.consumed_before(self._step * self.micro_batches_per_step)

    def state_dict(self) -> dict[str, int]:
        index = self._step * self.micro_batches_per_step
        return {"consumed_samples": self._plans.consumed_before(index), "epoch": self._plans.locate(index)[0]}

    def load_state_dict(self, state: dict[str, int]) -> None:
        consumed = state.get("consumed_samples") if isinstance(state, dict) else None
        if not isinstance(consumed, (int, np.integer)) or isinstance(consumed, bool) or consumed < 0:
            raise UserError(
                f"data stream state {state!r} has no non-negative integer 'consumed_samples'; "
                "the checkpoint's loader state is damaged."
            )
        consumed = int(consumed)
        epoch, within = divmod(consumed, self.rows_per_epoch)
        if "epoch" in state and state["epoch"] != epoch:
            raise UserError(
                f"data stream state {state!r} was written for a corpus of another size (here an epoch is "
                f"{self.rows_per_epoch} rows, so that cursor lies in epoch {epoch}); resume on the corpus "
                "the run started with."
            )
        cumulative = self._plans.plan(epoch)[1]
        local = int(np.searchsorted(cumulative, within))
        k = self.micro_batches_per_step
        index = self._plans.first_index(epoch) + local
        if cumulative[local] != within or index % k:
            raise UserError(
                f"consumed_samples={consumed} is not at an optimizer-step boundary of this run "
                f"(world_size {self.world_size} x grad_accum {self.grad_accum} = {k} micro-batches a step, "
                f"seed and batching options as configured); resume with the seed, batching options and "
                "world_size x grad_accum product the checkpoint was written with."
            )
        self._step = index // k
        self._generation += 1

    def __iter__(self) -> Iterator[list[MicroBatch]]:
        self._generation += 1  # here, not in the generator body, which runs only at the first next()
        return self._steps(self._generation, self._step)

    def _steps(self, generation: int, step: int) -> Iterator[list[MicroBatch]]:
        sampler = _RankSampler(self._plans, step, self.rank, self.world_size, self.grad_accum)
        loader = DataLoader(
            self.dataset,
            batch_size=None,
            sampler=sampler,
            collate_fn=_keep,
            num_workers=self.num_workers,
            persistent_workers=False,
            prefetch_factor=4 if self.num_workers else None,
            worker_init_fn=_worker_signals,
            # Its own generator for the workers' base seed: creating the iterator must not draw from the
            # global RNG, which is the training RNG (dropout) and is saved/restored by the checkpoint.
            generator=torch.Generator().manual_seed(self._plans.seed),
        )
        batches = iter(loader)
        while True:
            step_batches = [finish_micro_batch(next(batches)) for _ in range(self.grad_accum)]
            if generation != self._generation:
                return
            step += 1
            self._step = step  # handed out now: a checkpoint taken after this step resumes after it
            yield step_batches


def eval_batches(
    corpus_dir: str | Path,
    split: str = "valid",
    *,
    seed: int,
    batching: BatchingOptions,
    masking: MaskingOptions,
    rank: int = 0,
    world_size: int = 1,
    vocab: Vocabulary = PROTBERT,
) -> Iterator[MicroBatch]:
    """The split once, in a fixed order (rows 0..N-1 bucketed by length, no shuffle), micro-batches
    dealt round-robin to ranks (ranks may get one micro-batch more than others), masked as epoch 0."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise UserError(f"rank {rank} is not in [0, world_size={world_size}); check the launcher's arguments.")
    corpus = ShardedCorpus(corpus_dir, split)
    plan = plan_epoch(corpus.lengths, batching, seed=seed, epoch=0, shuffle=False)
    for i in range(rank, len(plan), world_size):
        yield build_micro_batch(
            corpus, plan.batch(i), epoch=0, seed=seed, batching=batching, masking=masking, vocab=vocab
        )
