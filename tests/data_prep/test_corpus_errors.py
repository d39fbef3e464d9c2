"""Bad inputs and bad output folders: one clear UserError each, and nothing published."""

from __future__ import annotations

import gzip
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from data_prep.corpus import prepare_corpus, verify_corpus
from minprot_ds.errors import UserError

REPO = Path(__file__).resolve().parents[2]
GOOD = ">P1 first\nMKVLAAGIKTWMKVLAAGIKTW\n>P2 second\nWTKIGAALVKMWTKIGAALVKM\n"


def nothing_published(tmp_path: Path, out: Path) -> bool:
    """--out is absent and no build folder is left beside it."""
    return not out.exists() and not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def prepare_fails(tmp_path: Path, inputs: list[Path], match: str | None, **kwargs) -> UserError:
    out = tmp_path / "out"
    with pytest.raises(UserError, match=match) as err:
        prepare_corpus(inputs, out, **kwargs)
    assert nothing_published(tmp_path, out)
    assert "\n" not in str(err.value)
    return err.value


def test_missing_file(tmp_path):
    prepare_fails(tmp_path, [tmp_path / "nope.fasta"], r"input file .*nope\.fasta does not exist")


def test_empty_file(tmp_path):
    (tmp_path / "empty.fasta").write_text("")
    prepare_fails(tmp_path, [tmp_path / "empty.fasta"], r"empty\.fasta is empty; expected FASTA records")


def test_only_blank_lines(tmp_path):
    (tmp_path / "blank.fasta").write_text("\n\n  \n")
    prepare_fails(tmp_path, [tmp_path / "blank.fasta"], r"blank\.fasta holds no FASTA records")


def test_empty_gzip(tmp_path):
    (tmp_path / "empty.fasta.gz").write_bytes(gzip.compress(b""))
    prepare_fails(tmp_path, [tmp_path / "empty.fasta.gz"], r"empty\.fasta\.gz is empty")


def test_sequence_lines_before_the_first_header(tmp_path):
    (tmp_path / "headless.fasta").write_text("\nMKVLAAGIKT\n" + GOOD)
    prepare_fails(
        tmp_path,
        [tmp_path / "headless.fasta"],
        r"headless\.fasta has sequence lines before the first '>' header \(line 2\)",
    )


def test_binary_garbage(tmp_path):
    rng = random.Random(0)
    (tmp_path / "garbage.bin").write_bytes(bytes(rng.randrange(256) for _ in range(5000)))
    prepare_fails(tmp_path, [tmp_path / "garbage.bin"], r"garbage\.bin looks binary .* not FASTA")
    (tmp_path / "high.bin").write_bytes(b">x\n" + bytes([0xFF, 0xFE]) * 100)  # no NUL, not UTF-8
    prepare_fails(tmp_path, [tmp_path / "high.bin"], r"high\.bin looks binary \(byte 0xff")


def test_binary_garbage_after_good_records_in_a_worker(tmp_path):
    """A block that fails in a worker process: the error names the line, and nothing is published."""
    text = GOOD * 200 + ">P3\nMKV\x00\x01\x02LLA\n" + GOOD
    (tmp_path / "late.fasta").write_text(text)
    prepare_fails(
        tmp_path,
        [tmp_path / "late.fasta"],
        r"late\.fasta line 802 holds NUL bytes",
        workers=2,
        block_bytes=1024,
        shard_rows=10,
    )


def test_truncated_gzip(tmp_path):
    data = gzip.compress((GOOD * 2000).encode())
    (tmp_path / "cut.fasta.gz").write_bytes(data[: len(data) // 2])
    prepare_fails(
        tmp_path, [tmp_path / "cut.fasta.gz"], r"cut\.fasta\.gz is a truncated or corrupt gzip file", shard_rows=10
    )


def test_corrupt_gzip(tmp_path):
    data = bytearray(gzip.compress((GOOD * 50).encode()))
    data[20:40] = b"\xaa" * 20
    (tmp_path / "bad.fasta.gz").write_bytes(bytes(data))
    prepare_fails(tmp_path, [tmp_path / "bad.fasta.gz"], r"bad\.fasta\.gz is a truncated or corrupt gzip file")


def test_strict_names_file_record_and_line(tmp_path):
    text = GOOD + ">P3 short one\nMKV\n" + GOOD
    (tmp_path / "in.fasta").write_text(text)
    err = prepare_fails(tmp_path, [tmp_path / "in.fasta"], None, strict=True)
    assert str(err).startswith(f"{tmp_path / 'in.fasta'} line 5: record P3 has 3 residues, fewer than --min-len 20")
    assert "without --strict" in str(err)
    # Without --strict the same file is fine and the record is counted.
    assert prepare_corpus([tmp_path / "in.fasta"], tmp_path / "ok").drops["too_short"] == 1


def test_strict_invalid_letter_late_in_the_file_publishes_nothing(tmp_path):
    lines = []
    for i in range(3000):
        lines.append(f">R{i}\nMKVLAAGIKTWMKVLAAGIK{i:05d}".translate(str.maketrans("0123456789", "ACDEFGHIKL")))
    lines.insert(2500, ">BAD1 letter\nMKVLAAGIKTWMKVLAJGIKTW")
    (tmp_path / "in.fasta").write_text("\n".join(lines) + "\n")
    err = prepare_fails(
        tmp_path, [tmp_path / "in.fasta"], None, strict=True, shard_rows=100, workers=2, block_bytes=4096
    )
    assert "line 5001: record BAD1 has 'J' at residue 17" in str(err)


def test_strict_too_long_and_empty(tmp_path):
    (tmp_path / "long.fasta").write_text(">L1\n" + "M" * 600 + "\n")
    prepare_fails(
        tmp_path, [tmp_path / "long.fasta"], r"line 1: record L1 has 600 residues, more than --max-len 512", strict=True
    )
    (tmp_path / "empty_rec.fasta").write_text(GOOD + ">\n")
    prepare_fails(tmp_path, [tmp_path / "empty_rec.fasta"], r"line 5: record \(no id\) has no residues", strict=True)


def test_everything_dropped(tmp_path):
    (tmp_path / "short.fasta").write_text(">a\nMKV\n>b\nMK\n")
    prepare_fails(tmp_path, [tmp_path / "short.fasta"], r"no sequence was kept from 2 records \(too_short 2\)")


def test_bad_options(tmp_path):
    (tmp_path / "in.fasta").write_text(GOOD)
    fasta = [tmp_path / "in.fasta"]
    prepare_fails(tmp_path, fasta, "either --shard-rows or --shard-bytes", shard_rows=5, shard_bytes=100)
    prepare_fails(tmp_path, fasta, r"--max-len \(10\) must be at least --min-len \(20\)", max_len=10)
    prepare_fails(tmp_path, fasta, r"--valid-fraction must be in \[0, 1\)", valid_fraction=1.5)
    prepare_fails(tmp_path, fasta, "--workers must be at least 1", workers=0)
    prepare_fails(tmp_path, [], "no input files given")


def test_output_folder_holding_something_else(tmp_path):
    (tmp_path / "in.fasta").write_text(GOOD)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(
            UserError, match=r"already holds files that are not a minprot corpus \(e\.g\. 'notes\.txt'\)"
        ):
            prepare_corpus([tmp_path / "in.fasta"], out, overwrite=overwrite)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    (tmp_path / "file_out").write_text("x")
    with pytest.raises(UserError, match="is a file; --out names a folder"):  # the one rule for outputs
        prepare_corpus([tmp_path / "in.fasta"], tmp_path / "file_out")
    bad = tmp_path / "bad_manifest"
    bad.mkdir()
    (bad / "manifest.json").write_text("{not json")
    with pytest.raises(UserError, match="not a valid minprot manifest"):
        prepare_corpus([tmp_path / "in.fasta"], bad, overwrite=True)


def test_empty_output_folder_is_used(tmp_path):
    (tmp_path / "in.fasta").write_text(GOOD)
    (tmp_path / "out").mkdir()
    manifest = prepare_corpus([tmp_path / "in.fasta"], tmp_path / "out", valid_fraction=0.0)
    assert manifest.splits["train"].rows == 2 and (tmp_path / "out" / "manifest.json").is_file()


def test_different_options_need_overwrite(tmp_path):
    (tmp_path / "in.fasta").write_text(GOOD)
    prepare_corpus([tmp_path / "in.fasta"], tmp_path / "out")
    with pytest.raises(UserError, match=r"different options max_len 512 → 100; pass --overwrite"):
        prepare_corpus([tmp_path / "in.fasta"], tmp_path / "out", max_len=100)


def test_missing_shard_is_not_a_noop(tmp_path):
    (tmp_path / "in.fasta").write_text(GOOD)
    manifest = prepare_corpus([tmp_path / "in.fasta"], tmp_path / "out", valid_fraction=0.0)
    (tmp_path / "out" / manifest.splits["train"].shards[0].path).unlink()
    with pytest.raises(
        UserError, match=r"shard train/shard-00000\.arrow is missing or changed; rerun with --overwrite"
    ):
        prepare_corpus([tmp_path / "in.fasta"], tmp_path / "out", valid_fraction=0.0)


def test_verify_names_corrupt_and_missing_shards(tmp_path):
    rng = random.Random(1)
    records = "".join(f">S{i}\n{''.join(rng.choices('MKVLAGIT', k=30))}\n" for i in range(40))
    (tmp_path / "in.fasta").write_text(records)
    manifest = prepare_corpus([tmp_path / "in.fasta"], tmp_path / "out", shard_rows=10, valid_fraction=0.0)
    shards = manifest.splits["train"].shards
    first = tmp_path / "out" / shards[0].path
    data = bytearray(first.read_bytes())
    data[-100] ^= 0xFF  # same size, different bytes
    first.write_bytes(bytes(data))
    (tmp_path / "out" / shards[2].path).unlink()
    with pytest.raises(
        UserError,
        match=r"2 of 4 shards .* train/shard-00000\.arrow \(checksum mismatch\), train/shard-00002\.arrow \(missing\)",
    ):
        verify_corpus(tmp_path / "out")
    with pytest.raises(UserError, match="is not a prepared corpus"):
        verify_corpus(tmp_path)


@pytest.mark.slow
def test_killed_run_never_leaves_a_complete_looking_folder(tmp_path):
    """SIGKILL a real `minprot data prepare` mid-run: --out must not exist; a rerun cleans up and works."""
    rng = random.Random(2)
    with open(tmp_path / "big.fasta", "w") as fh:
        for i in range(200_000):
            fh.write(f">K{i}\n{''.join(rng.choices('MKVLAGITWYDE', k=rng.randint(30, 200)))}\n")
    out = tmp_path / "out"
    cmd = [str(REPO / ".venv" / "bin" / "minprot"), "data", "prepare", str(tmp_path / "big.fasta"), "--out", str(out)]
    proc = subprocess.Popen([*cmd, "--shard-rows", "2000", "--workers", "2"], start_new_session=True, cwd=REPO)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            partials = [p for p in tmp_path.iterdir() if ".partial-" in p.name]
            if partials and any(partials[0].glob("train/shard-0000[3-9].arrow")):
                break
            time.sleep(0.01)
        assert proc.poll() is None, "prepare finished before it could be interrupted"
        os.killpg(proc.pid, signal.SIGKILL)  # the process group this test started: prepare and its workers
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not out.exists()
    assert [p for p in tmp_path.iterdir() if ".partial-" in p.name]  # the interrupted build, left hidden
    done = subprocess.run([*cmd, "--shard-rows", "50000"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (out / "manifest.json").is_file()
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]  # the stale build was removed
