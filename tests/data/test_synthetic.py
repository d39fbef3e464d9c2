"""The synthetic corpus writer (minprot_ds/data/synthetic.py) and the loader measurement that reads it."""

from __future__ import annotations

import numpy as np

from minprot_ds.bench.data_pipeline import measure_loader_throughput
from minprot_ds.data.manifest import load_manifest
from minprot_ds.data.synthetic import sample_lengths, write_synthetic_corpus


def test_sample_lengths_fall_back_to_a_log_normal_without_a_file(tmp_path):
    lengths, source = sample_lengths(5000, seed=0)
    assert source.startswith("log-normal") and lengths.min() >= 20 and lengths.max() <= 512
    assert 150 < np.median(lengths) < 185
    (tmp_path / "l.txt").write_text("30\n40\n")
    drawn, source = sample_lengths(10, seed=0, lengths_file=tmp_path / "l.txt")
    assert source == str(tmp_path / "l.txt") and set(drawn.tolist()) <= {30, 40}


def test_synthetic_corpus_is_a_prepared_corpus(tmp_path):
    corpus = write_synthetic_corpus(tmp_path / "syn", np.array([20, 30, 512]), rows_per_shard=2)
    split = load_manifest(corpus).splits["train"]
    assert (split.rows, split.residues, len(split.shards)) == (3, 562, 2)


def test_loader_throughput_measurement(tmp_path, uniref_lengths):
    corpus = write_synthetic_corpus(tmp_path / "syn", uniref_lengths, rows_per_shard=1000)
    result = measure_loader_throughput(corpus, seconds=0.5)
    print(f"loader: {result['residues_per_s'] / 1e6:.2f}M residues/s, padding {result['padding_fraction']:.3f}")
    assert result["residues_per_s"] > 0 and 0 < result["padding_fraction"] < 0.10
