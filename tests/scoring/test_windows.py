"""Windows over long proteins: full coverage, the central-residue rule, and the single-pass identity."""

from __future__ import annotations

import numpy as np
import pytest

from minprot_ds.errors import UserError
from minprot_ds.models.family import BERT, ESM
from minprot_ds.scoring.windows import (
    Window,
    check_window,
    combine_protein,
    model_window,
    owners,
    plan_windows,
    stitch_residues,
    window_weights,
)


def test_a_protein_that_fits_is_one_window_and_stitching_returns_it_unchanged():
    assert plan_windows(300, 512, 256) == [Window(0, 300)]
    out = np.random.default_rng(0).random((300, 3))
    np.testing.assert_array_equal(stitch_residues(300, [Window(0, 300)], [out]), out)
    np.testing.assert_array_equal(combine_protein(300, [Window(0, 300)], [out[0]]), out[0])


@pytest.mark.parametrize("length", [513, 700, 1024, 1025, 2000, 4913])
def test_windows_cover_every_residue_with_full_length_windows(length):
    windows = plan_windows(length, 512, 256)
    assert windows[0].start == 0 and windows[-1].end == length
    assert all(len(w) == 512 for w in windows)
    covered = np.zeros(length, bool)
    for w in windows:
        covered[w.start : w.end] = True
    assert covered.all()


def test_each_residue_takes_its_most_central_window():
    windows = plan_windows(1000, 512, 256)  # starts 0, 256, 488
    own = owners(1000, windows)
    assert own[0] == 0 and own[999] == len(windows) - 1
    for i in range(1000):
        cent = [min(i - w.start, w.end - 1 - i) if w.start <= i < w.end else -1 for w in windows]
        assert own[i] == int(np.argmax(cent))  # argmax takes the first on a tie


def test_stitching_recovers_a_position_function_and_weights_count_every_residue_once():
    length = 1300
    windows = plan_windows(length, 400, 150)
    truth = np.arange(length, dtype=np.float64)[:, None] * np.array([1.0, -1.0])
    outs = [truth[w.start : w.end] for w in windows]
    np.testing.assert_array_equal(stitch_residues(length, windows, outs), truth)
    weights = window_weights(length, windows)
    assert weights.sum() == pytest.approx(1.0)
    # The per-protein combination of per-window residue means is the mean over all residues.
    means = [
        truth[w.start : w.end][owners(length, windows)[w.start : w.end] == k].mean(0) for k, w in enumerate(windows)
    ]
    np.testing.assert_allclose(combine_protein(length, windows, means), truth.mean(0))


@pytest.mark.parametrize("window,stride,match", [(0, 1, "at least 1"), (100, 0, "between 1"), (100, 101, "skip")])
def test_bad_window_settings_are_refused_by_name(window, stride, match):
    with pytest.raises(UserError, match=match):
        plan_windows(1000, window, stride)


def test_a_last_window_just_after_the_previous_one_replaces_it():
    # 769 residues: range(0, 257, 256) + [257] used to give 0, 256 and 257, two nearly identical passes.
    assert [w.start for w in plan_windows(769, 512, 256)] == [0, 257]
    assert [w.start for w in plan_windows(1024 + 63, 512, 256)] == [0, 256, 575]  # 575 - 512 < 64: 512 dropped
    assert [w.start for w in plan_windows(1024 + 64, 512, 256)] == [0, 256, 512, 576]  # 64 apart: both kept
    # Dropping would leave a gap when stride == window: the close start is kept then.
    assert [w.start for w in plan_windows(1030, 512, 512)] == [0, 512, 518]
    for length in range(513, 3000, 29):
        for window, stride in ((512, 256), (512, 512), (400, 150), (100, 1)):
            windows = plan_windows(length, window, stride)
            covered = np.zeros(length, bool)
            for w in windows:
                covered[w.start : w.end] = True
            assert covered.all() and all(len(w) == window for w in windows), (length, window, stride)
            starts = [w.start for w in windows]
            assert starts == sorted(set(starts))


def test_aggregate_max_takes_the_window_most_confident_in_the_positive_class():
    windows = plan_windows(1000, 512, 256)  # 0, 256, 488
    probs = [np.array([0.9, 0.1]), np.array([0.2, 0.8]), np.array([0.6, 0.4])]
    np.testing.assert_array_equal(combine_protein(1000, windows, probs, "max"), probs[1])
    mean = combine_protein(1000, windows, probs)  # the default: weighted by the residues each window owns
    np.testing.assert_allclose(mean, window_weights(1000, windows) @ np.stack(probs))
    assert mean[1] < 0.8
    with pytest.raises(UserError, match="unknown --aggregate 'median'"):
        check_window(512, 256, aggregate="median")


def test_the_window_follows_the_model_unless_given():
    assert model_window(None, None, lambda: BERT) == (512, 256)
    assert model_window(None, None, lambda: ESM) == (1022, 511)
    assert model_window(None, 100, lambda: ESM) == (1022, 100)
    assert model_window(300, None, lambda: ESM) == (300, 150)

    def unread():
        raise AssertionError("the model's family is read only when --window is not given")

    assert model_window(300, 64, unread) == (300, 64)
