"""ShardedCorpus: random access by global row over memory-mapped shards, and manifest validation."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from minprot_ds.data.manifest import SHARD_FEATURES
from minprot_ds.data.shards import ShardedCorpus
from minprot_ds.errors import UserError


def test_lengths_and_tokens_match_what_was_written(tiny_corpus):
    corpus = ShardedCorpus(tiny_corpus.path, "train")
    written = tiny_corpus.tokens["train"]
    assert len(corpus) == len(written) == 317
    assert corpus.lengths.dtype == np.int32
    assert corpus.lengths.tolist() == [len(t) for t in written]
    rows = np.array([316, 0, 49, 50, 51, 200, 0])  # across shard boundaries, repeats, any order
    for row, got in zip(rows, corpus.tokens(rows)):
        np.testing.assert_array_equal(got, written[row])
        assert got.dtype == np.uint8


def test_tokens_are_views_into_the_mapped_shards(tiny_corpus):
    corpus = ShardedCorpus(tiny_corpus.path, "train")
    (view,) = corpus.tokens([5])
    assert not view.flags.owndata and not view.flags.writeable


def test_valid_split_is_separate(tiny_corpus):
    corpus = ShardedCorpus(tiny_corpus.path, "valid")
    assert corpus.lengths.tolist() == [len(t) for t in tiny_corpus.tokens["valid"]]


def test_reads_shards_written_in_many_record_batches_by_datasets(tmp_path, make_corpus):
    """`datasets` writes a shard as many record batches; row lookup must cross them correctly."""
    from datasets.arrow_writer import ArrowWriter

    base = make_corpus({"train": [30, 40, 50]})
    rng = np.random.default_rng(3)
    tokens = [rng.integers(5, 25, n).astype(np.uint8) for n in rng.integers(20, 60, 23)]
    path = base.path / "train" / "shard-00000.arrow"
    with ArrowWriter(features=SHARD_FEATURES, path=str(path), writer_batch_size=4) as writer:
        for i, t in enumerate(tokens):
            writer.write({"accession": f"A{i}", "tokens": t.tolist(), "length": len(t)})
        writer.finalize()
    with pa.memory_map(str(path)) as source:
        assert len(pa.ipc.open_stream(source).read_all().column("tokens").chunks) > 1
    manifest = json.loads((base.path / "manifest.json").read_text())
    manifest["splits"]["train"]["rows"] = manifest["splits"]["train"]["shards"][0]["rows"] = len(tokens)
    (base.path / "manifest.json").write_text(json.dumps(manifest))

    corpus = ShardedCorpus(base.path, "train")
    assert corpus.lengths.tolist() == [len(t) for t in tokens]
    rows = np.arange(len(tokens))[::-1]
    for row, got in zip(rows, corpus.tokens(rows)):
        np.testing.assert_array_equal(got, tokens[row])


def test_missing_shard_is_named(tiny_corpus):
    victim = tiny_corpus.path / "train" / "shard-00003.arrow"
    victim.unlink()
    with pytest.raises(UserError, match="shard .*shard-00003.arrow listed in .*manifest.json is missing"):
        ShardedCorpus(tiny_corpus.path, "train")


def test_shard_with_other_row_count_than_manifest(tiny_corpus):
    manifest = json.loads((tiny_corpus.path / "manifest.json").read_text())
    manifest["splits"]["train"]["shards"][1]["rows"] += 1
    (tiny_corpus.path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="shard-00001.arrow has 50 rows but the manifest says 51"):
        ShardedCorpus(tiny_corpus.path, "train")


def test_garbage_shard_is_named(tiny_corpus):
    (tiny_corpus.path / "train" / "shard-00002.arrow").write_bytes(b"not arrow at all")
    with pytest.raises(UserError, match="shard-00002.arrow is not a readable Arrow stream"):
        ShardedCorpus(tiny_corpus.path, "train")


def test_unknown_split_and_missing_manifest(tiny_corpus, tmp_path):
    with pytest.raises(UserError, match="has no split 'test'"):
        ShardedCorpus(tiny_corpus.path, "test")
    with pytest.raises(UserError, match="is not a prepared corpus"):
        ShardedCorpus(tmp_path, "train")


def test_row_ids_out_of_range(tiny_corpus):
    corpus = ShardedCorpus(tiny_corpus.path, "train")
    with pytest.raises(IndexError):
        corpus.tokens([317])
