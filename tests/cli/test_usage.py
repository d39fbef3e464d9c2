"""Usage mistakes end in typer's usage message and exit status 2, never a traceback; commands and paths
users copy are printed on one line whatever the terminal's width."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from minprot_ds.cli import common, jobs

REPO = Path(__file__).resolve().parents[2]
MINPROT = REPO / ".venv" / "bin" / "minprot"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["data", "nosuch"], "No such command 'nosuch'"),  # unknown command
        (["finetune", "--bogus"], "No such option: --bogus"),  # unknown option
        (["data", "prepare"], "Missing argument"),  # missing argument
    ],
    ids=["unknown-command", "unknown-option", "missing-argument"],
)
def test_usage_errors_print_usage_and_exit_2(args: list[str], message: str) -> None:
    if not MINPROT.exists():
        pytest.skip(f"{MINPROT} is absent; run scripts/setup.sh")
    done = subprocess.run([str(MINPROT), *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert "Usage: minprot" in done.stderr and message in done.stderr


def test_demo_closing_note_keeps_the_mlflow_command_on_one_line(tmp_path: Path) -> None:
    run_dir = tmp_path / ("a-long-folder-name" * 6) / "distill"
    summary = {
        "valid": {"valid/teacher_mlm_accuracy": 0.5, "valid/student_mlm_accuracy": 0.4},
        "run_dir": str(run_dir),
        "checkpoint": str(run_dir / "ckpt" / "global_step100"),
        "student": str(run_dir / "student"),
        "mlflow_run_id": "abc",
    }
    width = common.console.width
    common.console.width = 40  # a narrow terminal: the command is several times longer
    try:
        with common.console.capture() as captured:
            common.console.print(jobs.closing_note(summary))
    finally:
        common.console.width = width
    command = f"mlflow ui --backend-store-uri sqlite:///{run_dir.resolve() / 'mlflow.db'}"
    assert any(line.strip() == command for line in captured.get().splitlines())
    assert str(run_dir / "student") in captured.get().splitlines()[-3]
