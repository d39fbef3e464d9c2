"""`deepspeed [--num_gpus N] launch/finetune.py --task ... --deepspeed ds_configs/x.json`
(or plain `python launch/finetune.py`).

The job and options of `minprot finetune` (FinetuneConfig in minprot_ds/finetune/options.py); every rank runs it.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from minprot_ds.finetune.train import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
