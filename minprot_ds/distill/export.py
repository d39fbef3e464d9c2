"""`minprot export`: the student of a distillation checkpoint as a Hugging Face folder, with `minprot.json`
naming where it came from (MLflow run id, step, teacher, chosen layers)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from minprot_ds.distill.checkpoint import latest_checkpoint, read_marker
from minprot_ds.errors import UserError
from minprot_ds.fileio import read_json
from minprot_ds.models.family import family_of_config
from minprot_ds.models.folders import METADATA, read_metadata, save_hf_folder
from minprot_ds.outputs import check_out

STUDENT_CONFIG = "student_config.json"  # saved in the run dir at start, so checkpoints can be exported


def export_student(model: Any, out: str | Path, metadata: dict[str, Any]) -> Path:
    """Save a student (BertForMaskedLM or EsmForMaskedLM, full weights in memory) with its family's tokenizer
    files and provenance metadata."""
    return save_hf_folder(model, out, METADATA, metadata)


def student_provenance(config: Any) -> dict[str, Any]:
    """The teacher layers a student was made from, as build_student recorded them in its config."""
    return {
        "teacher_layers": getattr(config, "minprot_teacher_layers", None),
        "layer_strategy": getattr(config, "minprot_layer_strategy", None),
        "layer_seed": getattr(config, "minprot_layer_seed", None),
    }


def export_checkpoint(checkpoint: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """Export the student of a checkpoint folder (RUN/ckpt/global_stepN) or of a run dir's newest one. An
    existing --out is replaced only when it is the export of the same checkpoint, or with `overwrite`."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    path = Path(checkpoint)
    if not path.is_dir():
        what = "does not exist" if not path.exists() else "is a file"
        raise UserError(f"{path} {what}; pass a run dir or RUN_DIR/ckpt/global_stepN")
    if (path / "ckpt").is_dir():  # a run dir
        folder = latest_checkpoint(path / "ckpt")
        if folder is None:
            raise UserError(f"run dir {path} has no complete checkpoint to export.")
    else:
        folder = path
    run_dir = folder.parent.parent
    if not (run_dir / STUDENT_CONFIG).is_file():
        raise UserError(
            f"{folder} is not a checkpoint of a minprot run (no {STUDENT_CONFIG} in {run_dir}); "
            "pass RUN_DIR or RUN_DIR/ckpt/global_stepN."
        )
    state = read_marker(folder)

    def same_checkpoint(existing: Path) -> bool:
        return (existing / METADATA).is_file() and read_metadata(existing).get("checkpoint") == str(folder)

    check_out(out, folder=True, overwrite=overwrite, ours=same_checkpoint)
    family = family_of_config(read_json(run_dir / STUDENT_CONFIG, "the run's student config"), "student")
    config = family.config_class.from_json_file(str(run_dir / STUDENT_CONFIG))
    with torch.device("meta"):
        model = family.masked_lm_class(config)
    try:
        weights = get_fp32_state_dict_from_zero_checkpoint(str(folder.parent), tag=folder.name)
    except (RuntimeError, OSError, EOFError, ValueError, KeyError, pickle.UnpicklingError) as err:
        raise UserError(
            f"checkpoint {folder} cannot be read ({type(err).__name__}: {str(err).splitlines()[0][:200]}); it is "
            "truncated or corrupt: export an earlier global_stepN"
        ) from None
    # The DeepSpeed module wraps the HF model as `.mlm` (see engine.StudentForLoss).
    weights = {k.removeprefix("mlm."): v for k, v in weights.items()}
    model.load_state_dict(weights, strict=False, assign=True)
    model.tie_weights()
    missing = [n for n, p in model.named_parameters() if p.is_meta]
    if missing:
        raise UserError(f"checkpoint {folder} lacks student weights {missing[:3]}...; it is not a minprot checkpoint.")
    meta = {
        "mlflow_run_id": state.mlflow_run_id,
        "step": state.step,
        "consumed_samples": state.consumed_samples,
        "checkpoint": str(folder),
        **student_provenance(config),
    }
    return export_student(model, out, meta)
