"""predict / embed / merge and what a user can type at them: --out checked before any compute, an output that is
not ours refused, a rerun with another threshold relabelled, TSV fields escaped, ids that HDF5 reserves, one
row per record, summaries per output, values out of range."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

from minprot_ds.errors import UserError
from minprot_ds.inference.job import merge, run
from minprot_ds.inference.options import EmbedOptions, PredictOptions

SEQ = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQFEVVHSLAKWKRQTLGQHDFSAGEGLYTHMKALRPDEDRLSP"


def predict(model, fasta, out, **kw):
    return run(PredictOptions(model=model, fasta=fasta, out=out, progress=False, **kw))


def embed(model, fasta, out, **kw):
    return run(EmbedOptions(model=model, fasta=fasta, out=out, progress=False, **kw))


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))


@pytest.fixture
def small_fasta(tmp_path, write_fasta) -> Path:
    return write_fasta(tmp_path / "in.fasta", [("a first", SEQ), ("b second", SEQ[::-1]), ("c third", SEQ[:40])])


def test_a_rerun_with_another_threshold_relabels_the_output(dna_model, small_fasta, tmp_path):
    out = tmp_path / "p.tsv"
    predict(dna_model, small_fasta, out, threshold=0.0)
    assert {r["label"] for r in rows(out)} == {"DNA-binding"}
    again = predict(dna_model, small_fasta, out, threshold=1.0)  # resumes: nothing to compute
    assert again.computed_chunks == 0
    assert {r["label"] for r in rows(out)} == {"non-binding"}
    assert json.loads((tmp_path / "p.tsv.json").read_text())["info"]["threshold"] == 1.0


def test_an_existing_file_that_is_not_ours_is_refused_naming_overwrite(dna_model, small_fasta, tmp_path):
    out = tmp_path / "mine.tsv"
    out.write_text("someone's data\n")
    with pytest.raises(UserError, match="already exists.*--overwrite"):
        predict(dna_model, small_fasta, out)
    assert out.read_text() == "someone's data\n" and not Path(f"{out}.parts").exists()
    predict(dna_model, small_fasta, out, overwrite=True)
    assert len(rows(out)) == 3
    predict(dna_model, small_fasta, out)  # our own output, same inputs: a rerun needs no --overwrite


def test_out_naming_a_folder_is_refused_before_any_compute(dna_model, small_fasta, tmp_path, cli_error):
    folder = tmp_path / "adir.tsv"
    folder.mkdir()
    msg = cli_error("predict", "--model", str(dna_model), "--fasta", str(small_fasta), "--out", str(folder))
    assert "is a folder" in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir.tsv", "in.fasta"]  # no .partial, no parts


def test_an_unwritable_location_is_one_line(encoder_dir, small_fasta, cli_error):
    msg = cli_error("embed", "--model", str(encoder_dir), "--fasta", str(small_fasta), "--out", "/proc/minprot/x.h5")
    assert "cannot write in /proc" in msg


def test_a_read_only_folder_is_one_line(encoder_dir, small_fasta, tmp_path, cli_error):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):  # root: mode bits do not stop it (the /proc test above covers root)
            pytest.skip("this user can write in a chmod 555 folder (root); the /proc test covers the refusal")
        msg = cli_error(
            "embed", "--model", str(encoder_dir), "--fasta", str(small_fasta), "--out", str(folder / "x.h5")
        )
        assert f"cannot write in {folder}" in msg
    finally:
        folder.chmod(0o755)


def test_a_tab_in_a_description_is_escaped(dna_model, tmp_path, write_fasta):
    fasta = write_fasta(tmp_path / "t.fasta", [("x has\ta tab", SEQ), ("y plain", SEQ[:50])])
    predict(dna_model, fasta, tmp_path / "t.tsv")
    lines = (tmp_path / "t.tsv").read_text().splitlines()
    assert {len(line.split("\t")) for line in lines} == {7}
    assert rows(tmp_path / "t.tsv")[0]["description"] == "has\\ta tab"


def test_a_dot_id_and_a_failure_in_embed_h5(encoder_dir, tmp_path, write_fasta):
    fasta = write_fasta(tmp_path / "d.fasta", [(".", SEQ), ("..", SEQ[:30]), ("bad", "MKJ")])
    embed(encoder_dir, fasta, tmp_path / "e.h5")
    with h5py.File(tmp_path / "e.h5") as f:
        assert list(f) == ["%2E", "%2E%2E"]  # failures are not datasets; they are in e.h5.failures.tsv
        assert f["%2E"].attrs["original_id"] == "."
    assert "bad" in (tmp_path / "e.h5.failures.tsv").read_text()


def test_summaries_are_named_after_the_whole_output(encoder_dir, small_fasta, tmp_path):
    embed(encoder_dir, small_fasta, tmp_path / "x.h5")
    embed(encoder_dir, small_fasta, tmp_path / "x.parquet")
    assert json.loads((tmp_path / "x.h5.json").read_text())["output"].endswith("x.h5")
    assert json.loads((tmp_path / "x.parquet.json").read_text())["output"].endswith("x.parquet")
    assert not (tmp_path / "x.json").exists()


def test_a_dna_benchmark_label_tag_is_not_part_of_the_id(dna_model, tmp_path, write_fasta):
    fasta = write_fasta(tmp_path / "l.fasta", [("1ABC_A|1", SEQ), ("sp|P1|NAME_HUMAN desc", SEQ[:60])])
    predict(dna_model, fasta, tmp_path / "l.tsv")
    assert [r["id"] for r in rows(tmp_path / "l.tsv")] == ["1ABC_A", "sp|P1|NAME_HUMAN"]  # as predictions.tsv


def test_values_out_of_range_are_refused(dna_model, small_fasta, tmp_path, cli_error):
    args = ["predict", "--model", str(dna_model), "--fasta", str(small_fasta), "--out", str(tmp_path / "o.tsv")]
    for flag, value in (("--window", "0"), ("--stride", "0"), ("--threshold", "1.5")):
        msg = cli_error(*args, flag, value, code=2)
        assert flag in msg
    with pytest.raises(UserError, match="--window must be at least 1, not 0"):
        predict(dna_model, small_fasta, tmp_path / "o.tsv", window=0)
    with pytest.raises(UserError, match="--threshold must be at least 0.0 and at most 1.0, not 1.5"):
        predict(dna_model, small_fasta, tmp_path / "o.tsv", threshold=1.5)


def test_merge_words_and_out(dna_model, small_fasta, tmp_path, cli_error):
    assert "nope.parts does not exist" in cli_error(
        "merge", str(tmp_path / "nope.parts"), "--out", str(tmp_path / "m.tsv")
    )
    predict(dna_model, small_fasta, tmp_path / "s.tsv", shard="0/1")
    (tmp_path / "taken.tsv").write_text("keep me\n")
    with pytest.raises(UserError, match="--overwrite"):
        merge([tmp_path / "s.tsv.parts"], tmp_path / "taken.tsv")
    assert (tmp_path / "taken.tsv").read_text() == "keep me\n"
    # A suffix the output cannot take is told with the name the user gave, not the hidden temporary file's.
    msg = cli_error("merge", str(tmp_path / "s.tsv.parts"), "--out", str(tmp_path / "x.h5"))
    assert f"--out {tmp_path / 'x.h5'}: predict for dna-binding writes .tsv, .parquet" in msg and ".partial" not in msg


def test_a_fasta_folder_is_named_a_folder(dna_model, tmp_path, cli_error):
    msg = cli_error("predict", "--model", str(dna_model), "--fasta", str(tmp_path), "--out", "x.tsv")
    assert "is a folder" in msg


@pytest.mark.parametrize("file", ["model.safetensors", "head.safetensors"])
def test_a_truncated_weights_file_is_named_in_one_line(dna_model, small_fasta, tmp_path, cli_error, file):
    model = Path(shutil.copytree(dna_model, tmp_path / "model"))
    data = (model / file).read_bytes()
    (model / file).write_bytes(data[: len(data) // 2])
    for command, out in (("predict", "p.tsv"), ("embed", "e.h5")):
        if command == "embed" and file == "head.safetensors":
            continue  # embed reads the encoder only
        msg = cli_error(command, "--model", str(model), "--fasta", str(small_fasta), "--out", str(tmp_path / out))
        assert f"{model / file} is not a complete safetensors file" in msg and "truncated" in msg, msg
        assert "hub lookup" not in msg


def test_a_log_file_holds_no_library_bars(dna_model, small_fasta, tmp_path):
    """`minprot predict` with stderr to a file (a Slurm log): its own lines, no transformers "Loading weights"
    bars (silenced at their source, not by hiding stderr)."""
    log = tmp_path / "predict.log"
    with log.open("w") as stderr:
        proc = subprocess.run(
            [sys.executable, "-c", "from minprot_ds.cli import main; main()", "predict", "--model", str(dna_model)]
            + ["--fasta", str(small_fasta), "--out", str(tmp_path / "p.tsv"), "--no-progress"],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            timeout=300,
        )
    text = log.read_text()
    assert proc.returncode == 0, text
    assert "predict: 3 records" in text + proc.stdout  # the job's own lines are there
    assert "Loading weights" not in text and "it/s]" not in text, text


def test_the_input_s_content_is_checked_before_the_model(tmp_path, cli_error):
    """An empty, binary or record-less FASTA is named before any model loads: with a --model that cannot load,
    the input's error is the one reported."""
    files = {
        "empty.fasta": (b"", "is empty"),
        "binary.fasta": (b"\x7fELF\x02\x01\x01\x00\x00\x00" * 50, "looks binary"),
        "headless.fasta": (b"MKTAYIAKQR\nMKT\n", "before the first '>' header"),
    }
    for name, (data, words) in files.items():
        (tmp_path / name).write_bytes(data)
        for command, out in (("predict", "p.tsv"), ("embed", "e.h5")):
            msg = cli_error(
                command,
                "--model",
                str(tmp_path / "no-model"),
                "--fasta",
                str(tmp_path / name),
                "--out",
                str(tmp_path / out),
            )
            assert words in msg and "--model" not in msg, msg
