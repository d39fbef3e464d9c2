"""`deepspeed [--num_gpus N] launch/finetune.py --task ... --deepspeed ds_configs/x.json` (or plain `python launch/finetune.py`).

Only argument parsing lives here, derived from `minprot_ds.finetune.options` (as `minprot finetune` is); the
job is `minprot_ds.finetune.run`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from minprot_ds.finetune.options import add_arguments

    p = argparse.ArgumentParser(
        description="Fine-tune a ProtBert-format model (teacher or student) on a downstream task. Every rank runs this script.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_arguments(p)
    p.add_argument("--local_rank", "--local-rank", type=int, default=-1, help=argparse.SUPPRESS)  # set by the launcher
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from minprot_ds.errors import UserError
    from minprot_ds.finetune import FinetuneConfig, run

    args = vars(parse_args(argv))
    args.pop("local_rank")
    try:
        result = run(FinetuneConfig(**args), echo=print)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if result.mlflow_run_id:
        print(f"MLflow run {result.mlflow_run_id}; metrics in {result.out / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
