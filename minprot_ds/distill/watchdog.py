"""Hang watchdog: every rank beats, every rank watches the others; a silent rank ends the job quickly.

A rank that hangs (dead NIC, stuck collective, a node that froze; SIGSTOP in the tests) would keep the
others waiting in a collective until the process-group timeout (10 minutes in DeepSpeed, more in NCCL).
Each rank's thread writes a counter to RUN/heartbeat/rank{r} every timeout/4 seconds and reads the
others'; when one has not changed for `run.collective_timeout_s` seconds (measured on the reader's own
clock: no clock skew between nodes), the reader prints one line naming that rank and exits with
EXIT_CODE, so the launcher takes the job down (DeepSpeed's launcher) or restarts it (torchrun).
The run dir must be on a filesystem every node sees (checked at start, see `check_shared_run_dir`).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from pathlib import Path

from minprot_ds.distributed import any_rank, broadcast_object
from minprot_ds.errors import UserError
from minprot_ds.fileio import atomic_write

EXIT_CODE = 75  # distinct from a UserError's 1: "a peer stopped answering", worth a restart


class Watchdog:
    def __init__(self, run_dir: Path, timeout_s: float, rank: int, world: int):
        self.folder = Path(run_dir) / "heartbeat"
        self.timeout_s, self.rank, self.world = timeout_s, rank, world
        self._stop = threading.Event()
        self._beats = 0
        self._thread = threading.Thread(target=self._run, name="minprot-watchdog", daemon=True)

    def __enter__(self) -> Watchdog:
        if self.timeout_s and self.world > 1:
            self._beat()
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()

    def _beat(self) -> None:
        self._beats += 1
        atomic_write(
            self.folder / f"rank{self.rank}",
            json.dumps({"beat": self._beats, "host": socket.gethostname(), "pid": os.getpid()}),
        )

    def _run(self) -> None:
        seen: dict[int, tuple[str, float]] = {}  # rank -> (last content, when it last changed on our clock)
        start = time.monotonic()
        while not self._stop.wait(self.timeout_s / 4):
            self._beat()
            now = time.monotonic()
            for peer in range(self.world):
                if peer == self.rank:
                    continue
                try:
                    content = (self.folder / f"rank{peer}").read_text()
                except OSError:
                    content = ""
                if seen.get(peer, (None,))[0] != content:
                    seen[peer] = (content, now)
                since = now - max(seen[peer][1], start)
                if since > self.timeout_s:
                    self._fire(peer, content, since)

    def _fire(self, peer: int, content: str, since: float) -> None:
        try:
            where = json.loads(content)
            where = f" (host {where['host']}, pid {where['pid']})"
        except (ValueError, KeyError):
            where = ""
        print(
            f"error: rank {peer}{where} stopped answering: no heartbeat for {since:.0f} s "
            f"(run.collective_timeout_s = {self.timeout_s:g}); rank {self.rank} exits so that the launcher "
            "ends or restarts the job.",
            file=sys.stderr,
            flush=True,
        )
        os._exit(EXIT_CODE)


def check_shared_run_dir(run_dir: Path, rank: int, world: int) -> None:
    """Every rank must see the same run dir (checkpoints, heartbeats): rank 0 writes a token, the others
    must read it. Called after the process group is up; the caller broadcasts the token."""

    token = f"{socket.gethostname()}:{os.getpid()}:{time.time_ns()}" if rank == 0 else None
    if rank == 0:
        atomic_write(Path(run_dir) / ".shared_check", token)
    token = broadcast_object(token)
    path = Path(run_dir) / ".shared_check"
    seen = path.read_text() if path.is_file() else ""

    if any_rank(seen != token):
        raise UserError(
            f"not every rank sees the same run dir {run_dir} (rank {rank} on {socket.gethostname()} "
            f"{'does not' if seen != token else 'does'}): put --run-dir on a filesystem shared by all nodes "
            "(NFS, Lustre, GPFS)."
        )
