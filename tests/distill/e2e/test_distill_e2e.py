"""The distillation job end to end: the real deepspeed launcher, 2 CPU ranks, ZeRO-2/3, MLflow store and server."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow
DEMO_CONFIG = Path(__file__).resolve().parents[3] / "launch" / "configs" / "demo.toml"


@pytest.mark.parametrize(("ds", "store"), [("cpu_zero2.json", "embedded"), ("cpu_zero3.json", "server")])
def test_two_rank_distillation(launch, mlflow_history, tmp_path, request, ds, store):
    """30 steps on 2 ranks: MLflow (the run dir's SQLite store, or a real server), the loss falls, the
    exported student loads in transformers (under ZeRO-3 its partitioned parameters are gathered), and
    `minprot export` gives the same weights. ZeRO-1 trains in the resume tests."""
    run_dir = tmp_path / "run"
    shm_before = set(Path("/dev/shm").glob("deepspeed_allreduce_buffer_*"))
    uri = request.getfixturevalue("mlflow_server") if store == "server" else f"sqlite:///{run_dir / 'mlflow.db'}"
    proc = launch(run_dir, *(["--tracking-uri", uri] if store == "server" else []), ds=ds)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # DeepSpeed's CPU all-reduce buffers (69 MB a rank) do not outlive the run: left behind, a test
    # session's launches filled /dev/shm, and so RAM, until the kernel killed the job.
    assert set(Path("/dev/shm").glob("deepspeed_allreduce_buffer_*")) <= shm_before
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["step"] == 30 and summary["teacher_unchanged"] is True
    # stderr is a pipe, as a Slurm log file is: whole plain lines every run.log_every (5) steps, no bar, no noise
    lines = proc.stderr.splitlines()
    progress = [line for line in lines if line.startswith("distill ")]
    assert [line.split()[1] for line in progress] == [f"{s}/30" for s in range(5, 31, 5)], progress
    assert all(
        re.search(r" loss \d+\.\d{4} .* res/s .* elapsed \d+:\d\d:\d\d  eta \d+:\d\d:\d\d$", x) for x in progress
    )
    assert [x.split()[1] for x in lines if x.startswith("checkpoint ")] == [
        str(run_dir / "ckpt" / f"global_step{s}") for s in (10, 20, 30)
    ]
    assert "━" not in proc.stderr and "all_gather_into_tensor" not in proc.stderr
    assert "Loading weights" not in proc.stderr
    assert "built successfully" not in proc.stdout + proc.stderr  # DeepSpeed's shm op notice, once per rank
    assert Path(summary["checkpoint"]).name == "global_step30"

    from mlflow import MlflowClient

    run = MlflowClient(uri).get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert (run_dir / "mlflow.db").exists() == (store == "embedded")
    artifacts = {a.path for a in MlflowClient(uri).list_artifacts(summary["mlflow_run_id"])}
    assert {"student", "deepspeed_config.json", "run_config.json", "data"} <= artifacts
    for key in (
        "train/loss",
        "train/mlm",
        "train/kd",
        "train/cos",
        "train/lr",
        "train/grad_norm",
        "perf/residues_per_s",
        "perf/sequences_per_s",
        "perf/tflops_per_device",
        "perf/padding_fraction",
        "perf/peak_memory_gb",
        "train/skipped_steps",
        "valid/student_mlm_accuracy",
        "valid/teacher_mlm_accuracy",
    ):
        assert key in run.data.metrics, key
    assert run.data.params["config.model.student_layers"] == "2"
    assert run.data.params["options.config"].endswith("demo.toml")  # the command line (DistillOptions)
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
    exported = subprocess.run(
        [str(Path(sys.executable).with_name("minprot")), "export", str(run_dir), "--out", str(tmp_path / "exported")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert exported.returncode == 0, exported.stderr[-2000:]
    again = AutoModelForMaskedLM.from_pretrained(tmp_path / "exported")
    for (name, a), (_, b) in zip(student.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name
    assert json.loads((tmp_path / "exported" / "minprot.json").read_text())["teacher_layers"] == meta["teacher_layers"]


def test_student_at_step_zero_is_the_chosen_teacher_layers(assets, launch, tmp_path):
    """2 ranks under ZeRO-3 (parameters partitioned, gathered for the export), stopped before the first
    step: the exported student is exactly the teacher's chosen layers, embeddings and head. The token
    budget puts the whole valid split in one micro-batch, so rank 1 has no eval batch and must still
    join every forward's parameter gathers (else the job hangs)."""
    from minprot_ds.distill.build import eval_stream
    from minprot_ds.distill.config import load_config

    budget = ["data.max_tokens=32768", "data.max_rows=128"]
    # The stream reads the teacher's config: batches are built in its family's token ids.
    config = load_config(
        DEMO_CONFIG, [*budget, f'data.corpus="{assets["corpus"]}"', f'model.teacher="{assets["teacher"]}"']
    )
    assert [len(list(eval_stream(config, rank, 2))) for rank in (0, 1)] == [1, 0]
    run_dir = tmp_path / "run0"
    proc = launch(
        run_dir, "--max-steps", "0", *(a for kv in budget for a in ("--set", kv)), ds="cpu_zero3.json", timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    valid = json.loads((run_dir / "summary.json").read_text())["valid"]
    assert valid["valid/masked_tokens"] > 0 and 0 <= valid["valid/student_mlm_accuracy"] <= 1
    from transformers import BertForMaskedLM

    teacher = BertForMaskedLM.from_pretrained(assets["teacher"])
    student = BertForMaskedLM.from_pretrained(run_dir / "student")
    layers = json.loads((run_dir / "student" / "minprot.json").read_text())["teacher_layers"]
    assert len(layers) == 2
    for s_layer, t_index in zip(student.bert.encoder.layer, layers):
        for (name, s), (_, t) in zip(
            s_layer.state_dict().items(), teacher.bert.encoder.layer[t_index].state_dict().items()
        ):
            assert torch.equal(s, t), name
    assert torch.equal(student.bert.embeddings.word_embeddings.weight, teacher.bert.embeddings.word_embeddings.weight)


def test_accumulation_and_activation_checkpointing(launch, mlflow_history, tmp_path):
    """Gradient accumulation (2 micro-batches per rank per step) with activation checkpointing on."""
    ds = json.loads((Path(__file__).resolve().parents[3] / "ds_configs" / "cpu_zero2.json").read_text())
    ds["gradient_accumulation_steps"] = 2
    ds_file = tmp_path / "accum2.json"
    ds_file.write_text(json.dumps(ds))
    run_dir = tmp_path / "accum"
    proc = launch(run_dir, "--set", "model.activation_checkpointing=true", ds=str(ds_file), steps=15)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    losses = mlflow_history(f"sqlite:///{run_dir / 'mlflow.db'}", summary["mlflow_run_id"], "train/loss")
    assert len(losses) == 3 and losses[-1] < losses[0], losses
    sequences = mlflow_history(f"sqlite:///{run_dir / 'mlflow.db'}", summary["mlflow_run_id"], "perf/sequences_per_s")
    assert all(v > 0 for v in sequences)


def test_bad_config_is_one_line_and_exit_1(launch, tmp_path):
    proc = launch(tmp_path / "bad", "--set", "optimizer.lrr=1", ranks=0, show_failure=False)
    assert proc.returncode != 0
    assert "unknown key optimizer.lrr" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_diverging_run_skips_steps_then_fails_the_mlflow_run(launch, tmp_path):
    """A learning rate that blows the weights up: non-finite steps are skipped and counted, and after
    run.max_consecutive_skips in a row the job stops with one clear line and the MLflow run is FAILED."""
    run_dir = tmp_path / "diverge"
    proc = launch(
        run_dir,
        "--set",
        "optimizer.lr=1e12",
        "--set",
        "schedule.warmup_steps=0",
        "--set",
        "run.max_consecutive_skips=2",
        "--set",
        "run.log_every=1",
        ranks=0,
        show_failure=False,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "steps in a row had a non-finite loss" in proc.stderr and "Traceback" not in proc.stderr
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{run_dir / 'mlflow.db'}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.status == "FAILED"
    assert run.data.metrics["train/skipped_steps"] >= 2
