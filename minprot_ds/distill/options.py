"""The distillation job's command-line options, declared once (`minprot distill` and launch/distill.py are
generated from `DistillOptions`, see minprot_ds/options.py; `minprot_ds.distill.job.start` runs it). What the
run does is the TOML run config (minprot_ds/distill/config.py); these say which config, where the run lives
and how far to go.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

from minprot_ds.options import option


@dataclasses.dataclass
class DistillOptions:
    """Distil a ProtBert teacher into a smaller student with DeepSpeed. Every rank runs this job."""

    config: Path = option(help="run config TOML (presets: launch/configs/*.toml)")
    deepspeed_config: str = option(
        "auto",
        "DeepSpeed JSON (ds_configs/*.json); auto: bf16 ZeRO-2 on GPUs with bf16, "
        "fp16 ZeRO-2 on older GPUs (V100), fp32 ZeRO-2 on CPU",
        aliases=("--deepspeed_config",),
    )
    run_dir: Optional[Path] = option(
        None, "where checkpoints, the MLflow store and the student go (default: runs/<config name>)"
    )
    max_steps: Optional[int] = option(
        None,
        "stop this invocation after this global step (with a checkpoint); the "
        "schedule and data order still follow the planned run",
    )
    resume: str = option(
        "auto",
        "auto: newest complete checkpoint in the run dir; none: start fresh (refuses a run "
        "dir with checkpoints); or a checkpoint folder",
    )
    set: list[str] = option(
        help="override a run config value, e.g. --set optimizer.lr=1e-4", factory=list, metavar="SECTION.KEY=VALUE"
    )
    tracking_uri: Optional[str] = option(
        None, "MLflow server URI (default: SQLite store in the run dir); the same as --set tracking.tracking_uri=..."
    )
