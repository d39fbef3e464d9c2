"""Builds the run's components from the typed config: stream, models + DeepSpeed engine, tracker.

Below this layer, functions take plain values, not the config object.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from minprot_ds.data.stream import BatchingOptions, DistillStream, MaskingOptions, eval_batches
from minprot_ds.distill.config import DistillConfig
from minprot_ds.distill.engine import DistillEngine, StudentForLoss, loss_settings
from minprot_ds.models.family import family_of
from minprot_ds.models.masked_lm import build_student, compile_encoders, load_student, load_teacher
from minprot_ds.optim import build_optimizer, warmup_linear_schedule
from minprot_ds.tracking import Tracker
from minprot_ds.vocab import Vocabulary


def batching_options(config: DistillConfig) -> BatchingOptions:
    d = config.data
    return BatchingOptions(max_tokens=d.max_tokens, max_rows=d.max_rows, pad_to_multiple_of=d.pad_to_multiple_of)


def masking_options(config: DistillConfig) -> MaskingOptions:
    return MaskingOptions(probability=config.data.mask_probability)


def teacher_vocab(config: DistillConfig) -> Vocabulary:
    """The vocabulary of the teacher's family (read from its config.json): the ids batches are remapped to."""
    return family_of(config.model.teacher, "teacher model").vocab


def build_stream(config: DistillConfig, split: str, *, rank: int, world_size: int, grad_accum: int) -> DistillStream:
    return DistillStream(
        config.data.corpus,
        split,
        seed=config.data.seed,
        batching=batching_options(config),
        masking=masking_options(config),
        rank=rank,
        world_size=world_size,
        grad_accum=grad_accum,
        num_workers=config.data.num_workers,
        vocab=teacher_vocab(config),
    )


def planned_steps(config: DistillConfig, stream: DistillStream) -> int:
    """Optimizer steps of the planned run (what the LR schedule and data order follow): schedule.total_steps
    when set, else schedule.epochs over the training stream."""
    return config.schedule.total_steps or stream.planned_steps(config.schedule.epochs)


def eval_stream(config: DistillConfig, rank: int, world_size: int) -> Iterator[dict]:
    batches = eval_batches(
        config.data.corpus,
        "valid",
        seed=config.data.seed,
        batching=batching_options(config),
        masking=masking_options(config),
        rank=rank,
        world_size=world_size,
        vocab=teacher_vocab(config),
    )
    limit = config.eval.max_batches
    for i, batch in enumerate(batches):
        if limit and i >= limit:
            return
        yield batch


def build_engine(config: DistillConfig, ds: dict[str, Any], *, planned_steps: int, dtype: torch.dtype):
    """Teacher (frozen, run precision `dtype`) + student in a DeepSpeed engine; returns (engine, student config).

    The teacher is loaded in fp32 on the CPU and the student copied from that load, so the student starts
    from the checkpoint's own weights (a bf16 copy would be off by up to 0.39%, an fp16 one flushes tiny
    weights to 0); only then is the frozen teacher cast to `dtype` and moved to the device.
    """
    import deepspeed
    from deepspeed.accelerator import get_accelerator

    device = torch.device(get_accelerator().current_device_name())
    m = config.model
    teacher = load_teacher(m.teacher, dtype=torch.float32)
    if m.student:
        student = load_student(m.student)
    else:
        student = build_student(teacher, num_layers=m.student_layers, strategy=config.layer_choice(), seed=m.layer_seed)
    teacher.to(device=device, dtype=dtype)
    student.to(torch.float32)
    if m.activation_checkpointing:
        student.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    student.train()
    zero = ds.get("zero_optimization", {})
    compile_encoders(teacher, student, m.compile, zero_stage=zero.get("stage", 0))
    o = config.optimizer
    offload = zero.get("offload_optimizer", {}).get("device", "none") != "none"
    optimizer = build_optimizer(
        student, lr=o.lr, weight_decay=o.weight_decay, betas=tuple(o.betas), eps=o.eps, cpu_offload=offload
    )
    scheduler = warmup_linear_schedule(optimizer, warmup_steps=config.schedule.warmup_steps, total_steps=planned_steps)
    engine, _, _, _ = deepspeed.initialize(
        model=StudentForLoss(student), optimizer=optimizer, lr_scheduler=scheduler, config=ds
    )
    lc = config.loss
    loss = loss_settings(
        lc.temperature,
        lc.weights,
        lc.impl,
        device,
        kd_positions=lc.kd_positions,
        kd_temperature_squared=lc.kd_temperature_squared,
        normalize=lc.normalize,
    )
    return DistillEngine(teacher, engine, loss, teacher_layers=teacher.config.num_hidden_layers), student.config


def build_tracker(config: DistillConfig, run_dir: Path, *, rank: int, resume_run_id: str | None) -> Tracker:
    t = config.tracking
    return Tracker.start(
        tracking_uri=t.tracking_uri or None,
        run_dir=run_dir,
        experiment=t.experiment,
        run_name=t.run_name or run_dir.name,
        resume_run_id=resume_run_id,
        enabled=rank == 0,
        system_metrics=t.system_metrics,
    )
