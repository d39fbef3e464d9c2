"""The Triton kernels behind fused.py (imported lazily by it, so `import triton` stays optional).

Whether these are compiled or interpreted is fixed when this module and triton.language are first
imported (TRITON_INTERPRET is read as `@triton.jit` decorates, including triton's own tl.max/tl.sum).
"""

import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction


@triton.jit
def logits_kernel(
    s_ptr,
    t_ptr,
    labels_ptr,
    grad_ptr,
    ce_ptr,
    kd_ptr,
    n_labelled_ptr,
    M,
    V,
    s_stride,
    t_stride,
    inv_tau,
    w_mlm,
    kd_grad_coef,
    IGNORE: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_V: tl.constexpr,
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


@triton.jit
def cosine_kernel(
    s_ptr,
    t_ptr,
    u_ptr,
    inv_norm_ptr,
    loss_ptr,
    N,
    H,
    s_stride,
    t_stride,
    eps,
    BLOCK_N: tl.constexpr,
    BLOCK_H: tl.constexpr,
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


def interpreted() -> bool:
    """Whether these kernels and triton's standard library run in the interpreter (CPU tensors)."""
    return isinstance(logits_kernel, InterpretedFunction) and isinstance(tl.max, InterpretedFunction)
