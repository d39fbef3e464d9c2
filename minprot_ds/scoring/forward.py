"""The batched, token-budgeted, windowed forward: proteins in, one output per protein (or per residue) out.

Every protein is cut into windows (`minprot_ds.scoring.windows`, the one rule), the windows of a set of proteins are
sorted by length and packed into batches whose padded size (rows x (longest + 2)) stays under `max_tokens`,
each batch runs once under inference mode, and the window outputs are stitched back per protein. Results
do not depend on the budget or the batch order (only on padding-free maths), so any split of the work gives
the same numbers. A batch that runs out of GPU memory is halved and retried down to one window; what still
fails is returned as a failure, not raised.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from minprot_ds.errors import UserError
from minprot_ds.scoring.windows import (
    DEFAULT_STRIDE,
    DEFAULT_WINDOW,
    Window,
    check_window,
    combine_protein,
    plan_protein,
    stitch_residues,
)
from minprot_ds.vocab import INVALID, PROTBERT, UNK_ID, Vocabulary, encode

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WindowSettings:
    window: int = DEFAULT_WINDOW
    stride: int = DEFAULT_STRIDE
    long: str = "window"  # what happens to proteins longer than `window` (windows.LONG_MODES)
    aggregate: str = "mean"  # how class probabilities of a protein's windows combine (windows.AGGREGATES)

    def check(self, max_tokens: int) -> None:
        check_window(self.window, self.stride, long=self.long, aggregate=self.aggregate)
        if max_tokens < self.window + 2:
            raise UserError(
                f"--max-tokens {max_tokens} cannot hold one window of {self.window} residues plus [CLS] "
                f"and [SEP]; pass --max-tokens {self.window + 2} or more (or a smaller --window)"
            )

    def plan(self, length: int) -> list[Window] | None:
        """The windows of a protein; None when --long skip refuses it."""
        return plan_protein(length, self.window, self.stride, self.long)


class Scorer:
    """What a model gives for a batch of windows: per row a vector (`per_residue` False) or per residue a row.

    `run(input_ids, attention_mask, lengths)` returns a list of numpy arrays, one per row: [D] or [n_i, D].
    `mean_over_residues`: per-protein outputs that are a mean over residues (embeddings with --pool mean),
    which windows combine by stitching residues first, so every residue counts once. `probabilities`: class
    probabilities, which `WindowSettings.aggregate` combines (embeddings always take the weighted mean).
    """

    per_residue: bool = False
    mean_over_residues: bool = False
    probabilities: bool = False  # per-protein class probabilities, which --aggregate max may combine
    vocab: Vocabulary = PROTBERT  # the model family's ids (ESM-2's for an ESM-2 model)

    def run(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, lengths: Sequence[int]) -> list[np.ndarray]:
        raise NotImplementedError


@dataclass
class Scored:
    outputs: dict[int, np.ndarray] = field(default_factory=dict)  # protein key -> [D] or [L, D]
    windows: dict[int, int] = field(default_factory=dict)  # protein key -> number of windows run
    truncated: set[int] = field(default_factory=set)
    failures: dict[int, str] = field(default_factory=dict)  # protein key -> reason


def token_ids(sequence: str) -> np.ndarray:
    """ProtBert ids (uint8) of a sequence; `Vocabulary.remap` gives another family's."""
    ids = encode(sequence)
    ids[ids == INVALID] = UNK_ID  # records.clean refuses these; kept safe for direct callers
    return ids


def pack(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Indices of `lengths` in batches, longest first, each with rows x (longest + 2) <= max_tokens."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    for i in order:
        if batches and (len(batches[-1]) + 1) * (lengths[batches[-1][0]] + 2) <= max_tokens:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


def score(
    scorer: Scorer,
    proteins: dict[int, str],
    settings: WindowSettings,
    max_tokens: int,
    device: torch.device,
    on_batch: Callable[[int, int], None] | None = None,
) -> Scored:
    """Run `scorer` over `proteins` (key -> cleaned sequence); `on_batch(proteins_done, residues)` reports progress."""
    result = Scored()
    pieces: list[tuple[int, Window]] = []
    plans: dict[int, list[Window]] = {}
    for key, seq in proteins.items():
        plan = settings.plan(len(seq))
        if plan is None:
            result.failures[key] = f"longer than --window {settings.window} residues (--long skip)"
            continue
        if len(seq) > plan[-1].end:
            result.truncated.add(key)
        plans[key] = plan
        pieces.extend((key, w) for w in plan)
    lengths = [len(w) for _, w in pieces]
    window_out: dict[tuple[int, int], np.ndarray] = {}
    remaining = {key: len(plan) for key, plan in plans.items()}
    vocab = scorer.vocab
    tokens = {key: vocab.remap(token_ids(proteins[key])) for key in plans}

    def forward(rows: list[int]) -> None:
        width = max(lengths[r] for r in rows) + 2
        ids = np.full((len(rows), width), vocab.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for j, r in enumerate(rows):
            key, w = pieces[r]
            n = len(w)
            ids[j, 0], ids[j, 1 : n + 1], ids[j, n + 1] = vocab.bos_id, tokens[key][w.start : w.end], vocab.eos_id
            mask[j, : n + 2] = 1
        try:
            outs = scorer.run(
                torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device), [lengths[r] for r in rows]
            )
        except (torch.OutOfMemoryError, RuntimeError) as err:
            if not _is_oom(err):
                raise
            if device.type == "cuda":
                torch.cuda.empty_cache()
            if len(rows) == 1:
                key = pieces[rows[0]][0]
                result.failures[key] = f"out of memory on a single window of {lengths[rows[0]]} residues"
                return
            log.warning("out of memory on %d windows of up to %d residues; halving the batch", len(rows), width - 2)
            half = len(rows) // 2
            forward(rows[:half])
            forward(rows[half:])
            return
        for r, out in zip(rows, outs):
            window_out[(pieces[r][0], r)] = out

    piece_index = {}
    for r, (key, _w) in enumerate(pieces):
        piece_index.setdefault(key, []).append(r)
    for rows in pack(lengths, max_tokens):
        forward(rows)
        done, residues = 0, 0
        for r in rows:
            key = pieces[r][0]
            remaining[key] -= 1
            if remaining[key] == 0:
                done, residues = done + 1, residues + len(proteins[key])
                if key not in result.failures:
                    result.outputs[key] = _stitch(
                        scorer,
                        len(proteins[key]),
                        plans[key],
                        [window_out.pop((key, p)) for p in piece_index[key]],
                        settings.aggregate,
                    )
                    result.windows[key] = len(plans[key])
                else:
                    for p in piece_index[key]:
                        window_out.pop((key, p), None)
        if on_batch is not None and done:
            on_batch(done, residues)
    return result


def _stitch(scorer: Scorer, length: int, plan: list[Window], outs: list[np.ndarray], aggregate: str) -> np.ndarray:
    covered = plan[-1].end  # < length when --long truncate cut the protein
    if scorer.per_residue:
        return stitch_residues(covered, plan, outs)
    if scorer.mean_over_residues:
        if len(plan) == 1:
            return outs[0].mean(axis=0)
        return stitch_residues(covered, plan, outs).mean(axis=0)
    return combine_protein(covered, plan, outs, aggregate if scorer.probabilities else "mean")
