"""DeepSpeed JSON configs as our jobs read them: validated, with the fields our batching owns filled in; the
precisions (and what "auto" picks on this machine)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from minprot_ds.errors import UserError


def read_ds_config(path: str | Path, *, flag: str, owner: str, micro_batch: int) -> dict[str, Any]:
    """Read a DeepSpeed JSON. `optimizer`/`scheduler` sections are refused (`owner` says who sets them);
    `micro_batch` fills train_micro_batch_size_per_gpu, which DeepSpeed only uses for bookkeeping here."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{flag} {path} does not exist; presets are in ds_configs/ (cpu_zero2.json on CPU).")
    try:
        ds = json.loads(path.read_text())
    except ValueError as err:
        raise UserError(f"{flag} {path} is not valid JSON: {err}.") from err
    for key in ("optimizer", "scheduler"):
        if key in ds:
            raise UserError(f"{flag} {path} sets '{key}'; remove it: {owner}.")
    return _book_micro_batch(ds, micro_batch)


def _book_micro_batch(ds: dict[str, Any], micro_batch: int) -> dict[str, Any]:
    # Batches are token-budgeted, so rows vary: the most rows a micro-batch may hold is what DeepSpeed books.
    ds["train_micro_batch_size_per_gpu"] = micro_batch
    ds.pop("train_batch_size", None)
    ds.setdefault("gradient_accumulation_steps", 1)
    return ds


PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def auto_precision(device_type: str | None = None) -> str:
    """What precision "auto" means on a device ("cuda" or "cpu"; None: this machine's, a GPU when there is one):
    bf16 on GPUs that have it (A100, H100), fp16 on older GPUs (V100), fp32 on CPU."""
    if device_type is None:
        device_type = "cuda" if torch.cuda.is_available() else "cpu"
    if device_type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def for_setting(base: dict[str, Any] | None, *, zero_stage: int, precision: str, micro_batch: int) -> dict[str, Any]:
    """A DeepSpeed config for one benchmark setting: `base` (a user's JSON, optional; its optimizer and
    scheduler sections dropped, the run config owns them) with the ZeRO stage and precision set."""
    ds = json.loads(
        json.dumps(base or {"gradient_clipping": 1.0, "steps_per_print": 10**9, "wall_clock_breakdown": False})
    )
    for key in ("optimizer", "scheduler", "fp16", "bf16", "bfloat16"):
        ds.pop(key, None)
    ds.setdefault("zero_optimization", {})["stage"] = zero_stage
    if precision == "fp16":
        ds["fp16"] = {"enabled": True, "loss_scale": 0, "initial_scale_power": 16}
    elif precision == "bf16":
        ds["bf16"] = {"enabled": True}
    ds["gradient_accumulation_steps"] = 1
    return _book_micro_batch(ds, micro_batch)


def precision(ds: dict[str, Any]) -> torch.dtype:
    """The run's half precision as the DeepSpeed config enables it (fp32 when neither is on)."""
    if ds.get("fp16", {}).get("enabled"):
        return torch.float16
    if ds.get("bf16", {}).get("enabled") or ds.get("bfloat16", {}).get("enabled"):
        return torch.bfloat16
    return torch.float32
