"""What the data pipeline delivers: residues/s out of `DistillStream` and the time to plan an epoch
(benchmarks/data_pipeline.py reports them)."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from minprot_ds.data.batching import BatchingOptions, plan_epoch, plan_padding_fraction
from minprot_ds.data.masking import MaskingOptions
from minprot_ds.data.stream import DistillStream
from minprot_ds.data.synthetic import write_synthetic_corpus


def measure_loader_throughput(
    corpus_dir: str | Path | None = None,
    *,
    lengths: np.ndarray | None = None,
    seconds: float = 5.0,
    batching: BatchingOptions | None = None,
    masking: MaskingOptions | None = None,
    num_workers: int = 0,
    seed: int = 0,
) -> dict[str, float]:
    """Residues/s that `DistillStream` hands out (padding + masking + tensors included) over `seconds`.

    Without corpus_dir, a synthetic corpus with `lengths` (e.g. the UniRef50-like sample) is written to
    a temporary folder first (not timed).
    """
    batching = batching or BatchingOptions()
    masking = masking or MaskingOptions()
    if corpus_dir is None:
        if lengths is None:
            raise ValueError("measure_loader_throughput needs corpus_dir or lengths")
        with tempfile.TemporaryDirectory() as tmp:
            write_synthetic_corpus(tmp, lengths, seed=seed)
            return measure_loader_throughput(
                tmp, seconds=seconds, batching=batching, masking=masking, num_workers=num_workers, seed=seed
            )
    stream = DistillStream(corpus_dir, seed=seed, batching=batching, masking=masking, num_workers=num_workers)
    stream.planned_steps(1)  # plan outside the timed loop
    iterator = iter(stream)
    next(iterator)  # start workers outside the timed loop
    counts = time_batches(
        lambda: ((b["num_residues"], b["num_tokens"], len(b["sample_index"])) for b in next(iterator)), seconds
    )
    return {**counts, "num_workers": num_workers}


def time_batches(pull: Callable[[], Iterable[tuple[int, int, int]]], seconds: float) -> dict[str, float]:
    """Call `pull()` for `seconds`; each call gives (residues, padded tokens, rows) per micro-batch it loaded.
    Rates per second of wall time and of this process's CPU time, and the padding fraction."""
    residues = tokens = samples = batches = 0
    start, start_cpu = time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        for r, t, s in pull():
            residues, tokens, samples, batches = residues + r, tokens + t, samples + s, batches + 1
    elapsed, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    return {
        "seconds": elapsed,
        "residues_per_s": residues / elapsed,
        # this process's CPU time: with workers=0 the one-core figure, robust to other load on the box
        "residues_per_cpu_s": residues / cpu,
        "samples_per_s": samples / elapsed,
        "micro_batches_per_s": batches / elapsed,
        "padding_fraction": 1.0 - (residues + 2 * samples) / tokens,
    }


def measure_planning(
    lengths: np.ndarray, *, batching: BatchingOptions | None = None, seed: int = 0
) -> dict[str, float]:
    """Seconds to plan one epoch over `lengths` (e.g. 43M rows resampled from the UniRef50-like sample)."""
    batching = batching or BatchingOptions()
    start, start_cpu = time.perf_counter(), time.process_time()
    plan = plan_epoch(lengths, batching, seed=seed, epoch=0)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    return {
        "rows": len(lengths),
        "seconds": elapsed,
        "cpu_seconds": cpu,
        "micro_batches": len(plan),
        "padding_fraction": plan_padding_fraction(plan, lengths, batching),
    }
