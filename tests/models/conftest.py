"""Tiny random BERTs saved in ProtBert's format, loaded through the same from_pretrained path users use."""
from __future__ import annotations

from pathlib import Path

import pytest

from minprot_ds.models import save_random_protbert


@pytest.fixture(scope="session")
def tiny_teacher_dir(tmp_path_factory) -> Path:
    """A 6-layer, 32-wide random teacher folder (config.json, model.safetensors, vocab and tokenizer files)."""
    return save_random_protbert(
        tmp_path_factory.mktemp("tiny_teacher"), num_layers=6, hidden_size=32, num_heads=4, intermediate_size=64, seed=1
    )
