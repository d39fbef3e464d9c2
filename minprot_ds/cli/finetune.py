"""`minprot finetune` (one downstream job, teacher or student) and `minprot report` (tables from MLflow)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from minprot_ds.cli.common import console


def finetune(
    task: str = typer.Option(..., help="dna-binding | membrane | q3"),
    model: str = typer.Option(..., help="a Hugging Face folder (teacher or exported student) or a hub id such as Rostlab/prot_bert"),
    train: Path = typer.Option(..., help="a task folder made by `minprot data ...` or a data file any reader takes"),
    test: Path = typer.Option(..., help="test set (its 'test' split, or the whole set when it has one split)"),
    out: Path = typer.Option(..., help="folder for metrics.json, predictions.tsv, model/ and the default MLflow store"),
    valid: Optional[Path] = typer.Option(None, help="validation set (default: --train's own valid split, if it has one)"),
    epochs: int = typer.Option(3, min=1),
    batch_size: int = typer.Option(8, min=1, help="sequences per step (per rank under deepspeed)"),
    lr: float = typer.Option(2e-5, help="AdamW peak learning rate (linear decay to 0)"),
    weight_decay: float = typer.Option(0.01),
    seed: int = typer.Option(0),
    pooling: str = typer.Option("cls", help="sequence head reads the [CLS] hidden state (cls) or the mean over residues (mean)"),
    max_train_samples: Optional[int] = typer.Option(None, help="use only the first N training rows"),
    max_eval_samples: Optional[int] = typer.Option(None, help="use only the first N valid and test rows"),
    deepspeed: Optional[Path] = typer.Option(None, help="train inside a DeepSpeed engine with this JSON (ds_configs/...)"),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow store (default: SQLite in --out); share one to compare runs"),
    experiment: str = typer.Option("minprot-finetune", help="MLflow experiment"),
    run_name: Optional[str] = typer.Option(None),
    role: str = typer.Option("auto", help="teacher | student | auto (student when the model folder has minprot.json)"),
    dataset_name: Optional[str] = typer.Option(None, help="name of the train set in reports (default: its minprot_task.json name or file name)"),
    strict: bool = typer.Option(False, help="fail on the first malformed record instead of skipping it"),
) -> None:
    """Fine-tune a ProtBert-format model on one downstream task and record the run in MLflow."""
    from minprot_ds.finetune import FinetuneConfig, run

    result = run(FinetuneConfig(
        task=task, model=model, train=train, test=test, out=out, valid=valid, epochs=epochs, batch_size=batch_size,
        lr=lr, weight_decay=weight_decay, seed=seed, pooling=pooling, max_train_samples=max_train_samples,
        max_eval_samples=max_eval_samples, deepspeed=deepspeed, tracking_uri=tracking_uri, experiment=experiment,
        run_name=run_name, role=role, dataset_name=dataset_name, strict=strict,
    ), echo=console.print)
    console.print(f"MLflow run {result.mlflow_run_id}; metrics in {result.out / 'metrics.json'}")


def report(
    out: Path = typer.Option(..., help="folder for report.md, report.json and the PNG charts"),
    tracking_uri: Optional[list[str]] = typer.Option(
        None, help="MLflow store(s): a URI, a fine-tune --out folder or an mlflow.db (repeatable; default $MLFLOW_TRACKING_URI)"),
    experiment: Optional[list[str]] = typer.Option(None, help="experiment(s) to read (repeatable; default: all)"),
) -> None:
    """Tables A–D (metrics, runtime and saving, dataset variants, organisms) from finished fine-tune runs."""
    from minprot_ds.finetune.report import build_report

    path = build_report(tracking_uri, out, experiment)
    console.print(f"report written to {path}")


def register(app: typer.Typer) -> None:
    app.command("finetune")(finetune)
    app.command("report")(report)
