"""Fixtures every test area shares."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from minprot_ds.distributed import free_port  # torch.distributed only: imports nothing of triton

# DeepSpeed JIT-builds its shm op into TORCH_EXTENSIONS_DIR (default ~/.cache/torch_extensions). Its
# build.ninja names this venv's paths, so two checkouts sharing that folder rebuild in turn, and a build
# killed mid-way leaves a lock every later rank waits on forever. Keep this venv's builds in the venv.
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(sys.prefix) / "torch_extensions"))

# Triton fixes compile-vs-interpret when triton.language is first imported (transformers imports it), so
# the fused-loss tests' CPU mode must be chosen here, before any test area's conftest or module loads.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

REPO = Path(__file__).resolve().parents[1]

# What a launcher exports to its ranks. In-process tests join a one-rank group through init_distributed,
# which exports these into this process; a child process started later (a plain `python launch/distill.py`,
# a CLI) would take them for a launcher's and try to join this process's group. After each test they are as
# the session found them (LOCAL_RANK stays: DeepSpeed reads it whenever an in-process engine is built, and
# alone it makes no child join anything); an in-process test that needs them calls init_distributed again.
LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
_SESSION_LAUNCHER_ENV = {key: os.environ.get(key) for key in LAUNCHER_VARS}


@pytest.fixture(autouse=True)
def _launcher_variables_do_not_leak():
    yield
    for key, value in _SESSION_LAUNCHER_ENV.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def tiny_teacher_dir(tmp_path_factory) -> Path:
    """A 6-layer, 32-wide random teacher saved in ProtBert's format (config.json, model.safetensors, vocab and
    tokenizer files), loaded through the same from_pretrained path users use."""
    from minprot_ds.models.masked_lm import save_random_protbert

    return save_random_protbert(
        tmp_path_factory.mktemp("tiny_teacher"), num_layers=6, hidden_size=32, num_heads=4, intermediate_size=64, seed=1
    )


@pytest.fixture(scope="session")
def tiny_esm_teacher_dir(tmp_path_factory) -> Path:
    """A 4-layer, 32-wide random ESM-2 teacher (EsmForMaskedLM: rotary positions, token dropout, final layer
    norm, 33 tokens) saved with save_pretrained and EsmTokenizer's files."""
    from minprot_ds.models.masked_lm import save_random_esm2

    return save_random_esm2(
        tmp_path_factory.mktemp("tiny_esm_teacher"), num_layers=4, hidden_size=32, num_heads=4, intermediate_size=64
    )


TINY = dict(num_layers=2, hidden_size=32, num_heads=4, intermediate_size=64)


@pytest.fixture(scope="session")
def teacher_dir(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide random teacher in ProtBert's format (fine-tune and scoring tests)."""
    from minprot_ds.models.masked_lm import save_random_protbert

    return save_random_protbert(tmp_path_factory.mktemp("teacher") / "model", seed=0, **TINY)


@pytest.fixture(scope="session")
def student_dir(tmp_path_factory) -> Path:
    """A student without a distillation run in any store (unit tests)."""
    return make_student(tmp_path_factory.mktemp("student") / "model", "no-such-run")


@pytest.fixture(name="make_student", scope="session")
def _make_student():
    """make_student(folder, distill_run_id, step=10) for tests that build students of their own."""
    return make_student


def make_student(folder: Path, distill_run_id: str, step: int = 10) -> Path:
    """A 1-layer random student with the minprot.json an exported student carries."""
    from minprot_ds.models.masked_lm import save_random_protbert

    save_random_protbert(folder, seed=1, **(TINY | {"num_layers": 1}))
    (folder / "minprot.json").write_text(json.dumps({"mlflow_run_id": distill_run_id, "step": step, "teacher": "tiny"}))
    return folder


@pytest.fixture
def cli_error(capsys):
    """cli_error(*args, code=1): run `minprot ARGS`, expect exit `code` without a traceback (code 1: one line on
    stderr, a UserError) and return stderr with its whitespace folded."""
    from minprot_ds.cli import app
    from minprot_ds.cli.common import run_cli

    def run(*args: str, code: int = 1) -> str:
        with pytest.raises(SystemExit) as exit_:
            run_cli(app, list(args))
        err = capsys.readouterr().err
        assert exit_.value.code == code, err
        assert "Traceback" not in err
        if code == 1:
            assert len(err.strip().splitlines()) == 1, err
        return " ".join(err.split())

    return run


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real public datasets in ../shared/data (never copied into the project)."""
    data = SHARED / "data"
    if not data.is_dir():
        pytest.skip(f"needs the shared datasets at {data} (../shared beside the checkout), which is absent")
    return data


@pytest.fixture(scope="session")
def shared_reference() -> Path:
    """ProtBert's reference vocabulary and config in ../shared/reference."""
    ref = SHARED / "reference"
    if not ref.is_dir():
        pytest.skip(f"needs the shared reference files at {ref} (../shared beside the checkout), which is absent")
    return ref


# --- a real `mlflow server` on loopback (no mocks of MLflow) ---------------------------------------

MLFLOW = Path(sys.executable).parent / "mlflow"
# Tests never phone home (MLflow 3 sends usage telemetry by default).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


@dataclass
class MlflowServer:
    """A server process over a SQLite store; `stop()` / `start()` simulate an outage on the same port."""

    db: Path
    artifacts: Path
    port: int
    log: Path
    process: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 90.0) -> None:
        # No GenAI job runner: its three huey consumer processes would poll and take CPU from the ranks.
        env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    str(MLFLOW),
                    "server",
                    "--backend-store-uri",
                    f"sqlite:///{self.db}",
                    "--artifacts-destination",
                    str(self.artifacts),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--workers",
                    "1",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"mlflow server exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}"
                )
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(
            f"mlflow server did not answer /health within {timeout_s} s:\n{self.log.read_text()[-3000:]}"
        )

    def stop(self) -> None:
        """Stop the server we started (its own process group: the server forks uvicorn workers)."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None


def _server(root: Path) -> MlflowServer:
    root.mkdir(parents=True, exist_ok=True)
    return MlflowServer(db=root / "mlflow.db", artifacts=root / "artifacts", port=free_port(), log=root / "server.log")


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URI of a real `mlflow server` (SQLite store, proxied artifacts) shared by the session's tests."""
    server = _server(tmp_path_factory.mktemp("mlflow_server"))
    server.start()
    try:
        yield server.uri
    finally:
        server.stop()


@pytest.fixture
def own_mlflow_server(tmp_path: Path) -> Iterator[MlflowServer]:
    """A server the test may stop and restart (outage tests); stopped at the end whatever happens."""
    server = _server(tmp_path / "server")
    server.start()
    try:
        yield server
    finally:
        server.stop()
