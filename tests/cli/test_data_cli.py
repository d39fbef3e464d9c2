"""`minprot data prepare` and `minprot data inspect`: through typer's runner, and as the installed command."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from minprot_ds.cli import app
from minprot_ds.data.manifest import load_manifest
from minprot_ds.errors import UserError

REPO = Path(__file__).resolve().parents[2]
MINPROT = REPO / ".venv" / "bin" / "minprot"
_rng = random.Random(0)
FASTA = "".join(
    f">P{i} x\n{''.join(_rng.choices('LAGVESIKRDTPNQFYMHCW', k=_rng.randint(20, 80)))}\n" for i in range(60)
)

runner = CliRunner()


@pytest.fixture()
def fasta(tmp_path: Path) -> Path:
    path = tmp_path / "in.fasta"
    path.write_text(FASTA + ">short\nMKV\n")
    return path


def test_prepare_then_inspect(tmp_path, fasta):
    out = tmp_path / "corpus"
    result = runner.invoke(
        app,
        [
            "data",
            "prepare",
            str(fasta),
            "--out",
            str(out),
            "--valid-fraction",
            "0.1",
            "--shard-rows",
            "20",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    manifest = load_manifest(out)
    assert manifest.options["valid_fraction"] == 0.1 and manifest.options["shard_rows"] == 20
    assert manifest.splits["train"].rows + manifest.splits["valid"].rows == 60
    assert "prepared" in result.output and "too_short" in result.output and "p50" in result.output
    again = runner.invoke(
        app, ["data", "prepare", str(fasta), "--out", str(out), "--valid-fraction", "0.1", "--shard-rows", "20"]
    )
    assert again.exit_code == 0 and "nothing to do" in again.output
    shown = runner.invoke(app, ["data", "inspect", str(out), "--verify"])
    assert shown.exit_code == 0, shown.output
    assert f"{manifest.splits['train'].rows:,}" in shown.output and "verified" in shown.output


def test_prepare_help_documents_every_option():
    result = runner.invoke(app, ["data", "prepare", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for option in (
        "--out",
        "--min-len",
        "--max-len",
        "--valid-fraction",
        "--shard-rows",
        "--shard-bytes",
        "--workers",
        "--seed",
        "--no-dedup",
        "--strict",
        "--overwrite",
    ):
        assert option in result.output
    assert "identical for any value" in result.output


def test_user_errors_reach_the_runner(tmp_path, fasta):
    result = runner.invoke(app, ["data", "prepare", str(fasta), "--out", str(tmp_path / "o"), "--strict"])
    assert isinstance(result.exception, UserError) and result.exit_code != 0
    assert "record short has 3 residues" in str(result.exception)
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_installed_command_exits_1_with_one_line(tmp_path):
    result = subprocess.run(
        [str(MINPROT), "data", "prepare", str(tmp_path / "missing.fasta"), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        env={"COLUMNS": "400", "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: input file") and "does not exist" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_inspect_verify_names_the_corrupt_shard(tmp_path, fasta):
    out = tmp_path / "corpus"
    assert runner.invoke(app, ["data", "prepare", str(fasta), "--out", str(out), "--shard-rows", "25"]).exit_code == 0
    shard = out / load_manifest(out).splits["train"].shards[1].path
    shard.write_bytes(shard.read_bytes()[:-10])
    result = subprocess.run(
        [str(MINPROT), "data", "inspect", str(out), "--verify"],
        capture_output=True,
        text=True,
        env={"COLUMNS": "400", "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert result.returncode == 1
    assert "train/shard-00001.arrow (checksum mismatch)" in result.stderr
    plain = runner.invoke(app, ["data", "inspect", str(out)])  # without --verify: the summary only
    assert plain.exit_code == 0 and "p95" in plain.output


def test_inspect_of_a_folder_that_is_not_a_corpus(tmp_path):
    result = runner.invoke(app, ["data", "inspect", str(tmp_path)])
    assert isinstance(result.exception, UserError) and "is not a prepared corpus" in str(result.exception)


def test_prepare_out_goes_by_the_outputs_rule(tmp_path, fasta, cli_error):
    """The one rule for outputs (outputs.check_out), before any reading: a location that cannot be written, a file
    where the corpus folder is meant; one line each."""
    msg = cli_error("data", "prepare", str(fasta), "--out", "/proc/minprot/corpus")
    assert "--out /proc/minprot/corpus: cannot write in /proc" in msg
    (tmp_path / "a_file").write_text("x")
    msg = cli_error("data", "prepare", str(fasta), "--out", str(tmp_path / "a_file"))
    assert "--out" in msg and "is a file; --out names a folder" in msg
