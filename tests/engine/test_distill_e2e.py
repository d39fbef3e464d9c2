"""The distillation job end to end: the real deepspeed launcher, 2 CPU ranks, ZeRO-1/2/3, MLflow."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
DEMO_CONFIG = REPO / "launch" / "configs" / "demo.toml"
pytestmark = pytest.mark.slow


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
    return {"corpus": corpus, "teacher": Path(teacher)}


def launch(assets, run_dir: Path, *extra: str, ranks: int = 2, ds: str = "cpu_zero2.json", steps: int = 30,
           timeout: int = 420, show_failure: bool = True) -> subprocess.CompletedProcess:
    from minprot_ds.demo import launcher_command

    args = ["--config", str(DEMO_CONFIG), "--deepspeed_config", str(REPO / "ds_configs" / ds), "--run-dir", str(run_dir),
            "--set", f'model.teacher="{assets["teacher"]}"', "--set", f'data.corpus="{assets["corpus"]}"',
            "--set", f"schedule.total_steps={steps}", "--set", "eval.every_steps=0", "--set", "checkpoint.every_steps=10",
            *extra]
    cmd = launcher_command(ranks, REPO / "launch" / "distill.py", args) if ranks else [
        sys.executable, str(REPO / "launch" / "distill.py"), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if proc.returncode != 0 and show_failure:
        print(proc.stdout[-6000:], proc.stderr[-6000:])
    return proc


def mlflow_history(tracking_uri: str, run_id: str, key: str) -> list[float]:
    from mlflow import MlflowClient

    return [m.value for m in sorted(MlflowClient(tracking_uri).get_metric_history(run_id, key), key=lambda m: m.step)]


@pytest.mark.parametrize("ds", ["cpu_zero1.json", "cpu_zero2.json", "cpu_zero3.json"])
def test_two_rank_distillation(assets, tmp_path, ds):
    run_dir = tmp_path / "run"
    proc = launch(assets, run_dir, ds=ds)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["step"] == 30 and summary["teacher_unchanged"] is True
    assert Path(summary["checkpoint"]).name == "global_step30"

    uri = f"sqlite:///{run_dir / 'mlflow.db'}"
    from mlflow import MlflowClient

    run = MlflowClient(uri).get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    for key in ("train/loss", "train/mlm", "train/kd", "train/cos", "train/lr", "train/grad_norm",
                "perf/residues_per_s", "perf/sequences_per_s", "perf/tflops_per_device", "perf/padding_fraction",
                "perf/peak_memory_gb", "train/skipped_steps", "valid/student_mlm_accuracy", "valid/teacher_mlm_accuracy"):
        assert key in run.data.metrics, key
    assert run.data.params["config.model.student_layers"] == "2"
    losses = mlflow_history(uri, summary["mlflow_run_id"], "train/loss")
    assert len(losses) == 6  # log_every 5
    assert sum(losses[-2:]) / 2 < losses[0], losses  # loss falls on a learnable corpus

    from transformers import AutoModelForMaskedLM, pipeline

    student = AutoModelForMaskedLM.from_pretrained(summary["student"])
    assert student.config.num_hidden_layers == 2
    meta = json.loads((Path(summary["student"]) / "minprot.json").read_text())
    assert meta["mlflow_run_id"] == summary["mlflow_run_id"] and meta["step"] == 30
    fill = pipeline("fill-mask", model=summary["student"], device=-1)
    preds = fill("M K T A Y [MASK] A K Q R")
    assert len(preds) == 5 and all(len(p["token_str"].strip()) == 1 for p in preds)

    # `minprot export` of the run dir's newest checkpoint gives the same weights as the automatic export.
    exported = subprocess.run([str(Path(sys.executable).with_name("minprot")), "export", str(run_dir), "--out",
                               str(tmp_path / "exported")], capture_output=True, text=True, timeout=300)
    assert exported.returncode == 0, exported.stderr[-2000:]
    again = AutoModelForMaskedLM.from_pretrained(tmp_path / "exported")
    for (name, a), (_, b) in zip(student.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name
    assert json.loads((tmp_path / "exported" / "minprot.json").read_text())["teacher_layers"] == meta["teacher_layers"]


def test_student_at_step_zero_is_the_chosen_teacher_layers(assets, tmp_path):
    """One plain process (no launcher), stopped before the first step: the export is the copied student."""
    run_dir = tmp_path / "run0"
    proc = launch(assets, run_dir, "--max-steps", "0", ranks=0)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from transformers import BertForMaskedLM

    teacher = BertForMaskedLM.from_pretrained(assets["teacher"])
    student = BertForMaskedLM.from_pretrained(run_dir / "student")
    layers = json.loads((run_dir / "student" / "minprot.json").read_text())["teacher_layers"]
    assert len(layers) == 2
    for s_layer, t_index in zip(student.bert.encoder.layer, layers):
        for (name, s), (_, t) in zip(s_layer.state_dict().items(), teacher.bert.encoder.layer[t_index].state_dict().items()):
            assert torch.equal(s, t), name
    assert torch.equal(student.bert.embeddings.word_embeddings.weight, teacher.bert.embeddings.word_embeddings.weight)


def test_bad_config_is_one_line_and_exit_1(assets, tmp_path):
    proc = launch(assets, tmp_path / "bad", "--set", "optimizer.lrr=1", ranks=0, show_failure=False)
    assert proc.returncode != 0
    assert "unknown key optimizer.lrr" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_tracking_server_records_the_run(assets, tmp_path, mlflow_server):
    run_dir = tmp_path / "served"
    proc = launch(assets, run_dir, "--tracking-uri", mlflow_server, steps=10)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    from mlflow import MlflowClient

    run = MlflowClient(mlflow_server).get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert len(mlflow_history(mlflow_server, summary["mlflow_run_id"], "train/loss")) == 2
    assert "valid/student_mlm_accuracy" in run.data.metrics
    artifacts = {a.path for a in MlflowClient(mlflow_server).list_artifacts(summary["mlflow_run_id"])}
    assert {"student", "deepspeed_config.json", "run_config.json", "data"} <= artifacts
    assert not (run_dir / "mlflow.db").exists()


def test_diverging_run_skips_steps_then_fails_the_mlflow_run(assets, tmp_path):
    """A learning rate that blows the weights up: non-finite steps are skipped and counted, and after
    run.max_consecutive_skips in a row the job stops with one clear line and the MLflow run is FAILED."""
    run_dir = tmp_path / "diverge"
    proc = launch(assets, run_dir, "--set", "optimizer.lr=1e12", "--set", "schedule.warmup_steps=0",
                  "--set", "run.max_consecutive_skips=2", "--set", "run.log_every=1", ranks=0, show_failure=False)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "steps in a row had a non-finite loss" in proc.stderr and "Traceback" not in proc.stderr
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{run_dir / 'mlflow.db'}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.status == "FAILED"
    assert run.data.metrics["train/skipped_steps"] >= 2
