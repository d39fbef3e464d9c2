"""Fixtures of the end-to-end engine tests: a learnable corpus, a tiny pre-trained teacher, and a
`launch(run_dir, *args)` that runs launch/distill.py under the real deepspeed launcher."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEMO_CONFIG = REPO / "launch" / "configs" / "demo.toml"


@pytest.fixture(scope="session")
def assets(tmp_path_factory):
    """A learnable synthetic corpus and a tiny teacher pre-trained on it (as the demo makes them)."""
    from data_prep.corpus import prepare_corpus
    from minprot_ds.demo import TEACHER_SHAPE, synthetic_fasta
    from minprot_ds.models import save_random_protbert
    from minprot_ds.pretrain import pretrain_teacher

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
    return {"corpus": corpus, "teacher": Path(teacher), "teacher_dropout": dropout}


def _launch(assets, run_dir: Path, *extra: str, ranks: int = 2, ds: str = "cpu_zero2.json", steps: int = 30,
           timeout: int = 420, show_failure: bool = True, env: dict | None = None,
           teacher: str = "teacher") -> subprocess.CompletedProcess:
    from minprot_ds.demo import launcher_command

    args = ["--config", str(DEMO_CONFIG), "--deepspeed_config", str(REPO / "ds_configs" / ds), "--run-dir", str(run_dir),
            "--set", f'model.teacher="{assets[teacher]}"', "--set", f'data.corpus="{assets["corpus"]}"',
            "--set", f"schedule.total_steps={steps}", "--set", "eval.every_steps=0", "--set", "checkpoint.every_steps=10",
            *extra]
    cmd = launcher_command(ranks, REPO / "launch" / "distill.py", args) if ranks else [
        sys.executable, str(REPO / "launch" / "distill.py"), *args]
    # Its own process group, so that a launch that hangs is taken down whole (launcher and ranks), not
    # left running behind the test with the CPU cores.
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}, start_new_session=True) as popen:
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
