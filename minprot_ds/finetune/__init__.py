"""Downstream fine-tuning of teacher and student (DNA-binding, membrane Q2, secondary structure Q3) and the
report that compares them from MLflow.

`run(FinetuneConfig(...))` is the job (`minprot finetune`, `launch/finetune.py`); `build_report` reads the
runs back (`minprot report`).
"""
from minprot_ds.finetune.options import DEFAULT_EXPERIMENT, FinetuneConfig
from minprot_ds.finetune.train import FinetuneResult, run

__all__ = ["DEFAULT_EXPERIMENT", "FinetuneConfig", "FinetuneResult", "run"]
