"""Tracker against MLflow's embedded SQLite store and a real `mlflow server` (see conftest.py)."""

from __future__ import annotations

import json
import logging
import math
import subprocess
import threading
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from minprot_ds.distributed import free_port
from minprot_ds.errors import UserError
from minprot_ds.tracking import Tracker, _git_state, environment_params, flatten


def start(run_dir: Path, uri: str | None = None, **kwargs) -> Tracker:
    kwargs.setdefault("system_metrics", False)
    kwargs.setdefault("run_name", "test")
    kwargs.setdefault("resume_run_id", None)
    return Tracker.start(tracking_uri=uri, run_dir=run_dir, experiment=kwargs.pop("experiment", "distill"), **kwargs)


def store_uri(run_dir: Path, uri: str | None) -> str:
    return uri or f"sqlite:///{run_dir.resolve() / 'mlflow.db'}"


def steps(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def artifact_paths(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    found: set[str] = set()
    for info in client.list_artifacts(run_id, path):
        found |= artifact_paths(client, run_id, info.path) if info.is_dir else {info.path}
    return found


def record_a_run(run_dir: Path, uri: str | None, files: Path) -> str:
    """What the engine does in a short job: params, metrics, artifacts, tags."""
    (files / "model").mkdir(parents=True)
    (files / "model" / "config.json").write_text('{"hidden_size": 8}')
    (files / "run.toml").write_text("[optim]\nlr = 5e-5\n")
    with start(run_dir, uri) as tracker:
        tracker.log_params({"optim": {"lr": 5e-5, "betas": [0.9, 0.999]}, "note": "x" * 10_000})
        for step in range(3):
            tracker.log_metrics({"loss/total": 3.0 - step, "lr": 1e-5 * step}, step=step)
        tracker.log_metrics({"loss/kd": float("nan"), "grad_norm": float("inf")}, step=3)
        tracker.log_artifact(files / "run.toml", "config")
        tracker.log_artifact(files / "model", "student")
        tracker.log_dict({"train_micro_batch_size_per_gpu": 4}, "config/deepspeed.json")
        tracker.set_tags({"teacher": "Rostlab/prot_bert"})
        return tracker.run_id


def check_recorded_run(client: MlflowClient, run_id: str) -> None:
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["optim.lr"] == "5e-05"
    assert run.data.params["optim.betas"] == "[0.9, 0.999]"
    assert run.data.params["note"].endswith("...[truncated]") and len(run.data.params["note"]) < 10_000
    assert run.data.tags["teacher"] == "Rostlab/prot_bert"
    assert steps(client, run_id, "loss/total") == [(0, 3.0), (1, 2.0), (2, 1.0)]
    # Non-finite values are kept as NaN at their step, not clamped to ±1.8e308.
    assert math.isnan(steps(client, run_id, "loss/kd")[0][1]) and steps(client, run_id, "loss/kd")[0][0] == 3
    assert math.isnan(steps(client, run_id, "grad_norm")[0][1])
    assert artifact_paths(client, run_id) == {"config/run.toml", "config/deepspeed.json", "student/config.json"}
    saved = client.download_artifacts(run_id, "config/deepspeed.json")
    assert json.loads(Path(saved).read_text()) == {"train_micro_batch_size_per_gpu": 4}


def resume_a_run(run_dir: Path, uri: str | None) -> str:
    first = start(run_dir, uri)
    first.log_params({"optim": {"lr": 5e-5}, "max_steps": 4})
    for step in range(2):
        first.log_metrics({"loss": 10.0 - step}, step=step)
    first.end("KILLED")  # the job was preempted

    second = start(run_dir, uri, resume_run_id=first.run_id)
    assert second.run_id == first.run_id
    second.log_params({"optim": {"lr": 5e-5}, "max_steps": 8, "seed": 1})
    for step in range(2, 4):
        second.log_metrics({"loss": 10.0 - step}, step=step)
    second.end()
    return first.run_id


def check_resumed_run(client: MlflowClient, run_id: str) -> None:
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert steps(client, run_id, "loss") == [(0, 10.0), (1, 9.0), (2, 8.0), (3, 7.0)]
    assert run.data.params == {"optim.lr": "5e-05", "max_steps": "4", "seed": "1"}
    assert run.data.tags["resume.1.param.max_steps"] == "8"
    assert run.data.tags["minprot.resumes"] == "1"
    assert not any(tag.startswith("resume.1.param.optim") for tag in run.data.tags)  # unchanged: skipped


# ---- embedded store ---------------------------------------------------------------------------


def test_embedded_store_records_params_metrics_and_artifacts(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # MLflow's fallback artifact root would be ./mlruns here
    run_dir = tmp_path / "run"
    run_id = record_a_run(run_dir, None, tmp_path / "files")
    check_recorded_run(MlflowClient(store_uri(run_dir, None)), run_id)
    assert (run_dir / "mlflow.db").is_file()
    assert (run_dir / "mlartifacts").is_dir() and not (tmp_path / "mlruns").exists()


def test_resume_continues_the_same_run(run_dir: Path) -> None:
    run_id = resume_a_run(run_dir, None)
    check_resumed_run(MlflowClient(store_uri(run_dir, None)), run_id)


def test_exception_marks_the_run_failed_and_interrupt_killed(run_dir: Path) -> None:
    client = MlflowClient(store_uri(run_dir, None))
    with pytest.raises(ZeroDivisionError):
        with start(run_dir) as tracker:
            tracker.log_metrics({"loss": 1.0}, step=0)
            1 / 0  # noqa: B018 - a real exception in the training loop
    assert client.get_run(tracker.run_id).info.status == "FAILED"
    assert steps(client, tracker.run_id, "loss") == [(0, 1.0)]

    with pytest.raises(KeyboardInterrupt):
        with start(run_dir) as tracker:
            raise KeyboardInterrupt
    assert client.get_run(tracker.run_id).info.status == "KILLED"


def test_disabled_tracker_does_nothing(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a")
    for tracker in (Tracker.disabled(), start(tmp_path / "run", enabled=False)):
        with tracker:
            assert tracker.run_id is None and not tracker.enabled
            tracker.log_params({"a": {"b": 1}})
            tracker.log_metrics({"loss": 1.0}, step=0)
            tracker.log_artifact(tmp_path / "a.txt")
            tracker.log_dict({"a": 1}, "a.json")
            tracker.log_text("a", "a.txt")
            tracker.set_tags({"a": 1})
        tracker.end("FAILED")
    assert not (tmp_path / "run").exists()


def test_system_metrics_are_logged_and_their_thread_stops(run_dir: Path, monkeypatch) -> None:
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    published = threading.Event()
    publish = SystemMetricsMonitor.publish_metrics

    def publish_and_tell(self, metrics):
        publish(self, metrics)
        published.set()

    monkeypatch.setattr(SystemMetricsMonitor, "publish_metrics", publish_and_tell)
    tracker = start(run_dir, system_metrics=True, system_metrics_interval_s=0.2)
    # Wait for the monitor's first sample, however slow the machine (the bound only stops a hung test).
    assert published.wait(timeout=300), "the system-metrics monitor published nothing in 300 s"
    tracker.end()
    assert not any(t.name == "SystemMetricsMonitor" for t in threading.enumerate())
    metrics = MlflowClient(store_uri(run_dir, None)).get_run(tracker.run_id).data.metrics
    assert "system/cpu_utilization_percentage" in metrics


def test_rejected_record_warns_and_training_goes_on(run_dir: Path, caplog) -> None:
    tracker = start(run_dir)
    tracker.log_params({"lr": 1.0})
    with caplog.at_level(logging.WARNING, logger="minprot_ds.tracking"):
        tracker.log_params({"lr": 2.0})  # params are immutable within a run: MLflow refuses
    assert tracker.dropped == 1 and tracker.pending == 0
    assert "rejected params" in caplog.text
    tracker.log_metrics({"loss": 1.0}, step=0)
    tracker.end()
    assert steps(MlflowClient(store_uri(run_dir, None)), tracker.run_id, "loss") == [(0, 1.0)]


def test_unreachable_server_is_a_user_error(tmp_path: Path) -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(UserError, match=f"cannot reach the MLflow tracking server at {uri}.*--tracking-uri"):
        start(tmp_path, uri)


def test_resuming_an_unknown_run_is_a_user_error(run_dir: Path) -> None:
    with pytest.raises(UserError, match="0123456789abcdef.*not in the store"):
        start(run_dir, resume_run_id="0123456789abcdef")


def test_flatten_uses_dotted_keys() -> None:
    assert flatten({"a": {"b": {"c": 1}, "d": 2}, "e": 3}) == {"a.b.c": 1, "a.d": 2, "e": 3}


def test_environment_params_name_the_code_and_packages(tmp_path: Path) -> None:
    params = environment_params()
    for package in ("torch", "deepspeed", "transformers", "datasets", "mlflow", "minprot-ds"):
        assert params[f"env.version.{package}"]
    assert params["env.python"].count(".") == 2
    repo = Path(__file__).resolve().parents[2]
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:
        assert params["env.git_commit"] == head.stdout.strip()
        assert params["env.git_dirty"] in ("true", "false")
    assert _git_state(tmp_path) == {}  # not a checkout: no git keys, no error


# ---- real server ------------------------------------------------------------------------------


@pytest.mark.slow
def test_server_records_params_metrics_and_artifacts(mlflow_server: str, tmp_path: Path) -> None:
    run_id = record_a_run(tmp_path / "run", mlflow_server, tmp_path / "files")
    check_recorded_run(MlflowClient(mlflow_server), run_id)
    assert not (tmp_path / "run" / "mlflow.db").exists()  # the server's store, not an embedded one


@pytest.mark.slow
def test_server_resume_continues_the_same_run(mlflow_server: str, tmp_path: Path) -> None:
    run_id = resume_a_run(tmp_path / "run", mlflow_server)
    check_resumed_run(MlflowClient(mlflow_server), run_id)


@pytest.mark.slow
def test_server_failure_marks_the_run_failed(mlflow_server: str, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with start(tmp_path, mlflow_server, system_metrics=True, system_metrics_interval_s=0.2) as tracker:
            tracker.log_metrics({"loss": 1.0}, step=0)
            raise RuntimeError("boom")
    assert MlflowClient(mlflow_server).get_run(tracker.run_id).info.status == "FAILED"
    assert not any(t.name == "SystemMetricsMonitor" for t in threading.enumerate())


@pytest.mark.slow
def test_server_outage_keeps_training_and_catches_up(own_mlflow_server, tmp_path: Path, caplog) -> None:
    server = own_mlflow_server
    tracker = start(tmp_path, server.uri, retry_interval_s=0.0)
    tracker.log_metrics({"loss": 3.0}, step=0)
    server.stop()
    with caplog.at_level(logging.WARNING, logger="minprot_ds.tracking"):
        began = time.monotonic()
        tracker.log_metrics({"loss": 2.0}, step=1)  # must not raise
        blocked_s = time.monotonic() - began
    assert tracker.pending == 1 and "training goes on" in caplog.text
    print(f"a failed log call blocked for {blocked_s:.1f} s")
    assert blocked_s < 30, f"a failed log call blocked training for {blocked_s:.0f} s"
    server.start()
    tracker.log_metrics({"loss": 1.0}, step=2)  # writes the delayed step 1 first
    tracker.end()
    assert tracker.pending == 0
    client = MlflowClient(server.uri)
    assert steps(client, tracker.run_id, "loss") == [(0, 3.0), (1, 2.0), (2, 1.0)]
    assert client.get_run(tracker.run_id).info.status == "FINISHED"
