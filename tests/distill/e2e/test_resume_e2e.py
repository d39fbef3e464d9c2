"""Multi-day runs survive: stop and resume give the uninterrupted run's numbers exactly; a rank killed
while writing a checkpoint costs only the steps since the previous complete one; model-affecting
changes on resume are refused. Real launcher, 2 CPU ranks, fp32."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.slow
STEPS = 12
COMMON = ("--set", "run.log_every=1", "--set", "checkpoint.every_steps=4", "--set", "data.num_workers=2")
TRACE = ("--set", "run.trace_samples=true")  # rows per step written to RUN/trace; no effect on the numbers


@pytest.fixture(scope="module")
def launch(launch):
    """Every run of this suite distills from the teacher with hidden dropout 0.1 (the student inherits it):
    exact resume then also needs the training RNG carried over."""
    return lambda *args, **kwargs: launch(*args, **{"teacher": "teacher_dropout", **kwargs})


def losses_and_weights(run_dir: Path, mlflow_history) -> tuple[list[float], dict[str, torch.Tensor]]:
    summary = json.loads((run_dir / "summary.json").read_text())
    losses = mlflow_history(f"sqlite:///{run_dir / 'mlflow.db'}", summary["mlflow_run_id"], "train/loss")
    return losses, load_file(Path(summary["student"]) / "model.safetensors")


def assert_same_run(a, b) -> None:
    (losses_a, weights_a), (losses_b, weights_b) = a, b
    assert len(losses_a) == len(losses_b) == STEPS
    assert losses_a == losses_b  # exactly, step by step
    assert weights_a.keys() == weights_b.keys()
    for name in weights_a:
        assert torch.equal(weights_a[name], weights_b[name]), name


@pytest.fixture(scope="module")
def reference_dir(launch, tmp_path_factory) -> Path:
    """The uninterrupted ZeRO-2 run (2 ranks) every crash, preemption and world-size test must reproduce."""
    whole = tmp_path_factory.mktemp("reference") / "whole"
    assert launch(whole, *COMMON, *TRACE, steps=STEPS).returncode == 0
    return whole


@pytest.fixture(scope="module")
def reference(reference_dir, mlflow_history):
    return losses_and_weights(reference_dir, mlflow_history)


def test_stop_and_resume_is_exact(launch, mlflow_history, reference, tmp_path):
    """ZeRO-2: stopped by --max-steps after step 5 (a checkpoint off the cadence), rerun to the end."""
    cut = tmp_path / "cut"
    assert launch(cut, *COMMON, "--max-steps", "5", steps=STEPS).returncode == 0
    assert json.loads((cut / "summary.json").read_text())["step"] == 5
    assert launch(cut, *COMMON, steps=STEPS).returncode == 0
    assert_same_run(reference, losses_and_weights(cut, mlflow_history))


@pytest.mark.parametrize("ds", ["cpu_zero1.json", "cpu_zero3.json"])
def test_resume_from_a_periodic_checkpoint_is_exact(launch, mlflow_history, tmp_path, ds):
    """ZeRO-1 and ZeRO-3 (partitioned optimizer state / parameters): a copy of a finished run, resumed
    from its step-8 checkpoint, redoes steps 9-12 with the same losses and ends with the same weights."""
    import shutil

    from mlflow import MlflowClient

    whole = tmp_path / "whole"
    assert launch(whole, *COMMON, ds=ds, steps=STEPS).returncode == 0
    again = Path(shutil.copytree(whole, tmp_path / "again", ignore=shutil.ignore_patterns("student", "summary.json")))
    proc = launch(again, *COMMON, "--resume", str(again / "ckpt" / "global_step8"), ds=ds, steps=STEPS)
    assert proc.returncode == 0
    summary = json.loads((again / "summary.json").read_text())
    history = MlflowClient(f"sqlite:///{again / 'mlflow.db'}").get_metric_history(
        summary["mlflow_run_id"], "train/loss"
    )
    assert sorted(m.step for m in history) == sorted([*range(1, STEPS + 1), *range(9, STEPS + 1)])  # 9-12 redone
    assert_same_run(losses_and_weights(whole, mlflow_history), losses_and_weights(again, mlflow_history))


def test_ranks_killed_while_checkpointing(launch, mlflow_history, reference, tmp_path):
    """Three crashes in a row, each a rank killed (SIGKILL) at another point of a save; the launcher takes
    the job down each time, and each rerun resumes from the newest complete checkpoint. In the end the
    run matches the uninterrupted one exactly."""
    run = tmp_path / "crashed"

    def crash(fault: str) -> tuple[list[str], str]:
        proc = launch(run, *COMMON, steps=STEPS, env={"MINPROT_FAULT_CHECKPOINT": fault}, show_failure=False)
        assert proc.returncode != 0 and not (run / "summary.json").exists()
        return sorted(p.name for p in (run / "ckpt").iterdir() if (p / "COMPLETE").exists()), proc.stderr

    # Rank 1 dies inside DeepSpeed's save of step 4: nothing is complete, the rerun starts over.
    assert crash("4:1:deepspeed")[0] == []
    # Rank 1 dies after DeepSpeed's save of step 8, before its own RNG and loader file.
    complete, stderr = crash("8:1:rank_file")
    assert complete == ["global_step4"] and "skipping incomplete checkpoint" in stderr
    # Rank 0 dies after writing step 12's completion marker, before moving the `latest` pointer.
    complete, stderr = crash("12:0:marker")
    assert complete == ["global_step12", "global_step4", "global_step8"] and "skipping incomplete checkpoint" in stderr
    assert launch(run, *COMMON, steps=STEPS).returncode == 0
    assert_same_run(reference, losses_and_weights(run, mlflow_history))


@pytest.fixture(scope="module")
def stopped_run(launch, tmp_path_factory) -> Path:
    """One rank, stopped after step 4 (checkpointed); each test below works on its own copy."""
    run = tmp_path_factory.mktemp("stopped") / "run"
    assert launch(run, "--max-steps", "4", "--set", "checkpoint.every_steps=4", ranks=0, steps=STEPS).returncode == 0
    return run


@pytest.fixture
def stopped_copy(stopped_run, tmp_path) -> Path:
    import shutil

    return Path(shutil.copytree(stopped_run, tmp_path / "run"))


def test_model_affecting_change_is_refused(launch, stopped_copy):
    run = stopped_copy
    before = sorted(p.name for p in (run / "ckpt").iterdir())
    proc = launch(run, "--set", "data.seed=7", ranks=0, steps=STEPS, show_failure=False)
    assert proc.returncode == 1
    assert "data.seed was 0 and is now 7" in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(p.name for p in (run / "ckpt").iterdir()) == before
    # Cadences may change on resume.
    assert (
        launch(run, "--set", "checkpoint.every_steps=3", "--set", "run.log_every=2", ranks=0, steps=STEPS).returncode
        == 0
    )


def test_resume_none_refuses_a_run_dir_with_checkpoints(launch, stopped_copy):
    run = stopped_copy
    proc = launch(run, "--resume", "none", ranks=0, steps=STEPS, show_failure=False)
    assert proc.returncode == 1 and "already has checkpoints" in proc.stderr


def read_trace(run_dir: Path) -> dict[int, list[int]]:
    """step -> the global rows of that step, ranks in order (rank r's micro-batches follow rank r-1's)."""
    steps: dict[int, list[int]] = {}
    for rank_file in sorted((run_dir / "trace").glob("rank*.jsonl")):
        for line in rank_file.read_text().splitlines():
            entry = json.loads(line)
            steps.setdefault(entry["step"], []).extend(entry["samples"])
    return steps


def test_two_ranks_to_one_keeps_the_global_sample_order(launch, mlflow_history, reference, reference_dir, tmp_path):
    """2 ranks x accumulation 1, stopped at step 4, resumed on 1 rank x accumulation 2 (same global batch)
    through DeepSpeed's universal checkpoint: the same rows in the same order at every later step, and
    the same losses up to float reduction order."""
    moved = tmp_path / "moved"
    assert launch(moved, *COMMON, *TRACE, "--max-steps", "4", steps=STEPS).returncode == 0
    ds = json.loads((Path(__file__).resolve().parents[3] / "ds_configs" / "cpu_zero2.json").read_text())
    ds["gradient_accumulation_steps"] = 2
    (tmp_path / "accum2.json").write_text(json.dumps(ds))
    one = launch(
        moved,
        *COMMON,
        *TRACE,
        "--set",
        "data.num_workers=0",
        "--set",
        "checkpoint.keep_last=10",
        ranks=0,
        ds=str(tmp_path / "accum2.json"),
        steps=STEPS,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    assert (moved / "ckpt" / "global_step4_universal" / "COMPLETE").is_file()
    assert read_trace(moved) == read_trace(reference_dir)
    assert sorted(read_trace(moved)) == list(range(1, STEPS + 1))
    a, b = reference[0], losses_and_weights(moved, mlflow_history)[0]
    assert len(a) == len(b) == STEPS and a[:4] == b[:4]
    assert b[4:] == pytest.approx(a[4:], rel=1e-3)


def test_changed_global_batch_is_refused(launch, stopped_copy):
    proc = launch(stopped_copy, steps=STEPS, show_failure=False)  # 2 ranks x accumulation 1: twice the global batch
    assert proc.returncode == 1
    assert "Keep ranks x gradient_accumulation_steps equal" in proc.stderr and "Traceback" not in proc.stderr


def test_sigterm_checkpoints_and_exits_cleanly(assets, mlflow_history, reference, tmp_path):
    """What a scheduler does before preemption: SIGTERM to every rank. Each finishes its step, the job
    checkpoints and exits 0; rerunning continues exactly as the uninterrupted run.

    Event-driven, not timed: rank 0 stops itself (SIGSTOP) once the step-4 checkpoint is complete, the
    signal is sent while it is stopped, then it continues: every rank sees the signal after step 5."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from minprot_ds.distill.demo import launcher_command

    repo = Path(__file__).resolve().parents[3]
    run = tmp_path / "preempted"
    args = [
        "--config",
        str(repo / "launch/configs/demo.toml"),
        "--deepspeed_config",
        str(repo / "ds_configs/cpu_zero2.json"),
        "--run-dir",
        str(run),
        "--set",
        f'model.teacher="{assets["teacher_dropout"]}"',
        "--set",
        f'data.corpus="{assets["corpus"]}"',
        "--set",
        f"schedule.total_steps={STEPS}",
        "--set",
        "eval.every_steps=0",
        *COMMON,
    ]
    proc = subprocess.Popen(
        launcher_command(2, repo / "launch/distill.py", args),
        cwd=repo,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "MINPROT_FAULT_CHECKPOINT": "4:0:stop"},
    )
    try:
        ranks = wait_for_stopped_rank(proc)
        # Like SLURM: every process of the job step gets the signal (ranks and their DataLoader workers).
        signalled = time.monotonic()
        for p in ranks:
            p.send_signal(signal.SIGTERM)
        for p in ranks:
            p.send_signal(signal.SIGCONT)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    exit_s = time.monotonic() - signalled
    assert proc.returncode == 0, out[-3000:]
    assert "stop signal: checkpointed step 5" in out
    assert json.loads((run / "summary.json").read_text())["step"] == 5
    assert (run / "ckpt" / "global_step5" / "COMPLETE").is_file()
    print(f"SIGTERM to exit: {exit_s:.1f} s (stopped at step 5)", file=sys.stderr)

    resumed = subprocess.run(
        launcher_command(2, repo / "launch/distill.py", args), cwd=repo, capture_output=True, text=True, timeout=420
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(reference, losses_and_weights(run, mlflow_history))


def wait_for_stopped_rank(proc, timeout: float = 300):
    """The rank processes of a launch once one of them has stopped itself (MINPROT_FAULT_CHECKPOINT=N:R:stop)."""
    import time

    import psutil

    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "no rank stopped itself in time"
        try:
            ranks = [
                p for p in psutil.Process(proc.pid).children(recursive=True) if "--local_rank" in " ".join(p.cmdline())
            ]
            if any(p.status() == psutil.STATUS_STOPPED for p in ranks):
                return ranks
        except psutil.NoSuchProcess:  # a DataLoader worker came or went
            pass
        time.sleep(0.1)


# --- torchrun: automatic restart after a crash, and the hang watchdog ------------------------------


def torchrun(assets, run: Path, *extra: str, env: dict | None = None, max_restarts: int = 5, prefix: tuple = ()):
    """`torchrun --standalone --nproc-per-node 2 --max-restarts K launch/distill.py ...` in its own process
    group, with the reference run's settings (and the same intra-op threads as under DeepSpeed's launcher,
    where torchrun would set 1: the numbers must be bitwise the reference's)."""
    import os
    import subprocess
    import sys

    import torch

    repo = Path(__file__).resolve().parents[3]
    args = [
        "--config",
        str(repo / "launch/configs/demo.toml"),
        "--deepspeed_config",
        str(repo / "ds_configs/cpu_zero2.json"),
        "--run-dir",
        str(run),
        "--set",
        f'model.teacher="{assets["teacher_dropout"]}"',
        "--set",
        f'data.corpus="{assets["corpus"]}"',
        "--set",
        f"schedule.total_steps={STEPS}",
        "--set",
        "eval.every_steps=0",
        *COMMON,
        *TRACE,
        *extra,
    ]
    cmd = [
        *prefix,
        str(Path(sys.executable).with_name("torchrun")),
        "--standalone",
        "--nproc-per-node",
        "2",
        "--max-restarts",
        str(max_restarts),
        str(repo / "launch/distill.py"),
        *args,
    ]
    # Output to a file, not a pipe: nobody reads a pipe while the test watches the run, and a full one
    # would block the ranks.
    log = open(run.parent / f"{run.name}.log", "w+")
    proc = subprocess.Popen(
        cmd,
        cwd=repo,
        text=True,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(torch.get_num_threads()), **(env or {})},
    )
    proc.log = log
    return proc


def workers(proc) -> list:
    """torchrun's worker processes (its direct children running distill.py), oldest first."""
    import psutil

    try:
        return [p for p in psutil.Process(proc.pid).children() if "distill.py" in " ".join(p.cmdline())]
    except psutil.NoSuchProcess:
        return []


def steps_done(run: Path) -> int:
    """Steps rank 0 has finished so far, all attempts together (redone steps count again)."""
    trace = run / "trace" / "rank0.jsonl"
    return len(trace.read_text().splitlines()) if trace.is_file() else 0


def wait_until(predicate, proc, what: str, timeout: float = 600):
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"the job ended before {what}: {output(proc)[-3000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def finish(proc, timeout: float = 900) -> str:
    """Wait for the job (its whole process group is killed if it overruns); its output."""
    import os
    import signal

    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return output(proc)


def output(proc) -> str:
    proc.log.seek(0)
    return proc.log.read()


def test_torchrun_restarts_after_kills_and_finishes_exactly(assets, mlflow_history, reference, tmp_path):
    """Chaos: under torchrun with restarts, a rank is SIGKILLed at three seeded-random points (one while the
    step-8 checkpoint is being written) and a DataLoader worker is killed; every restart resumes from the
    newest complete checkpoint and the run finishes by itself with the uninterrupted run's student and
    per-step losses, bitwise. Prints the kills, restarts and time lost per restart."""
    import random
    import signal
    import sys
    import time

    from mlflow import MlflowClient

    rng = random.Random(12)
    run = tmp_path / "chaos"
    ckpt_victim = rng.randrange(2)
    # Attempt 1 is killed by the fault hook inside the step-8 save (after DeepSpeed's files, before its own).
    proc = torchrun(assets, run, env={"MINPROT_FAULT_CHECKPOINT": f"8:{ckpt_victim}:rank_file@1"})
    events, lost = [], []
    try:

        def kill_after(extra_steps: int, what: str) -> None:
            pids = {p.pid for p in workers(proc)}
            target = steps_done(run) + extra_steps
            wait_until(lambda: steps_done(run) >= target, proc, f"step {target}")
            ranks = workers(proc)
            victim = ranks[rng.randrange(len(ranks))]
            if what == "worker":
                victim = rng.choice(victim.children())  # one of that rank's 2 DataLoader workers
            victim.send_signal(signal.SIGKILL)
            killed_at, before = time.monotonic(), steps_done(run)
            events.append(f"{what} {victim.pid} SIGKILLed after {before} steps")
            wait_until(
                lambda: workers(proc) and not {p.pid for p in workers(proc)} & pids and steps_done(run) > before,
                proc,
                "the restarted attempt's first step",
            )
            lost.append(time.monotonic() - killed_at)

        wait_until(lambda: (run / "ckpt" / "global_step4" / "COMPLETE").is_file(), proc, "the step-4 checkpoint")
        kill_after(rng.randint(1, 3), "rank")  # attempt 0: a rank, somewhere in steps 5-7
        wait_until(lambda: len(workers(proc)) == 2, proc, "attempt 1")
        t_ckpt = time.monotonic()
        pids = {p.pid for p in workers(proc)}
        wait_until(lambda: workers(proc) and not {p.pid for p in workers(proc)} & pids, proc, "attempt 2")
        events.append(f"rank {ckpt_victim} SIGKILLed while writing the step-8 checkpoint")
        lost.append(time.monotonic() - t_ckpt)  # an upper bound: includes attempt 1's steps 5-8
        kill_after(rng.randint(1, 3), "worker")  # attempt 2: a DataLoader worker
        kill_after(rng.randint(1, 4), "rank")  # attempt 3: a rank
        out = finish(proc)
    finally:
        if proc.poll() is None:
            finish(proc, timeout=1)
    assert proc.returncode == 0, out[-4000:]
    assert_same_run(reference, losses_and_weights(run, mlflow_history))
    summary = json.loads((run / "summary.json").read_text())
    restarts = MlflowClient(f"sqlite:///{run / 'mlflow.db'}").get_metric_history(
        summary["mlflow_run_id"], "elastic/restarts"
    )
    assert sorted(m.value for m in restarts) == [0.0, 1.0, 2.0, 3.0, 4.0]  # one MLflow run across the restarts
    print(
        f"chaos: {'; '.join(events)}; restarts {len(restarts) - 1}; kill to the next attempt's first step: "
        + ", ".join(f"{s:.1f} s" for s in lost)
        + f"; {steps_done(run)} steps run for {STEPS}",
        file=sys.stderr,
    )


def test_watchdog_names_the_silent_rank_and_torchrun_resumes(assets, mlflow_history, reference, tmp_path):
    """Rank 1 stops (SIGSTOP, the stand-in for a hang) after the step-4 checkpoint: rank 0, waiting for it
    in a collective, exits within run.collective_timeout_s naming rank 1; torchrun restarts the job, which
    resumes from step 4 and finishes with the uninterrupted run's student."""
    import sys
    import time

    import psutil

    run = tmp_path / "hung"
    timeout_s = 10
    proc = torchrun(
        assets, run, "--set", f"run.collective_timeout_s={timeout_s}", env={"MINPROT_FAULT_CHECKPOINT": "4:1:stop@0"}
    )
    try:
        wait_until(lambda: any(p.status() == psutil.STATUS_STOPPED for p in workers(proc)), proc, "rank 1 to stop")
        stopped_at = time.monotonic()
        rank0 = workers(proc)[0]
        wait_until(lambda: not rank0.is_running() or rank0.status() == psutil.STATUS_ZOMBIE, proc, "rank 0 to exit")
        detected_s = time.monotonic() - stopped_at
        out = finish(proc)
    finally:
        if proc.poll() is None:
            finish(proc, timeout=1)
    assert proc.returncode == 0, out[-4000:]
    assert "error: rank 1 (host " in out and "stopped answering" in out
    # Silence counts from rank 1's last beat (up to timeout/4 before it stopped); the bound is the timeout plus
    # one check interval, with room for a loaded machine.
    assert detected_s < timeout_s * 3
    assert_same_run(reference, losses_and_weights(run, mlflow_history))
    print(
        f"watchdog: rank 1 stopped -> rank 0 exited after {detected_s:.1f} s (run.collective_timeout_s = {timeout_s})",
        file=sys.stderr,
    )


def test_user_error_under_torchrun_is_not_retried(assets, tmp_path):
    """A deterministic failure (here a bad config value) ends the torchrun job at once, with its one-line
    message, instead of failing again on each of the K restarts."""
    proc = torchrun(assets, tmp_path / "bad", "--set", "run.collective_timeout_s=-1", max_restarts=3)
    out = finish(proc, timeout=600)
    assert proc.returncode != 0
    assert 1 <= out.count("run.collective_timeout_s must be 0 (off) or more seconds") <= 2  # attempt 0 only
    assert "will restart worker group" not in out


def test_two_nodes_on_loopback_match_one_node_with_two_ranks(assets, mlflow_history, reference, tmp_path):
    """2 nodes x 1 rank: two DeepSpeed launchers (`--hostfile --no_ssh --node_rank I --master_addr`) on
    loopback, stopped after step 5 and resumed, train bitwise the reference's student (1 node x 2 ranks)
    with the same per-step losses: the training RNG depends on the global rank only, not the topology."""
    import os
    import subprocess
    import sys

    from minprot_ds.distributed import free_port

    repo = Path(__file__).resolve().parents[3]
    run = tmp_path / "two_nodes"
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("nodeA slots=1\nnodeB slots=1\n")  # names are only keys with --no_ssh
    args = [
        "--config",
        str(repo / "launch/configs/demo.toml"),
        "--deepspeed_config",
        str(repo / "ds_configs/cpu_zero2.json"),
        "--run-dir",
        str(run),
        "--set",
        f'model.teacher="{assets["teacher_dropout"]}"',
        "--set",
        f'data.corpus="{assets["corpus"]}"',
        "--set",
        f"schedule.total_steps={STEPS}",
        "--set",
        "eval.every_steps=0",
        *COMMON,
    ]
    launcher = str(Path(sys.executable).with_name("deepspeed"))

    def both_nodes(*extra: str) -> None:
        port = str(free_port())
        procs = []
        for i in range(2):
            log = open(tmp_path / f"node{i}.{len(extra)}.log", "w+")
            procs.append(
                subprocess.Popen(
                    [
                        launcher,
                        "--hostfile",
                        str(hostfile),
                        "--no_ssh",
                        "--node_rank",
                        str(i),
                        "--master_addr",
                        "127.0.0.1",
                        "--master_port",
                        port,
                        str(repo / "launch/distill.py"),
                        *args,
                        *extra,
                    ],
                    cwd=repo,
                    text=True,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    env={**os.environ, "PYTHONUNBUFFERED": "1", "GLOO_SOCKET_IFNAME": "lo"},
                )
            )
            procs[-1].log = log
        outs = [finish(p, timeout=900) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outs[0][-3000:] + outs[1][-3000:]

    both_nodes("--max-steps", "5")
    assert json.loads((run / "summary.json").read_text())["step"] == 5
    both_nodes()
    assert_same_run(reference, losses_and_weights(run, mlflow_history))


# --- Slurm: preemption notice, checkpoint, requeue, resume ---------------------------------------------


def test_slurm_job_signalled_before_its_limit_requeues_and_finishes_exactly(
    assets, mlflow_history, reference, slurm_cluster, tmp_path
):
    """launch/slurm/distill.sbatch on a real one-node Slurm cluster: Slurm signals the batch shell (USR1,
    `--signal=B:USR1@120`) before the job's time limit, the trap forwards it to the ranks, they checkpoint
    and exit 0, the job requeues itself, resumes and ends with the uninterrupted run's student, bitwise.

    Event-driven, not timed: the job starts with a long limit; once rank 0 has stopped itself after the step-4
    checkpoint, the test shortens the limit so that fewer than 120 s remain: Slurm's own time-limit check
    sends the signal, and rank 0 is continued once the trap has forwarded it (every rank sees it after
    step 5). The requeued job gets its long limit back before it starts again."""
    import os
    import re
    import sys
    import time

    import psutil
    from mlflow import MlflowClient

    repo = Path(__file__).resolve().parents[3]
    run, out = tmp_path / "slurm_run", tmp_path / "job.out"
    args = [
        "--config",
        str(repo / "launch/configs/demo.toml"),
        "--deepspeed_config",
        str(repo / "ds_configs/cpu_zero2.json"),
        "--run-dir",
        str(run),
        "--set",
        f'model.teacher="{assets["teacher_dropout"]}"',
        "--set",
        f'data.corpus="{assets["corpus"]}"',
        "--set",
        f"schedule.total_steps={STEPS}",
        "--set",
        "eval.every_steps=0",
        *COMMON,
    ]
    env = {
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PYTHONUNBUFFERED": "1",
        "MINPROT_PROCS_PER_NODE": "2",
        "MINPROT_FAULT_CHECKPOINT": "4:0:stop",
    }
    job = (
        slurm_cluster.run(
            "sbatch",
            "--parsable",
            "--time=10",
            f"--output={out}",
            str(repo / "launch/slurm/distill.sbatch"),
            *args,
            env=env,
            cwd=repo,
        )
        .stdout.strip()
        .split(";")[0]
    )

    def log() -> str:
        return out.read_text() if out.exists() else ""

    def wait(predicate, what: str, timeout: float = 600):
        deadline = time.monotonic() + timeout
        while not (found := predicate()):
            state = slurm_cluster.job(job).get("JobState", "gone")
            if state not in ("PENDING", "RUNNING", "REQUEUED", "COMPLETING"):
                # the job may have moved on between the two reads: look once more before failing
                found = predicate()
                assert found, f"job {state} before {what}:\n{log()[-4000:]}"
                break
            assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{log()[-4000:]}"
            time.sleep(0.2)
        return found

    def stopped_rank():
        for p in psutil.process_iter(["cmdline", "status"]):
            cmd = " ".join(p.info["cmdline"] or [])
            if str(run) in cmd and "--local_rank" in cmd and p.info["status"] == psutil.STATUS_STOPPED:
                return p
        return None

    rank0 = wait(stopped_rank, "rank 0 to stop after the step-4 checkpoint")
    h, m, s = (int(x) for x in slurm_cluster.job(job)["RunTime"].split(":")[-3:])
    minutes = (h * 3600 + m * 60 + s) // 60 + 2  # leaves 60-120 s: inside the 120 s notice
    slurm_cluster.run("scontrol", "update", f"JobId={job}", f"TimeLimit={minutes}")
    limited = time.monotonic()
    wait(lambda: "USR1: forwarding it to every rank" in log(), "Slurm's signal to reach the trap")
    signalled = time.monotonic()
    rank0.resume()
    wait(lambda: "requeueing job" in log(), "the requeue")
    requeued = time.monotonic()
    slurm_cluster.run("scontrol", "update", f"JobId={job}", "TimeLimit=10")
    wait(lambda: "restart count 1" in log(), "the requeued job to start")
    restarted = time.monotonic()
    wait(lambda: slurm_cluster.job(job).get("JobState") == "COMPLETED", "the requeued job to finish")
    text = log()
    assert (
        "stop signal: checkpointed step 5" in text
        and f"step 5/{STEPS}; checkpoint {run / 'ckpt' / 'global_step5'}" in text
    )
    assert json.loads((run / "summary.json").read_text())["step"] == STEPS
    summary = json.loads((run / "summary.json").read_text())
    history = MlflowClient(f"sqlite:///{run / 'mlflow.db'}").get_metric_history(summary["mlflow_run_id"], "train/loss")
    assert sorted(m.step for m in history) == list(range(1, STEPS + 1))  # resumed after step 5: nothing redone
    assert_same_run(reference, losses_and_weights(run, mlflow_history))
    to_ckpt = re.search(r"checkpointed step 5 ([0-9.]+)s after the signal", text).group(1)
    print(
        f"slurm: limit shortened -> signal at the trap {signalled - limited:.1f} s; rank 0 continued -> step-5 "
        f"checkpoint {to_ckpt} s (the run's own figure), -> requeue {requeued - signalled:.1f} s; requeue -> job "
        f"running again {restarted - requeued:.1f} s",
        file=sys.stderr,
    )


@pytest.mark.parametrize("launcher,sig", [("deepspeed", "SIGTERM"), ("torchrun", "SIGUSR1")])
def test_signal_to_the_launcher_alone_checkpoints_and_resumes_exactly(
    assets, mlflow_history, reference, tmp_path, launcher, sig
):
    """What people and schedulers do: one signal to the launcher process only (started through
    `python -m minprot_ds.preempt`), not to the ranks. Every rank finishes its step, the job checkpoints,
    everything exits 0, and a plain rerun continues exactly as the uninterrupted run.

    Event-driven: rank 0 stops itself after the step-4 checkpoint, the signal is sent, rank 0 is continued once
    the signal was forwarded: every rank sees it after step 5."""
    import os
    import signal
    import subprocess
    import sys

    import psutil

    from minprot_ds.distill.demo import launcher_command

    repo = Path(__file__).resolve().parents[3]
    run = tmp_path / "signalled"
    prefix = (sys.executable, "-m", "minprot_ds.preempt")
    env = {"MINPROT_FAULT_CHECKPOINT": "4:0:stop"}
    if launcher == "torchrun":
        proc = torchrun(assets, run, env=env, max_restarts=0, prefix=prefix)
    else:
        args = [
            "--config",
            str(repo / "launch/configs/demo.toml"),
            "--deepspeed_config",
            str(repo / "ds_configs/cpu_zero2.json"),
            "--run-dir",
            str(run),
            "--set",
            f'model.teacher="{assets["teacher_dropout"]}"',
            "--set",
            f'data.corpus="{assets["corpus"]}"',
            "--set",
            f"schedule.total_steps={STEPS}",
            "--set",
            "eval.every_steps=0",
            *COMMON,
            *TRACE,
        ]
        log = open(tmp_path / "signalled.log", "w+")
        proc = subprocess.Popen(
            [*prefix, *launcher_command(2, repo / "launch/distill.py", args)],
            cwd=repo,
            text=True,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
        )
        proc.log = log

    def stopped_rank():
        try:
            for p in psutil.Process(proc.pid).children(recursive=True):
                if "distill.py" in " ".join(p.cmdline()) and p.status() == psutil.STATUS_STOPPED:
                    return p
        except psutil.NoSuchProcess:
            pass
        return None

    try:
        wait_until(lambda: stopped_rank() is not None, proc, "rank 0 to stop after the step-4 checkpoint")
        rank0 = stopped_rank()
        proc.send_signal(getattr(signal, sig))  # the launcher's process alone
        wait_until(lambda: "forwarding SIGUSR1 to the ranks" in output(proc), proc, "the signal to be forwarded")
        rank0.resume()
        out = finish(proc, timeout=600)
    finally:
        if proc.poll() is None:
            finish(proc, timeout=1)
    assert proc.returncode == 0, out[-4000:]
    assert "stop signal: checkpointed step 5" in out
    assert json.loads((run / "summary.json").read_text())["step"] == 5
    rerun = torchrun(assets, run, max_restarts=0) if launcher == "torchrun" else None
    if rerun is not None:
        out = finish(rerun, timeout=600)
        assert rerun.returncode == 0, out[-4000:]
    else:
        again = subprocess.run(
            launcher_command(2, repo / "launch/distill.py", args), cwd=repo, capture_output=True, text=True, timeout=600
        )
        assert again.returncode == 0, again.stderr[-3000:]
    assert_same_run(reference, losses_and_weights(run, mlflow_history))
