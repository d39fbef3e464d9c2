"""BERT-style MLM masking whose randomness is a pure function of (seed, epoch, sample index, position).

No generator object carries state: every residue gets 64 bits from a splitmix64 hash of its
coordinates, computed for the whole padded batch with uint64 numpy arithmetic. So a sample is masked
identically whichever rank, micro-batch, worker or resume produced it, at a few ns per residue.

Bits of the hash: [0, 24) select the residue (per-position Bernoulli with `probability`, as Hugging Face's
DataCollatorForLanguageModeling does; a sequence whose draw selects nothing gets its lowest-draw residue
selected, so every sequence contributes to the MLM loss); [24, 48) pick the action (mask / random / keep);
[48, 64) pick the random residue among `STANDARD_RESIDUE_IDS` (never a special token).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from minprot_ds.errors import UserError
from minprot_ds.vocab import IGNORE_INDEX, MASK_ID, PAD_ID, STANDARD_RESIDUE_IDS

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_DOMAIN = 0x6D61736B  # "mask": keeps these draws apart from any other use of the run seed
_BITS24 = 1 << 24
_MASK24 = np.uint64(_BITS24 - 1)


@dataclasses.dataclass
class MaskingOptions:
    probability: float = 0.15  # share of residues selected for the MLM loss
    mask_fraction: float = 0.8  # of the selected: replaced by [MASK]
    random_fraction: float = 0.1  # of the selected: replaced by a random standard residue (rest unchanged)

    def __post_init__(self) -> None:
        if not 0.0 < self.probability <= 1.0:
            raise UserError(f"masking probability must lie in (0, 1], got {self.probability}.")
        if self.mask_fraction < 0 or self.random_fraction < 0 or self.mask_fraction + self.random_fraction > 1:
            raise UserError(
                f"masking mask_fraction ({self.mask_fraction}) and random_fraction ({self.random_fraction}) "
                "must be non-negative and sum to at most 1."
            )


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser (a bijection on uint64 with full avalanche); numpy wraps silently."""
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def residue_hashes(seed: int, epoch: int, sample_index: np.ndarray, width: int) -> np.ndarray:
    """uint64 [B, width]: the draw of residue position j (0-based, [CLS] excluded) of each sample."""
    if seed < 0 or epoch < 0:
        raise UserError(f"seed and epoch must be non-negative integers, got seed={seed}, epoch={epoch}.")
    key = _mix(np.array([seed ^ _DOMAIN], dtype=np.uint64) + _GOLDEN)
    key = _mix(key + np.array([epoch], dtype=np.uint64) * _GOLDEN)
    key = _mix(key + np.asarray(sample_index, dtype=np.uint64) * _GOLDEN)  # [B]
    positions = (np.arange(1, width + 1, dtype=np.uint64) * _GOLDEN)[None, :]
    return _mix(key[:, None] + positions)


def mask_residues(
    ids: np.ndarray,
    lengths: np.ndarray,
    sample_index: np.ndarray,
    *,
    seed: int,
    epoch: int,
    options: MaskingOptions,
) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, labels), uint8 [B, T], from padded ids ([CLS] residues [SEP] [PAD]...): the compact form
    DataLoader workers send (8x fewer bytes than int64). labels hold the original id at selected residues
    and PAD_ID elsewhere (never a residue); `loss_labels` turns them into the loss's int64 labels.
    [CLS], [SEP] and [PAD] are never selected.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    batch, width = ids.shape
    longest = int(lengths.max()) if batch else 0
    h = residue_hashes(seed, epoch, sample_index, longest)
    valid = np.arange(longest)[None, :] < lengths[:, None]
    # Compare in uint64 (no casts): the draws are the low 24 bits, the action the next 24.
    low = h & _MASK24
    selected = (low < np.uint64(round(options.probability * _BITS24))) & valid
    empty = np.flatnonzero(~selected.any(axis=1) & (lengths > 0))
    if len(empty):
        lowest = np.where(valid[empty], low[empty], np.uint64(_BITS24)).argmin(axis=1)
        selected[empty, lowest] = True

    action = (h >> np.uint64(24)) & _MASK24
    mask_below = np.uint64(round(options.mask_fraction * _BITS24))
    random_below = np.uint64(round((options.mask_fraction + options.random_fraction) * _BITS24))
    to_mask = selected & (action < mask_below)
    to_random = selected & (action >= mask_below) & (action < random_below)

    inputs = ids.copy()
    body = inputs[:, 1 : 1 + longest]  # a view: writes land in inputs
    labels = np.full((batch, width), PAD_ID, dtype=np.uint8)
    np.copyto(labels[:, 1 : 1 + longest], body, where=selected)
    np.copyto(body, np.uint8(MASK_ID), where=to_mask)
    drawn = h[to_random] >> np.uint64(48)  # few positions: pick their residue only
    pick = (drawn * np.uint64(len(STANDARD_RESIDUE_IDS))) >> np.uint64(16)
    body[to_random] = STANDARD_RESIDUE_IDS[pick.astype(np.intp)]
    return inputs, labels


def loss_labels(labels: np.ndarray, unselected: int = PAD_ID) -> np.ndarray:
    """int64 labels for the loss from `mask_residues`' compact ones: IGNORE_INDEX where not selected (where they
    hold `unselected`, the pad id of the vocabulary they were remapped to)."""
    out = labels.astype(np.int64)
    out[labels == unselected] = IGNORE_INDEX
    return out
