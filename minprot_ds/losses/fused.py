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

Triton is imported lazily so the package imports where it is absent. Triton 3.9 decides between
compiling and interpreting when `@triton.jit` decorates a function (it reads knobs.runtime.interpret,
i.e. TRITON_INTERPRET, at that moment, not at `import triton`), so the kernels are decorated on first
use, once per mode, under knobs.runtime.scope(): CUDA tensors get compiled kernels, CPU tensors the
interpreter. Running on CPU is opt-in with TRITON_INTERPRET=1 (tests), since the interpreter is slow.
"""
from __future__ import annotations

import functools
import os
from types import SimpleNamespace

import torch

from minprot_ds.errors import UserError
from minprot_ds.losses.reference import COS_EPS, IGNORE_INDEX

MAX_BLOCK = 16384  # one row must fit one block (V = 30 and H = 1024 for ProtBert)
_TILE = 4096  # elements per program: several short rows share a program


def interpreter_requested() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _check_device(t: torch.Tensor) -> None:
    if t.device.type == "cuda":
        return
    if t.device.type == "cpu" and interpreter_requested():
        return
    raise UserError(
        f"loss impl 'triton' needs CUDA tensors (got {t.device.type}); on CPU set TRITON_INTERPRET=1 "
        "to run the kernels in Triton's (slow) interpreter, or use impl 'eager' or 'auto'"
    )


def _kernel_source():
    import triton.language as tl

    def logits_kernel(
        s_ptr, t_ptr, labels_ptr, grad_ptr, ce_ptr, kd_ptr, n_labelled_ptr,
        M, V, s_stride, t_stride, inv_tau, w_mlm, kd_grad_coef,
        IGNORE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_V: tl.constexpr,
    ):
        rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        cols = tl.arange(0, BLOCK_V)
        rmask = rows < M
        cmask = cols < V
        mask = rmask[:, None] & cmask[None, :]
        rows64 = rows.to(tl.int64)
        s = tl.load(s_ptr + rows64[:, None] * s_stride + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        t = tl.load(t_ptr + rows64[:, None] * t_stride + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        s = tl.where(cmask[None, :], s, float("-inf"))
        t = tl.where(cmask[None, :], t, float("-inf"))
        label = tl.load(labels_ptr + rows, mask=rmask, other=IGNORE).to(tl.int32)
        labelled = (label != IGNORE) & rmask

        # CE = (max − s_y) + log Σ exp(s − max): differences before sums, so 1e4-sized logits stay exact.
        s_max = tl.max(s, axis=1)
        e = tl.exp(s - s_max[:, None])
        sum_e = tl.sum(e, axis=1)
        is_label = cols[None, :] == label[:, None]
        s_y = tl.sum(tl.where(is_label, s, 0.0), axis=1)
        ce = tl.where(labelled, (s_max - s_y) + tl.log(sum_e), 0.0)
        p = e / sum_e[:, None]

        # KD row = −Σ p_T·log q_S at temperature τ = Σ p_T·(max' − s'_v) + log Σ exp(s' − max').
        ss = s * inv_tau
        ss_max = s_max * inv_tau
        es = tl.exp(ss - ss_max[:, None])
        sum_es = tl.sum(es, axis=1)
        tt = t * inv_tau
        tt_max = tl.max(tt, axis=1)
        et = tl.exp(tt - tt_max[:, None])
        p_t = et / tl.sum(et, axis=1)[:, None]
        gap = tl.where(cmask[None, :], ss_max[:, None] - ss, 0.0)
        kd = tl.sum(p_t * gap, axis=1) + tl.log(sum_es)
        q_s = es / sum_es[:, None]

        n_labelled = tl.load(n_labelled_ptr)
        mlm_coef = tl.where(labelled, w_mlm / n_labelled, 0.0)
        onehot = tl.where(is_label, 1.0, 0.0)
        grad = mlm_coef[:, None] * (p - onehot) + kd_grad_coef * (q_s - p_t)
        tl.store(grad_ptr + rows64[:, None] * V + cols[None, :], grad, mask=mask)
        tl.store(ce_ptr + rows, ce, mask=rmask)
        tl.store(kd_ptr + rows, kd, mask=rmask)

    def cosine_kernel(
        s_ptr, t_ptr, u_ptr, inv_norm_ptr, loss_ptr,
        N, H, s_stride, t_stride, eps,
        BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr,
    ):
        rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        cols = tl.arange(0, BLOCK_H)
        rmask = rows < N
        mask = rmask[:, None] & (cols < H)[None, :]
        rows64 = rows.to(tl.int64)
        s = tl.load(s_ptr + rows64[:, None] * s_stride + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        t = tl.load(t_ptr + rows64[:, None] * t_stride + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        dot = tl.sum(s * t, axis=1)
        ss = tl.sum(s * s, axis=1)
        ns = tl.sqrt(ss)
        nt = tl.sqrt(tl.sum(t * t, axis=1))
        prod = ns * nt  # not sqrt(ss·tt): that product overflows fp32 for large hidden states
        denom = tl.maximum(prod, eps)
        cos = dot / denom
        # d cos/ds = t/denom − cos·s/|s|² (the second term vanishes where eps clamps the denominator).
        # Stored as u·(1/|s|) with u of unit scale; |s| = 0 uses factor 1 instead.
        ns_f = tl.where(ns > 0, ns, 1.0)
        a = ns_f / denom
        b = tl.where(prod >= eps, cos * ns_f / tl.where(ss > 0, ss, 1.0), 0.0)
        u = b[:, None] * s - a[:, None] * t  # = |s|·d(1 − cos)/ds
        tl.store(u_ptr + rows64[:, None] * H + cols[None, :], u.to(u_ptr.dtype.element_ty), mask=mask)
        tl.store(inv_norm_ptr + rows, 1.0 / ns_f, mask=rmask)
        tl.store(loss_ptr + rows, 1.0 - cos, mask=rmask)

    return logits_kernel, cosine_kernel


@functools.lru_cache(maxsize=2)
def _kernels(interpret: bool) -> SimpleNamespace:
    import triton
    from triton import knobs

    logits_fn, cosine_fn = _kernel_source()
    with knobs.runtime.scope():
        knobs.runtime.interpret = interpret
        return SimpleNamespace(logits=triton.jit(logits_fn), cosine=triton.jit(cosine_fn))


def _kernels_for(t: torch.Tensor) -> SimpleNamespace:
    return _kernels(t.device.type != "cuda")


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
    def forward(ctx, s_logits, t_logits, labels, temperature: float, w_mlm: float, w_kd: float):
        s, t = _row_major(s_logits), _row_major(t_logits)
        m, v = s.shape
        grad = torch.empty((m, v), dtype=torch.float32, device=s.device)
        ce = torch.empty(m, dtype=torch.float32, device=s.device)
        kd_rows = torch.empty(m, dtype=torch.float32, device=s.device)
        n_labelled = (labels != IGNORE_INDEX).sum().clamp_min(1).to(torch.float32)
        if m > 0:
            block_m, block_v = _blocks(v)
            kd_grad_coef = w_kd * temperature / m  # d(τ²·KD/M)/ds = (τ/M)·(q_S − p_T)
            _kernels_for(s).logits[(triton_cdiv(m, block_m),)](
                s, t, labels, grad, ce, kd_rows, n_labelled,
                m, v, s.stride(0), t.stride(0), 1.0 / temperature, w_mlm, kd_grad_coef,
                IGNORE=IGNORE_INDEX, BLOCK_M=block_m, BLOCK_V=block_v,
            )
        mlm = ce.sum() / n_labelled
        kd = kd_rows.sum() * (temperature**2 / max(m, 1))
        ctx.save_for_backward(grad)
        ctx.student_dtype = s_logits.dtype
        ctx.mark_non_differentiable(mlm, kd)
        return w_mlm * mlm + w_kd * kd, mlm, kd

    @staticmethod
    def backward(ctx, grad_weighted, _grad_mlm, _grad_kd):
        (grad,) = ctx.saved_tensors
        return (grad * grad_weighted).to(ctx.student_dtype), None, None, None, None, None


class _CosineLoss(torch.autograd.Function):
    """(w_cos·L_cos, L_cos); only the first output is differentiable."""

    @staticmethod
    def forward(ctx, s_hidden, t_hidden, w_cos: float):
        s, t = _row_major(s_hidden), _row_major(t_hidden)
        n, h = s.shape
        u = torch.empty((n, h), dtype=s_hidden.dtype, device=s.device)
        inv_norm = torch.empty(n, dtype=torch.float32, device=s.device)
        loss_rows = torch.empty(n, dtype=torch.float32, device=s.device)
        if n > 0:
            block_n, block_h = _blocks(h)
            _kernels_for(s).cosine[(triton_cdiv(n, block_n),)](
                s, t, u, inv_norm, loss_rows, n, h, s.stride(0), t.stride(0), COS_EPS,
                BLOCK_N=block_n, BLOCK_H=block_h,
            )
        cos = loss_rows.sum() / max(n, 1)
        ctx.save_for_backward(u, inv_norm)
        ctx.row_coef = w_cos / max(n, 1)
        ctx.used = False
        ctx.mark_non_differentiable(cos)
        return w_cos * cos, cos

    @staticmethod
    def backward(ctx, grad_weighted, _grad_cos):
        if ctx.used:
            raise RuntimeError("the fused cosine loss reuses its saved buffer as the gradient: backward twice is unsupported")
        ctx.used = True
        u, inv_norm = ctx.saved_tensors
        # In place: computed in fp32 (type promotion), rounded once to the student's dtype.
        u.mul_((inv_norm * (grad_weighted * ctx.row_coef)).unsqueeze(1))
        return u, None, None


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)


def loss_terms(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    student_hidden: torch.Tensor,
    teacher_hidden: torch.Tensor,
    temperature: float,
    weights: tuple[float, float, float],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, mlm, kd, cos) from the fused kernels; same contract as reference.loss_terms."""
    _check_device(student_logits)
    _check_device(student_hidden)
    w_mlm, w_kd, w_cos = weights
    logits_part, mlm, kd = _LogitsLoss.apply(student_logits, teacher_logits, labels, temperature, w_mlm, w_kd)
    hidden_part, cos = _CosineLoss.apply(student_hidden, teacher_hidden, w_cos)
    return logits_part + hidden_part, mlm, kd, cos
