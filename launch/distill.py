"""`deepspeed [--num_gpus N | --hostfile H] launch/distill.py --config ...` (or plain `python launch/distill.py`).

The job and options of `minprot distill` (DistillOptions in minprot_ds/distill/options.py); every rank runs it.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from minprot_ds.distill.job import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
