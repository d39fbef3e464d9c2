"""Overlapping windows over proteins longer than a model's input, and how window outputs are stitched back.

One code path for every consumer (fine-tune evaluation, `predict`, `embed`), so a protein is scored the
same way wherever it is scored. The rules:
- windows of `window` residues start every `stride` residues; the last one is moved back to end at the
  protein's last residue, so no residue is missed and no window is shorter than the others;
- per-residue outputs: each residue takes the value from the window where it sits most centrally (the
  largest distance to the nearer edge of the window; on a tie, the earlier window);
- per-protein outputs (class probabilities, pooled embeddings): the mean over windows weighted by the
  number of residues each window owns under the rule above, i.e. every residue counts once.
A protein no longer than `window` is one window, and stitching it returns the single pass unchanged.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from minprot_ds.errors import UserError
from minprot_ds.vocab import MAX_RESIDUES

DEFAULT_WINDOW = MAX_RESIDUES  # 512 residues, 514 tokens with [CLS] and [SEP]
DEFAULT_STRIDE = MAX_RESIDUES // 2


@dataclasses.dataclass(frozen=True)
class Window:
    start: int  # first residue (0-based) of the protein inside this window
    end: int  # one past the last

    def __len__(self) -> int:
        return self.end - self.start


def check_window(window: int, stride: int) -> None:
    if window < 1:
        raise UserError(f"the window must hold at least 1 residue, not {window}.")
    if not 0 < stride <= window:
        raise UserError(f"the window stride must be between 1 and the window ({window}), not {stride}; "
                        "a stride larger than the window would skip residues.")


def plan_windows(length: int, window: int = DEFAULT_WINDOW, stride: int = DEFAULT_STRIDE) -> list[Window]:
    """The windows that cover residues [0, length); one window when the protein fits."""
    check_window(window, stride)
    if length <= window:
        return [Window(0, length)]
    starts = list(range(0, length - window, stride)) + [length - window]
    return [Window(s, s + window) for s in starts]


def owners(length: int, windows: list[Window]) -> np.ndarray:
    """For each residue, the index of the window where it sits most centrally (ties: the earlier window)."""
    pos = np.arange(length)
    best = np.full(length, -1, dtype=np.int64)
    best_centrality = np.full(length, -1, dtype=np.int64)
    for k, w in enumerate(windows):
        inside = (pos >= w.start) & (pos < w.end)
        centrality = np.minimum(pos - w.start, w.end - 1 - pos)
        better = inside & (centrality > best_centrality)
        best[better] = k
        best_centrality[better] = centrality[better]
    if (best < 0).any():
        raise ValueError(f"windows {windows} leave residues of a {length}-residue protein uncovered")
    return best


def stitch_residues(length: int, windows: list[Window], outputs: list[np.ndarray]) -> np.ndarray:
    """Per-residue outputs of the whole protein ([length, ...]) from each window's ([len(window), ...])."""
    if len(windows) == 1:
        return np.asarray(outputs[0])
    own = owners(length, windows)
    first = np.asarray(outputs[0])
    stitched = np.empty((length, *first.shape[1:]), dtype=first.dtype)
    for k, (w, out) in enumerate(zip(windows, outputs)):
        mine = np.nonzero(own == k)[0]
        stitched[mine] = np.asarray(out)[mine - w.start]
    return stitched


def window_weights(length: int, windows: list[Window]) -> np.ndarray:
    """How many residues each window owns, as fractions summing to 1 (the per-protein combination rule)."""
    counts = np.bincount(owners(length, windows), minlength=len(windows)).astype(np.float64)
    return counts / counts.sum()


def combine_protein(length: int, windows: list[Window], outputs: list[np.ndarray]) -> np.ndarray:
    """A per-protein output (probabilities, a pooled vector) from each window's: the owned-residue-weighted mean."""
    if len(windows) == 1:
        return np.asarray(outputs[0])
    weights = window_weights(length, windows)
    stacked = np.stack([np.asarray(o, dtype=np.float64) for o in outputs])
    return np.tensordot(weights, stacked, axes=1).astype(np.asarray(outputs[0]).dtype)
