"""One distillation step on every rank: frozen teacher + DeepSpeed student engine, loss, backward/step.

The teacher is a plain module beside the DeepSpeed engine: never in the optimizer, never receiving
gradients, run under inference mode in the run's half precision. The student is wrapped so that the
DeepSpeed engine's forward returns exactly what the loss needs (hidden states at non-pad positions,
MLM logits at masked positions only).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterable

import torch
import torch.distributed as dist
from torch import nn

from minprot_ds.distributed import world_size
from minprot_ds.bench.flops import distill_step_flops
from minprot_ds.losses import distill_loss, resolve_impl
from minprot_ds.models import forward_for_loss
from minprot_ds.vocab import CLS_ID, MASK_ID, SEP_ID, STANDARD_RESIDUE_IDS


class StudentForLoss(nn.Module):
    """The student as DeepSpeed sees it: forward returns (hidden [N,H], logits [M,V], labels [M])."""

    def __init__(self, mlm: nn.Module):
        super().__init__()
        self.mlm = mlm

    def forward(self, input_ids, attention_mask, labels):
        out = forward_for_loss(self.mlm, input_ids, attention_mask, labels)
        return out.hidden, out.logits, out.labels


@dataclasses.dataclass
class LossSettings:
    temperature: float
    weights: tuple[float, float, float]
    impl: str  # as resolved: eager | triton | compiled


@dataclasses.dataclass
class StepStats:
    """One optimizer step, summed or averaged over all ranks (identical on every rank)."""

    loss: float
    mlm: float
    kd: float
    cos: float
    skipped: bool  # non-finite loss on some rank, or an fp16/bf16 overflow DeepSpeed skipped
    sequences: int
    residues: int
    tokens: int  # padded tokens the hardware processed
    masked: int
    flops: float  # useful FLOPs (real tokens), see minprot_ds.bench.flops
    samples: list[int]  # global row ids this rank consumed in the step


class DistillEngine:
    def __init__(self, teacher: nn.Module, student: Any, loss: LossSettings, teacher_layers: int):
        self.teacher = teacher
        self.student = student  # a deepspeed.DeepSpeedEngine around StudentForLoss
        self.loss = loss
        self.device = student.device
        cfg = student.module.mlm.config
        self._shape = dict(
            teacher_layers=teacher_layers,
            student_layers=cfg.num_hidden_layers,
            hidden=cfg.hidden_size,
            intermediate=cfg.intermediate_size,
            vocab=cfg.vocab_size,
        )

    def teacher_checksum(self) -> str:
        """sha256 of the teacher's weights: equal before and after a run, or something trained it."""
        import hashlib

        digest = hashlib.sha256()
        for name, p in sorted(self.teacher.state_dict().items()):
            digest.update(name.encode())
            digest.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    def _to_device(self, batch: dict) -> dict:
        return {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}

    def _losses(self, batch: dict):
        ids, att, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
        with torch.inference_mode():
            t = forward_for_loss(self.teacher, ids, att, labels)
        s_hidden, s_logits, s_labels = self.student(ids, att, labels)
        out = distill_loss(
            s_logits, t.logits, s_labels, s_hidden, t.hidden,
            temperature=self.loss.temperature, weights=self.loss.weights, impl=self.loss.impl,
        )
        return out, t, s_hidden, s_logits

    def _all_reduce(self, values: list[float], op=dist.ReduceOp.SUM) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        if dist.is_initialized():
            dist.all_reduce(t, op=op)
        return t.tolist()

    def step(self, micro_batches: list[dict]) -> StepStats:
        """Forward/backward every micro-batch of this rank's share of one optimizer step, then step."""
        sums = [0.0] * 4  # total, mlm, kd, cos
        counts = [0.0] * 5  # sequences, residues, tokens, masked, flops
        nonfinite = 0.0
        skipped_before = self.student.skipped_steps
        samples = [int(i) for batch in micro_batches for i in batch["sample_index"]]
        for batch in micro_batches:
            batch = self._to_device(batch)
            out, _, s_hidden, s_logits = self._losses(batch)
            finite = bool(torch.isfinite(out.total))
            # Every rank must agree before backward, so all of them take the same path.
            bad = self._all_reduce([0.0 if finite else 1.0], dist.ReduceOp.MAX)[0] > 0
            if bad:
                # A zero-weighted surrogate keeps DeepSpeed's collectives and micro-step count aligned
                # while adding nothing to the gradients (nan_to_num has zero gradient where it replaced).
                surrogate = (s_hidden.nan_to_num(0, 0, 0).sum() + s_logits.nan_to_num(0, 0, 0).sum()) * 0.0
                self.student.backward(surrogate)
                nonfinite = 1.0
            else:
                self.student.backward(out.total)
                for i, v in enumerate((out.total, out.mlm, out.kd, out.cos)):
                    sums[i] += float(v.detach())
            self.student.step()
            masked = int((batch["labels"] != -100).sum())
            rows, padded_len = batch["input_ids"].shape
            counts[0] += rows
            counts[1] += batch["num_residues"]
            counts[2] += rows * padded_len
            counts[3] += masked
            counts[4] += self.step_flops(batch["attention_mask"], masked)
        n = len(micro_batches)
        reduced = self._all_reduce([s / n for s in sums] + counts + [nonfinite])
        world = world_size()
        total, mlm, kd, cos = (v / world for v in reduced[:4])
        skipped = reduced[9] > 0 or self.student.skipped_steps > skipped_before
        return StepStats(
            loss=total, mlm=mlm, kd=kd, cos=cos, skipped=skipped,
            sequences=int(reduced[4]), residues=int(reduced[5]), tokens=int(reduced[6]),
            masked=int(reduced[7]), flops=reduced[8], samples=samples,
        )

    def step_flops(self, attention_mask: torch.Tensor, masked: int) -> float:
        """Useful FLOPs of one micro-batch: real tokens only ([CLS]/[SEP] included, padding not)."""
        rows, padded_len = attention_mask.shape
        return distill_step_flops(
            **self._shape, seq_len=padded_len, batch=rows, masked_tokens=masked,
            lengths=attention_mask.sum(1).tolist(),
        ).useful

    @torch.no_grad()
    def evaluate(self, batches: Iterable[dict], with_teacher: bool = False) -> dict[str, float]:
        """Student MLM loss/accuracy and KD loss over all ranks' batches, teacher accuracy if asked.

        Ranks may hold different numbers of eval batches, some none at all; every iteration agrees on
        whether any rank still has one, and a rank that has run out repeats its last batch (or runs a
        one-residue placeholder) without counting it, so the student's collectives (ZeRO-3 gathers
        parameters in forward) stay in step.
        """
        was_training = self.student.module.training
        self.student.module.eval()
        sums = [0.0] * 5  # mlm loss sum, student correct, kd sum, masked count, teacher correct
        iterator, last = iter(batches), None
        while True:
            batch = next(iterator, None)
            if self._all_reduce([0.0 if batch is None else 1.0], dist.ReduceOp.MAX)[0] == 0:
                break
            counted = batch is not None
            if counted:
                batch = self._to_device(batch)
            else:  # ran out, or never had one (fewer eval batches than ranks): run something, uncounted
                batch = last if last is not None else self._to_device(placeholder_batch())
            last = batch
            out, t, _, s_logits = self._losses(batch)
            labels = batch["labels"][batch["labels"] != -100]
            m = labels.numel()
            if not counted or m == 0:
                continue
            sums[0] += float(out.mlm) * m
            sums[1] += float((s_logits.argmax(-1) == labels).sum())
            sums[2] += float(out.kd) * m
            sums[3] += m
            if with_teacher:
                sums[4] += float((t.logits.argmax(-1) == labels).sum())
        self.student.module.train(was_training)
        total = self._all_reduce(sums)
        masked = max(total[3], 1.0)
        metrics = {
            "valid/student_mlm_loss": total[0] / masked,
            "valid/student_mlm_accuracy": total[1] / masked,
            "valid/kd_loss": total[2] / masked,
            "valid/masked_tokens": total[3],
        }
        if with_teacher:
            metrics["valid/teacher_mlm_accuracy"] = total[4] / masked
        return metrics


def placeholder_batch() -> dict[str, torch.Tensor]:
    """"[CLS] [MASK] [SEP]" with a residue label: the eval forward of a rank without eval batches."""
    return {
        "input_ids": torch.tensor([[CLS_ID, MASK_ID, SEP_ID]]),
        "attention_mask": torch.ones(1, 3, dtype=torch.int64),
        "labels": torch.tensor([[-100, int(STANDARD_RESIDUE_IDS[0]), -100]]),
    }


def loss_settings(temperature: float, weights: list[float], impl: str, device: torch.device) -> LossSettings:
    return LossSettings(temperature=temperature, weights=tuple(weights), impl=resolve_impl(impl, device))
