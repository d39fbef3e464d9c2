"""`deepspeed --num_gpus N launch/predict.py [predict|embed] --model ... --fasta ... --out ...`

Every rank computes its share of the input's chunks; rank 0 writes the output. The options are those of
`minprot predict` / `minprot embed` (the same typer commands parse them); without a command, predict.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def main(argv: list[str] | None = None) -> None:
    from minprot_ds.cli import app
    from minprot_ds.cli.common import run_cli

    args = list(sys.argv[1:] if argv is None else argv)
    # The launcher's --local_rank: the rank's device comes from LOCAL_RANK in the environment instead.
    args = [a for a in args if not a.startswith(("--local_rank", "--local-rank"))]
    if not args or args[0] not in ("predict", "embed"):
        args.insert(0, "predict")
    run_cli(app, args)


if __name__ == "__main__":
    main()
