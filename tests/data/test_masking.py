"""MLM masking: 15% of residues, 80/10/10, specials never touched, a pure function of the sample."""

from __future__ import annotations

import numpy as np
import pytest

from minprot_ds.data.batching import BatchingOptions, pad_batch
from minprot_ds.data.masking import MaskingOptions, loss_labels, mask_residues
from minprot_ds.errors import UserError
from minprot_ds.vocab import CLS_ID, IGNORE_INDEX, MASK_ID, PAD_ID, SEP_ID, STANDARD_RESIDUE_IDS

SPECIALS = [PAD_ID, 1, CLS_ID, SEP_ID, MASK_ID]


def _batch(lengths, seed=0):
    rng = np.random.default_rng(seed)
    tokens = [STANDARD_RESIDUE_IDS[rng.integers(0, 21, n)] for n in lengths]
    return pad_batch(tokens, np.asarray(lengths), BatchingOptions()), np.asarray(lengths)


def _mask(ids, lengths, sample_index, **kw):
    """What the stream does (data/stream.py): compact masks from mask_residues, then loss_labels for the loss."""
    inputs, labels = mask_residues(ids, lengths, sample_index, **kw)
    assert inputs.dtype == labels.dtype == np.uint8 and inputs.shape == labels.shape == ids.shape
    return inputs, loss_labels(labels)


def test_statistics_over_many_residues():
    lengths = np.random.default_rng(0).integers(100, 400, 2000)
    ids, lengths = _batch(lengths)
    inputs, labels = _mask(ids, lengths, np.arange(len(lengths)), seed=1, epoch=0, options=MaskingOptions())
    selected = labels != IGNORE_INDEX
    residues = int(lengths.sum())
    share = selected.sum() / residues
    masked = (inputs == MASK_ID) & selected
    changed = selected & (inputs != ids) & ~masked
    kept = selected & (inputs == ids)
    n = selected.sum()
    print(
        f"selected {share:.4f}, mask {masked.sum() / n:.4f}, random {changed.sum() / n:.4f}, keep {kept.sum() / n:.4f}"
    )
    assert abs(share - 0.15) < 0.003
    assert abs(masked.sum() / n - 0.8) < 0.01
    # a random draw equal to the original residue (1 in 21) counts as kept here
    assert abs(changed.sum() / n - 0.1 * 20 / 21) < 0.01
    assert abs(kept.sum() / n - (0.1 + 0.1 / 21)) < 0.01
    assert np.array_equal(labels[selected], ids[selected])
    assert np.array_equal(inputs[~selected], ids[~selected])  # only selected positions change


def test_specials_never_selected_and_random_draws_are_standard_residues():
    ids, lengths = _batch(np.random.default_rng(1).integers(1, 60, 3000))
    options = MaskingOptions(probability=0.5, mask_fraction=0.0, random_fraction=1.0)
    inputs, labels = _mask(ids, lengths, np.arange(len(lengths)), seed=0, epoch=3, options=options)
    special = np.isin(ids, SPECIALS)
    assert np.all(labels[special] == IGNORE_INDEX)
    assert np.array_equal(inputs[special], ids[special])
    selected = labels != IGNORE_INDEX
    assert np.isin(inputs[selected], STANDARD_RESIDUE_IDS).all()
    used = np.unique(inputs[selected & (inputs != ids)])
    assert len(used) == 21  # every standard residue (and X) gets drawn


def test_every_sequence_gets_at_least_one_selected_residue():
    ids, lengths = _batch([1, 2, 3, 5, 8] * 200)
    _, labels = _mask(ids, lengths, np.arange(len(lengths)), seed=0, epoch=0, options=MaskingOptions())
    assert np.all((labels != IGNORE_INDEX).sum(axis=1) >= 1)


def test_masking_depends_on_the_sample_not_the_batch():
    """Same (seed, epoch, sample index) gives the same masking whatever the batch width or neighbours."""
    tokens_ids, lengths = _batch([50, 300, 120])
    alone_ids = pad_batch([tokens_ids[2, 1:121]], np.array([120]), BatchingOptions(pad_to_multiple_of=1))
    kw = dict(seed=5, epoch=2, options=MaskingOptions())
    in_batch = _mask(tokens_ids, lengths, np.array([7, 8, 9]), **kw)
    alone = _mask(alone_ids, np.array([120]), np.array([9]), **kw)
    assert np.array_equal(in_batch[0][2, :122], alone[0][0])
    assert np.array_equal(in_batch[1][2, :122], alone[1][0])
    assert np.all(in_batch[1][2, 122:] == IGNORE_INDEX)


def test_masking_changes_with_epoch_seed_and_sample():
    ids, lengths = _batch([400])

    def labels(seed, epoch, sample):
        return _mask(ids, lengths, np.array([sample]), seed=seed, epoch=epoch, options=MaskingOptions())[1]

    base = labels(0, 0, 0)
    assert np.array_equal(base, labels(0, 0, 0))
    for other in (labels(1, 0, 0), labels(0, 1, 0), labels(0, 0, 1)):
        assert not np.array_equal(base, other)


def test_bad_options_are_named():
    with pytest.raises(UserError, match="sum to at most 1"):
        MaskingOptions(mask_fraction=0.9, random_fraction=0.2)
    with pytest.raises(UserError, match=r"probability must lie in \(0, 1\]"):
        MaskingOptions(probability=0)
