"""`deepspeed [--num_gpus N | --hostfile H] launch/distill.py --config ...` (or plain `python launch/distill.py`).

Only argument parsing lives here; the job itself is `minprot_ds.distill.job.run`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Distil a ProtBert teacher into a smaller student with DeepSpeed. Every rank runs this script.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--config", required=True, help="run config TOML (presets: launch/configs/*.toml)")
    p.add_argument("--deepspeed_config", "--deepspeed-config", default="auto",
                   help="DeepSpeed JSON (ds_configs/*.json); auto: bf16 ZeRO-2 on GPUs with bf16, fp16 ZeRO-2 on "
                        "older GPUs (V100), fp32 ZeRO-2 on CPU")
    p.add_argument("--run-dir", default=None, help="where checkpoints, the MLflow store and the student go "
                   "(default: runs/<config name>)")
    p.add_argument("--max-steps", type=int, default=None,
                   help="stop this invocation after this global step (with a checkpoint); the schedule and data "
                        "order still follow the planned run")
    p.add_argument("--resume", default="auto", help="auto: newest complete checkpoint in the run dir; none: start "
                   "fresh (refuses a run dir with checkpoints); or a checkpoint folder")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value, e.g. --set optimizer.lr=1e-4 (repeatable)")
    p.add_argument("--tracking-uri", default=None, help="MLflow server URI (default: SQLite store in the run dir)")
    p.add_argument("--local_rank", "--local-rank", type=int, default=-1, help=argparse.SUPPRESS)  # set by the launcher
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from minprot_ds.distill.job import main as distill_main

    args = parse_args(argv)
    overrides = list(args.overrides)
    if args.tracking_uri:
        overrides.append(f'tracking.tracking_uri="{args.tracking_uri}"')
    run_dir = args.run_dir or str(Path("runs") / Path(args.config).stem)
    return distill_main(config=args.config, overrides=overrides, ds_config=args.deepspeed_config,
                        ds_config_dir=REPO / "ds_configs", run_dir=run_dir, max_steps=args.max_steps,
                        resume=args.resume)


if __name__ == "__main__":
    sys.exit(main())
