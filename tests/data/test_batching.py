"""Epoch plans: every row once, budgets held, greedy packing as specified, low padding; pad layout."""

from __future__ import annotations

import numpy as np
import pytest

from minprot_ds.data.batching import BatchingOptions, pad_batch, plan_epoch, plan_padding_fraction
from minprot_ds.errors import UserError
from minprot_ds.vocab import CLS_ID, PAD_ID, SEP_ID


def _batches(plan):
    return [plan.batch(i).tolist() for i in range(len(plan))]


@pytest.mark.parametrize("n", [1, 37, 1000, 2501])
def test_every_row_exactly_once_and_budgets_hold(n):
    lengths = np.random.default_rng(n).integers(20, 513, n).astype(np.int32)
    options = BatchingOptions(max_tokens=4096, max_rows=16, bucket_window=300)
    for epoch in range(2):
        plan = plan_epoch(lengths, options, seed=7, epoch=epoch)
        rows = np.concatenate([plan.batch(i) for i in range(len(plan))])
        assert np.array_equal(np.sort(rows), np.arange(n))
        for i in range(len(plan)):
            b = plan.batch(i)
            assert 1 <= len(b) <= options.max_rows
            assert len(b) * options.padded_length(int(lengths[b].max())) <= options.max_tokens


def test_order_is_a_pure_function_of_seed_and_epoch():
    lengths = np.random.default_rng(0).integers(20, 300, 3000)
    options = BatchingOptions(max_tokens=2048, max_rows=32, bucket_window=500)
    a = plan_epoch(lengths, options, seed=3, epoch=1)
    assert _batches(a) == _batches(plan_epoch(lengths, options, seed=3, epoch=1))
    assert _batches(a) != _batches(plan_epoch(lengths, options, seed=3, epoch=2))
    assert _batches(a) != _batches(plan_epoch(lengths, options, seed=4, epoch=1))


def _greedy_reference(lengths, options, seed, epoch):
    """The packing rule written plainly: per window, sorted by length, add rows while the batch fits."""
    order = np.arange(len(lengths), dtype=np.int32)
    np.random.default_rng([seed, epoch, 0]).shuffle(order)
    batches = set()
    W = options.bucket_window
    for first in range(0, len(order), W):
        window = order[first : first + W]
        window = window[np.lexsort((window, lengths[window]))]  # by length, ties by row id
        current = []
        for row in window.tolist():
            trial = current + [row]
            cost = len(trial) * options.padded_length(int(lengths[row]))
            if current and (len(trial) > options.max_rows or cost > options.max_tokens):
                batches.add(tuple(current))
                current = [row]
            else:
                current = trial
        batches.add(tuple(current))
    return batches


@pytest.mark.parametrize("max_rows,max_tokens,pad", [(64, 8192, 8), (5, 100_000, 1), (1000, 3000, 64)])
def test_vectorised_packing_equals_plain_greedy(max_rows, max_tokens, pad):
    lengths = np.random.default_rng(max_rows).integers(1, 700, 4000).astype(np.int32)
    options = BatchingOptions(max_tokens=max_tokens, max_rows=max_rows, pad_to_multiple_of=pad, bucket_window=777)
    plan = plan_epoch(lengths, options, seed=11, epoch=0)
    assert {tuple(b) for b in _batches(plan)} == _greedy_reference(lengths, options, 11, 0)


def test_micro_batches_are_shuffled_within_windows_only():
    lengths = np.random.default_rng(5).integers(20, 513, 5000)
    options = BatchingOptions(max_tokens=4096, max_rows=32, bucket_window=1000)
    plan = plan_epoch(lengths, options, seed=0, epoch=0)
    windows = plan.starts // options.bucket_window
    assert np.all(np.diff(windows) >= 0)  # windows consumed in order
    longest = [int(lengths[plan.batch(i)].max()) for i in range(len(plan))]
    first_window = [n for n, w in zip(longest, windows) if w == 0]
    assert first_window != sorted(first_window)  # lengths do not ramp inside a window


def test_unshuffled_plan_is_fixed_and_ignores_the_seed():
    lengths = np.random.default_rng(2).integers(20, 513, 900)
    options = BatchingOptions(bucket_window=200)
    a = plan_epoch(lengths, options, seed=0, epoch=0, shuffle=False)
    b = plan_epoch(lengths, options, seed=9, epoch=0, shuffle=False)
    assert _batches(a) == _batches(b)
    assert sorted(r for batch in _batches(a) for r in batch) == list(range(900))
    assert max(a.batch(0)) < 200  # window 0 (rows 0..199) comes first
    window0 = [i for i in range(len(a)) if a.starts[i] < 200]
    longest = [int(lengths[a.batch(i)].max()) for i in window0]
    assert longest == sorted(longest)  # no shuffle: ascending lengths inside the window


def test_budget_below_the_longest_row_is_refused():
    lengths = np.array([30, 510, 40])
    with pytest.raises(UserError, match=r"max_tokens=256 cannot hold .*longest sequence \(510 residues = 512 padded"):
        plan_epoch(lengths, BatchingOptions(max_tokens=256), seed=0, epoch=0)


def test_bad_options_are_named():
    with pytest.raises(UserError, match="max_rows must be a positive integer"):
        BatchingOptions(max_rows=0)


def test_padding_below_ten_percent_on_uniref50_lengths(uniref_lengths):
    options = BatchingOptions()
    lengths = np.tile(uniref_lengths, 5)  # ~21k rows: several full windows
    for epoch in range(3):
        fraction = plan_padding_fraction(plan_epoch(lengths, options, seed=0, epoch=epoch), lengths, options)
        print(f"epoch {epoch}: padding fraction {fraction:.4f}")
        assert 0 < fraction < 0.10


def test_pad_batch_layout():
    tokens = [np.array([5, 6, 7], np.uint8), np.array([8], np.uint8)]
    ids = pad_batch(tokens, np.array([3, 1]), BatchingOptions(pad_to_multiple_of=8))
    assert ids.tolist() == [
        [CLS_ID, 5, 6, 7, SEP_ID, PAD_ID, PAD_ID, PAD_ID],
        [CLS_ID, 8, SEP_ID, PAD_ID, PAD_ID, PAD_ID, PAD_ID, PAD_ID],
    ]
    assert pad_batch(tokens, np.array([3, 1]), BatchingOptions(pad_to_multiple_of=1)).shape == (2, 5)
