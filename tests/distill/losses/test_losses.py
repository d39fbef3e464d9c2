"""distill_loss, eager and fused Triton (run by Triton's interpreter on CPU), against a float64 reference.

Triton 3.9 reads TRITON_INTERPRET when `@triton.jit` decorates a function, and decorates its own
tl.max/tl.sum when triton.language is first imported; so on a machine without CUDA this module sets
TRITON_INTERPRET=1 before anything imports triton (pytest imports test modules before running any test;
nothing in minprot_ds imports triton at import time). If triton was already imported in compiled mode by
something else in the process, the Triton tests skip saying so; `TRITON_INTERPRET=1 pytest tests/distill/losses`
always works. Inputs are fresh random each run; the seed is printed (pytest shows it on failure) and
MINPROT_TEST_SEED=<seed> replays it.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

import torch

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
if DEVICE.type == "cpu":
    os.environ["TRITON_INTERPRET"] = "1"  # tests/conftest.py sets it too, before any conftest imports triton

import pytest  # noqa: E402  (after TRITON_INTERPRET is set)
import torch.nn.functional as F  # noqa: E402

from minprot_ds.distill.losses import IGNORE_INDEX, distill_loss, resolve_impl  # noqa: E402
from minprot_ds.errors import UserError  # noqa: E402

triton = pytest.importorskip("triton", reason="the fused kernels need the triton package")

# Relative tolerances: fp16 keeps 11 significant bits, bf16 8 (its rounding alone is ~2e-3 per value).
TOL = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1.6e-2}
# ProtBert at the run config's default budget: 8,192 non-pad tokens, 15% of them masked, H = 1024, V = 30.
REAL_N, REAL_M, REAL_H, REAL_V = 8192, 1228, 1024, 30
# DeepSpeed's initial fp16 loss scale (2^16, ds_configs and the throughput benchmark): unscaled, the cosine
# gradient's entries at real shapes (~w/(N·|s|·√H) ≈ 4e-8) are fp16 subnormals, as they would be in training.
FP16_LOSS_SCALE = 2.0**16


@pytest.fixture
def interpret():
    from minprot_ds.distill.losses import fused_kernels

    if (DEVICE.type == "cpu") != fused_kernels.interpreted():
        pytest.skip(
            "these tests run the Triton kernels in its interpreter on CPU tensors; triton was imported "
            "in compiled mode before TRITON_INTERPRET=1 was set (run with TRITON_INTERPRET=1 in the environment)"
        )


@pytest.fixture
def gen() -> torch.Generator:
    seed = int(os.environ.get("MINPROT_TEST_SEED", secrets.randbits(31)))
    print(f"random inputs: MINPROT_TEST_SEED={seed}")
    return torch.Generator().manual_seed(seed)


def make_inputs(gen, m, n, v=30, h=64, scale=3.0, dtype=torch.float32, ignore_some=False):
    def rnd(*shape):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).to(dtype)

    labels = torch.randint(0, v, (m,), generator=gen)
    if ignore_some and m > 1:
        labels[torch.rand(m, generator=gen) < 0.5] = IGNORE_INDEX
    hs = torch.randn(n, h, generator=gen, dtype=torch.float64).to(dtype)
    # Teacher hidden correlated with the student's, as in training (cos well inside (−1, 1)).
    ht = (hs.double() + 0.7 * torch.randn(n, h, generator=gen, dtype=torch.float64)).to(dtype)
    return rnd(m, v), rnd(m, v), labels, hs, ht


def reference64(s_logits, t_logits, labels, s_hidden, t_hidden, tau, weights, tau_squared=True):
    """The maths in float64, written independently of minprot_ds (per-term, via autograd)."""
    s = s_logits.detach().double().requires_grad_()
    hs = s_hidden.detach().double().requires_grad_()
    t, ht = t_logits.double(), t_hidden.double()
    keep = labels != IGNORE_INDEX
    log_p = torch.log_softmax(s, dim=-1)
    mlm = -log_p[keep].gather(1, labels[keep].unsqueeze(1)).sum() / max(int(keep.sum()), 1)
    kd_rows = -(torch.softmax(t / tau, -1) * torch.log_softmax(s / tau, -1)).sum(-1)
    kd = kd_rows.sum() / max(s.shape[0], 1) * (tau**2 if tau_squared else 1.0)
    cos = (1 - F.cosine_similarity(hs, ht, dim=-1)).sum() / max(hs.shape[0], 1)
    total = weights[0] * mlm + weights[1] * kd + weights[2] * cos
    total.backward()
    return total.detach(), mlm.detach(), kd.detach(), cos.detach(), s.grad, hs.grad


def run_impl(impl, s_logits, t_logits, labels, s_hidden, t_hidden, tau, weights, tau_squared=True, loss_scale=1.0):
    """Runs on DEVICE (CUDA when present, else CPU with Triton's interpreter); results come back on CPU.
    With a loss scale, backward starts from scale·total (as DeepSpeed's fp16 engine does) and the
    gradients come back divided by it, in float64."""
    s = s_logits.to(DEVICE).requires_grad_()
    hs = s_hidden.to(DEVICE).requires_grad_()
    t_logits, labels, t_hidden = t_logits.to(DEVICE), labels.to(DEVICE), t_hidden.to(DEVICE)
    out = distill_loss(
        s,
        t_logits,
        labels,
        hs,
        t_hidden,
        temperature=tau,
        weights=weights,
        impl=impl,
        kd_temperature_squared=tau_squared,
    )
    (out.total * loss_scale if loss_scale != 1.0 else out.total).backward()
    out = type(out)(*(x.cpu() for x in (out.total, out.mlm, out.kd, out.cos)))
    if loss_scale != 1.0:
        assert s.grad.dtype == s_logits.dtype and hs.grad.dtype == s_hidden.dtype
        return out, s.grad.cpu().double() / loss_scale, hs.grad.cpu().double() / loss_scale
    return out, s.grad.cpu(), hs.grad.cpu()


def assert_rel(actual, expected, tol, what):
    actual, expected = actual.double(), expected.double()
    err = (actual - expected).norm() / expected.norm().clamp_min(1e-30)
    assert err <= tol, f"{what}: relative error {err:.3g} > {tol:g}"


def check_against_reference(impl, inputs, tau=2.0, weights=(1 / 3, 1 / 3, 1 / 3), tau_squared=True, loss_scale=1.0):
    dtype = inputs[0].dtype
    tol = TOL[dtype]
    ref = reference64(*inputs, tau, weights, tau_squared)
    out, g_logits, g_hidden = run_impl(impl, *inputs, tau, weights, tau_squared, loss_scale=loss_scale)
    for name, got, want in zip(("total", "mlm", "kd", "cos"), (out.total, out.mlm, out.kd, out.cos), ref[:4]):
        assert abs(got.item() - want.item()) <= tol * abs(want.item()) + 1e-12, (
            f"{impl} {name}: {got.item()} vs {want.item()}"
        )
    if loss_scale == 1.0:
        assert g_logits.dtype == dtype and g_hidden.dtype == dtype
    assert_rel(g_logits, ref[4], tol, f"{impl} d/d(student logits)")
    assert_rel(g_hidden, ref[5], tol, f"{impl} d/d(student hidden)")
    return out, g_logits, g_hidden


@pytest.mark.parametrize("impl", ["eager", "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_matches_float64_reference(impl, dtype, gen, interpret):
    # Sizes straddle the kernels' row blocks (128 logits rows, 64 hidden rows per program at these widths).
    inputs = make_inputs(gen, m=141, n=203, h=64, dtype=dtype, ignore_some=False)
    check_against_reference(impl, inputs, weights=(0.5, 0.3, 0.2))


@pytest.mark.parametrize("impl", ["eager", "triton", "compiled"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_real_shapes_match_float64_reference(impl, dtype, gen, interpret):
    # What a training step feeds the loss; on a GPU this compiles the kernels for ProtBert's widths.
    if DEVICE.type == "cpu" and impl != "eager":
        pytest.skip(
            f"impl {impl!r} at real shapes needs a GPU (Triton's interpreter and CPU compiles are too slow "
            "here; benchmarks/gpu/run.sh runs these on one)"
        )
    inputs = make_inputs(gen, m=REAL_M, n=REAL_N, h=REAL_H, v=REAL_V, dtype=dtype)
    scale = FP16_LOSS_SCALE if dtype == torch.float16 else 1.0
    check_against_reference(impl, inputs, loss_scale=scale)


@pytest.mark.parametrize("impl", ["eager", "triton"])
def test_esm2_vocabulary_of_33_tokens(impl, gen, interpret):
    """The kernels take V from the logits: ESM-2's 33 tokens (a row block of 64 with 31 masked columns)."""
    inputs = make_inputs(gen, m=77, n=90, v=33, h=40, ignore_some=True)
    out, g_logits, _ = check_against_reference(impl, inputs)
    assert g_logits.shape == (77, 33)


@pytest.mark.parametrize("impl", ["eager", "triton"])
def test_kd_on_all_rows_with_ignored_labels(impl, gen, interpret):
    # DistilBERT's "KD on every non-pad position": M = N rows, labels −100 where not masked.
    inputs = make_inputs(gen, m=97, n=97, h=48, ignore_some=True)
    check_against_reference(impl, inputs)


@pytest.mark.parametrize("impl", ["eager", "triton"])
def test_temperature_one_and_other_weightings(impl, gen, interpret):
    # MinProtBert's public loop: weights 1 / 0.5 / 0.1 (with τ² it is expressible through weights).
    inputs = make_inputs(gen, m=40, n=90, h=40)
    check_against_reference(impl, inputs, tau=1.0, weights=(1.0, 0.5, 0.1))


@pytest.mark.parametrize("impl", ["eager", "triton"])
def test_kd_without_temperature_squared(impl, gen, interpret):
    # MinProtBert's public loop: weights 1 / 0.5 / 0.1 and no τ² on the KD term (loss.kd_temperature_squared).
    inputs = make_inputs(gen, m=40, n=90, h=40)
    out, g_logits, _ = check_against_reference(impl, inputs, tau=2.0, weights=(1.0, 0.5, 0.1), tau_squared=False)
    scaled, _, _ = run_impl(impl, *inputs, 2.0, (1.0, 0.5, 0.1), True)  # values only: .grad accumulates on CPU
    assert torch.allclose(scaled.kd, 4.0 * out.kd, rtol=1e-5)


@pytest.mark.parametrize("impl", ["eager", "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_logits_of_magnitude_1e4_do_not_overflow(impl, dtype, gen, interpret):
    inputs = make_inputs(gen, m=33, n=17, scale=1e4, dtype=dtype)
    out, g_logits, g_hidden = check_against_reference(impl, inputs)
    assert torch.isfinite(out.total) and torch.isfinite(g_logits).all()


@pytest.mark.parametrize("impl", ["eager", "triton"])
def test_no_masked_position_gives_zero_not_nan(impl, gen, interpret):
    _, _, _, hs, ht = make_inputs(gen, m=0, n=12)
    empty = torch.zeros(0, 30)
    out, g_logits, g_hidden = run_impl(impl, empty, empty, torch.zeros(0, dtype=torch.long), hs, ht, 2.0, (1 / 3,) * 3)
    assert out.mlm.item() == 0.0 and out.kd.item() == 0.0
    assert torch.isfinite(out.total) and out.cos.item() > 0
    assert g_logits.shape == (0, 30)
    assert torch.isfinite(g_hidden).all() and g_hidden.abs().sum() > 0


@pytest.mark.parametrize("impl", ["eager", "triton"])
def test_every_label_ignored_gives_zero_mlm_and_zero_mlm_gradient(impl, gen, interpret):
    s, t, labels, hs, ht = make_inputs(gen, m=9, n=5)
    labels[:] = IGNORE_INDEX
    out, g_logits, _ = run_impl(impl, s, t, labels, hs, ht, 2.0, (1.0, 0.0, 0.0))
    assert out.mlm.item() == 0.0 and out.kd.item() > 0
    assert torch.count_nonzero(g_logits) == 0


@pytest.mark.parametrize("impl", ["eager", "triton"])
def test_single_row(impl, gen, interpret):
    inputs = make_inputs(gen, m=1, n=1, h=1024)
    check_against_reference(impl, inputs)


def test_teacher_tensors_from_inference_mode_get_no_gradient(gen, interpret):
    s, t, labels, hs, ht = (x.to(DEVICE) for x in make_inputs(gen, m=20, n=30))
    with torch.inference_mode():
        t_inf, ht_inf, labels_inf = t.clone(), ht.clone(), labels.clone()
    for impl in ("eager", "triton"):
        s_ = s.clone().requires_grad_()
        hs_ = hs.clone().requires_grad_()
        out = distill_loss(s_, t_inf, labels_inf, hs_, ht_inf, impl=impl)
        out.total.backward()
        assert s_.grad is not None and hs_.grad is not None
        assert not out.mlm.requires_grad and not out.kd.requires_grad and not out.cos.requires_grad


def test_eager_and_triton_agree_in_float16_with_float32_teacher(gen, interpret):
    # The run's usual mix: fp16 student activations, teacher in its own precision.
    s, t, labels, hs, ht = make_inputs(gen, m=50, n=70, dtype=torch.float16)
    outs = [run_impl(impl, s, t.float(), labels, hs, ht.float(), 2.0, (1 / 3,) * 3) for impl in ("eager", "triton")]
    (e, ge, he), (f, gf, hf) = outs
    assert abs(e.total.item() - f.total.item()) <= 1e-3 * abs(e.total.item())
    assert_rel(gf, ge, 1e-2, "logits grad")
    assert_rel(hf, he, 1e-2, "hidden grad")


def test_triton_on_cpu_without_interpreter_is_refused():
    # A fresh process: the compile/interpret choice is made once, when triton is first imported.
    code = (
        "import torch; from minprot_ds.distill.losses import distill_loss\n"
        "x = torch.randn(4, 30); h = torch.randn(4, 8); y = torch.zeros(4, dtype=torch.long)\n"
        "distill_loss(x, x, y, h, h, impl='triton')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "UserError" in proc.stderr and "TRITON_INTERPRET=1" in proc.stderr, proc.stderr[-2000:]


def test_auto_is_eager_on_cpu_and_bad_impl_is_named():
    assert resolve_impl("auto", "cpu") == "eager"
    assert resolve_impl("triton", "cpu") == "triton"
    with pytest.raises(UserError, match="unknown loss impl 'fast'"):
        resolve_impl("fast", "cpu")


def test_bad_temperature_and_shapes(gen):
    s, t, labels, hs, ht = make_inputs(gen, m=4, n=4)
    with pytest.raises(UserError, match="temperature must be > 0"):
        distill_loss(s, t, labels, hs, ht, temperature=0.0)
    with pytest.raises(ValueError, match="labels must be"):
        distill_loss(s, t, labels[:2], hs, ht)


@pytest.mark.slow
def test_compiled_matches_float64_reference(gen):
    inputs = make_inputs(gen, m=64, n=100, h=32)
    check_against_reference("compiled", inputs)
    # Fresh tensors: on CPU run_impl's .to(DEVICE) is the input itself, whose .grad would accumulate.
    inputs = make_inputs(gen, m=64, n=100, h=32)
    check_against_reference("compiled", inputs, weights=(1.0, 0.5, 0.1), tau_squared=False)


@pytest.mark.parametrize("impl", ["eager", "triton", "compiled"])
def test_pieces_divided_by_the_whole_count_sum_to_the_whole(impl, gen, interpret):
    """What the engine does per optimizer step (loss.normalize = "global-tokens"): every piece (micro-batch)
    divides its sums by the whole's counts, so the pieces' losses and gradients add up to the whole's mean."""
    s, t, labels, hs, ht = make_inputs(gen, 90, 70, ignore_some=True)
    weights, tau = (0.5, 0.3, 0.2), 2.0
    whole, g_logits, g_hidden = run_impl(impl, s, t, labels, hs, ht, tau, weights)
    divisors = (float((labels != IGNORE_INDEX).sum()), 90.0, 70.0)
    total, parts_logits, parts_hidden = 0.0, [], []
    for rows, hidden_rows in ((slice(0, 17), slice(0, 40)), (slice(17, 90), slice(40, 70))):
        ps = s[rows].detach().to(DEVICE).requires_grad_()
        phs = hs[hidden_rows].detach().to(DEVICE).requires_grad_()
        args = (t[rows].to(DEVICE), labels[rows].to(DEVICE))
        out = distill_loss(
            ps, *args, phs, ht[hidden_rows].to(DEVICE), temperature=tau, weights=weights, impl=impl, divisors=divisors
        )
        out.total.backward()
        total += out.total.item()
        parts_logits.append(ps.grad.cpu())
        parts_hidden.append(phs.grad.cpu())
    assert total == pytest.approx(whole.total.item(), rel=1e-5)
    assert_rel(torch.cat(parts_logits), g_logits, 1e-5, f"{impl} d/d(student logits)")
    assert_rel(torch.cat(parts_hidden), g_hidden, 1e-5, f"{impl} d/d(student hidden)")
