"""DistillEngine's step and its phases in one process, without the launcher: DeepSpeed initialised in
process on a gloo group of one rank (as `python launch/distill.py` runs), tiny random models."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from minprot_ds.distill.config import load_config
from minprot_ds.distill.flops import distill_step_flops

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny teacher folder and a synthetic corpus (train split)."""
    from minprot_ds.data.synthetic import write_synthetic_corpus
    from minprot_ds.models.masked_lm import save_random_protbert

    root = tmp_path_factory.mktemp("engine_step")
    teacher = save_random_protbert(root / "teacher", num_layers=4, hidden_size=32, num_heads=4, intermediate_size=64)
    lengths = np.random.default_rng(0).integers(20, 120, 200)
    return {"teacher": teacher, "corpus": write_synthetic_corpus(root / "corpus", lengths)}


def build(tiny, *overrides: str, dtype: torch.dtype = torch.float32):
    """(engine, stream) as the distillation builds them, from the run config with `overrides`."""
    from minprot_ds.distill.build import build_engine, build_stream
    from minprot_ds.distributed import init_distributed
    from minprot_ds.ds_config import read_ds_config

    config = load_config(
        None,
        [
            f'model.teacher="{tiny["teacher"]}"',
            "model.student_layers=2",
            f'data.corpus="{tiny["corpus"]}"',
            "data.max_tokens=1024",
            "data.max_rows=8",
            "data.num_workers=0",
            "loss.impl=eager",
            "schedule.warmup_steps=0",
            "optimizer.lr=1e-3",
            *overrides,
        ],
    )
    init_distributed()
    ds = read_ds_config(
        REPO / "ds_configs" / "cpu_zero2.json", flag="test", owner="the run config", micro_batch=config.data.max_rows
    )
    engine, _ = build_engine(config, ds, planned_steps=50, dtype=dtype)
    return engine, build_stream(config, "train", rank=0, world_size=1, grad_accum=1)


def student_weights(engine) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in engine.student.module.parameters()])


def test_a_step_trains_the_student_never_the_teacher_and_counts_what_it_did(tiny):
    engine, stream = build(tiny)
    batches = iter(stream)
    teacher_before, student_before = engine.teacher_checksum(), student_weights(engine)
    micro = next(batches)
    stats = engine.step(micro)
    assert engine.teacher_checksum() == teacher_before
    assert not torch.equal(student_weights(engine), student_before)
    b = micro[0]
    assert stats.sequences == b["input_ids"].shape[0] and stats.tokens == b["input_ids"].numel()
    assert stats.residues == b["num_residues"] and stats.masked == int((b["labels"] != -100).sum())
    assert stats.flops == engine.micro_batch_flops(b).useful and not stats.skipped
    assert stats.loss == pytest.approx((stats.mlm + stats.kd + stats.cos) / 3, rel=1e-5)
    assert stats.samples == [int(i) for i in b["sample_index"]]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_the_student_starts_from_the_teachers_fp32_weights_whatever_the_run_precision(tiny, dtype):
    """The run's half precision (here the dtype alone, on CPU) casts the frozen teacher only after the student
    was copied from its fp32 load: the student's initial weights are the checkpoint's, bit for bit."""
    from minprot_ds.models.masked_lm import load_teacher

    engine, _ = build(tiny, dtype=dtype)
    assert {p.dtype for p in engine.teacher.parameters()} == {dtype}
    fp32 = load_teacher(str(tiny["teacher"])).state_dict()
    student = engine.student.module.mlm
    layers = student.config.minprot_teacher_layers
    prefix, rounded = "bert.encoder.layer.", 0
    for name, value in student.state_dict().items():
        source = name
        if name.startswith(prefix):
            index, rest = name[len(prefix) :].split(".", 1)
            source = f"{prefix}{layers[int(index)]}.{rest}"
        assert value.dtype == torch.float32 and torch.equal(value, fp32[source]), name
        rounded += not torch.equal(fp32[source].to(dtype).float(), fp32[source])
    assert rounded > 0  # a copy of the cast teacher would differ: the test can tell


def test_phase_timer_sees_each_phase_of_each_micro_batch_in_order(tiny):
    import contextlib

    engine, stream = build(tiny)
    seen = []

    @contextlib.contextmanager
    def timer(phase):
        seen.append(phase)
        yield

    engine.step(next(iter(stream)), phase_timer=timer)
    assert seen == ["teacher_forward", "student_forward", "loss", "backward", "optimizer"]


def test_kd_on_all_positions_changes_the_kd_term_and_where_the_head_runs(tiny):
    masked_engine, stream = build(tiny)
    all_engine, _ = build(tiny, 'loss.kd_positions="all"')
    batch = masked_engine.to_device(next(iter(stream))[0])
    non_pad, masked = int(batch["attention_mask"].sum()), int((batch["labels"] != -100).sum())
    with torch.no_grad():
        terms = {}
        for name, engine in (("masked", masked_engine), ("all", all_engine)):
            student = engine.student_forward(batch)
            terms[name] = (student.logits.shape[0], engine.loss_of(student, engine.teacher_forward(batch)))
    assert terms["masked"][0] == masked and terms["all"][0] == non_pad
    # Same models (same seed), same batch: L_mlm is the same, L_kd is taken over other rows.
    assert float(terms["all"][1].mlm) == pytest.approx(float(terms["masked"][1].mlm), rel=1e-5)
    # L_kd by hand from the full models' logits: over the masked rows, and over every non-pad row.
    with torch.no_grad():
        ids, att = batch["input_ids"], batch["attention_mask"]
        t_logits = masked_engine.teacher(input_ids=ids, attention_mask=att).logits
        s_logits = masked_engine.student.module.mlm(input_ids=ids, attention_mask=att).logits
    tau = 2.0

    def kd(rows):
        p = torch.softmax(t_logits[rows] / tau, -1)
        return float(-(p * torch.log_softmax(s_logits[rows] / tau, -1)).sum(-1).mean() * tau**2)

    assert float(terms["masked"][1].kd) == pytest.approx(kd(batch["labels"] != -100), rel=1e-5)
    assert float(terms["all"][1].kd) == pytest.approx(kd(att.bool()), rel=1e-5)
    assert kd(att.bool()) != pytest.approx(kd(batch["labels"] != -100), rel=1e-6)
    # The FLOP count follows the head: every non-pad token instead of the masked ones.
    lengths = batch["attention_mask"].sum(1).tolist()
    rows, padded = batch["input_ids"].shape
    expected = distill_step_flops(
        **all_engine.shape, seq_len=padded, batch=rows, masked_tokens=non_pad, lengths=lengths
    )
    assert all_engine.micro_batch_flops(batch) == expected
    stats = all_engine.step([next(iter(stream))[0]])
    assert math.isfinite(stats.kd) and not stats.skipped
    valid = all_engine.evaluate([next(iter(stream))[0]])
    assert 0.0 <= valid["valid/student_mlm_accuracy"] <= 1.0 and math.isfinite(valid["valid/kd_loss"])


def test_micro_batch_flops_count_real_tokens_as_useful_and_padding_as_executed(tiny):
    engine, _ = build(tiny)
    att = torch.tensor([[1] * 10 + [0] * 6, [1] * 16])
    labels = torch.full((2, 16), -100)
    labels[0, 3] = labels[1, 5] = labels[1, 9] = 7
    flops = engine.micro_batch_flops({"attention_mask": att, "labels": labels})
    assert flops == distill_step_flops(**engine.shape, seq_len=16, batch=2, masked_tokens=3, lengths=[10, 16])
    # padding only adds executed work: 6 padded tokens' matmuls, forward (teacher) + 3x (student)
    h, i = engine.shape["hidden"], engine.shape["intermediate"]
    t_layers, s_layers = engine.shape["teacher_layers"], engine.shape["student_layers"]
    per_layer = 4 * h * h + 2 * h * i
    attention_extra = 4 * h * (2 * 16 * 16 - (10 * 10 + 16 * 16))
    assert flops.executed - flops.useful == (t_layers + 3 * s_layers) * (2 * per_layer * 6 + attention_extra)


def test_a_non_finite_loss_is_skipped_on_every_rank_and_not_counted(tiny, monkeypatch):
    engine, stream = build(tiny)
    loss_of = engine.loss_of

    def poisoned(student, teacher, divisors=None):
        out = loss_of(student, teacher, divisors)
        out.total = out.total * float("nan")
        return out

    monkeypatch.setattr(engine, "loss_of", poisoned)
    stats = engine.step(next(iter(stream)))
    assert stats.skipped and stats.loss == 0.0
    assert all(torch.isfinite(p).all() for p in engine.student.module.parameters())
