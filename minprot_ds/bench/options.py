"""The options of `minprot bench throughput` and `minprot bench memory`, declared once (minprot_ds/options.py
generates the commands from them; benchmarks/throughput.py runs the same command). Lists are comma-separated
text, split and checked where the sweep reads them (one UserError naming the flag).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

from minprot_ds.data.batching import DEFAULT_MAX_ROWS, DEFAULT_MAX_TOKENS
from minprot_ds.options import option

_ROWS_HELP = f"Rows per micro-batch (default: {DEFAULT_MAX_ROWS} per {DEFAULT_MAX_TOKENS} tokens)."


@dataclasses.dataclass
class ThroughputOptions:
    """What `minprot bench throughput` sweeps and measures."""

    preset: str = option(
        "cpu-small",
        "Model shapes with random weights: tiny, cpu-small, protbert, esm2-tiny, esm2-150m, esm2-650m (ESM-2's "
        "format).",
    )
    teacher: Optional[str] = option(None, "A real teacher folder or hub id instead of random weights.")
    corpus: Optional[Path] = option(None, "Prepared shards (minprot data prepare); default: synthetic.")
    synthetic_sequences: int = option(20_000, "Rows of the synthetic corpus (UniRef50-like lengths).", min=1)
    lengths: Optional[Path] = option(
        None,
        "Lengths file for the synthetic corpus, one length a line (default: a "
        "log-normal with UniRef50's median 166 and mean 193).",
    )
    precision: str = option(
        "auto", "fp32, bf16, fp16; comma-separated to sweep. Default: fp32 on CPU, bf16/fp16 on GPU."
    )
    max_tokens: str = option(str(DEFAULT_MAX_TOKENS), "Token budget(s) per micro-batch, comma-separated.")
    max_rows: Optional[int] = option(None, _ROWS_HELP, min=1)
    zero_stage: str = option("2", "ZeRO stage(s), comma-separated.")
    checkpointing: str = option("off", "Activation checkpointing: off, on, or off,on.")
    loss_impl: str = option("eager", "eager, compiled, triton; comma-separated.")
    compile: str = option(
        "none",
        "torch.compile of the encoders: none, teacher, all; comma-separated. Compiling takes "
        "minutes on CPU; warm-up runs until no new graph is compiled.",
    )
    deepspeed_config: Optional[Path] = option(None, "Base DeepSpeed JSON; stage and precision are set per setting.")
    steps: int = option(10, "Steps per timed window (fewer sample few length buckets).", min=1)
    warmup: int = option(2, "Untimed steps first.", min=0)
    repeats: int = option(3, "Timed windows; the median is reported.", min=1)
    split_steps: int = option(2, "Phase-timed steps for the time split.", min=0)
    num_workers: int = option(0, "DataLoader workers of the stream.", min=0)
    peak_tflops: Optional[float] = option(None, "Peak TFLOP/s per device for MFU (default: the table).")
    memory_limit_gb: Optional[float] = option(None, "A setting whose peak memory exceeds this does not fit.")
    baseline: bool = option(True, "Run the naive baseline (at each compared precision) and print the ratio.")
    naive_batch_size: int = option(16, "Rows per naive batch (the recipe's local batch).", min=1)
    naive_steps: Optional[int] = option(None, "Steps per naive window (default: --steps).", min=1)
    project_epochs: Optional[float] = option(None, "Print the projected wall time of this many epochs.")
    sequences: float = option(43e6, "Sequences per epoch for the projection.")
    gpus: int = option(8, "Devices for the projection.", min=1)
    seed: int = option(0, "Seeds the models, the synthetic corpus and the data order.")
    work_dir: Optional[Path] = option(None, "Scratch folder for the models and corpus (default: temporary, removed).")
    out: Path = option(Path("throughput.json"), "JSON results; CSV and PNG are written beside it.")
    mlflow: bool = option(False, "Log the report and files to MLflow.")
    tracking_uri: Optional[str] = option(None, "MLflow server (default: SQLite beside --out).")


@dataclasses.dataclass
class MemoryOptions:
    """What `minprot bench memory` plans for."""

    preset: str = option(
        "protbert",
        "Model shapes: tiny, cpu-small, protbert (ProtBert's 40,000-position table), esm2-tiny, esm2-150m, esm2-650m "
        "(ESM-2's: rotary positions, 33 tokens).",
    )
    gpu: str = option("v100-32gb", "v100-16gb, v100-32gb, a100-40gb, a100-80gb, h100-80gb.")
    gpus: int = option(8, "Devices in the job (all nodes).", min=1)
    nodes: int = option(1, "Nodes the devices are spread over.", min=1)
    max_tokens: int = option(DEFAULT_MAX_TOKENS, "Token budget per micro-batch the prediction is for.", min=520)
    max_rows: Optional[int] = option(None, _ROWS_HELP, min=1)
    json_out: Optional[Path] = option(None, "Also write the plan as JSON here.", flag="--json")
