"""Tiny prepared corpora written straight through the shard/manifest contract (no `data prepare`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from minprot_ds.data.manifest import FORMAT, FORMAT_VERSION, Manifest, SplitInfo, write_manifest, write_shard
from minprot_ds.vocab import STANDARD_RESIDUE_IDS


@dataclasses.dataclass
class TinyCorpus:
    path: Path
    tokens: dict[str, list[np.ndarray]]  # per split, by global row id: what the shards hold


def write_corpus(folder: Path, splits: dict[str, list[int]], *, rows_per_shard: int = 50, seed: int = 0) -> TinyCorpus:
    """A corpus folder with random standard residues of the given lengths, split into several shards."""
    rng = np.random.default_rng(seed)
    infos, written = {}, {}
    for split, lengths in splits.items():
        (folder / split).mkdir(parents=True)
        tokens = [STANDARD_RESIDUE_IDS[rng.integers(0, len(STANDARD_RESIDUE_IDS), n)] for n in lengths]
        shards = []
        for s, first in enumerate(range(0, len(tokens), rows_per_shard)):
            part = tokens[first : first + rows_per_shard]
            names = [f"{split.upper()}{first + i}" for i in range(len(part))]
            shards.append(write_shard(folder / split / f"shard-{s:05d}.arrow", names, part, folder))
        infos[split] = SplitInfo(
            rows=len(tokens),
            residues=int(sum(lengths)),
            shards=shards,
            length_histogram={"edges": [0, 1000], "counts": [len(tokens)]},
        )
        written[split] = tokens
    manifest = Manifest(
        format=FORMAT,
        format_version=FORMAT_VERSION,
        minprot_version="test",
        created="2024-01-01T00:00:00+00:00",
        splits=infos,
        drops={},
        inputs=[],
        options={},
        fingerprint="test",
    )
    write_manifest(folder, manifest)
    return TinyCorpus(folder, written)


@pytest.fixture
def make_corpus(tmp_path: Path):
    """Factory: make_corpus({"train": lengths, "valid": lengths}, rows_per_shard=...) -> TinyCorpus."""
    count = iter(range(1000))

    def make(splits: dict[str, list[int]], **kwargs) -> TinyCorpus:
        return write_corpus(tmp_path / f"corpus{next(count)}", splits, **kwargs)

    return make


@pytest.fixture
def tiny_corpus(make_corpus) -> TinyCorpus:
    """~300 train rows (20..120 residues, 7 shards) and 45 valid rows."""
    rng = np.random.default_rng(1)
    return make_corpus({"train": rng.integers(20, 121, 317).tolist(), "valid": rng.integers(20, 121, 45).tolist()})


@pytest.fixture(scope="session")
def uniref_lengths(shared_data: Path) -> np.ndarray:
    """The 4,173 UniRef50-like sequence lengths (20..512) in ../shared/data."""
    return np.loadtxt(shared_data / "lengths" / "uniref50_like_lengths.txt", dtype=np.int32)
