"""The fine-tune job's options, defined once: `FinetuneConfig`'s fields with their help (minprot_ds/options.py
says how `minprot finetune`, launch/finetune.py's parser and the MLflow params are generated from it).
Values with a fixed set of choices are validated by the component that reads them (one UserError naming the
flag), not by either parser.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

from minprot_ds.options import option

DEFAULT_EXPERIMENT = "minprot-finetune"


@dataclasses.dataclass
class FinetuneConfig:
    """Defaults are the MinProtBert recipe: AdamW lr 2e-5, batch 8, 3 epochs, weight decay 0.01, all layers trained."""

    task: str = option(help="dna-binding | membrane | q3")
    model: str = option(
        help="a Hugging Face folder (teacher or exported student) or a hub id such as Rostlab/prot_bert"
    )
    train: Path = option(help="a task folder made by `minprot data ...` or a data file any reader takes")
    test: Path = option(help="test set (its 'test' split, or the whole set when it has one split)")
    out: Path = option(help="folder for metrics.json, predictions.tsv, model/ and the default MLflow store")
    valid: Optional[Path] = option(None, "validation set (default: --train's own valid split, if it has one)")
    epochs: int = option(3, "passes over the training set", min=1)
    batch_size: int = option(
        8, "sequences per optimizer step: the global batch, split over the ranks under deepspeed", min=1
    )
    lr: float = option(2e-5, "AdamW peak learning rate (linear decay to 0)", min=0.0)
    weight_decay: float = option(0.01, "AdamW weight decay (not on biases and LayerNorm)", min=0.0)
    grad_clip: float = option(
        1.0,
        "gradient-norm clip of plain PyTorch training (Hugging Face Trainer's default; "
        "under --deepspeed its JSON's gradient_clipping applies)",
        min=0.0,
    )
    seed: int = option(0, "seed of the head's initial weights, the batch order and dropout")
    seeds: Optional[str] = option(
        None,
        "comma-separated seeds (e.g. 0,1,2): one run per seed under OUT/seed-N, "
        "then OUT/seeds.json with mean ± std; the report averages them too",
    )
    pooling: str = option(
        "cls",
        "what a sequence-level head reads: cls (the [CLS] hidden state) | mean (the mean "
        "over residues); per-residue tasks read every residue. The default is cls here and "
        "mean for `minprot embed --pooling`",
    )
    long: str = option(
        "window",
        "proteins longer than --window: window (score every residue through overlapping "
        "windows; training crops them at a seeded random offset each epoch) | truncate "
        "(score and train on the first --window residues only, the old behaviour)",
    )
    window: Optional[int] = option(
        None,
        "residues per model input (default: the model's: 512 for ProtBert, i.e. 514 tokens with [CLS] and [SEP]; "
        "1,022 for ESM-2)",
        min=1,
    )
    stride: Optional[int] = option(
        None, "residues between the starts of overlapping windows (default: half the window)", min=1
    )
    aggregate: str = option(
        "mean",
        "protein-level tasks, proteins longer than --window: how the windows' probabilities combine: mean (weighted "
        "by the residues each window owns) | max (the window most confident in the positive class); stored in the "
        "model for `minprot predict`",
    )
    leakage: bool = option(
        True,
        "measure with MMseqs2 how much of the test (and valid) set the training rows "
        "contain, before training (metrics.json `leakage`, leakage.tsv)",
    )
    test_filter: str = option(
        "none",
        "also score the test rows that pass a leakage filter: none | near-identical "
        "(drop exact and near-identical copies of training rows) | homologs (drop "
        "those and homologs too)",
    )
    near_identity: float = option(
        0.95, "identity (over --coverage of the test protein) that counts as near-identical", min=0.0, max=1.0
    )
    homolog_identity: float = option(
        0.30, "identity (over --coverage of the test protein) that counts as a homolog", min=0.0, max=1.0
    )
    coverage: float = option(0.80, "fraction of the test protein an alignment must cover to count", min=0.0, max=1.0)
    leakage_sensitivity: float = option(
        7.5,
        "mmseqs -s of the leakage search (7.5: its most sensitive preset; 5.7, its default, misses more)",
        min=1.0,
        max=7.5,
    )
    bootstrap: int = option(
        1000,
        "resamples of the percentile bootstrap (seeded; over the test set's homology components when it has a "
        "component column, as `data split` writes, else over proteins) behind every test metric's 95% CI "
        "(metrics.json `ci95`, `ci_method`)",
        min=1,
    )
    max_train_samples: Optional[int] = option(
        None, "cap the training rows: a sample stratified by label, drawn with --seed"
    )
    max_eval_samples: Optional[int] = option(
        None,
        "cap the valid and test rows: a sample stratified by label, the same whatever --seed "
        "(so seeds and models compare on one set)",
    )
    deepspeed: Optional[Path] = option(
        None,
        "train inside a DeepSpeed engine with this JSON (ds_configs/...); without it the job trains in plain PyTorch",
        aliases=("--deepspeed_config",),
    )
    tracking_uri: Optional[str] = option(None, "MLflow store (default: SQLite in --out); share one to compare runs")
    experiment: str = option(DEFAULT_EXPERIMENT, "MLflow experiment")
    run_name: Optional[str] = option(None, "MLflow run name (default: TASK-DATASET-ROLE)")
    role: str = option("auto", "teacher | student | auto (student when the model folder has minprot.json)")
    dataset_name: Optional[str] = option(
        None, "name of the train set in reports (default: its minprot_task.json name or file name)"
    )
    strict: bool = option(False, "fail on the first malformed record instead of skipping it")
    overwrite: bool = option(
        False,
        "replace the outputs in --out of a fine-tune with other options (a rerun with the same needs none)",
        log=False,
    )
    tracking: bool = option(True, cli=False)
    system_metrics: bool = option(False, cli=False)


@dataclasses.dataclass
class CompareOptions:
    """Teacher vs student on the same test rows: each metric's paired difference with its bootstrap CI, DeLong's
    test for ROC-AUC, McNemar's for accuracy and a non-inferiority verdict against a margin."""

    teacher: Path = option(
        help="the teacher's `minprot finetune --out` folder (with --seeds: its seed-N folders)", positional=True
    )
    student: Path = option(help="the student's, fine-tuned on the same --test rows", positional=True)
    margin: float = option(
        0.98,
        "the student is non-inferior when the 95% CI of student − MARGIN × teacher lies above 0 "
        "(0.98: it keeps at least 98% of the teacher's metric, the MinProtBert claim)",
        min=0.0,
        max=1.0,
    )
    bootstrap: int = option(
        1000,
        "paired resamples of the homology components when both files carry them, else of the proteins (seeded)",
        min=1,
    )
    seed: int = option(0, "seed of the resamples")
    json: Optional[Path] = option(None, "also write every number to this JSON file")
