"""`python -m minprot_ds.preempt`: usage, a missing launcher and one that cannot run are one clear line, not a
traceback (the signal path itself is tested end to end in tests/distill/e2e/test_resume_e2e.py)."""

import subprocess
import sys


def test_missing_launcher_is_one_line():
    proc = subprocess.run(
        [sys.executable, "-m", "minprot_ds.preempt", "no-such-launcher-xyz"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert (
        proc.stderr.strip()
        == "error: launcher 'no-such-launcher-xyz' not found; give a command on PATH (deepspeed, torchrun)."
    )


def test_a_folder_or_a_file_that_cannot_run_is_one_line(tmp_path):
    (tmp_path / "not_executable.sh").write_text("echo hi\n")
    for launcher, words in (
        (tmp_path, "is a folder"),
        (tmp_path / "not_executable.sh", "cannot be run (Permission denied)"),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "minprot_ds.preempt", str(launcher)], capture_output=True, text=True
        )
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert (
            proc.stderr.strip()
            == f"error: launcher {str(launcher)!r} {words}; give a launcher command (deepspeed, torchrun)."
        )


def test_exit_status_is_the_launchers():
    assert subprocess.run([sys.executable, "-m", "minprot_ds.preempt", "sh", "-c", "exit 3"]).returncode == 3
    assert subprocess.run([sys.executable, "-m", "minprot_ds.preempt"], capture_output=True).returncode == 2
