"""A model as a Hugging Face folder: `save_pretrained` (safetensors), the tokenizer files, and a JSON file
naming where it came from (`minprot.json` for a distilled student)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

from minprot_ds import __version__
from minprot_ds.fileio import read_json, write_json
from minprot_ds.models.family import family_of_config

METADATA = "minprot.json"

T = TypeVar("T")


def save_gathered(model: torch.nn.Module, rank: int, write: Callable[[], T]) -> T | None:
    """Run `write()` on rank 0 with the model's full weights in memory.

    Under ZeRO-3 each rank holds a slice of every parameter: all ranks must call this (the gather is a
    collective), and rank 0 writes while the full tensors are assembled. Elsewhere it just calls `write`.
    """
    import deepspeed  # lazy: importing it probes the accelerator; only saves from a DeepSpeed engine need it

    params = list(model.parameters())
    with deepspeed.zero.GatheredParameters(
        params, modifier_rank=None, enabled=bool(params) and hasattr(params[0], "ds_id")
    ):
        return write() if rank == 0 else None


def save_hf_folder(model: Any, out: str | Path, metadata_file: str, metadata: dict[str, Any]) -> Path:
    """`save_pretrained` (safetensors) + the tokenizer files of the model's family + a JSON file saying where it
    came from."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    family_of_config(model.config).vocab.write_tokenizer_files(out)
    write_json(out / metadata_file, {"minprot_version": __version__, **metadata})
    return out


def read_metadata(folder: str | Path) -> dict[str, Any]:
    """The provenance of an exported student (empty for models minprot did not export)."""
    path = Path(folder) / METADATA
    return read_json(path, "an exported student's provenance") if path.is_file() else {}
