"""DistillStream: exact resume, rank layout independence, epochs, cursor errors; eval batches."""

from __future__ import annotations

import itertools
import math
import pickle

import numpy as np
import pytest
import torch

from minprot_ds.data.batching import BatchingOptions
from minprot_ds.data.masking import MaskingOptions
from minprot_ds.data.stream import (
    DistillStream,
    MicroBatchKey,
    eval_batches,
    finish_micro_batch,
)
from minprot_ds.errors import UserError
from minprot_ds.vocab import CLS_ID, IGNORE_INDEX, PAD_ID, SEP_ID

# ~30 micro-batches an epoch on the tiny corpus: runs of a few dozen steps cross epoch boundaries.
BATCHING = BatchingOptions(max_tokens=1024, max_rows=16, bucket_window=64)
MASKING = MaskingOptions()
SEED = 13


def _stream(corpus, **kw) -> DistillStream:
    return DistillStream(corpus.path, seed=SEED, batching=BATCHING, masking=MASKING, **kw)


def _key(batch) -> tuple:
    """Everything that identifies a micro-batch's content."""
    return (
        batch["epoch"],
        tuple(batch["sample_index"].tolist()),
        batch["input_ids"].numpy().tobytes(),
        batch["labels"].numpy().tobytes(),
        batch["attention_mask"].numpy().tobytes(),
    )


def _run(corpus, steps, *, world_size=1, grad_accum=1, num_workers=0, state=None):
    """Per step: the micro-batch keys of ranks 0..world_size-1 in rank order, and rank 0's state after it."""
    per_rank, states = [], []
    for rank in range(world_size):
        stream = _stream(corpus, rank=rank, world_size=world_size, grad_accum=grad_accum, num_workers=num_workers)
        if state is not None:
            stream.load_state_dict(state)
        got, rank_states = [], []
        for step_batches in itertools.islice(iter(stream), steps):
            assert len(step_batches) == grad_accum
            got.append([_key(b) for b in step_batches])
            rank_states.append(stream.state_dict())
        per_rank.append(got)
        states.append(rank_states)
    assert all(s == states[0] for s in states)  # every rank holds the same global cursor
    steps_out = [[k for rank in per_rank for k in rank[s]] for s in range(steps)]
    return steps_out, states[0]


@pytest.fixture
def reference(tiny_corpus):
    """The global micro-batch sequence, 1 rank x accum 1, no workers: 70 micro-batches (> 2 epochs)."""
    steps, _ = _run(tiny_corpus, 70)
    return [k for step in steps for k in step]


def test_reference_crosses_epochs_and_covers_every_row_once_per_epoch(tiny_corpus, reference):
    by_epoch: dict[int, list[int]] = {}
    for epoch, rows, *_ in reference:
        by_epoch.setdefault(epoch, []).extend(rows)
    assert set(by_epoch) == {0, 1, 2}
    for epoch in (0, 1):
        assert sorted(by_epoch[epoch]) == list(range(317))
    assert by_epoch[0] != by_epoch[1]  # a new order each epoch


@pytest.mark.parametrize("world_size,grad_accum", [(2, 1), (1, 2), (2, 2), (3, 1)])
def test_rank_layouts_consume_the_same_global_sequence(tiny_corpus, reference, world_size, grad_accum):
    k = world_size * grad_accum
    steps, _ = _run(tiny_corpus, len(reference) // k, world_size=world_size, grad_accum=grad_accum)
    assert [key for step in steps for key in step] == reference[: len(steps) * k]


@pytest.mark.parametrize("world_size,grad_accum", [(1, 1), (2, 1), (1, 3)])
def test_workers_build_exactly_the_single_process_sequence(tiny_corpus, reference, world_size, grad_accum):
    k = world_size * grad_accum
    steps, _ = _run(tiny_corpus, 40 // k, world_size=world_size, grad_accum=grad_accum, num_workers=2)
    assert [key for step in steps for key in step] == reference[: len(steps) * k]


def test_dataset_pickles_without_the_mapped_corpus(tiny_corpus):
    """Spawned workers receive the dataset pickled: it must reopen the shards and build the same batch."""
    stream = _stream(tiny_corpus)
    plans_rows = next(iter(stream))[0]["sample_index"].numpy()
    blob = pickle.dumps(stream.dataset)
    assert len(blob) < 4096  # no shard data travels
    clone = pickle.loads(blob)
    key = MicroBatchKey(0, 0, plans_rows)
    assert _key(finish_micro_batch(clone[key])) == _key(finish_micro_batch(stream.dataset[key]))


@pytest.mark.parametrize(
    "world_size,grad_accum,num_workers", [(1, 1, 0), (2, 1, 0), (1, 1, 2), (2, 1, 2), (2, 2, 0), (1, 4, 2)]
)
def test_resume_at_any_step_yields_the_uninterrupted_batches(tiny_corpus, world_size, grad_accum, num_workers):
    # ~30 micro-batches an epoch: every run crosses into epoch 1 (with 4 a step, inside a step)
    total = 40 // (world_size * grad_accum)
    kw = dict(world_size=world_size, grad_accum=grad_accum, num_workers=num_workers)
    full, states = _run(tiny_corpus, total, **kw)
    boundary = next(s for s, state in enumerate(states) if state["epoch"] == 1)  # steps [0, boundary] handed out
    cuts = sorted({1, 3, boundary, boundary + 1, boundary + 2, total - 2})  # before, at, after the epoch change
    assert states[boundary - 1]["epoch"] == 0 and states[total - 3]["epoch"] == 1
    for cut in cuts:
        print(f"{kw}, cut after step {cut}: {states[cut - 1]}")
        resumed, resumed_states = _run(tiny_corpus, total - cut, state=states[cut - 1], **kw)
        assert resumed == full[cut:]
        assert resumed_states == states[cut:]


def test_cursor_moves_to_another_layout_with_the_same_step_size(tiny_corpus):
    two_ranks, states = _run(tiny_corpus, 20, world_size=2)
    one_rank_accum, _ = _run(tiny_corpus, 12, world_size=1, grad_accum=2, state=states[7])
    assert one_rank_accum == two_ranks[8:]


def test_state_dict_is_plain_ints_and_counts_handed_out_steps(tiny_corpus):
    stream = _stream(tiny_corpus, world_size=1)
    assert stream.state_dict() == {"consumed_samples": 0, "epoch": 0}
    it = iter(stream)
    seen = 0
    for _ in range(40):
        (batch,) = next(it)
        seen += len(batch["sample_index"])
        state = stream.state_dict()
        assert all(type(v) is int for v in state.values()), state
        assert state["consumed_samples"] == seen
    print(state)
    assert state["epoch"] == seen // 317


def test_bad_cursors_are_refused_with_the_reason(tiny_corpus):
    stream = _stream(tiny_corpus, world_size=2)
    _, states = _run(tiny_corpus, 3, world_size=1)  # after 3 micro-batches: not a 2-micro-batch boundary
    boundary = r"consumed_samples=\d+ is not at an optimizer-step boundary .*= 2 micro-batches"
    with pytest.raises(UserError, match=boundary):
        stream.load_state_dict(states[2])
    with pytest.raises(UserError, match="is not at an optimizer-step boundary"):
        stream.load_state_dict({"consumed_samples": 1, "epoch": 0})
    with pytest.raises(UserError, match="no non-negative integer 'consumed_samples'"):
        stream.load_state_dict({"consumed": 5})
    with pytest.raises(UserError, match="written for a corpus of another size"):
        stream.load_state_dict({"consumed_samples": 317 * 2 + 10, "epoch": 1})
    _, good = _run(tiny_corpus, 2, world_size=1, grad_accum=2)
    stream.load_state_dict(good[1])  # refused cursors left the stream usable
    assert stream.state_dict() == good[1]


def test_planned_steps_follow_the_plan(tiny_corpus, reference):
    per_epoch = [sum(1 for k in reference if k[0] == e) for e in (0, 1)]
    assert _stream(tiny_corpus).planned_steps(1) == per_epoch[0]
    assert _stream(tiny_corpus, world_size=2).planned_steps(2) == math.ceil(sum(per_epoch) / 2)
    assert _stream(tiny_corpus).rows_per_epoch == 317


def test_micro_batch_tensors(tiny_corpus):
    (batch,) = next(iter(_stream(tiny_corpus)))
    ids, attention, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    assert ids.dtype == attention.dtype == labels.dtype == batch["sample_index"].dtype == torch.int64
    rows = batch["sample_index"].numpy()
    lengths = np.array([len(tiny_corpus.tokens["train"][r]) for r in rows])
    assert ids.shape == (len(rows), batch["num_tokens"] // len(rows)) and ids.shape[1] % 8 == 0
    assert ids.shape[1] >= lengths.max() + 2 and ids.numel() <= BATCHING.max_tokens
    assert batch["num_residues"] == lengths.sum()
    assert batch["padding_fraction"] == pytest.approx(1 - (lengths + 2).sum() / ids.numel())
    for i, (row, n) in enumerate(zip(rows, lengths)):
        assert ids[i, 0] == CLS_ID and ids[i, n + 1] == SEP_ID and (ids[i, n + 2 :] == PAD_ID).all()
        assert attention[i].tolist() == [1] * (n + 2) + [0] * (ids.shape[1] - n - 2)
        original = tiny_corpus.tokens["train"][row]
        restored = np.where(labels[i, 1 : n + 1] != IGNORE_INDEX, labels[i, 1 : n + 1], ids[i, 1 : n + 1])
        unchanged = labels[i, 1 : n + 1].numpy() == IGNORE_INDEX
        assert np.array_equal(ids[i, 1 : n + 1].numpy()[unchanged], original[unchanged])
        assert np.array_equal(restored, original)


def test_eval_batches_cover_the_split_once_across_ranks(tiny_corpus, reference):
    kw = dict(seed=SEED, batching=BATCHING, masking=MASKING)
    single = list(eval_batches(tiny_corpus.path, "valid", **kw))
    assert sorted(r for b in single for r in b["sample_index"].tolist()) == list(range(45))
    assert [_key(b) for b in single] == [_key(b) for b in eval_batches(tiny_corpus.path, "valid", **kw)]
    ranks = [list(eval_batches(tiny_corpus.path, "valid", rank=r, world_size=2, **kw)) for r in range(2)]
    assert sorted(_key(b) for r in ranks for b in r) == sorted(_key(b) for b in single)
    # epoch-0 masking of a sample is the training stream's epoch-0 masking of the same sample
    train_eval = {}
    for b in eval_batches(tiny_corpus.path, "train", **kw):
        for i, row in enumerate(b["sample_index"].tolist()):
            train_eval[row] = b["labels"][i][b["attention_mask"][i].bool()].tolist()
    first = next(iter(_stream(tiny_corpus)))[0]
    for i, row in enumerate(first["sample_index"].tolist()):
        assert first["labels"][i][first["attention_mask"][i].bool()].tolist() == train_eval[row]


def test_missing_shard_and_too_small_budget_fail_at_construction(tiny_corpus):
    with pytest.raises(UserError, match=r"max_tokens=64 cannot hold"):
        DistillStream(tiny_corpus.path, seed=0, batching=BatchingOptions(max_tokens=64), masking=MASKING)
    (tiny_corpus.path / "train" / "shard-00000.arrow").unlink()
    with pytest.raises(UserError, match="shard-00000.arrow listed in .* is missing"):
        _stream(tiny_corpus)


def test_one_live_iterator_at_a_time(tiny_corpus):
    stream = _stream(tiny_corpus)
    old = iter(stream)
    next(old)
    state = stream.state_dict()
    new = iter(stream)
    assert list(old) == []  # the older iterator stops instead of moving the cursor behind the new one's back
    assert stream.state_dict() == state
    next(new)
    stream.load_state_dict(state)
    assert list(itertools.islice(new, 3)) == []
    assert stream.state_dict() == state
