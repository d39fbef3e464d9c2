"""Distillation loss: eager vs fused Triton vs torch.compile'd eager — time and peak memory of forward+backward.

Sizes as in training: N non-pad tokens (8k to 64k), M = 15% of N masked rows, H = 1024, V = 30.
On CUDA, peak memory is torch.cuda.max_memory_allocated above the inputs; on CPU it is the peak of
the CPU allocator's live bytes above the inputs, from the profiler's memory events. The fused kernels
need CUDA; on CPU they run only in Triton's interpreter (start with TRITON_INTERPRET=1), far too slow
for full sizes, so `--fused-max-n` skips them above a size and the table says so.

    python benchmarks/loss_kernels.py                                   # GPU: all sizes
    TRITON_INTERPRET=1 python benchmarks/loss_kernels.py --sizes 2048,8192 --fused-max-n 2048   # CPU
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from minprot_ds.distill.losses import distill_loss, fused

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def make_inputs(n: int, mask_frac: float, hidden: int, vocab: int, dtype: torch.dtype, device: torch.device):
    g = torch.Generator(device="cpu").manual_seed(n)
    m = max(1, int(n * mask_frac))

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(device=device, dtype=dtype)

    return dict(
        student_logits=rnd(m, vocab, scale=3.0).requires_grad_(),
        teacher_logits=rnd(m, vocab, scale=3.0),
        labels=torch.randint(0, vocab, (m,), generator=g).to(device),
        student_hidden=rnd(n, hidden).requires_grad_(),
        teacher_hidden=rnd(n, hidden),
    )


def step(inputs: dict, impl: str) -> None:
    for name in ("student_logits", "student_hidden"):
        inputs[name].grad = None
    out = distill_loss(**inputs, impl=impl)
    out.total.backward()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_bytes(inputs: dict, impl: str, device: torch.device) -> int:
    """Peak live bytes one forward+backward allocates beyond its inputs (gradients included)."""
    step(inputs, impl)  # gradients exist from here on, as in every step after the first
    if device.type == "cuda":
        sync(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step(inputs, impl)
        sync(device)
        return torch.cuda.max_memory_allocated(device) - base
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step(inputs, impl)
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


def time_ms(inputs: dict, impl: str, device: torch.device, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        step(inputs, impl)
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        step(inputs, impl)
        sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="8192,16384,32768,65536", help="comma-separated N (non-pad tokens)")
    parser.add_argument("--mask-frac", type=float, default=0.15)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=30)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="default: fp16 on CUDA, fp32 on CPU")
    parser.add_argument("--impls", default="eager,triton,compiled")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--fused-max-n", type=int, default=None, help="on CPU, skip triton above this N (interpreter)")
    parser.add_argument("--out", type=Path, default=Path("loss_kernels.json"))
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = DTYPES[args.dtype or ("fp16" if device.type == "cuda" else "fp32")]
    impls = args.impls.split(",")
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    for n in sizes:
        inputs = make_inputs(n, args.mask_frac, args.hidden, args.vocab, dtype, device)
        for impl in impls:
            row = dict(n=n, m=inputs["labels"].shape[0], impl=impl, dtype=str(dtype).removeprefix("torch."))
            skip = None
            if impl == "triton" and device.type == "cpu":
                if not fused.interpreter_requested():
                    skip = "CPU without TRITON_INTERPRET=1"
                elif args.fused_max_n is not None and n > args.fused_max_n:
                    skip = f"interpreter, N > {args.fused_max_n}"
            if skip:
                rows.append(dict(row, skipped=skip))
                continue
            repeats = args.repeats if not (impl == "triton" and device.type == "cpu") else min(args.repeats, 3)
            row["time_ms"] = time_ms(
                inputs, impl, device, repeats, args.warmup if impl != "triton" or device.type == "cuda" else 1
            )
            # The interpreter works on numpy copies the torch allocator never sees: no CPU memory figure.
            interpreted = impl == "triton" and device.type == "cpu"
            row["peak_mib"] = None if interpreted else peak_bytes(inputs, impl, device) / 2**20
            rows.append(row)

    for row in rows:
        base = next((r for r in rows if r["n"] == row["n"] and r["impl"] == "eager" and "time_ms" in r), None)
        if base and "time_ms" in row:
            row["speedup_vs_eager"] = base["time_ms"] / row["time_ms"]
            if row["peak_mib"] is not None and base["peak_mib"]:
                row["memory_vs_eager"] = row["peak_mib"] / base["peak_mib"]

    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    table = Table(
        title=f"distill_loss forward+backward on {device_name} ({row['dtype']}, H={args.hidden}, V={args.vocab})"
    )
    for col in ("N", "M", "impl", "median ms", "peak MiB", "× faster", "× memory"):
        table.add_column(col, justify="left" if col == "impl" else "right")
    for r in rows:
        if "skipped" in r:
            table.add_row(str(r["n"]), str(r["m"]), r["impl"], f"skipped ({r['skipped']})", "", "", "")
            continue
        table.add_row(
            str(r["n"]),
            str(r["m"]),
            r["impl"],
            f"{r['time_ms']:.2f}",
            "n/a (interpreter)" if r["peak_mib"] is None else f"{r['peak_mib']:.1f}",
            f"{r.get('speedup_vs_eager', float('nan')):.2f}",
            f"{r.get('memory_vs_eager', float('nan')):.2f}",
        )
    Console(width=140).print(table)
    report = dict(
        device=device_name,
        device_type=device.type,
        torch=torch.__version__,
        hidden=args.hidden,
        vocab=args.vocab,
        mask_frac=args.mask_frac,
        repeats=args.repeats,
        rows=rows,
    )
    args.out.write_text(json.dumps(report, indent=2))
    Console(soft_wrap=True).print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
