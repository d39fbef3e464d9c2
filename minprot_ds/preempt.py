"""Run a launcher (deepspeed, torchrun) so that a preemption signal sent to this one process reaches every rank.

Neither launcher does it alone (DeepSpeed 0.19, torch 2.x): on one node DeepSpeed's runner installs no
handler, so SIGTERM ends the runner while its launch.py child and the ranks run on, and launch.py forwards
SIGTERM/SIGINT but not SIGUSR1 and exits 1 after killing its ranks 30 s later; torchrun's agent turns
SIGTERM into SIGTERM to its workers, SIGKILL 30 s later and a non-zero exit, and dies of SIGUSR1.

    python -m minprot_ds.preempt deepspeed --num_gpus 8 launch/distill.py ...
    python -m minprot_ds.preempt torchrun --standalone --nproc-per-node 8 launch/distill.py ...

The launcher starts with SIGUSR1 ignored (the launchers keep that; the ranks install their own handler).
SIGTERM, SIGUSR1 or SIGINT to this process becomes SIGUSR1 to every process under the launcher (not to its
process group: torchrun starts each worker in a session of its own): every rank finishes its step, the job
checkpoints and the ranks exit 0, and so do the launcher and this process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys


def run_launcher(cmd: list[str]) -> int:
    """Runs `cmd` (a launcher command) to its end, forwarding preemption signals to its ranks; its exit status."""
    try:
        proc = subprocess.Popen(
            cmd, start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        )
    except FileNotFoundError:
        print(f"error: launcher {cmd[0]!r} not found; give a command on PATH (deepspeed, torchrun).", file=sys.stderr)
        return 2
    except OSError as err:  # a folder, a file without execute permission, not a program
        what = "is a folder" if os.path.isdir(cmd[0]) else f"cannot be run ({err.strerror})"
        print(f"error: launcher {cmd[0]!r} {what}; give a launcher command (deepspeed, torchrun).", file=sys.stderr)
        return 2

    def forward(signum, frame) -> None:
        import psutil

        print(
            f"minprot.preempt: {signal.Signals(signum).name}: forwarding SIGUSR1 to the ranks "
            f"(launcher {proc.pid}); they checkpoint and exit",
            file=sys.stderr,
            flush=True,
        )
        try:
            tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:  # the job ended meanwhile
            return
        for process in tree:
            try:
                process.send_signal(signal.SIGUSR1)
            except psutil.NoSuchProcess:
                pass

    for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
        signal.signal(sig, forward)
    return proc.wait()


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        sys.exit(0 if len(sys.argv) >= 2 else 2)
    code = run_launcher(sys.argv[1:])
    sys.exit(code if code >= 0 else 128 - code)


if __name__ == "__main__":
    main()
