"""Facts run.sh reports before its measurements: the software and device (`env`), and the matrix-multiply
rate the device reaches here (`matmul`), which MFU is taken against.

    python benchmarks/gpu/probe.py env --out env.json
    python benchmarks/gpu/probe.py matmul --n 8192 --dtypes bf16,fp16 --out matmul.json

The matmul rate is the median of timed n×n×n products on random normal inputs (never zeros: they run
faster than real data on some GPUs) after warm-up, timed with CUDA events (on CPU, the wall clock).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata as md
import json
import platform
import statistics
import sys
import time
from pathlib import Path

DTYPES = ("fp32", "bf16", "fp16")


def _version(module: str) -> str:
    """The installed version of a module's distribution, after importing it (an import that breaks is
    itself the finding)."""
    try:
        mod = importlib.import_module(module)
    except Exception as err:
        return f"unavailable ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
    try:
        return md.version(module.replace("_", "-"))
    except md.PackageNotFoundError:
        return getattr(mod, "__version__", "present")


def env() -> dict:
    import torch

    from minprot_ds.distill.flops import peak_tflops

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "triton": _version("triton"),
        "transformers": _version("transformers"),
        "deepspeed": _version("deepspeed"),
        "datasets": _version("datasets"),
        "pyarrow": _version("pyarrow"),
        "numpy": _version("numpy"),
        "huggingface_hub": _version("huggingface_hub"),
        "fsspec": _version("fsspec"),
        "typing_extensions": _version("typing_extensions"),
        "pydantic": _version("pydantic"),
        "device": "cpu",
        "v100_fp16_peak_tflops": peak_tflops("Tesla V100-SXM2-32GB", "fp16"),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        name = torch.cuda.get_device_name(0)
        info.update(
            device=name,
            capability=f"sm_{props.major}{props.minor}",
            memory_gib=props.total_memory / 2**30,
            multiprocessors=props.multi_processor_count,
            bf16=torch.cuda.is_bf16_supported(),
            datasheet_peak_tflops={d: peak_tflops(name, d) for d in ("bf16", "fp16")},
        )
    return info


def matmul(n: int, dtypes: list[str], repeats: int, warmup: int) -> dict:
    import torch

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    rates = {}
    for name in dtypes:
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]
        g = torch.Generator(device=device).manual_seed(0)
        a = torch.randn(n, n, device=device, dtype=dtype, generator=g)
        b = torch.randn(n, n, device=device, dtype=dtype, generator=g)
        for _ in range(warmup):
            a @ b
        times = []
        for _ in range(repeats):
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                a @ b
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) / 1e3)
            else:
                t0 = time.perf_counter()
                a @ b
                times.append(time.perf_counter() - t0)
        rates[name] = 2 * n**3 / statistics.median(times) / 1e12
        del a, b
    return {"n": n, "device": torch.cuda.get_device_name(0) if cuda else "cpu", "repeats": repeats, "tflops": rates}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("env").add_argument("--out", type=Path, required=True)
    mm = sub.add_parser("matmul")
    mm.add_argument("--n", type=int, default=8192)
    mm.add_argument("--dtypes", default="bf16,fp16", help=f"comma-separated, of {', '.join(DTYPES)}")
    mm.add_argument("--repeats", type=int, default=20)
    mm.add_argument("--warmup", type=int, default=5)
    mm.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.what == "env":
        result = env()
    else:
        dtypes = args.dtypes.split(",")
        if bad := [d for d in dtypes if d not in DTYPES]:
            parser.error(f"--dtypes: {', '.join(bad)} not among {', '.join(DTYPES)}")
        result = matmul(args.n, dtypes, args.repeats, args.warmup)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
