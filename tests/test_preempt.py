"""`python -m minprot_ds.preempt`: usage and a missing launcher are one clear line, not a traceback (the
signal path itself is tested end to end in tests/distill/e2e/test_resume_e2e.py)."""

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


def test_exit_status_is_the_launchers():
    assert subprocess.run([sys.executable, "-m", "minprot_ds.preempt", "sh", "-c", "exit 3"]).returncode == 3
    assert subprocess.run([sys.executable, "-m", "minprot_ds.preempt"], capture_output=True).returncode == 2
