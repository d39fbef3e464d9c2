"""MLflow tracking for one job: a run on rank 0, no-ops on every other rank.

The training loop calls one `Tracker` object on every rank; only rank 0's is enabled, so the loop
needs no `if rank == 0`. The default store is embedded (SQLite in the run directory, artifacts beside
it); `tracking_uri` points at a server instead.

Decisions the rest of the system relies on:
- Resume: `resume_run_id` reopens that run, and metrics keep the caller's `global_step`, so a resumed
  job extends the same curves. MLflow params are immutable: on resume a param logged before with the
  same value is skipped, and a changed one is recorded as the tag `resume.<n>.param.<key>` (new value),
  where n counts resumes (tag `minprot.resumes`); the original param stays as it was.
- Failures after `start()` (server gone, disk full) never stop training: the first one logs a warning,
  the failed record and later ones wait in memory (bounded, oldest dropped first) and are retried at
  most every `retry_interval_s`, so an outage costs one blocked call per interval, not one per step.
  Records MLflow rejects as invalid are dropped with a warning (retrying cannot fix them).
  For servers, `start()` caps MLflow's HTTP retries (MLFLOW_HTTP_REQUEST_MAX_RETRIES=2,
  MLFLOW_HTTP_REQUEST_TIMEOUT=30) unless those variables are already set: MLflow's own default retries
  for ~4 minutes per call, which would stall a training step for as long.
- Failures in `start()` are raised as `UserError`: a job should not run for days untracked by mistake.
- Metric values that are not finite (NaN, ±inf) are logged as NaN: the step stays visible as a gap,
  and MLflow's SQL store would otherwise clamp ±inf to ±1.8e308, which flattens every chart.
- Param values longer than MLflow's limit are cut with a "...[truncated]" suffix; the full configs
  belong in artifacts.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import subprocess
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Mapping
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import Any

from minprot_ds.errors import UserError

log = logging.getLogger(__name__)

TERMINAL_STATUSES = ("FINISHED", "FAILED", "KILLED")
RESUME_COUNT_TAG = "minprot.resumes"
_TRUNCATED = "...[truncated]"
# MLflow log lines that are progress chatter, not problems (table creation, monitor start/stop).
_CHATTY_LOGGERS = ("mlflow.store.db.utils", "alembic", "mlflow.system_metrics")
# Errors that retrying cannot fix: the record itself is wrong.
_NON_RETRYABLE_CODES = {"INVALID_PARAMETER_VALUE", "RESOURCE_ALREADY_EXISTS", "BAD_REQUEST"}
ENV_PACKAGES = ("torch", "deepspeed", "transformers", "datasets", "mlflow", "minprot-ds")


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts become dotted keys: {"optim": {"lr": 1e-4}} -> {"optim.lr": 1e-4}."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, prefix=f"{name}."))
        else:
            flat[name] = value
    return flat


def environment_params() -> dict[str, str]:
    """Where the code came from and what it ran on: git commit, package versions, python, platform."""
    params = {"env.python": platform.python_version(), "env.platform": platform.platform()}
    for package in ENV_PACKAGES:
        try:
            params[f"env.version.{package}"] = metadata.version(package)
        except metadata.PackageNotFoundError:
            params[f"env.version.{package}"] = "not installed"
    params.update(_git_state(Path(__file__).resolve().parent))
    return params


def _git_state(where: Path) -> dict[str, str]:
    """Commit and dirtiness of the checkout holding the package; nothing when it is not a git checkout."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(where), *args], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {}  # installed from a wheel, no git binary, or a repo without commits
    return {"env.git_commit": commit, "env.git_dirty": str(dirty).lower()}


def _quiet_mlflow() -> None:
    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def _check_server(uri: str) -> None:
    """Fail at start, in one sentence, when an http(s) tracking server does not answer."""
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=10):
            pass
    except urllib.error.HTTPError:
        return  # it answered: some servers have no /health, that is fine
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UserError(
            f"cannot reach the MLflow tracking server at {uri} ({reason}); start it "
            f"(e.g. `mlflow server --host 127.0.0.1 --port 5000`) or drop --tracking-uri to use the "
            f"embedded store in the run directory"
        ) from exc


def _retryable(exc: Exception) -> bool:
    from mlflow.exceptions import MlflowException

    return not (isinstance(exc, MlflowException) and exc.error_code in _NON_RETRYABLE_CODES)


class Tracker:
    """One MLflow run, or nothing (`Tracker.disabled()`): every method is safe to call on every rank."""

    def __init__(
        self,
        client: Any = None,
        run_id: str | None = None,
        tracking_uri: str | None = None,
        *,
        resume_index: int = 0,
        retry_interval_s: float = 60.0,
        max_pending: int = 10_000,
    ) -> None:
        self._client = client
        self._run_id = run_id
        self.tracking_uri = tracking_uri
        self.resume_index = resume_index  # 0 for a new run, n for the n-th resume
        self.retry_interval_s = retry_interval_s
        self._pending: deque[tuple[str, Callable[[], None]]] = deque(maxlen=max_pending)
        self._failed_at: float | None = None
        self.dropped = 0  # records lost for good (invalid, or pushed out of a full buffer)
        self._monitor: Any = None
        self._ended = client is None

    # ---- construction -------------------------------------------------------------------------

    @classmethod
    def disabled(cls) -> Tracker:
        """The tracker of ranks other than 0 (and of runs with tracking off): all methods do nothing."""
        return cls()

    @classmethod
    def start(
        cls,
        *,
        tracking_uri: str | None,
        run_dir: Path,
        experiment: str,
        run_name: str | None,
        resume_run_id: str | None,
        enabled: bool = True,
        system_metrics: bool = True,
        system_metrics_interval_s: float = 10.0,
        retry_interval_s: float = 60.0,
    ) -> Tracker:
        """Open a new run in `experiment`, or reopen `resume_run_id`; `enabled=False` gives a no-op."""
        if not enabled:
            return cls.disabled()
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        _quiet_mlflow()
        run_dir = Path(run_dir).resolve()
        embedded = tracking_uri is None
        if embedded:
            run_dir.mkdir(parents=True, exist_ok=True)
            tracking_uri = f"sqlite:///{run_dir / 'mlflow.db'}"
        elif tracking_uri.startswith(("http://", "https://")):
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
            _check_server(tracking_uri)
        client = MlflowClient(tracking_uri=tracking_uri)
        try:
            if resume_run_id is not None:
                run_id, resume_index = cls._reopen(client, resume_run_id, tracking_uri)
            else:
                experiment_id = cls._experiment_id(client, experiment, run_dir if embedded else None)
                run_id = client.create_run(experiment_id, run_name=run_name).info.run_id
                resume_index = 0
        except MlflowException as exc:
            raise UserError(
                f"MLflow at {tracking_uri} refused to open the run ({exc.message}); check --tracking-uri "
                f"and the experiment name {experiment!r}"
            ) from exc
        tracker = cls(client, run_id, tracking_uri, resume_index=resume_index, retry_interval_s=retry_interval_s)
        if system_metrics:
            tracker._start_system_metrics(system_metrics_interval_s, resumed=resume_index > 0)
        log.info("MLflow run %s at %s", run_id, tracking_uri)
        return tracker

    @staticmethod
    def _experiment_id(client: Any, name: str, run_dir: Path | None) -> str:
        existing = client.get_experiment_by_name(name)
        if existing is not None:
            return existing.experiment_id
        # A SQLite store has no artifact root of its own (MLflow would use ./mlruns in the current
        # directory); keep artifacts in the run directory beside the database. A server decides itself.
        location = (run_dir / "mlartifacts").as_uri() if run_dir is not None else None
        return client.create_experiment(name, artifact_location=location)

    @staticmethod
    def _reopen(client: Any, run_id: str, uri: str) -> tuple[str, int]:
        from mlflow.exceptions import MlflowException

        try:
            run = client.get_run(run_id)
        except MlflowException as exc:
            raise UserError(
                f"the MLflow run {run_id} recorded in the checkpoint is not in the store at {uri}; resume "
                f"with the same --tracking-uri (or run directory) as the original job"
            ) from exc
        resume_index = int(run.data.tags.get(RESUME_COUNT_TAG, "0")) + 1
        client.update_run(run_id, status="RUNNING")
        client.set_tag(run_id, RESUME_COUNT_TAG, str(resume_index))
        return run_id, resume_index

    def _start_system_metrics(self, interval_s: float, resumed: bool) -> None:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        try:
            self._monitor = SystemMetricsMonitor(
                self._run_id, sampling_interval=interval_s, resume_logging=resumed, tracking_uri=self.tracking_uri
            )
            self._monitor.start()
        except Exception as exc:  # system metrics are a nicety; never stop a run for them
            log.warning("MLflow system metrics are off for this run: %s", exc)
            self._monitor = None

    # ---- state --------------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        return self._client is not None

    @property
    def run_id(self) -> str | None:
        return self._run_id

    @property
    def pending(self) -> int:
        """Records waiting for the store to come back."""
        return len(self._pending)

    # ---- logging ------------------------------------------------------------------------------

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log (nested) params; on a resumed run, unchanged ones are skipped, changed ones become tags."""
        if not self.enabled:
            return
        from mlflow.entities import Param, RunTag
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

        flat = {key: _as_param(value, MAX_PARAM_VAL_LENGTH) for key, value in flatten(params).items()}
        tags: dict[str, str] = {}
        if self.resume_index > 0:
            logged = self._logged_params()
            changed = {k: v for k, v in flat.items() if k in logged and logged[k] != v}
            tags = {f"resume.{self.resume_index}.param.{k}": v for k, v in changed.items()}
            flat = {k: v for k, v in flat.items() if k not in logged}
        entities = [Param(k, v) for k, v in flat.items()]
        tag_entities = [RunTag(k, v) for k, v in tags.items()]
        if entities or tag_entities:
            self._submit("params", lambda: self._client.log_batch(self._run_id, params=entities, tags=tag_entities))

    def _logged_params(self) -> dict[str, str]:
        try:
            return dict(self._client.get_run(self._run_id).data.params)
        except Exception as exc:  # store unreachable: log everything; duplicates with equal values are accepted
            log.warning("could not read the params of MLflow run %s (%s); logging all of them", self._run_id, exc)
            return {}

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        """Log one step's metrics in one batch; values are floats (tensors and numpy scalars work)."""
        if not self.enabled:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        entities = []
        for key, value in metrics.items():
            if value is None:
                continue
            value = float(value)
            entities.append(Metric(key, value if math.isfinite(value) else math.nan, now, int(step)))
        if entities:
            self._submit(f"metrics at step {step}", lambda: self._client.log_batch(self._run_id, metrics=entities))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        from mlflow.entities import RunTag

        entities = [RunTag(k, str(v)) for k, v in flatten(tags).items()]
        if entities:
            self._submit("tags", lambda: self._client.log_batch(self._run_id, tags=entities))

    def log_artifact(self, path: Path | str, artifact_path: str | None = None) -> None:
        """Upload a file, or a directory's contents, under `artifact_path` of the run's artifacts."""
        if not self.enabled:
            return
        path = Path(path)
        if not path.exists():
            log.warning("not logging %s to MLflow: it does not exist", path)
            return
        if path.is_dir():
            self._submit(
                f"artifacts {path}", lambda: self._client.log_artifacts(self._run_id, str(path), artifact_path)
            )
        else:
            self._submit(f"artifact {path}", lambda: self._client.log_artifact(self._run_id, str(path), artifact_path))

    def log_dict(self, obj: Mapping[str, Any], artifact_file: str) -> None:
        """A dict as a JSON (or .yaml) artifact, e.g. the resolved config."""
        if self.enabled:
            self._submit(artifact_file, lambda: self._client.log_dict(self._run_id, dict(obj), artifact_file))

    def log_text(self, text: str, artifact_file: str) -> None:
        if self.enabled:
            self._submit(artifact_file, lambda: self._client.log_text(self._run_id, text, artifact_file))

    # ---- failure handling ---------------------------------------------------------------------

    def _submit(self, what: str, call: Callable[[], None]) -> None:
        """Run `call` now, or queue it behind earlier failures; never raise."""
        if self._pending:
            if time.monotonic() - (self._failed_at or 0.0) < self.retry_interval_s:
                self._enqueue(what, call)
                return
            if not self.flush():
                self._enqueue(what, call)
                return
        self._attempt(what, call)

    def _attempt(self, what: str, call: Callable[[], None]) -> bool:
        try:
            call()
            return True
        except Exception as exc:
            if not _retryable(exc):
                self.dropped += 1
                log.warning("MLflow rejected %s of run %s and it is dropped: %s", what, self._run_id, exc)
                return True
            if not self._pending:
                log.warning(
                    "MLflow tracking at %s failed (%s); training goes on, records are kept in memory and "
                    "retried every %.0f s",
                    self.tracking_uri,
                    exc,
                    self.retry_interval_s,
                )
            self._failed_at = time.monotonic()
            self._enqueue(what, call)
            return False

    def _enqueue(self, what: str, call: Callable[[], None]) -> None:
        if len(self._pending) == self._pending.maxlen:
            self.dropped += 1  # the deque drops the oldest record
        self._pending.append((what, call))

    def flush(self) -> bool:
        """Retry the records kept since a failure, in order; True when none are left."""
        if not self._pending:
            return True
        count = len(self._pending)
        while self._pending:
            what, call = self._pending[0]
            try:
                call()
            except Exception as exc:
                if _retryable(exc):
                    self._failed_at = time.monotonic()
                    return False
                self.dropped += 1
                log.warning("MLflow rejected %s of run %s and it is dropped: %s", what, self._run_id, exc)
            self._pending.popleft()
        log.warning("MLflow tracking at %s is back; %d delayed records written", self.tracking_uri, count)
        return True

    # ---- end ----------------------------------------------------------------------------------

    def end(self, status: str = "FINISHED") -> None:
        """Stop system metrics, write what is pending, and mark the run; calling it twice is harmless."""
        if status not in TERMINAL_STATUSES:
            raise ValueError(f"run status must be one of {TERMINAL_STATUSES}, not {status!r}")
        if self._ended:
            return
        self._ended = True
        if self._monitor is not None:
            self._monitor.finish()
            self._monitor = None
        if not self.flush():
            log.warning("MLflow: %d records of run %s could not be written and are lost", self.pending, self._run_id)
        try:
            self._client.set_terminated(self._run_id, status=status)
        except Exception as exc:
            log.warning("could not mark MLflow run %s as %s: %s", self._run_id, status, exc)

    def __enter__(self) -> Tracker:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.end("FINISHED")
        elif issubclass(exc_type, (KeyboardInterrupt, SystemExit)):
            # Ctrl-C, a scheduler's SIGTERM turned into SystemExit, or sys.exit(0) after a clean stop.
            clean = issubclass(exc_type, SystemExit) and exc is not None and exc.code in (0, None)
            self.end("FINISHED" if clean else "KILLED")
        else:
            self.end("FAILED")


def _as_param(value: Any, limit: int) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - len(_TRUNCATED)] + _TRUNCATED
