"""Fused Triton kernels for the distillation loss: one pass computes the loss terms and their gradient.

Logits side (rows = masked positions, V = 30): per row, CE against the label and the τ-softened KD
cross-entropy, plus d(w_mlm·L_mlm + w_kd·L_kd)/d(student logits), in registers (no softmax tensor
is written). Hidden side (rows = non-pad positions, H = 1024): per row, 1 − cos and its gradient.
Accumulation is fp32 whatever the input dtype. Teacher tensors get no gradient.

What the forward keeps for backward is already the gradient, so backward is one scale:
- logits: the fp32 gradient [M, V] (tiny for V = 30);
- hidden: the unit-scale direction u = −(t̂ − cos·ŝ) in the student's dtype plus a per-row fp32
  factor 1/|s|. Storing the scaled gradient itself in fp16 would underflow before DeepSpeed's loss
  scale is applied (its entries are ~w/(N·|s|·√H) ≈ 1e-9); u's entries are ~1/√H. Backward multiplies
  u in place, so it may run once per forward (retain_graph + a second backward raises).

The kernels live in fused_kernels.py, imported on first use so the package imports where triton is
absent. Triton 3.9 decides between compiling and interpreting when `@triton.jit` decorates a function:
it reads TRITON_INTERPRET (knobs.runtime.interpret) at that moment, and triton's own tl.max/tl.sum are
decorated when triton.language is first imported. So CPU tensors (Triton's interpreter, for tests)
need TRITON_INTERPRET=1 in the environment before anything imports triton; one process runs either
interpreted or compiled kernels, never both, and a mismatch is reported, not silently worked around.
"""

from __future__ import annotations

import importlib.util
import os

import torch

from minprot_ds.distill.losses.reference import COS_EPS
from minprot_ds.errors import UserError
from minprot_ds.vocab import IGNORE_INDEX

MAX_BLOCK = 16384  # one row must fit one block (V = 30 and H = 1024 for ProtBert)
_TILE = 4096  # elements per program: several short rows share a program


def interpreter_requested() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_available() -> bool:
    # find_spec, not import: importing triton.language fixes the compile/interpret mode for the process.
    return importlib.util.find_spec("triton") is not None


def _check_device(t: torch.Tensor) -> None:
    interpreted = _kernels().interpreted()
    if t.device.type == "cuda" and not interpreted:
        return
    if t.device.type == "cpu" and interpreted:
        return
    if t.device.type == "cpu" and interpreter_requested():
        raise UserError(
            "loss impl 'triton' on CPU: TRITON_INTERPRET=1 was set after triton was first imported; "
            "set it in the environment before the process starts (or before any `import triton`)"
        )
    raise UserError(
        f"loss impl 'triton' cannot run on {t.device.type} tensors in this process "
        f"(Triton {'interpreter' if interpreted else 'compiler'} active); on CPU set TRITON_INTERPRET=1 "
        "before triton is imported to use Triton's (slow) interpreter, or use impl 'eager' or 'auto'"
    )


def _kernels():
    from minprot_ds.distill.losses import fused_kernels  # lazy: needs triton (GPU, or CPU interpreted)

    return fused_kernels


def _row_major(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def _blocks(width: int) -> tuple[int, int]:
    import triton

    block_w = triton.next_power_of_2(max(width, 1))
    if block_w > MAX_BLOCK:
        raise UserError(
            f"loss impl 'triton' supports rows of at most {MAX_BLOCK} values (got {width}); use impl 'eager'"
        )
    return max(1, _TILE // block_w), block_w


class _LogitsLoss(torch.autograd.Function):
    """(w_mlm·L_mlm + w_kd·L_kd, L_mlm, L_kd); only the first output is differentiable."""

    @staticmethod
    def forward(
        ctx,
        s_logits,
        t_logits,
        labels,
        temperature: float,
        kd_scale: float,
        w_mlm: float,
        w_kd: float,
        divisors: torch.Tensor | None,
    ):
        s, t = _row_major(s_logits), _row_major(t_logits)
        m, v = s.shape
        grad = torch.empty((m, v), dtype=torch.float32, device=s.device)
        ce = torch.empty(m, dtype=torch.float32, device=s.device)
        kd_rows = torch.empty(m, dtype=torch.float32, device=s.device)
        if divisors is None:
            n_labelled = (labels != IGNORE_INDEX).sum().clamp_min(1).to(torch.float32)
            n_kd = max(m, 1)
        else:
            n_labelled, n_kd = divisors[0].to(device=s.device, dtype=torch.float32), float(divisors[1])
        if m > 0:
            block_m, block_v = _blocks(v)
            kd_grad_coef = w_kd * kd_scale / (temperature * n_kd)  # d(c·KD/n)/ds = c/(τ·n)·(q_S − p_T); c = τ² or 1
            _kernels().logits_kernel[(_cdiv(m, block_m),)](
                s,
                t,
                labels.contiguous(),
                grad,
                ce,
                kd_rows,
                n_labelled,
                m,
                v,
                s.stride(0),
                t.stride(0),
                1.0 / temperature,
                w_mlm,
                kd_grad_coef,
                IGNORE=IGNORE_INDEX,
                BLOCK_M=block_m,
                BLOCK_V=block_v,
            )
        mlm = ce.sum() / n_labelled
        kd = kd_rows.sum() * (kd_scale / n_kd)
        ctx.save_for_backward(grad)
        ctx.student_dtype = s_logits.dtype
        ctx.mark_non_differentiable(mlm, kd)
        return w_mlm * mlm + w_kd * kd, mlm, kd

    @staticmethod
    def backward(ctx, grad_weighted, _grad_mlm, _grad_kd):
        (grad,) = ctx.saved_tensors
        return (grad * grad_weighted).to(ctx.student_dtype), None, None, None, None, None, None, None


class _CosineLoss(torch.autograd.Function):
    """(w_cos·L_cos, L_cos); only the first output is differentiable."""

    @staticmethod
    def forward(ctx, s_hidden, t_hidden, w_cos: float, divisor: float | None):
        s, t = _row_major(s_hidden), _row_major(t_hidden)
        n, h = s.shape
        u = torch.empty((n, h), dtype=s_hidden.dtype, device=s.device)
        inv_norm = torch.empty(n, dtype=torch.float32, device=s.device)
        loss_rows = torch.empty(n, dtype=torch.float32, device=s.device)
        if n > 0:
            block_n, block_h = _blocks(h)
            _kernels().cosine_kernel[(_cdiv(n, block_n),)](
                s,
                t,
                u,
                inv_norm,
                loss_rows,
                n,
                h,
                s.stride(0),
                t.stride(0),
                COS_EPS,
                BLOCK_N=block_n,
                BLOCK_H=block_h,
            )
        n_cos = max(n, 1) if divisor is None else divisor
        cos = loss_rows.sum() / n_cos
        ctx.save_for_backward(u, inv_norm)
        ctx.row_coef = w_cos / n_cos
        ctx.used = False
        ctx.mark_non_differentiable(cos)
        return w_cos * cos, cos

    @staticmethod
    def backward(ctx, grad_weighted, _grad_cos):
        if ctx.used:
            raise RuntimeError(
                "the fused cosine loss reuses its saved buffer as the gradient: backward twice is unsupported"
            )
        ctx.used = True
        u, inv_norm = ctx.saved_tensors
        # In place: computed in fp32 (type promotion), rounded once to the student's dtype.
        u.mul_((inv_norm * (grad_weighted * ctx.row_coef)).unsqueeze(1))
        return u, None, None, None


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


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
    """(total, mlm, kd, cos) from the fused kernels; same contract as reference.loss_terms."""
    _check_device(student_logits)
    _check_device(student_hidden)
    w_mlm, w_kd, w_cos = weights
    logits_part, mlm, kd = _LogitsLoss.apply(
        student_logits, teacher_logits, labels, temperature, kd_scale, w_mlm, w_kd, divisors
    )
    hidden_part, cos = _CosineLoss.apply(
        student_hidden, teacher_hidden, w_cos, None if divisors is None else float(divisors[2])
    )
    return logits_part + hidden_part, mlm, kd, cos
