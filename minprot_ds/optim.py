"""Optimizer and learning-rate schedule of the student: AdamW, warmup then linear decay to zero."""

from __future__ import annotations

import torch
from torch import nn


def build_optimizer(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    eps: float,
    cpu_offload: bool = False,
) -> torch.optim.Optimizer:
    """AdamW without weight decay on biases and LayerNorm weights (BERT's recipe)."""
    decay, no_decay = [], []
    for _name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cpu_offload:  # ZeRO-Offload steps on the CPU with DeepSpeed's vectorised Adam
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        return DeepSpeedCPUAdam(groups, lr=lr, betas=betas, eps=eps, adamw_mode=True)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)


def warmup_linear_schedule(optimizer: torch.optim.Optimizer, *, warmup_steps: int, total_steps: int):
    """Linear warmup to the peak lr over warmup_steps, then linear decay to 0 at total_steps (the planned run)."""
    warmup = min(warmup_steps, max(total_steps - 1, 0))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
