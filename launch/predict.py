"""`deepspeed --num_gpus N launch/predict.py [predict|embed] --model ... --fasta ... --out ...`

The jobs and options of `minprot predict` / `minprot embed` (minprot_ds/inference/options.py); without a
command, predict. Every rank computes its share of the input's chunks; rank 0 writes the output.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from minprot_ds.inference.job import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
