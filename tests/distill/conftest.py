"""Fixtures of the end-to-end engine tests: a learnable corpus, a tiny pre-trained teacher, and a
`launch(run_dir, *args)` that runs launch/distill.py under the real deepspeed launcher, and a real one-node
Slurm cluster on loopback."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEMO_CONFIG = REPO / "launch" / "configs" / "demo.toml"


@pytest.fixture(scope="session")
def assets(tmp_path_factory):
    """A learnable synthetic corpus and a tiny teacher pre-trained on it (as the demo makes them), and a random
    ESM-2 teacher."""
    from data_prep.corpus import prepare_corpus
    from minprot_ds.distill.demo import TEACHER_SHAPE, synthetic_fasta
    from minprot_ds.distill.pretrain import pretrain_teacher
    from minprot_ds.models.masked_lm import save_random_esm2, save_random_protbert

    root = tmp_path_factory.mktemp("assets")
    corpus = root / "corpus"
    prepare_corpus([synthetic_fasta(root / "syn.fasta", sequences=1200)], corpus, valid_fraction=0.05, seed=0)
    teacher = save_random_protbert(root / "teacher", **TEACHER_SHAPE, seed=0)
    pretrain_teacher(teacher, corpus, steps=120, seed=0, max_tokens=2048, log=lambda _: None)
    # The same teacher whose config asks for hidden dropout 0.1: the student inherits it, so the resume
    # tests also check that the training RNG (dropout masks) is carried over exactly.
    dropout = Path(shutil.copytree(teacher, root / "teacher_dropout"))
    config = json.loads((dropout / "config.json").read_text())
    (dropout / "config.json").write_text(json.dumps({**config, "hidden_dropout_prob": 0.1}))
    # A random ESM-2 teacher of the same shape (rotary positions, token dropout, final layer norm), hidden dropout
    # 0.1 too; ESM-2 batches are the same corpus read in ESM-2's ids.
    esm = save_random_esm2(root / "esm_teacher", **TEACHER_SHAPE, seed=0, hidden_dropout_prob=0.1)
    return {"corpus": corpus, "teacher": Path(teacher), "teacher_dropout": dropout, "esm_teacher": esm}


def _launch(
    assets,
    run_dir: Path,
    *extra: str,
    ranks: int = 2,
    ds: str = "cpu_zero2.json",
    steps: int = 30,
    timeout: int = 420,
    show_failure: bool = True,
    env: dict | None = None,
    teacher: str = "teacher",
) -> subprocess.CompletedProcess:
    from minprot_ds.distill.demo import launcher_command

    args = [
        "--config",
        str(DEMO_CONFIG),
        "--deepspeed_config",
        str(REPO / "ds_configs" / ds),
        "--run-dir",
        str(run_dir),
        "--set",
        f'model.teacher="{assets[teacher]}"',
        "--set",
        f'data.corpus="{assets["corpus"]}"',
        "--set",
        f"schedule.total_steps={steps}",
        "--set",
        "eval.every_steps=0",
        "--set",
        "checkpoint.every_steps=10",
        *extra,
    ]
    cmd = (
        launcher_command(ranks, REPO / "launch" / "distill.py", args)
        if ranks
        else [sys.executable, str(REPO / "launch" / "distill.py"), *args]
    )
    # Its own process group, so that a launch that hangs is taken down whole (launcher and ranks), not
    # left running behind the test with the CPU cores.
    with subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        start_new_session=True,
    ) as popen:
        try:
            out, err = popen.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(popen.pid, signal.SIGKILL)
            popen.communicate()
            raise
    proc = subprocess.CompletedProcess(cmd, popen.returncode, out, err)
    if proc.returncode != 0 and show_failure:
        print(proc.stdout[-6000:], proc.stderr[-6000:])
    return proc


def _mlflow_history(tracking_uri: str, run_id: str, key: str) -> list[float]:
    from mlflow import MlflowClient

    # Steps redone after a crash are logged again (with the same values): the latest per step counts.
    history = sorted(MlflowClient(tracking_uri).get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
    return list({m.step: m.value for m in history}.values())


@pytest.fixture(scope="session")
def launch(assets):
    """launch(run_dir, *args, ranks=2, ds="cpu_zero2.json", steps=30, env=None, teacher="teacher"|"teacher_dropout",
    ...) -> CompletedProcess"""
    return lambda *args, **kwargs: _launch(assets, *args, **kwargs)


@pytest.fixture(scope="session")
def mlflow_history():
    """mlflow_history(uri, run_id, key) -> the metric's values in step order, one per step."""
    return _mlflow_history


# --- a real one-node Slurm cluster on loopback ------------------------------------------------------

SLURM_BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "scancel", "scontrol", "squeue", "sinfo")


def _missing_slurm_binaries() -> list[str]:
    return [b for b in SLURM_BINARIES if shutil.which(b) is None and not Path("/usr/sbin", b).exists()]


class SlurmCluster:
    def __init__(self, root: Path, cpus: int = 2):
        from minprot_ds.distributed import free_port

        self.root = root
        self.host = socket.gethostname()
        self.procs: list[subprocess.Popen] = []
        for sub in ("state", "spool", "log", "munge"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        key = root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self.munge_socket = root / "munge" / "munge.socket"
        self.conf = root / "slurm.conf"
        self.conf.write_text(
            "\n".join(
                [
                    "ClusterName=loopback",
                    f"SlurmctldHost={self.host}(127.0.0.1)",
                    f"SlurmctldPort={free_port()}",
                    f"SlurmdPort={free_port()}",
                    "AuthType=auth/munge",
                    "CredType=cred/munge",
                    # cred_expire: a requeued job may start again after ~30 s instead of 2 minutes (slurm.conf(5)).
                    f"AuthInfo=socket={self.munge_socket},cred_expire=5",
                    "SlurmUser=root",
                    "SlurmdUser=root",
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_Core",
                    "ReturnToService=2",
                    "MpiDefault=none",
                    "JobAcctGatherType=jobacct_gather/none",
                    "AccountingStorageType=accounting_storage/none",
                    f"StateSaveLocation={root / 'state'}",
                    f"SlurmdSpoolDir={root / 'spool'}",
                    f"SlurmctldPidFile={root / 'slurmctld.pid'}",
                    f"SlurmdPidFile={root / 'slurmd.pid'}",
                    f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}",
                    f"SlurmdLogFile={root / 'log' / 'slurmd.log'}",
                    f"NodeName={self.host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN",
                    f"PartitionName=debug Nodes={self.host} Default=YES MaxTime=INFINITE State=UP",
                    "",
                ]
            )
        )
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    def start(self, timeout: float = 60) -> SlurmCluster:
        m = self.root / "munge"
        self._daemon(
            [
                "munged",
                "--foreground",
                "--force",
                f"--socket={self.munge_socket}",
                f"--key-file={m / 'munge.key'}",
                f"--pid-file={m / 'munged.pid'}",
                f"--log-file={m / 'munged.log'}",
                f"--seed-file={m / 'munged.seed'}",
            ]
        )
        self._wait(lambda: self.munge_socket.exists(), timeout, "munged's socket")
        self._daemon(["slurmctld", "-D", "-i"])
        self._wait(lambda: self.run("scontrol", "ping", check=False).returncode == 0, timeout, "slurmctld")
        self._daemon(["slurmd", "-D"])
        self._wait(lambda: "idle" in self.run("sinfo", "-h", "-o", "%T", check=False).stdout, timeout, "an idle node")
        return self

    def run(self, *cmd: str, check: bool = True, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
        return subprocess.run(
            cmd, env={**self.env, **(env or {})}, capture_output=True, text=True, check=check, timeout=60, cwd=cwd
        )

    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job` as a dict (JobState, RunTime, Restarts, ...); {} once Slurm forgot the job."""
        proc = self.run("scontrol", "show", "job", "-o", job_id, check=False)
        return dict(f.split("=", 1) for f in proc.stdout.split() if "=" in f) if proc.returncode == 0 else {}

    def _daemon(self, cmd: list[str]) -> None:
        log = open(self.root / "log" / f"{cmd[0]}.out", "w")
        self.procs.append(
            subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        )

    def _wait(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            dead = [p.args[0] for p in self.procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                logs = "\n".join(f.read_text()[-1500:] for f in (self.root / "log").iterdir())
                raise RuntimeError(
                    f"Slurm on loopback: no {what} ({'exited: ' + ', '.join(dead) if dead else 'timed out'})\n{logs}"
                )
            time.sleep(0.2)

    def stop(self) -> None:
        """Cancels what still runs (a failed test's job), then stops every daemon this cluster started, newest
        first (slurmd, slurmctld, munged)."""
        if all(p.poll() is None for p in self.procs):
            self.run("scancel", "--full", "--signal=KILL", "--user=root", check=False)
            deadline = time.monotonic() + 60
            while self.run("squeue", "-h", check=False).stdout.strip() and time.monotonic() < deadline:
                time.sleep(0.5)
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """munged, slurmctld and slurmd of the Debian packages (scripts/setup.sh --with-slurm), all files under a
    temp folder; every daemon is stopped at the end, also when a test failed."""
    missing = _missing_slurm_binaries()
    if missing:
        pytest.skip(f"Slurm is not installed ({', '.join(missing)} missing): run scripts/setup.sh --with-slurm")
    if os.geteuid() != 0:
        pytest.skip("the loopback Slurm cluster runs its daemons as root (SlurmUser=root); run the tests as root")
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        yield cluster.start()
    finally:
        cluster.stop()
