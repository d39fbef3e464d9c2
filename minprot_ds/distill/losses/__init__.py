"""The distillation loss L = w_mlm·L_mlm + w_kd·L_kd + w_cos·L_cos, behind one call.

`distill_loss` validates its inputs, makes teacher tensors safe for autograd and dispatches to the eager
reference (reference.py), torch.compile'd eager, or the fused Triton kernels (fused.py).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import torch

from minprot_ds.distill.losses import fused, reference
from minprot_ds.errors import UserError
from minprot_ds.vocab import IGNORE_INDEX

__all__ = ["IGNORE_INDEX", "IMPLS", "LossOutput", "as_constant", "distill_loss", "resolve_impl"]

log = logging.getLogger(__name__)

IMPLS = ("eager", "compiled", "triton", "auto")


@dataclass
class LossOutput:
    """0-dim tensors. `total` carries the gradient; mlm, kd and cos are detached, for logging."""

    total: torch.Tensor
    mlm: torch.Tensor
    kd: torch.Tensor
    cos: torch.Tensor


_logged: set[tuple[str, str]] = set()


def resolve_impl(impl: str, device: torch.device | str) -> str:
    """The implementation `impl` runs on `device`: "triton", "compiled" or "eager" (logged once each).

    "auto" takes Triton on CUDA with compute capability ≥ 8.0 (Triton's official target), torch.compile'd
    eager on older GPUs such as V100, and eager on CPU (the Triton interpreter is for tests only).
    """
    if impl not in IMPLS:
        raise UserError(f"unknown loss impl {impl!r}; choose one of {', '.join(IMPLS)}")
    device = torch.device(device)
    chosen, why = impl, "requested"
    if impl == "auto":
        if device.type == "cuda":
            major, minor = torch.cuda.get_device_capability(device)
            if major >= 8 and fused.triton_available():
                chosen, why = "triton", f"CUDA sm_{major}{minor}"
            else:
                chosen, why = "compiled", f"CUDA sm_{major}{minor}: below sm_80 or no triton"
        else:
            chosen, why = "eager", f"{device.type} device"
    if chosen == "triton" and not fused.triton_available():
        raise UserError("loss impl 'triton' needs the triton package (pip install triton), or use impl 'eager'")
    if (impl, device.type) not in _logged:
        _logged.add((impl, device.type))
        log.info("distillation loss: impl %r runs %s on %s (%s)", impl, chosen, device.type, why)
    return chosen


def as_constant(t: torch.Tensor) -> torch.Tensor:
    """A tensor autograd may save: detached, and cloned if it was made under torch.inference_mode()
    (inference tensors cannot be saved for backward, and the teacher runs in inference mode)."""
    t = t.detach()
    return t.clone() if t.is_inference() else t


@functools.cache
def _compiled_terms():
    return torch.compile(reference.loss_terms, dynamic=True)


def distill_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    student_hidden: torch.Tensor,
    teacher_hidden: torch.Tensor,
    temperature: float = 2.0,
    weights: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3),
    impl: str = "eager",
    kd_temperature_squared: bool = True,
    divisors: tuple[float, float, float] | None = None,
) -> LossOutput:
    """L = w_mlm·L_mlm + w_kd·L_kd + w_cos·L_cos.

    Logits [M, V] and labels [M]: L_mlm is the mean CE over rows whose label is not IGNORE_INDEX,
    L_kd the mean over all M rows of −Σ softmax(z_T/τ)·log_softmax(z_S/τ), times τ² (DistilBERT; it keeps
    the KD gradient's size independent of τ) unless kd_temperature_squared is False (MinProtBert's public
    loop). Hidden [N, H]:
    L_cos is the mean of 1 − cos(h_S, h_T). M = 0 or N = 0 gives 0 for its terms (zero gradient).
    M and N are independent (L_kd over every non-pad position passes M = N rows, labels −100 where
    unmasked). No gradient reaches teacher tensors.

    `divisors` = (n_mlm, n_kd, n_cos) replaces the three counts the terms' sums are divided by (labelled
    rows, logits rows, hidden rows of this call): the engine passes the optimizer step's global counts
    (see DistillEngine.step), so that a term is a sum over this call's rows of a per-token mean taken over
    the whole step.
    """
    _check_shapes(student_logits, teacher_logits, labels, student_hidden, teacher_hidden)
    if not temperature > 0:
        raise UserError(f"distillation temperature must be > 0 (got {temperature})")
    if len(weights) != 3:
        raise UserError(f"loss weights must be three numbers (mlm, kd, cos), got {weights!r}")
    weights = tuple(float(w) for w in weights)
    if divisors is not None:
        if len(divisors) != 3 or not all(d > 0 for d in divisors):
            raise ValueError(f"loss divisors must be three positive counts (mlm, kd, cos), got {divisors!r}")
        # A tensor, not floats: torch.compile would specialise on each step's counts and recompile.
        divisors = torch.tensor(divisors, dtype=torch.float64, device=student_logits.device)
    chosen = resolve_impl(impl, student_logits.device)
    args = (
        student_logits,
        as_constant(teacher_logits),
        as_constant(labels),
        student_hidden,
        as_constant(teacher_hidden),
        float(temperature),
        weights,
        float(temperature) ** 2 if kd_temperature_squared else 1.0,
        divisors,
    )
    if chosen == "triton":
        total, mlm, kd, cos = fused.loss_terms(*args)
    elif chosen == "compiled":
        total, mlm, kd, cos = _compiled_terms()(*args)
    else:
        total, mlm, kd, cos = reference.loss_terms(*args)
    return LossOutput(total=total, mlm=mlm.detach(), kd=kd.detach(), cos=cos.detach())


def _check_shapes(s_logits, t_logits, labels, s_hidden, t_hidden) -> None:
    if s_logits.ndim != 2 or s_logits.shape != t_logits.shape:
        raise ValueError(
            f"student/teacher logits must both be [M, V], got {tuple(s_logits.shape)} and {tuple(t_logits.shape)}"
        )
    if labels.shape != s_logits.shape[:1]:
        raise ValueError(f"labels must be [M] = [{s_logits.shape[0]}], got {tuple(labels.shape)}")
    if s_hidden.ndim != 2 or s_hidden.shape != t_hidden.shape:
        raise ValueError(
            f"student/teacher hidden must both be [N, H], got {tuple(s_hidden.shape)} and {tuple(t_hidden.shape)}"
        )
