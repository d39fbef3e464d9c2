"""The hang watchdog alone (no launcher): a rank whose heartbeat never changes is named, and the watching
process exits with the watchdog's status."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from minprot_ds.distill.watchdog import EXIT_CODE


def test_a_silent_peer_is_named_and_the_watcher_exits(tmp_path: Path):
    beat = tmp_path / "heartbeat" / "rank1"
    beat.parent.mkdir()
    beat.write_text(json.dumps({"beat": 1, "host": "nodeB", "pid": 4242}))  # and never again: rank 1 hangs
    code = (
        "import time; from pathlib import Path; from minprot_ds.distill.watchdog import Watchdog\n"
        f"with Watchdog(Path({str(tmp_path)!r}), 0.4, rank=0, world=2):\n"
        "    time.sleep(600)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == EXIT_CODE, proc.stderr
    assert "error: rank 1 (host nodeB, pid 4242) stopped answering" in proc.stderr
    assert "run.collective_timeout_s = 0.4" in proc.stderr
    assert json.loads((tmp_path / "heartbeat" / "rank0").read_text())["beat"] >= 1  # it beat meanwhile


def test_off_when_zero_or_alone(tmp_path: Path):
    from minprot_ds.distill.watchdog import Watchdog

    for timeout_s, world in ((0, 2), (5, 1)):
        with Watchdog(tmp_path, timeout_s, rank=0, world=world) as dog:
            assert not dog._thread.is_alive()
    assert not (tmp_path / "heartbeat").exists()


SHARED_CHECK = """
import sys
from pathlib import Path

import torch.distributed

from minprot_ds.distributed import init_distributed
from minprot_ds.errors import UserError
from minprot_ds.distill.watchdog import check_shared_run_dir

rank, world = init_distributed()
root = Path(sys.argv[1])
run_dir = root / f"node{rank}" if sys.argv[2] == "split" else root  # "split": each rank its own filesystem
run_dir.mkdir(parents=True, exist_ok=True)
try:
    check_shared_run_dir(run_dir, rank, world)
    print(f"rank {rank} ok", flush=True)
    status = 0
except UserError as err:
    print(f"rank {rank} refused: {err}", flush=True)
    status = 1
torch.distributed.destroy_process_group()  # gloo's threads, left running at exit, may abort the process
sys.exit(status)
"""


def test_ranks_that_do_not_see_one_run_dir_refuse_to_start(tmp_path: Path):
    """Two ranks under torchrun, as if on two nodes whose --run-dir is not one shared filesystem: both
    refuse, naming the run dir and the fix; with one folder both go on."""
    from minprot_ds.distributed import free_port

    script = tmp_path / "check.py"
    script.write_text(SHARED_CHECK)
    torchrun = Path(sys.executable).with_name("torchrun")
    for mode in ("split", "shared"):
        cmd = [
            str(torchrun),
            "--nnodes",
            "1",
            "--nproc-per-node",
            "2",
            "--master-port",
            str(free_port()),
            str(script),
            str(tmp_path / mode),
            mode,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if mode == "split":
            assert proc.returncode != 0
            for rank in (0, 1):
                assert f"rank {rank} refused: not every rank sees the same run dir" in proc.stdout, (
                    proc.stdout + proc.stderr
                )
            assert "put --run-dir on a filesystem shared by all nodes" in proc.stdout
            assert "rank 1 on " in proc.stdout and "does not)" in proc.stdout  # the rank that cannot see it says so
        else:
            assert proc.returncode == 0, proc.stdout + proc.stderr
            assert "rank 0 ok" in proc.stdout and "rank 1 ok" in proc.stdout
