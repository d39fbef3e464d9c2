"""Distillation throughput of this hardware: sequences/s, residues/s, TFLOP/s and MFU per device, peak
memory, time split, over a sweep of settings, against the naive transformers loop in the same run.

Runs real `DistillEngine` steps (teacher + DeepSpeed student + loss + optimizer) on a synthetic corpus
with UniRef50-like lengths (../shared/data/lengths/uniref50_like_lengths.txt, else a log-normal with
median 166 / mean 193) or real shards (--corpus), with random models in a preset's shape (--preset) or
a real teacher (--teacher). Reports the median of --repeats windows of --steps steps after --warmup
steps; the fastest setting that fits memory; the residues/s ratio against the naive baseline (always
fp32, see minprot_ds/bench/naive.py); and with --project-epochs, the projected wall time of a full run.
Writes JSON + CSV + PNG (and logs them to MLflow with --mlflow).

    python benchmarks/throughput.py                                   # cpu-small, fp32, one setting + baseline (minutes)
    python benchmarks/throughput.py --max-tokens 4096,8192 --loss-impl eager,compiled --zero-stage 1,2
    deepspeed --num_gpus 8 benchmarks/throughput.py --preset protbert --precision bf16 --no-baseline \\
        --max-tokens 8192,16384 --checkpointing off,on --project-epochs 3 --sequences 43e6 --gpus 8
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `deepspeed benchmarks/throughput.py` from any folder
    sys.path.insert(0, str(REPO))

from rich.console import Console  # noqa: E402

from common import make_console, print_table, write_json  # noqa: E402

from minprot_ds.errors import UserError  # noqa: E402

DEFAULT_OUT = REPO / "benchmarks" / "results" / "throughput.json"
console = make_console()


def _list(kind):
    def parse(text: str):
        try:
            return [kind(v.strip()) for v in text.split(",") if v.strip()]
        except ValueError as err:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of {kind.__name__}") from err
    return parse


def _on_off(text: str) -> bool:
    if text not in ("on", "off"):
        raise ValueError(text)
    return text == "on"


_on_off.__name__ = "on/off"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    import torch

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="cpu-small", help="model shapes: tiny, cpu-small (default), protbert")
    p.add_argument("--teacher", default=None, help="a real teacher folder or hub id instead of random weights")
    p.add_argument("--corpus", default=None, help="prepared shards (minprot data prepare); default: synthetic")
    p.add_argument("--synthetic-sequences", type=int, default=20_000, help="rows of the synthetic corpus (default 20000)")
    p.add_argument("--lengths", type=Path, default=None, help="lengths file for the synthetic corpus (default: the UniRef50-like sample)")
    default_precision = "fp32" if not torch.cuda.is_available() else ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    p.add_argument("--precision", type=_list(str), default=[default_precision],
                   help=f"fp32, bf16, fp16, comma-separated to sweep (default here: {default_precision})")
    p.add_argument("--max-tokens", type=_list(int), default=[8192], help="token budget(s) per micro-batch (default 8192)")
    p.add_argument("--max-rows", type=int, default=None, help="rows per micro-batch (default: 64 per 8192 tokens)")
    p.add_argument("--zero-stage", type=_list(int), default=[2], help="ZeRO stage(s) (default 2)")
    p.add_argument("--checkpointing", type=_list(_on_off), default=[False], help="activation checkpointing: off, on or off,on")
    p.add_argument("--loss-impl", type=_list(str), default=["eager"], help="eager, compiled, triton (comma-separated)")
    p.add_argument("--deepspeed-config", type=Path, default=None, help="base DeepSpeed JSON; stage and precision are set per setting")
    p.add_argument("--steps", type=int, default=10, help="steps per timed window (default 10: fewer sample few length buckets)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    p.add_argument("--repeats", type=int, default=3, help="timed windows; the median is reported (default 3)")
    p.add_argument("--split-steps", type=int, default=2, help="phase-timed steps for the time split (default 2)")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader workers of the stream (default 0)")
    p.add_argument("--peak-tflops", type=float, default=None, help="peak TFLOP/s per device for MFU (default: from the table)")
    p.add_argument("--memory-limit-gb", type=float, default=None, help="a setting whose peak exceeds this does not fit")
    p.add_argument("--no-baseline", action="store_true", help="skip the naive baseline")
    p.add_argument("--naive-batch-size", type=int, default=16, help="rows per naive batch (default 16, the recipe's local batch)")
    p.add_argument("--naive-steps", type=int, default=None, help="steps per naive window (default: --steps)")
    p.add_argument("--project-epochs", type=float, default=None, help="print the projected wall time of this many epochs")
    p.add_argument("--sequences", type=float, default=43e6, help="sequences per epoch for the projection (default 43e6)")
    p.add_argument("--gpus", type=int, default=8, help="devices for the projection (default 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work-dir", type=Path, default=None, help="scratch folder (default: temporary, removed)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON path; CSV and PNG beside it (default benchmarks/results/throughput.json)")
    p.add_argument("--mlflow", action="store_true", help="log the report and files to MLflow")
    p.add_argument("--tracking-uri", default=None, help="MLflow server (default: SQLite beside --out)")
    p.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # the deepspeed launcher's
    args = p.parse_args(argv)
    for name in ("steps", "repeats", "synthetic_sequences", "naive_batch_size", "gpus"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("warmup", "split_steps", "num_workers"):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')} must be 0 or more")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return _run(args)
    except UserError as err:
        console.print(f"[red]error:[/] {err}")
        return 1


def _run(args: argparse.Namespace) -> int:
    import json

    from minprot_ds.bench import throughput as tp

    settings = tp.sweep_settings(max_tokens=args.max_tokens, zero_stages=args.zero_stage, checkpointing=args.checkpointing,
                                 loss_impls=args.loss_impl, precisions=args.precision, max_rows=args.max_rows)
    base = None
    if args.deepspeed_config is not None:
        if not args.deepspeed_config.is_file():
            raise UserError(f"--deepspeed-config {args.deepspeed_config} does not exist; presets are in ds_configs/.")
        base = json.loads(args.deepspeed_config.read_text())
    projection = None
    if args.project_epochs:
        projection = {"epochs": args.project_epochs, "sequences": args.sequences, "gpus": args.gpus}
    report = tp.benchmark(
        settings, preset=args.preset, teacher=args.teacher, corpus=args.corpus,
        synthetic_sequences=args.synthetic_sequences, lengths_file=args.lengths, work_dir=args.work_dir, ds_base=base,
        baseline=not args.no_baseline, naive_batch_size=args.naive_batch_size, naive_steps=args.naive_steps,
        projection=projection, log=console.print, steps=args.steps, warmup=args.warmup, repeats=args.repeats,
        split_steps=args.split_steps, num_workers=args.num_workers, seed=args.seed, peak_tflops=args.peak_tflops,
        memory_limit_gb=args.memory_limit_gb,
    )
    if report is None:  # ranks other than 0
        return 0
    print_table(f"distillation throughput ({report['preset']}, median of {args.repeats}x{args.steps} steps)",
                tp.TABLE_COLUMNS, tp.table_rows(report), console=Console(width=max(console.width, 190)))
    for line in tp.summary_lines(report):
        console.print(line)
    files = tp.write_outputs(report, args.out, write_json=write_json)
    console.print(f"wrote {', '.join(map(str, files))}")
    if args.mlflow:
        run_id = tp.log_to_mlflow(report, files, tracking_uri=args.tracking_uri, run_dir=args.out.parent)
        console.print(f"MLflow run {run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
