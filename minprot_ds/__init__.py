"""minprot-ds: distil a masked protein language model (ProtBert) into a smaller student on DeepSpeed, then
fine-tune, predict and embed with teacher and student, tracked in MLflow.

Floors, lowest first; a package imports only its own modules and those of lower floors
(`scripts/check_layers.py` checks it, with no cycle between files or packages):

1. ground — `minprot_ds/*.py`: errors, vocab, fileio, outputs, distributed, ds_config, progress, tracking, options,
   optim, preempt.
2. formats — `minprot_ds.data` (corpus shards, manifest, stream, batching, masking; task datasets) and
   `minprot_ds.models` (model folders: loading, students, provenance).
3. data_prep — `data_prep` (FASTA -> shards), then `data_prep.tasks` (labelled files -> task datasets, MMseqs2).
4. scoring — `minprot_ds.scoring`: the one protein forward (windows, encoder loading, task model).
5. losses — `minprot_ds.distill.losses`, beneath the distillation job.
6. distill job — `minprot_ds.distill`.
7. downstream jobs — `minprot_ds.finetune`, `minprot_ds.inference` (neither imports the other).
8. benchmarks — `minprot_ds.bench`.
9. cli — `minprot_ds.cli` (the `minprot` command).
"""

__version__ = "0.1.0"
