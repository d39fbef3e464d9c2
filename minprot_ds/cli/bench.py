"""`minprot bench throughput | memory`: what this box delivers for the distillation, which settings to run,
and the memory each setting needs per GPU (the plan: minprot_ds/bench/memory.py).

Throughput runs in one process (CPU, or the first GPU); for several GPUs run the script form under the launcher:
`deepspeed --num_gpus N benchmarks/throughput.py ...` (the same command and options).
"""

from __future__ import annotations

from rich.table import Table

from minprot_ds.bench.options import MemoryOptions, ThroughputOptions
from minprot_ds.cli.common import make_console
from minprot_ds.errors import UserError
from minprot_ds.fileio import read_json
from minprot_ds.options import typer_command
from minprot_ds.outputs import check_out


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


def throughput(o: ThroughputOptions) -> None:
    """Time real distillation steps per setting (median of repeats), report the fastest that fits memory,
    the ratio against a naive transformers loop, and optionally a projected full-run wall time.

    Runs real DistillEngine steps (teacher + DeepSpeed student + loss + optimizer) on a synthetic corpus
    with UniRef50-like lengths or real shards (--corpus), with random models in a preset's shape or a
    real teacher. The naive baseline (minprot_ds/bench/naive.py) runs at the compared setting's precision,
    a window after each window of each precision's fastest setting; the ratio is the median of those
    pairs. Writes JSON, CSV and PNG (and logs them to MLflow with --mlflow).
    """
    from minprot_ds.bench import report as rp
    from minprot_ds.bench import throughput as tp
    from minprot_ds.ds_config import auto_precision

    precision = auto_precision() if o.precision == "auto" else o.precision
    settings = tp.sweep_settings(
        max_tokens=_split(o.max_tokens, int, "--max-tokens"),
        zero_stages=_split(o.zero_stage, int, "--zero-stage"),
        checkpointing=_split(o.checkpointing, _on_off, "--checkpointing"),
        loss_impls=_split(o.loss_impl, str, "--loss-impl"),
        precisions=_split(precision, str, "--precision"),
        compiles=_split(o.compile, str, "--compile"),
        max_rows=o.max_rows,
    )
    base = None
    if o.deepspeed_config is not None:
        if not o.deepspeed_config.is_file():
            raise UserError(f"--deepspeed-config {o.deepspeed_config} does not exist; presets are in ds_configs/.")
        base = read_json(o.deepspeed_config, "--deepspeed-config")
    projection = {"epochs": o.project_epochs, "sequences": o.sequences, "gpus": o.gpus} if o.project_epochs else None
    stdout = make_console(width=max(make_console().width, 190))
    report = tp.benchmark(
        settings,
        preset=o.preset,
        teacher=o.teacher,
        corpus=str(o.corpus) if o.corpus else None,
        synthetic_sequences=o.synthetic_sequences,
        lengths_file=o.lengths,
        work_dir=o.work_dir,
        ds_base=base,
        baseline=o.baseline,
        naive_batch_size=o.naive_batch_size,
        naive_steps=o.naive_steps,
        projection=projection,
        log=stdout.print,
        steps=o.steps,
        warmup=o.warmup,
        repeats=o.repeats,
        split_steps=o.split_steps,
        num_workers=o.num_workers,
        seed=o.seed,
        peak_tflops=o.peak_tflops,
        memory_limit_gb=o.memory_limit_gb,
    )
    if report is None:
        return
    table = Table(title=f"distillation throughput ({report['preset']}, median of {o.repeats}x{o.steps} steps)")
    for i, name in enumerate(rp.TABLE_COLUMNS):
        table.add_column(name, justify="left" if i < 2 else "right", no_wrap=i == 0)
    for row in rp.table_rows(report):
        table.add_row(*("—" if c is None else str(c) for c in row))
    stdout.print(table)
    for line in rp.summary_lines(report):
        stdout.print(line)
    files = rp.write_outputs(report, o.out)
    stdout.print(f"wrote {', '.join(map(str, files))}")
    if o.mlflow:
        run_id = rp.log_to_mlflow(report, files, tracking_uri=o.tracking_uri, run_dir=o.out.resolve().parent)
        stdout.print(f"MLflow run {run_id}")


def memory(o: MemoryOptions) -> None:
    """Predicted memory per GPU of the distillation, per ZeRO stage x precision x activation checkpointing,
    and the largest token budget that fits with a margin (minprot_ds/bench/memory.py says how)."""
    from minprot_ds.bench import memory as mem
    from minprot_ds.bench.throughput import default_rows

    if o.json_out is not None:  # a results file, rewritten by every run: only its location is checked here
        check_out(o.json_out, flag="--json", overwrite=True)
    from minprot_ds.models.masked_lm import MODEL_PRESETS

    if o.preset not in MODEL_PRESETS:
        raise UserError(f"--preset {o.preset!r} is unknown; choose one of {', '.join(MODEL_PRESETS)}.")
    if o.gpu not in mem.GPUS:
        raise UserError(f"--gpu {o.gpu!r} is unknown; choose one of {', '.join(mem.GPUS)}.")
    if o.gpus % o.nodes:
        raise UserError(f"--gpus {o.gpus} is not a multiple of --nodes {o.nodes}; give the devices of all nodes.")
    config = mem.preset_config(o.preset)
    plan = mem.memory_plan(
        config,
        MODEL_PRESETS[o.preset].student_layers,
        gpu=o.gpu,
        gpus=o.gpus,
        nodes=o.nodes,
        max_tokens=o.max_tokens,
        max_rows=o.max_rows or default_rows(o.max_tokens),
    )
    stdout = make_console(width=max(make_console().width, 150))
    table = Table(
        title=f"memory per GPU: {o.preset} on {o.gpus}x {o.gpu} ({o.nodes} node(s)), {o.max_tokens} tokens / "
        f"{plan['max_rows']} rows per micro-batch"
    )
    for name in (
        "precision",
        "ZeRO",
        "act. ckpt",
        "student states GB",
        "buckets GB",
        "teacher GB",
        "activations GB",
        "total GB",
        "fits",
        "largest budget that fits",
    ):
        table.add_column(name, justify="right")
    for row in plan["settings"]:
        gb = row["predicted_gb"]
        table.add_row(
            row["precision"],
            str(row["stage"]),
            "on" if row["checkpointing"] else "off",
            f"{gb['student_states']:.2f}",
            f"{gb['grad_buckets']:.2f}",
            f"{gb['teacher_weights'] + gb['teacher_working']:.2f}",
            f"{gb['activations']:.2f}",
            f"{gb['total']:.2f}",
            "yes" if row["fits"] else "no",
            f"{row['largest_max_tokens']:,}" if row["largest_max_tokens"] else "none",
        )
    stdout.print(table)
    stdout.print(
        f"fits = total <= {plan['device_gb']:g} GB x (1 - {mem.MARGIN:g}) - {mem.RESERVE_GB:g} GB (CUDA context, "
        "fragmentation); predicted = torch.cuda.max_memory_allocated of a step."
    )
    if o.json_out is not None:
        from minprot_ds.bench.report import write_benchmark_json

        stdout.print(f"wrote {write_benchmark_json(o.json_out, 'memory_plan', plan)}")


# The options come from ThroughputOptions and MemoryOptions (minprot_ds/bench/options.py).
COMMANDS = [
    ("bench throughput", typer_command(ThroughputOptions, throughput, throughput.__doc__, "throughput")),
    ("bench memory", typer_command(MemoryOptions, memory, memory.__doc__, "memory")),
]
