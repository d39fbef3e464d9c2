"""Downstream fine-tuning of teacher and student (DNA-binding, membrane Q2, secondary structure Q3) and the
report that compares them from MLflow.

`train.run(FinetuneConfig(...))` is the job (`minprot finetune`, `launch/finetune.py`), its options are
`options.FinetuneConfig`; `report.build_report` reads the runs back (`minprot report`). This file imports
nothing, so that reading the options (`minprot --help`) does not load torch.
"""
