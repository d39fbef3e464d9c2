"""The distillation loss written once, plainly, in PyTorch: the reference the fused kernels are checked
against, the CPU path, and (through torch.compile) the V100 path.

Rows are whatever the caller passes: logits rows are usually the masked positions, hidden rows the
non-pad positions; labels equal to IGNORE_INDEX take part in L_kd but not in L_mlm, which is how
"L_kd on every non-pad position" (DistilBERT's default) is expressed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from minprot_ds.vocab import IGNORE_INDEX

COS_EPS = 1e-8  # as torch.nn.functional.cosine_similarity: cos = s·t / max(|s|·|t|, eps)


def loss_terms(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    student_hidden: torch.Tensor,
    teacher_hidden: torch.Tensor,
    temperature: float,
    weights: tuple[float, float, float],
    kd_scale: float,
    divisors: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, mlm, kd, cos) as 0-dim fp32 tensors (float64 if the student is float64); L_kd is
    multiplied by `kd_scale` (τ² as in DistilBERT, or 1).

    Each term is a sum over its rows divided by a count: by default this call's own (labelled rows,
    logits rows, hidden rows: a mean); `divisors`, a [3] tensor, replaces the three counts (the engine
    passes the optimizer step's global counts, so that every token of the step weighs alike).

    Teacher tensors and labels must already be plain constants (see losses.as_constant): autograd saves
    them for the student's backward.
    """
    acc = torch.promote_types(student_logits.dtype, torch.float32)
    s = student_logits.to(acc)
    t = teacher_logits.to(acc)
    num_rows = s.shape[0]

    # Sums divided by clamped counts, so zero rows give 0 (with zero gradient), never 0/0.
    if divisors is None:
        n_labelled = (labels != IGNORE_INDEX).sum().clamp_min(1).to(acc)
        n_kd, n_cos = max(num_rows, 1), max(student_hidden.shape[0], 1)
    else:
        n_labelled, n_kd, n_cos = divisors.to(acc).unbind()
    mlm = F.cross_entropy(s, labels, ignore_index=IGNORE_INDEX, reduction="sum") / n_labelled

    p_teacher = F.softmax(t / temperature, dim=-1)
    log_q_student = F.log_softmax(s / temperature, dim=-1)
    kd = -(p_teacher * log_q_student).sum() * kd_scale / n_kd

    hs = student_hidden.to(acc)
    ht = teacher_hidden.to(acc)
    dot = (hs * ht).sum(dim=-1)
    norms = torch.linalg.vector_norm(hs, dim=-1) * torch.linalg.vector_norm(ht, dim=-1)
    cos_rows = dot / norms.clamp_min(COS_EPS)
    cos = (1.0 - cos_rows).sum() / n_cos

    w_mlm, w_kd, w_cos = weights
    total = w_mlm * mlm + w_kd * kd + w_cos * cos
    return total, mlm, kd, cos
