"""Epoch plans (which rows form each micro-batch, in which order) and the padding of one micro-batch.

An epoch plan is a pure function of (seed, epoch, lengths, BatchingOptions) and knows nothing about
ranks, so every rank computes the same plan and the global sample order survives a change of world size:
  1. order = permutation of all rows, seeded by (seed, epoch);
  2. cut it into windows of `bucket_window` rows; inside a window sort by length (ties by row id);
  3. pack each sorted window greedily into micro-batches whose padded size B x T stays within
     `max_tokens` (T counts [CLS] and [SEP] and is rounded up to `pad_to_multiple_of`) and B <= `max_rows`;
  4. shuffle the micro-batches within each window, so batch lengths do not ramp up inside a window.
Everything is vectorised: the sort runs on a [windows, bucket_window] matrix, and the greedy packing
walks all windows of a chunk in lockstep (one numpy step per micro-batch position, not per row). A
43M-row epoch plans in ~5 s on one core (most of it numpy's Fisher-Yates shuffle); the plan keeps
~4.5 bytes a row, planning peaks at ~12 bytes a row plus a bounded chunk.
The order depends on numpy's Generator stream for PCG64 (stable across numpy releases in practice,
though numpy does not promise it): resume a run with the numpy it started with.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from minprot_ds.errors import UserError
from minprot_ds.vocab import CLS_ID, PAD_ID, SEP_ID

# The token budget per micro-batch, and the rows it books, of every job (distillation, benchmarks, inference)
# unless told otherwise: about 16 ProtBert rows of 512 residues. Its one owner; the others import it.
DEFAULT_MAX_TOKENS = 8192
DEFAULT_MAX_ROWS = 64

# Rows sorted per chunk of windows: bounds the temporaries of planning (~40 bytes a row of a chunk).
_PLAN_CHUNK_ROWS = 1 << 22


@dataclasses.dataclass
class BatchingOptions:
    max_tokens: int = DEFAULT_MAX_TOKENS  # padded tokens per micro-batch (B x T, [CLS]/[SEP]/[PAD] included)
    max_rows: int = DEFAULT_MAX_ROWS  # sequences per micro-batch
    pad_to_multiple_of: int = 8  # T is rounded up to this (tensor-core friendly)
    # Rows sorted together by length: large enough that neighbours have near-equal lengths (padding
    # < 10% on UniRef50 lengths), small enough that the order stays random at the scale of an epoch.
    bucket_window: int = 6400  # = 100 x max_rows at the default

    def __post_init__(self) -> None:
        for name in ("max_tokens", "max_rows", "pad_to_multiple_of", "bucket_window"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise UserError(f"batching option {name} must be a positive integer, got {value!r}.")

    def padded_length(self, residues: np.ndarray | int) -> np.ndarray | int:
        """T of a micro-batch whose longest sequence has `residues` residues ([CLS] + [SEP] + rounding)."""
        m = self.pad_to_multiple_of
        return (residues + 2 + m - 1) // m * m

    def check_fits(self, longest: int) -> None:
        """Refuse a budget that cannot hold the longest row: a batch over budget could run a GPU out of
        memory long into a run, which is worse than stopping now."""
        need = int(self.padded_length(longest))
        if need > self.max_tokens:
            raise UserError(
                f"batching max_tokens={self.max_tokens} cannot hold the corpus's longest sequence "
                f"({longest} residues = {need} padded tokens); raise max_tokens to at least {need} "
                "or prepare the corpus with a lower --max-len."
            )


@dataclasses.dataclass
class EpochPlan:
    """Micro-batch i of the epoch is rows[starts[i] : starts[i] + sizes[i]] (global row ids)."""

    rows: np.ndarray  # int32 [N]: rows sorted by length within each window
    starts: np.ndarray  # int64 [n]: micro-batches in consumption order
    sizes: np.ndarray  # int64 [n]

    def __len__(self) -> int:
        return len(self.starts)

    def batch(self, i: int) -> np.ndarray:
        start = int(self.starts[i])
        return self.rows[start : start + int(self.sizes[i])]

    @property
    def cumulative_samples(self) -> np.ndarray:
        """int64 [n + 1]: samples consumed before micro-batch i (the cursor's unit inside an epoch)."""
        cum = np.zeros(len(self.sizes) + 1, dtype=np.int64)
        np.cumsum(self.sizes, out=cum[1:])
        return cum


def plan_epoch(
    lengths: np.ndarray, options: BatchingOptions, *, seed: int, epoch: int, shuffle: bool = True
) -> EpochPlan:
    """The micro-batches of one epoch (see the module doc). shuffle=False keeps row order 0..N-1 and the
    window order of micro-batches: the fixed order used for validation."""
    lengths = np.asarray(lengths)
    n = len(lengths)
    if n == 0:
        return EpochPlan(np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0, np.int64))
    longest = int(lengths.max())
    options.check_fits(longest)
    if seed < 0 or epoch < 0:
        raise UserError(f"seed and epoch must be non-negative integers, got seed={seed}, epoch={epoch}.")
    if n >= 1 << 31:
        raise UserError(f"a split of {n} rows is too large for one corpus; prepare it as several corpora.")
    # Rows travel with their length packed in one int64 (length << 32 | row): the shuffle moves both at
    # once (no random-access gather of lengths afterwards) and sorting the packed values inside a window
    # sorts by length, ties by row id.
    packed = (lengths.astype(np.int64) << 32) | np.arange(n, dtype=np.int64)
    if shuffle:
        np.random.default_rng([seed, epoch, 0]).shuffle(packed)
    # Rows a micro-batch may hold when its longest row has length l (a table over l: no per-row maths).
    table = np.arange(longest + 1)
    allowed_by_length = np.minimum(options.max_rows, options.max_tokens // options.padded_length(table))

    W = options.bucket_window
    windows_per_chunk = max(1, _PLAN_CHUNK_ROWS // W)
    rows = np.empty(n, dtype=np.int32)
    all_starts, all_sizes = [], []
    for first in range(0, n, windows_per_chunk * W):
        last = min(n, first + windows_per_chunk * W)
        nwin = -(-(last - first) // W)
        seg = np.full(nwin * W, np.iinfo(np.int64).max, dtype=np.int64)  # padding sorts last
        seg[: last - first] = packed[first:last]
        seg = np.sort(seg.reshape(nwin, W), axis=1).ravel()[: last - first]
        rows[first:last] = seg & 0xFFFFFFFF
        # non-increasing along each window, since lengths are sorted
        allowed = allowed_by_length[seg >> 32]
        starts, sizes = _pack_windows(allowed, W)
        all_starts.append(starts + first)
        all_sizes.append(sizes)
    del packed
    starts = np.concatenate(all_starts)
    sizes = np.concatenate(all_sizes)
    window = starts // W
    if shuffle:
        key = np.random.default_rng([seed, epoch, 1]).random(len(starts))
        consume = np.lexsort((key, window))
    else:
        consume = np.argsort(starts, kind="stable")
    return EpochPlan(rows=rows, starts=starts[consume], sizes=sizes[consume])


def _pack_windows(allowed: np.ndarray, W: int) -> tuple[np.ndarray, np.ndarray]:
    """Greedy packing of every window of `allowed` (sorted rows, windows of W) walked in lockstep.

    A micro-batch starting at p takes the largest k with k <= allowed[p + k - 1] (the last row is the
    longest); since `allowed` is non-increasing in a window, that predicate is monotone in k, so a
    vectorised binary search finds k for all windows at once.
    """
    n = len(allowed)
    pos = np.arange(0, n, W, dtype=np.int64)
    end = np.minimum(pos + W, n)
    out_starts, out_sizes = [], []
    while len(pos):
        hi = np.minimum(end - pos, allowed[pos])  # allowed[pos] bounds k too (allowed only shrinks)
        lo = np.ones_like(hi)
        while True:
            todo = lo < hi
            if not todo.any():
                break
            mid = (lo + hi + 1) // 2
            ok = mid <= allowed[pos + mid - 1]
            lo = np.where(todo & ok, mid, lo)
            hi = np.where(todo & ~ok, mid - 1, hi)
        out_starts.append(pos)
        out_sizes.append(lo)
        pos = pos + lo
        alive = pos < end
        pos, end = pos[alive], end[alive]
    return np.concatenate(out_starts), np.concatenate(out_sizes)


def plan_padding_fraction(plan: EpochPlan, lengths: np.ndarray, options: BatchingOptions) -> float:
    """Share of [PAD] tokens over all micro-batches of a plan (what the batches' padding_fraction reports)."""
    if len(plan) == 0:
        return 0.0
    sorted_len = np.asarray(lengths)[plan.rows].astype(np.int64)
    order = np.argsort(plan.starts)
    longest = np.maximum.reduceat(sorted_len, plan.starts[order])
    padded = int((options.padded_length(longest) * plan.sizes[order]).sum())
    real = int(sorted_len.sum()) + 2 * len(sorted_len)
    return 1.0 - real / padded


def pad_batch(tokens: list[np.ndarray], lengths: np.ndarray, options: BatchingOptions) -> np.ndarray:
    """uint8 [B, T]: [CLS] residues [SEP] then [PAD], T = padded length of the longest row."""
    lengths = np.asarray(lengths, dtype=np.int64)
    width = int(options.padded_length(int(lengths.max())))
    ids = np.full((len(tokens), width), PAD_ID, dtype=np.uint8)
    ids[:, 0] = CLS_ID
    for i, t in enumerate(tokens):
        ids[i, 1 : 1 + len(t)] = t
    ids[np.arange(len(tokens)), lengths + 1] = SEP_ID
    return ids
