"""`prepare_corpus` on small FASTA files built in each test, and on the real UniRef50 sample."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
from pathlib import Path

import datasets
import numpy as np
import pytest

from data_prep.corpus import DedupIndex, length_percentiles, prepare_corpus, verify_corpus
from minprot_ds import vocab
from minprot_ds.data.manifest import SHARD_FEATURES, load_manifest

RESIDUES = "LAGVESIKRDTPNQFYMHCW"


def write_fasta(path: Path, records: list[tuple[str, str]], width: int = 60) -> Path:
    with open(path, "w") as fh:
        for title, seq in records:
            fh.write(f">{title}\n")
            for i in range(0, len(seq), width):
                fh.write(seq[i : i + width] + "\n")
    return path


def random_records(n: int, seed: int = 0, lo: int = 20, hi: int = 300) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    return [(f"P{i:06d} desc {i}", "".join(rng.choices(RESIDUES, k=rng.randint(lo, hi)))) for i in range(n)]


def read_split(folder: Path, split: str) -> list[dict]:
    """All rows of a split, opened the way users do: datasets.Dataset.from_file on each shard."""
    manifest = load_manifest(folder)
    rows = []
    for shard in manifest.splits[split].shards:
        ds = datasets.Dataset.from_file(str(folder / shard.path))
        assert ds.features == SHARD_FEATURES
        rows.extend(ds.to_list())
    return rows


def shard_digests(folder: Path) -> dict[str, list[str]]:
    manifest = load_manifest(folder)
    return {name: [s.sha256 for s in split.shards] for name, split in manifest.splits.items()}


def test_cleaning_uppercases_strips_star_and_maps_rare_letters(tmp_path):
    seqs = {
        "lower": "mkvlaagiktw" * 3,
        "star": "WTKIGAALVKM" * 3 + "*",
        "rare": "MKUZOBLAAGI" * 3,
    }
    fasta = write_fasta(tmp_path / "in.fasta", list(seqs.items()), width=7)
    prepare_corpus([fasta], tmp_path / "out", min_len=5, valid_fraction=0.0)
    rows = {r["accession"]: r for r in read_split(tmp_path / "out", "train")}
    assert vocab.decode(np.array(rows["lower"]["tokens"])) == "MKVLAAGIKTW" * 3
    assert vocab.decode(np.array(rows["star"]["tokens"])) == "WTKIGAALVKM" * 3
    assert vocab.decode(np.array(rows["rare"]["tokens"])) == "MKXXXXLAAGI" * 3
    assert rows["star"]["length"] == 33
    assert all(isinstance(t, int) and 5 <= t < vocab.VOCAB_SIZE for r in rows.values() for t in r["tokens"])


def test_drops_are_counted_by_reason(tmp_path):
    records = [
        ("empty", ""),
        ("only_star", "*"),
        ("short", "M" * 19),
        ("min_ok", "M" * 20),
        ("max_ok", "A" * 30),
        ("long", "A" * 31),
        ("letter_j", "MKJL" * 6),
        ("digit", "MK1L" * 6),
        ("dash", "MK-L" * 6),
        ("first", "MKVL" * 6),
        ("dup_of_first", "MKVL" * 6),
        ("dup_after_mapping", "MKVLU" * 5),  # U → X, so equal to the next one
        ("x_version", "MKVLX" * 5),
    ]
    fasta = write_fasta(tmp_path / "in.fasta", records)
    manifest = prepare_corpus([fasta], tmp_path / "out", max_len=30, valid_fraction=0.0)
    assert manifest.drops == {
        "empty": 2,
        "too_short": 1,
        "too_long": 1,
        "invalid_letter": 3,
        "duplicate": 2,
    }
    kept = [r["accession"] for r in read_split(tmp_path / "out", "train")]
    assert kept == ["min_ok", "max_ok", "first", "dup_after_mapping"]


def test_no_dedup_keeps_identical_sequences_in_the_same_split(tmp_path):
    base = random_records(200, seed=1)
    records = base + [(f"copy_{t.split()[0]}", s) for t, s in base]
    fasta = write_fasta(tmp_path / "in.fasta", records)
    manifest = prepare_corpus([fasta], tmp_path / "out", valid_fraction=0.3, dedup=False)
    assert manifest.drops["duplicate"] == 0
    assert manifest.splits["train"].rows + manifest.splits["valid"].rows == 400
    valid = {r["accession"] for r in read_split(tmp_path / "out", "valid")}
    for title, _ in base:
        acc = title.split()[0]
        assert (acc in valid) == (f"copy_{acc}" in valid)
    manifest = prepare_corpus([fasta], tmp_path / "dedup", valid_fraction=0.3)
    assert manifest.drops["duplicate"] == 200


def test_split_is_stable_across_workers_block_sizes_and_reruns(tmp_path):
    fasta = write_fasta(tmp_path / "in.fasta", random_records(3000, seed=2))
    common = dict(valid_fraction=0.1, shard_rows=500)
    prepare_corpus([fasta], tmp_path / "w1", workers=1, **common)
    prepare_corpus([fasta], tmp_path / "w2", workers=2, block_bytes=8192, **common)
    prepare_corpus([fasta], tmp_path / "w1_again", workers=1, block_bytes=1000, **common)
    digests = shard_digests(tmp_path / "w1")
    assert shard_digests(tmp_path / "w2") == digests
    assert shard_digests(tmp_path / "w1_again") == digests
    valid_rows = load_manifest(tmp_path / "w1").splits["valid"].rows
    assert 200 < valid_rows < 400  # ~10% of 3000
    # A different seed gives a different split of the same sequences.
    other = prepare_corpus([fasta], tmp_path / "seed1", seed=1, **common)
    valid0 = {r["accession"] for r in read_split(tmp_path / "w1", "valid")}
    valid1 = {r["accession"] for r in read_split(tmp_path / "seed1", "valid")}
    assert other.splits["valid"].rows == len(valid1) and valid0 != valid1


def test_split_depends_on_the_sequence_only(tmp_path):
    records = random_records(1000, seed=3)
    full = write_fasta(tmp_path / "full.fasta", records)
    part = write_fasta(tmp_path / "part.fasta", [(f"renamed{i}", s) for i, (_, s) in enumerate(records[::3])])
    prepare_corpus([full], tmp_path / "full", valid_fraction=0.2)
    prepare_corpus([part], tmp_path / "part", valid_fraction=0.2)
    valid_full = {tuple(r["tokens"]) for r in read_split(tmp_path / "full", "valid")}
    valid_part = {tuple(r["tokens"]) for r in read_split(tmp_path / "part", "valid")}
    part_all = {tuple(vocab.encode(s)) for _, s in records[::3]}
    assert valid_part == valid_full & part_all


def test_shards_by_rows_hold_the_right_tokens(tmp_path):
    records = random_records(50, seed=4)
    fasta = write_fasta(tmp_path / "in.fasta", records)
    manifest = prepare_corpus([fasta], tmp_path / "out", shard_rows=7, valid_fraction=0.0)
    assert [s.rows for s in manifest.splits["train"].shards] == [7] * 7 + [1]
    assert [s.path for s in manifest.splits["train"].shards][:2] == [
        "train/shard-00000.arrow",
        "train/shard-00001.arrow",
    ]
    rows = read_split(tmp_path / "out", "train")
    assert [r["accession"] for r in rows] == [t.split()[0] for t, _ in records]
    for row, (_, seq) in zip(rows, records):
        assert row["tokens"] == vocab.encode(seq).tolist()
        assert row["length"] == len(seq)
    assert manifest.splits["valid"].rows == 0 and manifest.splits["valid"].shards == []


def test_shards_by_bytes_stay_under_the_limit(tmp_path):
    records = random_records(300, seed=5, lo=20, hi=100) + [("huge", "M" * 500)] + random_records(20, seed=6)
    fasta = write_fasta(tmp_path / "in.fasta", records)
    manifest = prepare_corpus(
        [fasta], tmp_path / "out", shard_bytes=400, valid_fraction=0.0, workers=2, block_bytes=3000
    )
    shards = manifest.splits["train"].shards
    assert sum(s.rows for s in shards) == 321 and len(shards) > 40
    for shard in shards:
        estimate = shard.residues + shard.rows * (7 + 12)  # accessions are 7 characters ("P000123")
        assert estimate <= 400 or shard.rows == 1
    assert any(s.rows == 1 and s.residues == 500 for s in shards)  # bigger than a shard: one of its own


def test_manifest_records_shards_checksums_histogram_inputs_and_options(tmp_path):
    fasta = write_fasta(tmp_path / "in.fasta", random_records(400, seed=7, lo=10, hi=40))
    manifest = prepare_corpus(
        [fasta], tmp_path / "out", min_len=15, max_len=35, shard_rows=100, valid_fraction=0.1, seed=5
    )
    raw = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert raw["format"] == "minprot-shards" and raw["minprot_version"] == "0.1.0"
    assert raw["fingerprint"] == manifest.fingerprint and len(manifest.fingerprint) == 64
    stat = fasta.stat()
    assert raw["inputs"] == [{"name": str(fasta.resolve()), "size": stat.st_size, "mtime": stat.st_mtime}]
    assert raw["options"] == {
        "min_len": 15,
        "max_len": 35,
        "valid_fraction": 0.1,
        "shard_rows": 100,
        "shard_bytes": None,
        "seed": 5,
        "dedup": True,
        "strict": False,
    }
    kept = 0
    for _name, split in manifest.splits.items():
        hist = split.length_histogram
        assert hist["edges"] == list(range(15, 37))
        assert sum(hist["counts"]) == split.rows
        lengths = []
        for shard in split.shards:
            path = tmp_path / "out" / shard.path
            assert hashlib.sha256(path.read_bytes()).hexdigest() == shard.sha256
            assert path.stat().st_size == shard.bytes
            ds = datasets.Dataset.from_file(str(path))
            assert len(ds) == shard.rows and sum(ds["length"]) == shard.residues
            lengths.extend(ds["length"])
        assert np.bincount(np.array(lengths) - 15, minlength=21).tolist() == hist["counts"]
        assert split.residues == sum(lengths)
        kept += split.rows
    assert kept + sum(manifest.drops.values()) == 400
    assert verify_corpus(tmp_path / "out").fingerprint == manifest.fingerprint


def test_rerun_with_same_inputs_is_a_noop_and_changes_need_overwrite(tmp_path):
    fasta = write_fasta(tmp_path / "in.fasta", random_records(100, seed=8))
    out = tmp_path / "out"
    first = prepare_corpus([fasta], out)
    shard = out / first.splits["train"].shards[0].path
    before = shard.stat().st_mtime_ns
    messages: list[str] = []
    again = prepare_corpus([fasta], out, workers=2, log=messages.append)  # workers do not change the output
    assert again == first
    assert "already prepared" in messages[0] and "nothing to do" in messages[0]
    assert shard.stat().st_mtime_ns == before
    os.utime(fasta, (1_000_000, 1_000_000))  # same bytes, new mtime: counts as a new input
    from minprot_ds.errors import UserError

    with pytest.raises(UserError, match="input files .* pass --overwrite"):
        prepare_corpus([fasta], out)
    rebuilt = prepare_corpus([fasta], out, overwrite=True)
    assert rebuilt.fingerprint != first.fingerprint
    assert shard_digests(out) == {k: [s.sha256 for s in v.shards] for k, v in first.splits.items()}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.fasta", "out"]  # no build folders left


def test_gzip_and_multiple_inputs(tmp_path):
    a = random_records(150, seed=9)
    b = [(f"Q{i}", s) for i, (_, s) in enumerate(random_records(150, seed=10))]
    plain_a = write_fasta(tmp_path / "a.fasta", a)
    plain_b = write_fasta(tmp_path / "b.fasta", b)
    gz_b = tmp_path / "b.fasta.gz"
    gz_b.write_bytes(gzip.compress(plain_b.read_bytes()))
    prepare_corpus([plain_a, plain_b], tmp_path / "plain", valid_fraction=0.1)
    prepare_corpus([plain_a, gz_b], tmp_path / "gz", valid_fraction=0.1, workers=2, block_bytes=2048)
    assert shard_digests(tmp_path / "gz") == shard_digests(tmp_path / "plain")
    accessions = [r["accession"] for r in read_split(tmp_path / "gz", "train")]
    assert accessions[0] == "P000000" and accessions[-1] == "Q149"  # files in the order given


def test_dedup_index_matches_a_python_set():
    rng = np.random.default_rng(0)
    index, seen = DedupIndex(), set()
    for _ in range(60):
        keys = rng.integers(0, 5000, size=rng.integers(0, 300)).astype(np.uint64)
        fresh = index.add(keys)
        expected = []
        for k in keys.tolist():
            expected.append(k not in seen)
            seen.add(k)
        assert fresh.tolist() == expected
    assert len(index) == len(seen)
    assert len(index._runs) <= 2 * int(np.log2(len(seen)) + 1)  # runs merge: memory stays one key each


def test_length_percentiles_are_nearest_rank():
    rng = np.random.default_rng(1)
    lengths = rng.integers(20, 513, size=1001)
    counts = np.bincount(lengths - 20, minlength=493).tolist()
    hist = {"edges": list(range(20, 514)), "counts": counts}
    pct = length_percentiles(hist, (0, 5, 50, 95, 100))
    for p, value in pct.items():
        assert value == int(np.percentile(lengths, p, method="inverted_cdf"))


def test_real_uniref50_sample(shared_data, tmp_path):
    """README: 5,001 records, 4,173 within 20–512 (median 166). This sample (ESM-2 QC'd, "filt") has
    no letters outside ProtBert's vocabulary, no U/B/Z/O and no identical sequences, so all 4,173 are
    kept and the 828 others are dropped as too_long (none is shorter than 20)."""
    fasta = shared_data / "uniref50" / "uniref50_train_filt.fasta"
    m1 = prepare_corpus([fasta], tmp_path / "w1", workers=1)
    m2 = prepare_corpus([fasta], tmp_path / "w2", workers=2, block_bytes=64 << 10)
    kept = m1.splits["train"].rows + m1.splits["valid"].rows
    assert kept + m1.drops["invalid_letter"] + m1.drops["duplicate"] == 4173
    assert kept == 4173
    assert m1.drops == {"empty": 0, "too_short": 0, "too_long": 828, "invalid_letter": 0, "duplicate": 0}
    assert shard_digests(tmp_path / "w2") == shard_digests(tmp_path / "w1") and m2.drops == m1.drops
    lengths = sorted(r["length"] for split in ("train", "valid") for r in read_split(tmp_path / "w1", split))
    expected = sorted(int(x) for x in (shared_data / "lengths" / "uniref50_like_lengths.txt").read_text().split())
    assert lengths == expected
    merged = np.add(m1.splits["train"].length_histogram["counts"], m1.splits["valid"].length_histogram["counts"])
    assert (
        length_percentiles({"edges": m1.splits["train"].length_histogram["edges"], "counts": merged.tolist()}, (50,))[
            50
        ]
        == 166
    )
    assert 0 < m1.splits["valid"].rows < 60  # 0.5% of 4,173 ≈ 21


def test_memory_does_not_grow_with_input_size(tmp_path):
    """Peak traced memory (Python objects and numpy buffers) for 4× the input stays about the same:
    blocks, in-flight work and shard buffers are bounded; only the dedup index grows (off here)."""
    import tracemalloc

    small = write_fasta(tmp_path / "small.fasta", random_records(1_500, seed=11))
    big = write_fasta(tmp_path / "big.fasta", random_records(9_000, seed=12))
    prepare_corpus([small], tmp_path / "warm-up")  # first-use imports and caches are not what we measure
    peaks = {}
    for name, fasta in (("small", small), ("big", big)):
        tracemalloc.start()
        prepare_corpus([fasta], tmp_path / name, dedup=False, shard_rows=1000, block_bytes=64 << 10)
        peaks[name] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert big.stat().st_size > 5 * small.stat().st_size
    assert peaks["big"] < 1.3 * peaks["small"] + (256 << 10), peaks


def test_progress_bar_runs_without_a_terminal(tmp_path, capfd):
    fasta = write_fasta(tmp_path / "in.fasta", random_records(50, seed=13))
    gz = tmp_path / "in.fasta.gz"
    gz.write_bytes(gzip.compress(fasta.read_bytes()))
    manifest = prepare_corpus([fasta, gz], tmp_path / "out", progress=True, dedup=False)
    assert manifest.splits["train"].rows + manifest.splits["valid"].rows == 100
