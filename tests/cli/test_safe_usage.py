"""What a user can type at the commands other than predict/embed: each mistake is one line and a non-zero exit,
never a traceback (out-of-range values are usage errors, exit 2), and `minprot --version`."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "args",
    [
        ["finetune", "--task", "q3", "--model", "m", "--train", "t", "--test", "t", "--out", "o", "--lr", "-1"],
        ["bench", "memory", "--max-rows", "0"],
        ["demo", "--ranks", "0"],
        ["demo", "--teacher-steps", "0"],
        ["pretrain-teacher", "x", "--corpus", "c", "--steps", "0"],
    ],
)
def test_out_of_range_values_are_usage_errors(cli_error, args):
    cli_error(*args, code=2)


def test_export_of_a_missing_run_says_so(cli_error, tmp_path):
    msg = cli_error("export", str(tmp_path / "no-such-run"), "--out", str(tmp_path / "s"))
    assert "no-such-run does not exist" in msg and "student_config" not in msg


def test_a_corrupt_task_file_is_named(cli_error, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "minprot_task.json").write_text("{not json")
    fasta = tmp_path / "in.fasta"
    fasta.write_text(">a\nMKTAYIAKQR\n")
    msg = cli_error("predict", "--model", str(model), "--fasta", str(fasta), "--out", str(tmp_path / "o.tsv"))
    assert "minprot_task.json" in msg and "not valid JSON" in msg


def test_a_task_folder_out_that_exists_is_refused(cli_error, tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "data.txt").write_text("keep")
    msg = cli_error("data", "task", str(tmp_path / "in.csv"), "--out", str(tmp_path / "taken"))
    assert "--overwrite" in msg


def test_version_and_help_import_no_torch():
    code = (
        "import sys\nfrom minprot_ds.cli import app\nfrom minprot_ds.cli.common import run_cli\n"
        "try:\n    run_cli(app, ['--help'])\nexcept SystemExit:\n    pass\n"
        "print('heavy:', sorted(m for m in ('torch', 'sklearn') if m in sys.modules), file=sys.stderr)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "heavy: []" in done.stderr
    version = subprocess.run(
        [sys.executable, "-c", "from minprot_ds.cli import main; main()", "--version"], capture_output=True, text=True
    )
    assert version.returncode == 0 and version.stdout.startswith("minprot ")


def test_a_wrong_fasta_is_told_before_torch_is_imported(tmp_path):
    """predict/embed check the input's first bytes before importing the job (torch, transformers: seconds)."""
    (tmp_path / "empty.fasta").write_bytes(b"")
    (tmp_path / "binary.fasta").write_bytes(b"\x7fELF\x00" * 10)
    code = (
        "import sys\nfrom minprot_ds.cli import app\nfrom minprot_ds.cli.common import run_cli\n"
        "try:\n    run_cli(app, sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "print('heavy:', sorted(m for m in ('torch', 'transformers') if m in sys.modules), file=sys.stderr)"
    )
    for name, words in (
        ("empty.fasta", "is empty"),
        ("binary.fasta", "looks binary"),
        ("none.fasta", "does not exist"),
    ):
        for command, out in (("predict", "p.tsv"), ("embed", "e.h5")):
            args = [command, "--model", str(tmp_path), "--fasta", str(tmp_path / name), "--out", str(tmp_path / out)]
            done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
            assert words in done.stderr and "heavy: []" in done.stderr, done.stderr


def command_paths(command, prefix=()):
    """Every command of the app as the words that name it (groups included)."""
    yield list(prefix)
    for name, sub in getattr(command, "commands", {}).items():
        yield from command_paths(sub, (*prefix, name))


def test_flags_show_no_value_placeholder_in_help(capsys, monkeypatch):
    import typer

    from minprot_ds.cli import app
    from minprot_ds.cli.common import run_cli

    monkeypatch.setenv("COLUMNS", "200")  # one line per option
    paths = list(command_paths(typer.main.get_command(app)))
    assert ["predict"] in paths and ["bench", "memory"] in paths
    for path in paths:
        with pytest.raises(SystemExit) as exit_:
            run_cli(app, [*path, "--help"])
        out = capsys.readouterr().out
        assert exit_.value.code == 0, path
        flag_lines = [line for line in out.splitlines() if "--help" in line or "--no-" in line]
        assert flag_lines and not [line for line in flag_lines if "<" in line or "BOOL" in line.upper()], (path, out)
