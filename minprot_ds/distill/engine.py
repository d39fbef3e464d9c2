"""One distillation step on every rank: frozen teacher + DeepSpeed student engine, loss, backward/step.

The teacher is a plain module beside the DeepSpeed engine: never in the optimizer, never receiving
gradients, run under inference mode in the run's half precision. The student is wrapped so that the
DeepSpeed engine's forward returns exactly what the loss needs (hidden states at non-pad positions,
MLM logits at masked positions only, or at every non-pad position with loss.kd_positions = "all").
A step is five phases, each a method the step calls in turn (teacher_forward, student_forward, loss_of,
backward, optimizer_step); `step(..., phase_timer=...)` lets the throughput benchmark time each one.

Normalisation (loss.normalize). "global-tokens" (the default, as Megatron's per-token loss): each term is
divided by the optimizer step's global count of the rows it covers (masked labels for L_mlm, the head's rows
for L_kd, non-pad positions for L_cos; all micro-batches of the step, all ranks), so every token of the step
weighs alike and the step's gradient is that of one batch holding all its sequences. DeepSpeed divides each
micro-batch's loss by the accumulation steps G and averages gradients over the W data-parallel ranks; the
divisors are count / (W·G), which undoes that exactly. "micro-batch" (the old behaviour): each micro-batch's
terms are means over its own rows, and DeepSpeed averages those means, so a token in a micro-batch of few
masked positions weighs more. Either way the logged train losses are per-token means: over the whole step
(global-tokens), or the mean of the micro-batches' means (micro-batch).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from minprot_ds.distill.flops import FlopBreakdown, distill_step_flops
from minprot_ds.distill.losses import LossOutput, distill_loss, resolve_impl
from minprot_ds.distributed import world_size
from minprot_ds.models.family import family_of_config
from minprot_ds.models.masked_lm import ForLossOutputs, forward_for_loss
from minprot_ds.vocab import IGNORE_INDEX, Vocabulary


class StudentForLoss(nn.Module):
    """The student as DeepSpeed sees it: forward returns (hidden [N,H], logits [M,V], labels [M])."""

    def __init__(self, mlm: nn.Module):
        super().__init__()
        self.mlm = mlm

    def forward(self, input_ids, attention_mask, labels, all_positions: bool = False):
        out = forward_for_loss(self.mlm, input_ids, attention_mask, labels, all_positions=all_positions)
        return out.hidden, out.logits, out.labels


KD_POSITIONS = ("masked", "all")
NORMALIZE = ("global-tokens", "micro-batch")  # loss.normalize: see the module's docstring


@dataclasses.dataclass
class LossSettings:
    temperature: float
    weights: tuple[float, float, float]
    impl: str  # as resolved: eager | triton | compiled
    kd_positions: str = "masked"  # masked | all: where the MLM head runs and L_kd is taken
    kd_temperature_squared: bool = True  # L_kd times τ² (DistilBERT) or not (MinProtBert's public loop)
    normalize: str = "global-tokens"  # global-tokens | micro-batch: see the module's docstring


@dataclasses.dataclass
class StepStats:
    """One optimizer step, summed or averaged over all ranks (identical on every rank)."""

    loss: float  # the terms as per-token means over the step (see the module's docstring on normalisation)
    mlm: float
    kd: float
    cos: float
    skipped: bool  # non-finite loss on some rank, or an fp16/bf16 overflow DeepSpeed skipped
    sequences: int
    residues: int
    tokens: int  # padded tokens the hardware processed
    masked: int
    flops: float  # useful FLOPs (real tokens), see minprot_ds.distill.flops
    samples: list[int]  # global row ids this rank consumed in the step


PhaseTimer = Callable[[str], contextlib.AbstractContextManager]
"""phase_timer(name) wraps each phase of a step: teacher_forward, student_forward, loss, backward, optimizer."""


def untimed(phase: str) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext()


class DistillEngine:
    def __init__(self, teacher: nn.Module, student: Any, loss: LossSettings, teacher_layers: int):
        self.teacher = teacher
        self.student = student  # a deepspeed.DeepSpeedEngine around StudentForLoss
        self.loss = loss
        self.device = student.device
        cfg = student.module.mlm.config
        self.vocab = family_of_config(cfg, "student").vocab
        self.shape = dict(
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

    def to_device(self, batch: dict) -> dict:
        return {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}

    # --- the phases of a step (step() and evaluate() call them; the throughput benchmark times them) ---

    @property
    def _all_positions(self) -> bool:
        return self.loss.kd_positions == "all"

    def teacher_forward(self, batch: dict) -> ForLossOutputs:
        with torch.inference_mode():
            return forward_for_loss(
                self.teacher,
                batch["input_ids"],
                batch["attention_mask"],
                batch["labels"],
                all_positions=self._all_positions,
            )

    def student_forward(self, batch: dict) -> ForLossOutputs:
        hidden, logits, labels = self.student(
            batch["input_ids"], batch["attention_mask"], batch["labels"], all_positions=self._all_positions
        )
        return ForLossOutputs(hidden=hidden, logits=logits, labels=labels)

    def loss_of(
        self, student: ForLossOutputs, teacher: ForLossOutputs, divisors: tuple[float, float, float] | None = None
    ) -> LossOutput:
        """The loss of one micro-batch: means over its own rows, or its sums over `divisors` (step_divisors)."""
        return distill_loss(
            student.logits,
            teacher.logits,
            student.labels,
            student.hidden,
            teacher.hidden,
            temperature=self.loss.temperature,
            weights=self.loss.weights,
            impl=self.loss.impl,
            kd_temperature_squared=self.loss.kd_temperature_squared,
            divisors=divisors,
        )

    def step_divisors(self, micro_batches: list[dict]) -> tuple[float, float, float] | None:
        """What each term's sum is divided by in this step (None under loss.normalize = "micro-batch"): the
        step's global count of its rows, over the W·G by which DeepSpeed divides (see the module's docstring)."""
        if self.loss.normalize == "micro-batch":
            return None
        counts = [0.0, 0.0, 0.0]  # masked labels (L_mlm), the head's rows (L_kd), non-pad positions (L_cos)
        for batch in micro_batches:
            labelled, non_pad = int((batch["labels"] != IGNORE_INDEX).sum()), int(batch["attention_mask"].sum())
            counts[0] += labelled
            counts[1] += non_pad if self._all_positions else labelled
            counts[2] += non_pad
        averaged_over = self.student.dp_world_size * self.student.gradient_accumulation_steps()
        return tuple(max(c, 1.0) / averaged_over for c in self._all_reduce(counts))

    def backward(self, out: LossOutput, student: ForLossOutputs, finite: bool) -> None:
        if finite:
            self.student.backward(out.total)
        else:
            # A zero-weighted surrogate keeps DeepSpeed's collectives and micro-step count aligned
            # while adding nothing to the gradients (nan_to_num has zero gradient where it replaced).
            surrogate = (student.hidden.nan_to_num(0, 0, 0).sum() + student.logits.nan_to_num(0, 0, 0).sum()) * 0.0
            self.student.backward(surrogate)

    def optimizer_step(self) -> None:
        self.student.step()  # DeepSpeed steps the optimizer only at the accumulation boundary

    def _all_reduce(self, values: list[float], op=dist.ReduceOp.SUM) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        if dist.is_initialized():
            dist.all_reduce(t, op=op)
        return t.tolist()

    def step(self, micro_batches: list[dict], phase_timer: PhaseTimer = untimed) -> StepStats:
        """Forward/backward every micro-batch of this rank's share of one optimizer step, then step."""
        sums = [0.0] * 4  # total, mlm, kd, cos
        counts = [0.0] * 5  # sequences, residues, tokens, masked, flops
        nonfinite = 0.0
        skipped_before = self.student.skipped_steps
        samples = [int(i) for batch in micro_batches for i in batch["sample_index"]]
        divisors = self.step_divisors(micro_batches)
        for batch in micro_batches:
            batch = self.to_device(batch)
            with phase_timer("teacher_forward"):
                teacher = self.teacher_forward(batch)
            with phase_timer("student_forward"):
                student = self.student_forward(batch)
            with phase_timer("loss"):
                out = self.loss_of(student, teacher, divisors)
            # Every rank must agree before backward, so all of them take the same path.
            finite = self._all_reduce([0.0 if bool(torch.isfinite(out.total)) else 1.0], dist.ReduceOp.MAX)[0] == 0
            with phase_timer("backward"):
                self.backward(out, student, finite)
            if finite:
                for i, v in enumerate((out.total, out.mlm, out.kd, out.cos)):
                    sums[i] += float(v.detach())
            else:
                nonfinite = 1.0
            with phase_timer("optimizer"):
                self.optimizer_step()
            rows, padded_len = batch["input_ids"].shape
            counts[0] += rows
            counts[1] += batch["num_residues"]
            counts[2] += rows * padded_len
            counts[3] += int((batch["labels"] != IGNORE_INDEX).sum())
            counts[4] += self.micro_batch_flops(batch).useful
        n = len(micro_batches)
        reduced = self._all_reduce([s / n for s in sums] + counts + [nonfinite])
        world = world_size()
        total, mlm, kd, cos = (v / world for v in reduced[:4])
        skipped = reduced[9] > 0 or self.student.skipped_steps > skipped_before
        return StepStats(
            loss=total,
            mlm=mlm,
            kd=kd,
            cos=cos,
            skipped=skipped,
            sequences=int(reduced[4]),
            residues=int(reduced[5]),
            tokens=int(reduced[6]),
            masked=int(reduced[7]),
            flops=reduced[8],
            samples=samples,
        )

    def micro_batch_flops(self, batch: dict) -> FlopBreakdown:
        """FLOPs of one micro-batch: `useful` counts real tokens only ([CLS]/[SEP] included, padding not),
        `executed` padded ones; the MLM head runs where the loss needs it (masked or all non-pad tokens)."""
        att = batch["attention_mask"]
        rows, padded_len = att.shape
        lengths = att.sum(1).tolist()
        head = sum(lengths) if self._all_positions else int((batch["labels"] != IGNORE_INDEX).sum())
        return distill_step_flops(**self.shape, seq_len=padded_len, batch=rows, masked_tokens=head, lengths=lengths)

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
        sums = [0.0] * 6  # mlm loss sum, student correct, kd sum, masked count, teacher correct, kd rows
        iterator, last = iter(batches), None
        while True:
            batch = next(iterator, None)
            if self._all_reduce([0.0 if batch is None else 1.0], dist.ReduceOp.MAX)[0] == 0:
                break
            counted = batch is not None
            if counted:
                batch = self.to_device(batch)
            else:  # ran out, or never had one (fewer eval batches than ranks): run something, uncounted
                batch = last if last is not None else self.to_device(placeholder_batch(self.vocab))
            last = batch
            teacher, student = self.teacher_forward(batch), self.student_forward(batch)
            out = self.loss_of(student, teacher)
            labelled = student.labels != IGNORE_INDEX
            m = int(labelled.sum())
            if not counted or m == 0:
                continue
            labels = student.labels[labelled]
            sums[0] += float(out.mlm) * m
            sums[1] += float((student.logits[labelled].argmax(-1) == labels).sum())
            sums[2] += float(out.kd) * student.logits.shape[0]  # L_kd is a mean over the head's rows
            sums[3] += m
            sums[5] += student.logits.shape[0]
            if with_teacher:
                sums[4] += float((teacher.logits[labelled].argmax(-1) == labels).sum())
        self.student.module.train(was_training)
        total = self._all_reduce(sums)
        masked = max(total[3], 1.0)
        metrics = {
            "valid/student_mlm_loss": total[0] / masked,
            "valid/student_mlm_accuracy": total[1] / masked,
            "valid/kd_loss": total[2] / max(total[5], 1.0),
            "valid/masked_tokens": total[3],
        }
        if with_teacher:
            metrics["valid/teacher_mlm_accuracy"] = total[4] / masked
        return metrics


def placeholder_batch(vocab: Vocabulary) -> dict[str, torch.Tensor]:
    """ "[CLS] [MASK] [SEP]" (in `vocab`'s ids) with a residue label: the eval forward of a rank without eval
    batches."""
    return {
        "input_ids": torch.tensor([[vocab.bos_id, vocab.mask_id, vocab.eos_id]]),
        "attention_mask": torch.ones(1, 3, dtype=torch.int64),
        "labels": torch.tensor([[IGNORE_INDEX, int(vocab.standard_residue_ids[0]), IGNORE_INDEX]]),
    }


def loss_settings(
    temperature: float,
    weights: list[float],
    impl: str,
    device: torch.device,
    *,
    kd_positions: str = "masked",
    kd_temperature_squared: bool = True,
    normalize: str = "global-tokens",
) -> LossSettings:
    return LossSettings(
        temperature=temperature,
        weights=tuple(weights),
        impl=resolve_impl(impl, device),
        kd_positions=kd_positions,
        kd_temperature_squared=kd_temperature_squared,
        normalize=normalize,
    )
