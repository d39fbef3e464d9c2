"""Synthetic corpora for benchmarks and tests: random standard residues with UniRef50-like lengths,
written as a prepared corpus (the same shards and manifest as `minprot data prepare` writes)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from minprot_ds.data.manifest import FORMAT, FORMAT_VERSION, Manifest, SplitInfo, write_manifest, write_shard
from minprot_ds.vocab import STANDARD_RESIDUE_IDS

FALLBACK_MEDIAN, FALLBACK_MEAN = 166.0, 193.0  # UniRef50 (20-512 aa) lengths: the log-normal fallback
MIN_LEN, MAX_LEN = 20, 512


def sample_lengths(count: int, seed: int, lengths_file: Path | None = None) -> tuple[np.ndarray, str]:
    """`count` UniRef50-like lengths and where they came from: drawn from `lengths_file` (one length a
    line, e.g. ../shared/data/lengths/uniref50_like_lengths.txt) when given and present, else from a
    log-normal with UniRef50's median (166) and mean (193), clipped to 20-512."""
    rng = np.random.default_rng(seed)
    if lengths_file is not None and Path(lengths_file).is_file():
        pool = np.loadtxt(lengths_file, dtype=np.int64, ndmin=1)
        return np.clip(rng.choice(pool, count), MIN_LEN, MAX_LEN), str(lengths_file)
    sigma = math.sqrt(2 * math.log(FALLBACK_MEAN / FALLBACK_MEDIAN))
    drawn = rng.lognormal(math.log(FALLBACK_MEDIAN), sigma, count)
    return np.clip(np.rint(drawn), MIN_LEN, MAX_LEN).astype(np.int64), "log-normal (median 166, mean 193)"


def write_synthetic_corpus(
    folder: str | Path, lengths: np.ndarray, *, rows_per_shard: int = 100_000, seed: int = 0
) -> Path:
    """A prepared corpus (train split only) of random standard residues with the given lengths."""
    import datetime

    folder = Path(folder)
    (folder / "train").mkdir(parents=True, exist_ok=True)
    lengths = np.asarray(lengths, dtype=np.int64)
    rng = np.random.default_rng(seed)
    shards = []
    for s, first in enumerate(range(0, len(lengths), rows_per_shard)):
        part = lengths[first : first + rows_per_shard]
        flat = STANDARD_RESIDUE_IDS[rng.integers(0, len(STANDARD_RESIDUE_IDS), int(part.sum()))]
        tokens = np.split(flat, np.cumsum(part)[:-1])
        accessions = [f"SYN{first + i}" for i in range(len(part))]
        shards.append(write_shard(folder / "train" / f"shard-{s:05d}.arrow", accessions, tokens, folder))
    split = SplitInfo(
        rows=len(lengths),
        residues=int(lengths.sum()),
        shards=shards,
        length_histogram={"edges": [0, int(lengths.max()) + 1], "counts": [len(lengths)]},
    )
    manifest = Manifest(
        format=FORMAT,
        format_version=FORMAT_VERSION,
        minprot_version="synthetic",
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(),
        splits={"train": split},
        drops={},
        inputs=[],
        options={"synthetic_seed": seed},
        fingerprint="synthetic",
    )
    write_manifest(folder, manifest)
    return folder
