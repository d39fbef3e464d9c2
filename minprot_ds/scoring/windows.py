"""Overlapping windows over proteins longer than a model's input, and how window outputs are stitched back.

One code path for every consumer (fine-tune evaluation, `predict`, `embed`), so a protein is scored the
same way wherever it is scored. The rules:
- windows of `window` residues start every `stride` residues; the last one is moved back to end at the
  protein's last residue, so no residue is missed and no window is shorter than the others; when that last
  start lies less than a quarter stride after the one before (a 769-residue protein: 0, 256, 257), the one
  before is dropped, provided the windows left still cover every residue (0, 257): a near-duplicate window
  costs a forward pass and adds nothing;
- per-residue outputs: each residue takes the value from the window where it sits most centrally (the
  largest distance to the nearer edge of the window; on a tie, the earlier window);
- per-protein outputs (class probabilities, pooled embeddings): the mean over windows weighted by the
  number of residues each window owns under the rule above, i.e. every residue counts once; or, for class
  probabilities under `--aggregate max`, the output of the window with the highest probability of the
  positive (last) class, for a property one region of a long protein carries (a DNA-binding domain).
A protein no longer than `window` is one window, and stitching it returns the single pass unchanged.
A protein longer than the window follows `--long`: window (the rules above), truncate (its first window only)
or skip (not scored; predict and embed only). The checks of --window, --stride and --long live here too, and the
window a model takes when --window is not given (`model_window`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from minprot_ds.errors import UserError
from minprot_ds.models.family import ModelFamily
from minprot_ds.vocab import MAX_RESIDUES

DEFAULT_WINDOW = MAX_RESIDUES  # 512 residues, 514 tokens with [CLS] and [SEP]
DEFAULT_STRIDE = MAX_RESIDUES // 2


@dataclasses.dataclass(frozen=True)
class Window:
    start: int  # first residue (0-based) of the protein inside this window
    end: int  # one past the last

    def __len__(self) -> int:
        return self.end - self.start


AGGREGATES = ("mean", "max")  # how a protein-level task combines its windows' class probabilities
LONG_MODES = ("window", "truncate", "skip")  # what happens to a protein longer than the window
FINETUNE_LONG_MODES = ("window", "truncate")  # a fine-tune scores every row of its splits: no skip


def check_window(
    window: int,
    stride: int,
    *,
    long: str = "window",
    long_modes: Sequence[str] = LONG_MODES,
    aggregate: str = "mean",
) -> None:
    """Refuse, naming the flag, a --long outside `long_modes`, an --aggregate outside AGGREGATES, a --window
    under 1 residue or a --stride outside 1..window."""
    if aggregate not in AGGREGATES:
        raise UserError(f"unknown --aggregate {aggregate!r}; choose one of: {', '.join(AGGREGATES)}")
    if long not in long_modes:
        raise UserError(f"unknown --long {long!r}; choose one of: {', '.join(long_modes)}")
    if window < 1:
        raise UserError(f"--window {window} must be at least 1 residue.")
    if not 0 < stride <= window:
        raise UserError(
            f"--stride {stride} must be between 1 and --window {window}; "
            "a stride larger than the window would skip residues."
        )


def model_window(window: int | None, stride: int | None, family: Callable[[], ModelFamily]) -> tuple[int, int]:
    """--window and --stride as given, else the model's window (its family's: ProtBert 512, ESM-2 1,022 residues)
    and half the window. `family()` (which may read the model's config) is asked only when --window is not given."""
    if window is None:
        window = family().max_residues
    return window, window // 2 if stride is None else stride


def check_positions(window: int, positions: int, model: str) -> None:
    """Refuse a window the model cannot hold: `window` residues plus [CLS] and [SEP] in `positions` positions."""
    if window + 2 > positions:
        raise UserError(
            f"--window {window} needs {window + 2} positions with [CLS] and [SEP], but {model} has "
            f"{positions}; pass --window {positions - 2} or less"
        )


def plan_windows(length: int, window: int = DEFAULT_WINDOW, stride: int = DEFAULT_STRIDE) -> list[Window]:
    """The windows that cover residues [0, length); one window when the protein fits."""
    check_window(window, stride)
    if length <= window:
        return [Window(0, length)]
    starts = list(range(0, length - window, stride)) + [length - window]
    if len(starts) >= 3 and starts[-1] - starts[-2] < min_step(stride) and starts[-3] + window >= starts[-1]:
        del starts[-2]
    return [Window(s, s + window) for s in starts]


def min_step(stride: int) -> int:
    """The closest a last window may start after the one before it before that one is dropped (a quarter stride)."""
    return max(1, stride // 4)


def plan_protein(length: int, window: int, stride: int, long: str = "window") -> list[Window] | None:
    """The windows a protein is scored through under `long`: all of them (window), the first (truncate), or
    None (skip) when it is longer than the window."""
    if length <= window or long == "window":
        return plan_windows(length, window, stride)
    if long == "truncate":
        return [Window(0, window)]
    return None


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


def combine_protein(
    length: int, windows: list[Window], outputs: list[np.ndarray], aggregate: str = "mean"
) -> np.ndarray:
    """A per-protein output (probabilities, a pooled vector) from each window's: the owned-residue-weighted mean,
    or (aggregate "max", class probabilities) the window whose last class is the most probable."""
    if len(windows) == 1:
        return np.asarray(outputs[0])
    if aggregate == "max":
        return np.asarray(outputs[int(np.argmax([np.asarray(o)[-1] for o in outputs]))])
    weights = window_weights(length, windows)
    stacked = np.stack([np.asarray(o, dtype=np.float64) for o in outputs])
    return np.tensordot(weights, stacked, axes=1).astype(np.asarray(outputs[0]).dtype)
