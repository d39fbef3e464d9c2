"""`minprot bench throughput | memory`: what this box delivers for the distillation, which settings to run,
and the memory each setting needs per GPU (the plan: minprot_ds/bench/memory.py).

Throughput runs in one process (CPU, or the first GPU); for several GPUs run the script form under the launcher:
`deepspeed --num_gpus N benchmarks/throughput.py ...` (the same command and options).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from minprot_ds.cli.common import make_console
from minprot_ds.errors import UserError

bench_app = typer.Typer(help="Hardware throughput benchmarks and the memory plan of the distillation.", no_args_is_help=True)


def _split(text: str, kind, option: str) -> list:
    try:
        values = [kind(v.strip()) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{option} {text!r} is not a comma-separated list of {kind.__name__} values.") from None
    if not values:
        raise UserError(f"{option} is empty; give at least one value.")
    return values


def _on_off(text: str) -> bool:
    if text not in ("on", "off"):
        raise ValueError(text)
    return text == "on"


_on_off.__name__ = "on/off"


@bench_app.command("throughput")
def throughput(
    preset: Annotated[str, typer.Option(help="Model shapes with random weights: tiny, cpu-small, protbert.")] = "cpu-small",
    teacher: Annotated[Optional[str], typer.Option(help="A real teacher folder or hub id instead of random weights.")] = None,
    corpus: Annotated[Optional[Path], typer.Option(help="Prepared shards (minprot data prepare); default: synthetic.")] = None,
    synthetic_sequences: Annotated[int, typer.Option(min=1, help="Rows of the synthetic corpus (UniRef50-like lengths).")] = 20_000,
    lengths: Annotated[Optional[Path], typer.Option(help="Lengths file for the synthetic corpus, one length a line (default: a log-normal with UniRef50's median 166 and mean 193).")] = None,
    precision: Annotated[str, typer.Option(help="fp32, bf16, fp16; comma-separated to sweep. Default: fp32 on CPU, bf16/fp16 on GPU.")] = "auto",
    max_tokens: Annotated[str, typer.Option(help="Token budget(s) per micro-batch, comma-separated.")] = "8192",
    max_rows: Annotated[Optional[int], typer.Option(help="Rows per micro-batch (default: 64 per 8192 tokens).")] = None,
    zero_stage: Annotated[str, typer.Option(help="ZeRO stage(s), comma-separated.")] = "2",
    checkpointing: Annotated[str, typer.Option(help="Activation checkpointing: off, on, or off,on.")] = "off",
    loss_impl: Annotated[str, typer.Option(help="eager, compiled, triton; comma-separated.")] = "eager",
    compile: Annotated[str, typer.Option(help="torch.compile of the encoders: none, teacher, all; comma-separated. Compiling takes minutes on CPU; warm-up runs until no new graph is compiled.")] = "none",
    deepspeed_config: Annotated[Optional[Path], typer.Option(help="Base DeepSpeed JSON; stage and precision are set per setting.")] = None,
    steps: Annotated[int, typer.Option(min=1, help="Steps per timed window (fewer sample few length buckets).")] = 10,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed steps first.")] = 2,
    repeats: Annotated[int, typer.Option(min=1, help="Timed windows; the median is reported.")] = 3,
    split_steps: Annotated[int, typer.Option(min=0, help="Phase-timed steps for the time split.")] = 2,
    num_workers: Annotated[int, typer.Option(min=0, help="DataLoader workers of the stream.")] = 0,
    peak_tflops: Annotated[Optional[float], typer.Option(help="Peak TFLOP/s per device for MFU (default: the table).")] = None,
    memory_limit_gb: Annotated[Optional[float], typer.Option(help="A setting whose peak memory exceeds this does not fit.")] = None,
    baseline: Annotated[bool, typer.Option(help="Run the naive baseline (at each compared precision) and print the ratio.")] = True,
    naive_batch_size: Annotated[int, typer.Option(min=1, help="Rows per naive batch (the recipe's local batch).")] = 16,
    naive_steps: Annotated[Optional[int], typer.Option(min=1, help="Steps per naive window (default: --steps).")] = None,
    project_epochs: Annotated[Optional[float], typer.Option(help="Print the projected wall time of this many epochs.")] = None,
    sequences: Annotated[float, typer.Option(help="Sequences per epoch for the projection.")] = 43e6,
    gpus: Annotated[int, typer.Option(min=1, help="Devices for the projection.")] = 8,
    seed: Annotated[int, typer.Option(help="Seeds the models, the synthetic corpus and the data order.")] = 0,
    work_dir: Annotated[Optional[Path], typer.Option(help="Scratch folder for the models and corpus (default: temporary, removed).")] = None,
    out: Annotated[Path, typer.Option(help="JSON results; CSV and PNG are written beside it.")] = Path("throughput.json"),
    mlflow: Annotated[bool, typer.Option("--mlflow", help="Log the report and files to MLflow.")] = False,
    tracking_uri: Annotated[Optional[str], typer.Option(help="MLflow server (default: SQLite beside --out).")] = None,
) -> None:
    """Time real distillation steps per setting (median of repeats), report the fastest that fits memory,
    the ratio against a naive transformers loop, and optionally a projected full-run wall time.

    Runs real DistillEngine steps (teacher + DeepSpeed student + loss + optimizer) on a synthetic corpus
    with UniRef50-like lengths or real shards (--corpus), with random models in a preset's shape or a
    real teacher. The naive baseline (minprot_ds/bench/naive.py) runs at the compared setting's precision,
    a window after each window of each precision's fastest setting; the ratio is the median of those
    pairs. Writes JSON, CSV and PNG (and logs them to MLflow with --mlflow).
    """
    import torch

    from minprot_ds.bench import report as rp
    from minprot_ds.bench import throughput as tp

    if precision == "auto":
        precision = "fp32" if not torch.cuda.is_available() else ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    settings = tp.sweep_settings(
        max_tokens=_split(max_tokens, int, "--max-tokens"), zero_stages=_split(zero_stage, int, "--zero-stage"),
        checkpointing=_split(checkpointing, _on_off, "--checkpointing"), loss_impls=_split(loss_impl, str, "--loss-impl"),
        precisions=_split(precision, str, "--precision"), compiles=_split(compile, str, "--compile"), max_rows=max_rows,
    )
    base = None
    if deepspeed_config is not None:
        if not deepspeed_config.is_file():
            raise UserError(f"--deepspeed-config {deepspeed_config} does not exist; presets are in ds_configs/.")
        base = json.loads(deepspeed_config.read_text())
    projection = {"epochs": project_epochs, "sequences": sequences, "gpus": gpus} if project_epochs else None
    stdout = make_console(width=max(make_console().width, 190))
    report = tp.benchmark(
        settings, preset=preset, teacher=teacher, corpus=str(corpus) if corpus else None,
        synthetic_sequences=synthetic_sequences, lengths_file=lengths, work_dir=work_dir, ds_base=base,
        baseline=baseline, naive_batch_size=naive_batch_size, naive_steps=naive_steps, projection=projection,
        log=stdout.print, steps=steps, warmup=warmup, repeats=repeats, split_steps=split_steps,
        num_workers=num_workers, seed=seed, peak_tflops=peak_tflops, memory_limit_gb=memory_limit_gb,
    )
    if report is None:
        return
    table = Table(title=f"distillation throughput ({report['preset']}, median of {repeats}x{steps} steps)")
    for i, name in enumerate(rp.TABLE_COLUMNS):
        table.add_column(name, justify="left" if i < 2 else "right", no_wrap=i == 0)
    for row in rp.table_rows(report):
        table.add_row(*("—" if c is None else str(c) for c in row))
    stdout.print(table)
    for line in rp.summary_lines(report):
        stdout.print(line)
    files = rp.write_outputs(report, out)
    stdout.print(f"wrote {', '.join(map(str, files))}")
    if mlflow:
        run_id = rp.log_to_mlflow(report, files, tracking_uri=tracking_uri, run_dir=out.resolve().parent)
        stdout.print(f"MLflow run {run_id}")


@bench_app.command("memory")
def memory(
    preset: Annotated[str, typer.Option(help="Model shapes: tiny, cpu-small, protbert (ProtBert's 40,000-position table).")] = "protbert",
    gpu: Annotated[str, typer.Option(help="v100-16gb, v100-32gb, a100-40gb, a100-80gb, h100-80gb.")] = "v100-32gb",
    gpus: Annotated[int, typer.Option(min=1, help="Devices in the job (all nodes).")] = 8,
    nodes: Annotated[int, typer.Option(min=1, help="Nodes the devices are spread over.")] = 1,
    max_tokens: Annotated[int, typer.Option(min=520, help="Token budget per micro-batch the prediction is for.")] = 8192,
    max_rows: Annotated[Optional[int], typer.Option(help="Rows per micro-batch (default: 64 per 8192 tokens).")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the plan as JSON here.")] = None,
) -> None:
    """Predicted memory per GPU of the distillation, per ZeRO stage x precision x activation checkpointing,
    and the largest token budget that fits with a margin (minprot_ds/bench/memory.py says how)."""
    from minprot_ds.bench import memory as mem
    from minprot_ds.bench.throughput import default_rows
    from minprot_ds.models.masked_lm import MODEL_PRESETS

    if preset not in MODEL_PRESETS:
        raise UserError(f"--preset {preset!r} is unknown; choose one of {', '.join(MODEL_PRESETS)}.")
    if gpu not in mem.GPUS:
        raise UserError(f"--gpu {gpu!r} is unknown; choose one of {', '.join(mem.GPUS)}.")
    if gpus % nodes:
        raise UserError(f"--gpus {gpus} is not a multiple of --nodes {nodes}; give the devices of all nodes.")
    config = mem.preset_config(preset)
    plan = mem.memory_plan(config, MODEL_PRESETS[preset].student_layers, gpu=gpu, gpus=gpus, nodes=nodes,
                           max_tokens=max_tokens, max_rows=max_rows or default_rows(max_tokens))
    stdout = make_console(width=max(make_console().width, 150))
    table = Table(title=f"memory per GPU: {preset} on {gpus}x {gpu} ({nodes} node(s)), {max_tokens} tokens / "
                        f"{plan['max_rows']} rows per micro-batch")
    for name in ("precision", "ZeRO", "act. ckpt", "student states GB", "buckets GB", "teacher GB", "activations GB",
                 "total GB", "fits", "largest budget that fits"):
        table.add_column(name, justify="right")
    for row in plan["settings"]:
        gb = row["predicted_gb"]
        table.add_row(row["precision"], str(row["stage"]), "on" if row["checkpointing"] else "off",
                      f"{gb['student_states']:.2f}", f"{gb['grad_buckets']:.2f}",
                      f"{gb['teacher_weights'] + gb['teacher_working']:.2f}", f"{gb['activations']:.2f}",
                      f"{gb['total']:.2f}", "yes" if row["fits"] else "no",
                      f"{row['largest_max_tokens']:,}" if row["largest_max_tokens"] else "none")
    stdout.print(table)
    stdout.print(f"fits = total <= {plan['device_gb']:g} GB x (1 - {mem.MARGIN:g}) - {mem.RESERVE_GB:g} GB (CUDA context, "
                 "fragmentation); predicted = torch.cuda.max_memory_allocated of a step.")
    if json_out is not None:
        from minprot_ds.bench.report import write_benchmark_json

        stdout.print(f"wrote {write_benchmark_json(json_out, 'memory_plan', plan)}")
