"""The hang watchdog alone (no launcher): a rank whose heartbeat never changes is named, and the watching
process exits with the watchdog's status."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from minprot_ds.watchdog import EXIT_CODE


def test_a_silent_peer_is_named_and_the_watcher_exits(tmp_path: Path):
    beat = tmp_path / "heartbeat" / "rank1"
    beat.parent.mkdir()
    beat.write_text(json.dumps({"beat": 1, "host": "nodeB", "pid": 4242}))  # and never again: rank 1 hangs
    code = ("import time; from pathlib import Path; from minprot_ds.watchdog import Watchdog\n"
            f"with Watchdog(Path({str(tmp_path)!r}), 0.4, rank=0, world=2):\n"
            "    time.sleep(600)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == EXIT_CODE, proc.stderr
    assert "error: rank 1 (host nodeB, pid 4242) stopped answering" in proc.stderr
    assert "run.collective_timeout_s = 0.4" in proc.stderr
    assert json.loads((tmp_path / "heartbeat" / "rank0").read_text())["beat"] >= 1  # it beat meanwhile


def test_off_when_zero_or_alone(tmp_path: Path):
    from minprot_ds.watchdog import Watchdog

    for timeout_s, world in ((0, 2), (5, 1)):
        with Watchdog(tmp_path, timeout_s, rank=0, world=world) as dog:
            assert not dog._thread.is_alive()
    assert not (tmp_path / "heartbeat").exists()
