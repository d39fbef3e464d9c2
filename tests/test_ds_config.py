"""The one automatic precision pick (ds_config.auto_precision) and the callers that name it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from minprot_ds.distill.job import default_ds_config
from minprot_ds.ds_config import auto_precision
from minprot_ds.scoring.models import pick_precision


@pytest.mark.parametrize("bf16, expected", [(True, "bf16"), (False, "fp16")])
def test_auto_is_bf16_on_gpus_that_have_it_else_fp16(monkeypatch, bf16, expected):
    # No GPU here: the two questions torch answers about one are what the pick reads.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    assert auto_precision() == auto_precision("cuda") == expected
    assert pick_precision("auto", torch.device("cuda", 0)) == expected
    assert default_ds_config(Path("ds")).name == {"bf16": "zero2_bf16.json", "fp16": "zero2_v100_fp16.json"}[expected]


def test_auto_is_fp32_on_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert auto_precision() == auto_precision("cpu") == pick_precision("auto", torch.device("cpu")) == "fp32"
    assert default_ds_config(Path("ds")).name == "cpu_zero2.json"
