"""Distillation throughput of this hardware: sequences/s, residues/s, TFLOP/s and MFU per device, peak
memory, time split, over a sweep of settings, against the naive transformers loop in the same run.

Runs real `DistillEngine` steps (teacher + DeepSpeed student + loss + optimizer) on a synthetic corpus
with UniRef50-like lengths (--lengths, default ../shared/data/lengths/uniref50_like_lengths.txt when it
exists, else a log-normal with median 166 / mean 193) or real shards (--corpus), with random models in a preset's
shape (--preset) or
a real teacher (--teacher). Reports the median of --repeats windows of --steps steps after --warmup
steps; the fastest setting that fits memory; the residues/s ratio against the naive baseline (at the
same precision, see minprot_ds/bench/naive.py); and with --project-epochs, the projected wall time of a full run.
Writes JSON + CSV + PNG (and logs them to MLflow with --mlflow).

The same command as `minprot bench throughput` (see its --help), with --out defaulting to
benchmarks/results/throughput.json; this form runs under the deepspeed launcher.

    python benchmarks/throughput.py  # cpu-small, fp32, one setting + baseline (minutes)
    python benchmarks/throughput.py --max-tokens 4096,8192 --loss-impl eager,compiled --zero-stage 1,2
    deepspeed --num_gpus 8 benchmarks/throughput.py --preset protbert --precision bf16 --no-baseline \\
        --max-tokens 8192,16384 --checkpointing off,on --project-epochs 3 --sequences 43e6 --gpus 8
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `deepspeed benchmarks/throughput.py` from any folder
    sys.path.insert(0, str(REPO))

DEFAULT_OUT = REPO / "benchmarks" / "results" / "throughput.json"


def main(argv: list[str] | None = None) -> None:
    from common import SHARED_LENGTHS  # benchmarks/common.py (this script's folder is on sys.path)

    from minprot_ds.cli import app
    from minprot_ds.cli.common import run_cli

    args = list(sys.argv[1:] if argv is None else argv)
    args = [a for a in args if not a.startswith("--local_rank")]  # the deepspeed launcher adds --local_rank=N
    if not any(a == "--out" or a.startswith("--out=") for a in args):
        args += ["--out", str(DEFAULT_OUT)]
    if SHARED_LENGTHS.is_file() and not any(a == "--lengths" or a.startswith("--lengths=") for a in args):
        args += ["--lengths", str(SHARED_LENGTHS)]
    run_cli(app, ["bench", "throughput", *args])


if __name__ == "__main__":
    main()
