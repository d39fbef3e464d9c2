"""Every job's options are declared once (minprot_ds/options.py): each field is a flag of its `minprot` command
and of its launch/ script, old flags still work with a warning, and the launch/ scripts are shims."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from minprot_ds.bench.options import MemoryOptions, ThroughputOptions
from minprot_ds.cli import app
from minprot_ds.cli.common import run_cli
from minprot_ds.distill.options import DistillOptions
from minprot_ds.finetune.options import CompareOptions, FinetuneConfig
from minprot_ds.inference.options import EmbedOptions, PredictOptions
from minprot_ds.options import argument_parser, cli_fields, from_namespace, typer_command

REPO = Path(__file__).resolve().parents[2]
WIDE = {"COLUMNS": "250", "TERMINAL_WIDTH": "250"}  # rich help must not cut a flag
ENV = {**os.environ, "PYTHONPATH": str(REPO)}  # the launch scripts of this checkout, not an installed copy

JOBS = [  # (the command as users type it, its options, its launch/ script and arguments or None)
    (["distill"], DistillOptions, ["launch/distill.py"]),
    (["finetune"], FinetuneConfig, ["launch/finetune.py"]),
    (["predict"], PredictOptions, ["launch/predict.py", "predict"]),
    (["embed"], EmbedOptions, ["launch/predict.py", "embed"]),
    (["bench", "throughput"], ThroughputOptions, None),
    (["bench", "memory"], MemoryOptions, None),
    (["compare"], CompareOptions, None),  # TEACHER and STUDENT: positional arguments
]
IDS = [" ".join(command) for command, _, _ in JOBS]


def _flags(cls: type) -> list[str]:
    return [flag for c in cli_fields(cls) for flag in c.flags]


@pytest.mark.parametrize(("command", "cls", "script"), JOBS, ids=IDS)
def test_every_field_is_a_flag_of_the_command(command: list[str], cls: type, script: list[str] | None) -> None:
    result = CliRunner().invoke(app, [*command, "--help"], env=WIDE, terminal_width=250)
    assert result.exit_code == 0, result.output
    missing = [flag for flag in _flags(cls) if flag not in result.output]
    assert not missing, f"`minprot {' '.join(command)} --help` lacks {missing}"


@pytest.mark.parametrize(
    ("command", "cls", "script"), [j for j in JOBS if j[2]], ids=[i for i, j in zip(IDS, JOBS) if j[2]]
)
def test_every_field_is_a_flag_of_the_launch_script(command: list[str], cls: type, script: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, *script, "--help"], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    missing = [flag for flag in _flags(cls) if flag not in done.stdout]
    assert not missing, f"`{' '.join(script)} --help` lacks {missing}"
    assert "--local_rank" not in done.stdout  # the launcher's, accepted but not shown


def test_launch_scripts_are_shims() -> None:
    for script in sorted((REPO / "launch").glob("*.py")):
        lines = script.read_text().splitlines()
        assert len(lines) <= 25, f"{script.name} has {len(lines)} lines; the job belongs in minprot_ds"


def test_deprecated_pool_still_works_and_warns(tmp_path: Path) -> None:
    required = ["--model", "m", "--fasta", "in.fa", "--out", str(tmp_path / "e.h5")]
    seen: list[EmbedOptions] = []
    command = typer.Typer()
    command.command()(typer_command(EmbedOptions, seen.append, "test", "embed"))
    result = CliRunner().invoke(command, [*required, "--pool", "cls"])
    assert result.exit_code == 0, result.output
    assert seen[-1].pooling == "cls"
    warning = [line for line in result.output.splitlines() if "--pool" in line]
    assert warning == ["warning: --pool is deprecated and will be removed; use --pooling"]
    assert CliRunner().invoke(command, required).exit_code == 0 and seen[-1].pooling == "mean"
    # launch/predict.py's parser takes it too, and neither door shows it.
    launch = from_namespace(EmbedOptions, argument_parser(EmbedOptions).parse_args([*required, "--pool", "cls"]))
    assert launch == seen[-2]
    assert "--pool " not in CliRunner().invoke(app, ["embed", "--help"], env=WIDE, terminal_width=250).output
    assert "--pool " not in argument_parser(EmbedOptions).format_help()


def test_distill_help() -> None:
    result = CliRunner().invoke(app, ["distill", "--help"], env=WIDE, terminal_width=250)
    assert result.exit_code == 0, result.output
    assert "--set" in result.output and "launch/configs" in result.output


def test_distill_bad_set_key_is_one_line(capsys) -> None:
    args = [
        "distill",
        "--config",
        str(REPO / "launch/configs/demo.toml"),
        "--set",
        "optimizer.nosuch=1",
        "--local_rank=0",
    ]  # what a launcher appends: accepted, ignored
    with pytest.raises(SystemExit) as exit_:
        run_cli(app, args)
    assert exit_.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown key optimizer.nosuch" in err[0] and "Traceback" not in err[0], err


def test_launch_distill_bad_set_key_is_one_line() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "launch/distill.py",
            "--config",
            "launch/configs/demo.toml",
            "--set",
            "optimizer.nosuch=1",
            "--local_rank=0",
        ],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "unknown key optimizer.nosuch" in errors[0] and "Traceback" not in done.stderr


def test_launch_script_os_error_is_one_line(teacher_dir: Path, tmp_path: Path) -> None:
    """An OSError in a launch script's job (here a --train file that cannot be read: /proc/self/mem answers EIO)
    is one line naming the file's trouble, as in the CLI, not a traceback."""
    args = ["--task", "dna-binding", "--model", str(teacher_dir), "--no-leakage", "--out", str(tmp_path / "ft")]
    done = subprocess.run(
        [sys.executable, "launch/finetune.py", *args, "--train", "/proc/self/mem", "--test", "/proc/self/mem"],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1].startswith("error: Input/output error"), done.stderr[-2000:]
