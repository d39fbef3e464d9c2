"""The step profiler's op families, GEMM operand shapes, and benchmarks/step_profile.py end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minprot_ds.bench.profile import FAMILIES, bare_gemm_gflops, mm_operands, op_family, profile_loop

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("aten::mm", "gemm"),
        ("aten::addmm", "gemm"),
        ("aten::bmm", "gemm"),
        ("aten::_scaled_dot_product_flash_attention_for_cpu", "attention"),
        ("aten::_log_softmax_backward_data", "softmax_norm"),
        ("aten::native_layer_norm", "softmax_norm"),
        ("aten::copy_", "indexing_copy"),
        ("aten::index_select", "indexing_copy"),
        ("aten::masked_select", "indexing_copy"),
        ("aten::gelu", "elementwise"),
        ("aten::add_", "elementwise"),
        ("gloo:all_reduce", "communication"),
        ("Optimizer.step#AdamW.step", "other"),
    ],
)
def test_op_families(name, family):
    assert op_family(name) == family
    assert op_family(name, in_optimizer=True) == "optimizer"


def test_mm_operands():
    assert mm_operands("aten::mm", [[64, 256], [256, 1024]]) == ([64, 256], [256, 1024])
    assert mm_operands("aten::addmm", [[1024], [64, 256], [256, 1024], [], []]) == ([64, 256], [256, 1024])
    assert mm_operands("aten::bmm", [[4, 8, 16], [4, 16, 8]]) == ([4, 8, 16], [4, 16, 8])
    assert mm_operands("aten::mm", [[64, 256], [128, 1024]]) is None


def test_profile_of_a_small_training_loop():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.LayerNorm(256), torch.nn.Linear(256, 8)
    )
    opt = torch.optim.AdamW(model.parameters())

    def step():
        x = torch.randn(32, 64)
        model(x).square().mean().backward()
        opt.step()
        opt.zero_grad()
        return 32, 30

    p = profile_loop("toy", step, steps=3)
    assert (p.tokens, p.residues, p.steps) == (96, 90, 3)
    assert set(p.self_s) <= set(FAMILIES)
    assert p.self_s["gemm"] > 0 and p.self_s["optimizer"] > 0 and p.self_s["softmax_norm"] > 0
    # forward 2 GEMMs + backward 3 (the first layer's input needs no gradient), 2*M*K*N each, per step
    assert p.gemm_flops == pytest.approx(3 * 2 * 32 * (64 * 256 + 256 * 8) * 2 + 3 * 2 * 32 * 256 * 8, rel=0.01)
    assert p.gemm_shapes and p.gemm_shapes[0]["op"] in ("aten::mm", "aten::addmm")
    assert bare_gemm_gflops([64, 64], [64, 64], repeats=2, min_seconds=0.01) > 0


@pytest.mark.slow
def test_step_profile_script(tmp_path):
    out = tmp_path / "profile.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "step_profile.py"),
            "--steps",
            "2",
            "--warmup",
            "1",
            "--sequences",
            "400",
            "--max-tokens",
            "2048",
            "--naive-batch-size",
            "8",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "step time by op family" in proc.stdout and "GEMM rate" in proc.stdout
    report = json.loads(out.read_text())
    assert report["benchmark"] == "step_profile" and "cpu_count" in report["machine"]
    engine, naive = report["loops"]
    for loop in (engine, naive):
        assert loop["steps"] == 2 and loop["tokens"] > loop["residues"] > 0
        assert loop["self_s"]["gemm"] > 0 and loop["gemm_gflops_per_s"] > 0
        assert sum(loop["share"].values()) == pytest.approx(1.0)
    assert engine["self_s"]["optimizer"] > 0 and naive["self_s"]["optimizer"] > 0
    assert all(b["gflops_per_s"] > 0 for b in report["bare_gemm"])
