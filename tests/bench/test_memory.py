"""The memory plan (minprot_ds/bench/memory.py, `minprot bench memory`): parameter counts, the plan's
structure and CLI, the throughput benchmark's skipping, each family's per-layer activations against what
autograd keeps, and the predicted peak against the measured peak on CPU at ProtBert's full size (30-layer
teacher, 15-layer student, ZeRO-3), two ProtBert-width shapes (hidden 1024, FFN 4096, 40,000 positions, fewer
layers), two small ones and three ESM-2 ones (ESM-2 8M's and 35M's real shapes), within 20%. On CPU the
measured peak is peak RSS above the bare process with glibc unmapping freed blocks at once (`live_allocations`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import BertConfig, BertForMaskedLM
from typer.testing import CliRunner

from minprot_ds.bench import memory as mem
from minprot_ds.cli import app

REPO = Path(__file__).resolve().parents[2]


def test_parameter_counts_are_the_models_and_protbert_s():
    cfg = BertConfig(
        vocab_size=30,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=40_000,
    )
    assert mem.model_params(cfg, 3) == BertForMaskedLM(cfg).num_parameters()
    protbert = mem.preset_config("protbert")
    assert mem.model_params(protbert, 30) == 419_933_214
    assert mem.model_params(protbert, 15) == 230_989_854


def test_plan_orders_stages_and_checkpointing_and_its_budget_is_the_largest_that_fits():
    cfg = mem.preset_config("protbert")
    plan = mem.memory_plan(cfg, 15, gpu="v100-16gb", gpus=8)
    rows = {(r["stage"], r["checkpointing"]): r for r in plan["settings"] if r["precision"] == "fp16"}
    assert {r["precision"] for r in plan["settings"]} == {"fp16", "fp32"}  # V100: no bf16
    states = [rows[(z, False)]["predicted_gb"]["student_states"] for z in (1, 2, 3)]
    assert states[0] > states[1] > states[2]
    for z in (1, 2, 3):
        assert rows[(z, True)]["predicted_gb"]["activations"] < rows[(z, False)]["predicted_gb"]["activations"]
        assert rows[(z, True)]["largest_max_tokens"] > rows[(z, False)]["largest_max_tokens"]
    best = rows[(2, False)]["largest_max_tokens"]

    def total(budget):
        p = mem.Plan(2, "fp16", False, 8)
        return mem.estimate(cfg, 15, p, max_tokens=budget, max_rows=max(1, round(64 * budget / 8192)), longest=514)

    assert mem.fits(total(best), 16.0) and not mem.fits(total(best + 512), 16.0)
    # More devices shard more of the student's states.
    assert (
        mem.estimate(cfg, 15, mem.Plan(3, "fp16", False, 16), max_tokens=8192, max_rows=64, longest=514).student_states
        < mem.estimate(cfg, 15, mem.Plan(3, "fp16", False, 8), max_tokens=8192, max_rows=64, longest=514).student_states
    )


def test_cli_prints_and_writes_the_plan(tmp_path):
    out = tmp_path / "plan.json"
    result = CliRunner().invoke(
        app,
        [
            "bench",
            "memory",
            "--preset",
            "protbert",
            "--gpu",
            "a100-80gb",
            "--gpus",
            "16",
            "--nodes",
            "2",
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    plan = json.loads(out.read_text())
    assert plan["benchmark"] == "memory_plan" and plan["gpus"] == 16 and plan["nodes"] == 2
    assert len(plan["settings"]) == 18  # bf16, fp16, fp32 x ZeRO-1/2/3 x checkpointing
    assert plan["student_parameters"] == 230_989_854
    assert "largest budget" in result.output


def test_esm2_650m_plan_counts_esm_2s_parameters(tmp_path):
    """`--preset esm2-650m`: ESM-2 650M's EsmConfig (33 layers, hidden 1280, 20 heads, rotary positions): the
    teacher's 651,043,254 parameters (transformers' own count) and its 17-layer student's; the plan runs."""
    import torch
    from transformers import EsmForMaskedLM

    cfg = mem.preset_config("esm2-650m")
    assert (cfg.model_type, cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads) == ("esm", 33, 1280, 20)
    with torch.device("meta"):
        assert mem.model_params(cfg, 33) == EsmForMaskedLM(cfg).num_parameters() == 651_043_254
    out = tmp_path / "plan.json"
    args = ["bench", "memory", "--preset", "esm2-650m", "--gpu", "v100-32gb", "--gpus", "8", "--json", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    plan = json.loads(out.read_text())
    assert plan["teacher_parameters"] == 651_043_254 and plan["student_parameters"] == 336_203_894
    assert any(r["largest_max_tokens"] for r in plan["settings"]), plan["settings"]


def test_stdout_holds_only_the_table(tmp_path):
    """A fresh `minprot bench memory` (DeepSpeed imported in it, on a machine whose accelerator it may not find):
    stdout starts with the table's title, DeepSpeed's accelerator line is not on it."""
    env = {k: v for k, v in os.environ.items() if k != "DS_ACCELERATOR"}
    cmd = [sys.executable, "-c", "from minprot_ds.cli import main; main()", "bench", "memory"]
    proc = subprocess.run(
        [*cmd, "--json", str(tmp_path / "plan.json")], capture_output=True, text=True, cwd=REPO, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("memory per GPU: protbert"), proc.stdout[:500]
    assert "accelerator" not in proc.stdout and "[WARNING]" not in proc.stdout


@pytest.mark.parametrize(
    "args, words",
    [
        (["--gpu", "v100-8gb"], "--gpu 'v100-8gb' is unknown"),
        (["--gpus", "8", "--nodes", "3"], "--gpus 8 is not a multiple of --nodes 3"),
        (["--preset", "huge"], "--preset 'huge' is unknown"),
    ],
)
def test_cli_errors_name_the_flag(args, words):
    from minprot_ds.errors import UserError

    result = CliRunner().invoke(app, ["bench", "memory", *args])  # `minprot` turns a UserError into one line
    assert isinstance(result.exception, UserError) and words in str(result.exception)


def test_throughput_skips_a_setting_the_plan_says_cannot_fit(tmp_path):
    from minprot_ds.bench import throughput as tp
    from minprot_ds.models.masked_lm import save_random_protbert

    teacher = save_random_protbert(tmp_path / "t", num_layers=2, hidden_size=64, num_heads=4, intermediate_size=128)
    small, big = tp.sweep_settings(
        max_tokens=[1024, 262_144], zero_stages=[2], checkpointing=[False], loss_impls=["eager"], precisions=["fp32"]
    )
    inputs = tp.RunInputs(teacher=str(teacher), student_layers=1, corpus="unused", memory_limit_gb=2.0)
    result = tp.measure_setting(big, inputs)
    assert result.status == "oom" and "predicted" in result.error and "exceeds 2 GB" in result.error
    assert mem.skip_reason(small, inputs, world=1) is None


# --- what autograd keeps, per layer --------------------------------------------------------------------


def _saved_bytes(config, layers: int, dtype) -> int:
    """Bytes of the distinct non-parameter tensors autograd keeps for backward in one training forward of the
    encoder (SDPA attention, weights in `dtype`) of `config` with `layers` layers, on 4 full rows of 64 tokens (no
    padding: with padding SDPA also keeps, per layer, the mask as a float rows x T x T bias, T values per token)."""
    import torch

    from minprot_ds.models.family import family_of_config

    family = family_of_config(config)
    config = family.config_class.from_dict({**config.to_dict(), "num_hidden_layers": layers})
    torch.manual_seed(0)
    model = family.masked_lm_class._from_config(config, attn_implementation="sdpa", dtype=dtype).train()
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:
            kept[storage.data_ptr()] = storage.nbytes()
        return t

    ids = torch.randint(5, 24, (4, 64))
    mask = torch.ones_like(ids)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = family.encoder(model)(input_ids=ids, attention_mask=mask).last_hidden_state  # noqa: F841 (graph alive)
        return sum(kept.values())


@pytest.mark.parametrize("family", ["bert", "esm"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_layer_keeps_what_the_plan_counts(family, precision):
    """Per token, one more encoder layer makes autograd keep `layer_widths(config).saved` more values at the run's
    precision: BERT's 8·H + 2·I, ESM-2's 8·H + 4·I (its erf GELU keeps four I-wide values; rotary's rotated Q and K
    replace the projections, and in bf16 its fp32 copies are not kept). I = 3·H here, so the two counts differ by a
    third; small per-token values (LayerNorm statistics, attention's log-sum-exp) stay within 3%."""
    import torch
    from transformers import BertConfig, EsmConfig

    from minprot_ds.vocab import ESM2

    shape = dict(hidden_size=64, num_attention_heads=4, intermediate_size=192, num_hidden_layers=1)
    if family == "esm":
        config = EsmConfig(
            vocab_size=ESM2.size,
            mask_token_id=ESM2.mask_id,
            pad_token_id=ESM2.pad_id,
            position_embedding_type="rotary",
            emb_layer_norm_before=False,
            token_dropout=True,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            **shape,
        )
    else:
        config = BertConfig(vocab_size=30, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **shape)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
    per_token = (_saved_bytes(config, 2, dtype) - _saved_bytes(config, 1, dtype)) / (4 * 64) / mem.BYTES[precision]
    expected = mem.layer_widths(config).saved
    assert expected == (8 * 64 + (4 if family == "esm" else 2) * 192)
    assert expected <= per_token <= 1.03 * expected, (per_token, expected)


# --- predicted against measured (CPU: peak RSS above the bare process) ----------------------------------

PROTBERT = dict(num_layers=30, hidden_size=1024, num_heads=16, intermediate_size=4096)
ESM2_8M = dict(num_layers=6, hidden_size=320, num_heads=20, intermediate_size=1280)  # facebook/esm2_t6_8M_UR50D
ESM2_35M = dict(num_layers=12, hidden_size=480, num_heads=20, intermediate_size=1920)  # facebook/esm2_t12_35M_UR50D
SHAPES = {  # name: (teacher shape, student layers, ZeRO stage, checkpointing, max tokens, rows); esm2-*: ESM-2's format
    "protbert-full-z3": (PROTBERT, 15, 3, False, 1040, 2),  # ProtBert's size: 420M teacher, 231M student
    "protbert-width-2l-z2": (
        dict(num_layers=2, hidden_size=1024, num_heads=16, intermediate_size=4096),
        1,
        2,
        False,
        1040,
        2,
    ),
    "protbert-width-4l-z3": (
        dict(num_layers=4, hidden_size=1024, num_heads=16, intermediate_size=4096),
        2,
        3,
        False,
        2080,
        4,
    ),
    "small-512-z2": (dict(num_layers=4, hidden_size=512, num_heads=8, intermediate_size=2048), 2, 2, False, 2080, 4),
    "small-512-z1-ckpt": (
        dict(num_layers=4, hidden_size=512, num_heads=8, intermediate_size=2048),
        2,
        1,
        True,
        4160,
        8,
    ),
    "esm2-8m-z2": (ESM2_8M, 3, 2, False, 2080, 4),
    "esm2-35m-z3": (ESM2_35M, 6, 3, False, 2080, 4),
    "esm2-35m-z1-ckpt": (ESM2_35M, 6, 1, True, 2080, 4),
}


@pytest.fixture(scope="module")
def long_corpus(tmp_path_factory) -> Path:
    """Rows of 510 residues, so every micro-batch is full: the padded tokens are the budget's."""
    import random

    from data_prep.corpus import prepare_corpus

    root = tmp_path_factory.mktemp("memcorpus")
    rng = random.Random(0)
    with open(root / "long.fasta", "w") as fh:
        for i in range(120):
            fh.write(f">L{i}\n" + "".join(rng.choice("ACDEFGHIKLMNPQRSTVWY") for _ in range(510)) + "\n")
    prepare_corpus([root / "long.fasta"], root / "corpus", valid_fraction=0.05, seed=0)
    return root / "corpus"


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=[pytest.mark.rehearsal] if n.startswith("protbert-full") else []) for n in SHAPES]
)
def test_predicted_peak_is_within_20_percent_of_the_measured_one(name, long_corpus, tmp_path):
    from transformers import AutoConfig

    from minprot_ds.models.masked_lm import save_random_esm2, save_random_protbert

    shape, student_layers, stage, ckpt, tokens, rows = SHAPES[name]
    if name.startswith("esm2"):
        teacher = save_random_esm2(tmp_path / "teacher", **shape)
    else:
        teacher = save_random_protbert(tmp_path / "teacher", **shape, max_position_embeddings=40_000)
    plan = mem.Plan(stage, "fp32", ckpt, 1)
    code = (
        "import json, sys; from minprot_ds.bench.memory import Plan; from minprot_ds.bench.memory_measure import "
        "measure;"
        f"print('RESULT', json.dumps(measure({str(teacher)!r}, {student_layers}, Plan({stage}, 'fp32', {ckpt}, 1), "
        f"corpus={str(long_corpus)!r}, max_tokens={tokens}, max_rows={rows})))"
    )
    # A fresh process: a CPU's peak RSS never goes down, so each shape needs its own.
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    measured = json.loads(proc.stdout.split("RESULT", 1)[1])
    est = mem.estimate(
        AutoConfig.from_pretrained(teacher),
        student_layers,
        plan,
        max_tokens=measured["padded_tokens"],
        max_rows=rows,
        longest=measured["padded_tokens"],
    )
    ratio = est.total / measured["measured_bytes"]
    print(
        f"{name}: predicted {est.total / 2**30:.3f} GB, measured {measured['measured_bytes'] / 2**30:.3f} GB, "
        f"ratio {ratio:.2f}"
    )
    assert measured["padded_tokens"] > tokens // 2  # the batches were as full as planned
    assert 0.8 <= ratio <= 1.2
