"""Fixtures of the tracking tests (the real `mlflow server` fixtures live in tests/conftest.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An embedded store with MLflow's tables already created (creating them takes ~2 s)."""
    from mlflow import MlflowClient

    db = tmp_path_factory.mktemp("empty_store") / "mlflow.db"
    MlflowClient(f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def run_dir(tmp_path: Path, empty_store: Path) -> Path:
    """A run directory whose embedded store exists but holds nothing yet, as after a first start."""
    run = tmp_path / "run"
    run.mkdir()
    shutil.copyfile(empty_store, run / "mlflow.db")
    return run
