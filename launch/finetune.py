"""`deepspeed [--num_gpus N] launch/finetune.py --task ... --deepspeed ds_configs/x.json` (or plain `python launch/finetune.py`).

Only argument parsing lives here; the job is `minprot_ds.finetune.run` (the same as `minprot finetune`).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Fine-tune a ProtBert-format model (teacher or student) on a downstream task. Every rank runs this script.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--task", required=True, choices=["dna-binding", "membrane", "q3"])
    p.add_argument("--model", required=True, help="Hugging Face folder or hub id")
    p.add_argument("--train", required=True, type=Path)
    p.add_argument("--test", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--valid", type=Path, default=None)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=8, help="per rank")
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pooling", default="cls", choices=["cls", "mean"])
    p.add_argument("--max-train-samples", type=int, default=None)
    p.add_argument("--max-eval-samples", type=int, default=None)
    p.add_argument("--deepspeed", "--deepspeed_config", dest="deepspeed", type=Path, default=None,
                   help="DeepSpeed JSON (ds_configs/*.json); without it the job trains in plain PyTorch")
    p.add_argument("--tracking-uri", default=None, help="MLflow store (default: SQLite in --out)")
    p.add_argument("--experiment", default="minprot-finetune")
    p.add_argument("--run-name", default=None)
    p.add_argument("--role", default="auto", choices=["teacher", "student", "auto"])
    p.add_argument("--dataset-name", default=None)
    p.add_argument("--strict", action="store_true")
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
