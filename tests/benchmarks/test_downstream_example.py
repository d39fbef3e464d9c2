"""benchmarks/downstream_example.sh: the worked example of docs/downstream.md (about 13 minutes, not run here).

What can rot without running it: its commands and options against the CLI. MINPROT points the script at a stand-in
that parses every command line with the real `minprot` app (click's parser: unknown options, missing arguments
and bad values fail as they would) and records it without running it. Its own argument errors are checked too.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "downstream_example.sh"

PARSE_ONLY = """
import sys
import typer.main
from minprot_ds.cli import app

args = sys.argv[2:]
command, rest, name = typer.main.get_command(app), list(args), "minprot"
while hasattr(command, "commands"):  # a group: the next word names the command
    name, rest = rest[0], rest[1:]
    command = command.commands[name]
command.make_context(name, rest)  # typer's click parser: an unknown option or a bad value raises
with open(sys.argv[1], "a") as log:
    log.write(" ".join(args) + "\\n")
"""


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow  # six CLI imports, about 10 s on 2 busy cores
def test_every_command_parses_with_the_cli(tmp_path: Path):
    data = tmp_path / "data"
    for name in ("pdb14189", "uniswiss_train"):
        (data / name).mkdir(parents=True)
    (tmp_path / "parse_only.py").write_text(PARSE_ONLY)
    calls = tmp_path / "calls.txt"
    fake = tmp_path / "minprot"
    fake.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{tmp_path / "parse_only.py"}" "{calls}" "$@"\n')
    fake.chmod(0o755)
    env = {**os.environ, "MINPROT": str(fake), "PYTHONPATH": str(REPO)}
    proc = run("--work", str(tmp_path / "work"), "--data", str(data), env=env)
    assert proc.returncode == 0, proc.stderr
    lines = calls.read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["demo", "data", "finetune", "finetune", "compare", "report"]
    teacher, student = lines[2], lines[3]
    assert "demo/teacher" in teacher and "demo/distill/student" in student
    # The two fine-tunes differ only in the model and the output folder: the comparison is paired.
    assert teacher.replace("demo/teacher", "M").replace("ft-teacher", "O") == student.replace(
        "demo/distill/student", "M"
    ).replace("ft-student", "O")


def test_argument_errors(tmp_path: Path):
    proc = run()
    assert proc.returncode == 2 and "--work DIR is required" in proc.stderr
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    proc = run("--work", str(tmp_path / "full"))
    assert proc.returncode == 1 and "is not empty" in proc.stderr
    proc = run("--work", str(tmp_path / "new"), "--data", str(tmp_path / "nowhere"))
    assert proc.returncode == 1 and "pdb14189 not found" in proc.stderr
