"""Where a fine-tuned model came from, as MLflow tags: its role (teacher / student) and the distillation
run that produced a student (the exported folder's minprot.json names it)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from minprot_ds.errors import UserError
from minprot_ds.models.folders import read_metadata

log = logging.getLogger(__name__)

ROLES = ("teacher", "student", "auto")
TAG_TASK = "minprot.task"
TAG_DATASET = "minprot.dataset"
TAG_ROLE = "minprot.model_role"
TAG_DISTILL_RUN = "minprot.distill_run_id"
TAG_PARENT = "mlflow.parentRunId"  # MLflow's own: the UI nests the run under its parent


def model_provenance(model: str, role: str) -> tuple[str, dict[str, Any]]:
    """(role, minprot.json of the model folder or {}); auto = student when the folder has minprot.json."""
    if role not in ROLES:
        raise UserError(f"unknown --role {role!r}; choose one of: {', '.join(ROLES)}")
    folder = Path(model).expanduser()
    meta = read_metadata(folder) if folder.is_dir() else {}
    if role == "auto":
        role = "student" if meta else "teacher"
    return role, meta


def ensure_experiment(tracking_uri: str | None, name: str) -> None:
    """Create the experiment of a shared SQLite store with its artifacts beside the database.

    MLflow would otherwise put a SQLite store's artifacts in ./mlruns of whatever directory the job ran in.
    """
    if not tracking_uri or not tracking_uri.startswith("sqlite:///"):
        return
    from mlflow import MlflowClient

    db = Path(tracking_uri.removeprefix("sqlite:///"))
    client = MlflowClient(tracking_uri=tracking_uri)
    if client.get_experiment_by_name(name) is None:
        db.parent.mkdir(parents=True, exist_ok=True)
        client.create_experiment(name, artifact_location=(db.parent / "mlartifacts").resolve().as_uri())


def link_tags(meta: dict[str, Any], tracking_uri: str | None) -> dict[str, str]:
    """minprot.distill_run_id always (when known); mlflow.parentRunId only when that run is in this store."""
    run_id = meta.get("mlflow_run_id")
    if not run_id:
        return {}
    tags = {TAG_DISTILL_RUN: str(run_id)}
    if "step" in meta:
        tags["minprot.distill_step"] = str(meta["step"])
    if tracking_uri:
        from mlflow import MlflowClient

        try:
            MlflowClient(tracking_uri=tracking_uri).get_run(str(run_id))
        except Exception as exc:  # another store (the distillation's own SQLite file): keep the plain tag
            log.info(
                "distillation run %s is not in %s (%s); tagging it without a parent link", run_id, tracking_uri, exc
            )
        else:
            tags[TAG_PARENT] = str(run_id)
    return tags
