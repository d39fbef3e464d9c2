"""The only place plain PyTorch and DeepSpeed training differ: one optimizer step on a batch."""

from __future__ import annotations

from typing import Any

import torch

from minprot_ds.optim import build_optimizer, warmup_linear_schedule
from minprot_ds.scoring.heads import task_loss


class PlainStepper:
    """AdamW (no decay on biases / LayerNorm) with linear decay to zero, as the Trainer does by default."""

    def __init__(self, model: torch.nn.Module, *, lr: float, weight_decay: float, total_steps: int, grad_clip: float):
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.module = model.to(self.device)
        self.optimizer = build_optimizer(model, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.999), eps=1e-8)
        self.scheduler = warmup_linear_schedule(self.optimizer, warmup_steps=0, total_steps=total_steps)
        self.grad_clip = grad_clip

    def train_step(self, batch: dict[str, torch.Tensor]) -> float:
        self.module.train()
        loss = task_loss(self.module(batch["input_ids"], batch["attention_mask"]), batch["labels"])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        return float(loss.detach())

    @property
    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]


class DeepSpeedStepper:
    """The same optimizer and schedule inside a DeepSpeed engine (ZeRO, fp16 loss scaling, clipping from the JSON)."""

    def __init__(self, model: torch.nn.Module, ds: dict[str, Any], *, lr: float, weight_decay: float, total_steps: int):
        import deepspeed

        offload = ds.get("zero_optimization", {}).get("offload_optimizer", {}).get("device", "none") != "none"
        optimizer = build_optimizer(
            model, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.999), eps=1e-8, cpu_offload=offload
        )
        scheduler = warmup_linear_schedule(optimizer, warmup_steps=0, total_steps=total_steps)
        self.engine, _, _, self.scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds
        )
        self.module = self.engine.module
        self.device = self.engine.device

    def train_step(self, batch: dict[str, torch.Tensor]) -> float:
        self.engine.train()
        loss = task_loss(self.engine(batch["input_ids"], batch["attention_mask"]), batch["labels"])
        self.engine.backward(loss)
        self.engine.step()  # also steps the schedule
        return float(loss.detach())

    @property
    def lr(self) -> float:
        return self.engine.get_lr()[0]
