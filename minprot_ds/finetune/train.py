"""One fine-tune job: load the sets and the model, train (plain PyTorch or a DeepSpeed engine), predict the
test set, write metrics.json / predictions.tsv / model/, and record it all as one MLflow run.

The loop is the same for teacher and student and for every task; only `tasks.TaskSpec` differs.
Under the deepspeed launcher every rank trains on its own batches of each step (`--batch-size` is per
rank) and every rank predicts the whole test set, so ZeRO-3's partitioned forward stays in lockstep;
rank 0 writes the outputs and talks to MLflow.
"""
from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from minprot_ds.ds_config import read_ds_config
from minprot_ds.errors import UserError
from minprot_ds.finetune import links
from minprot_ds.finetune.inputs import load_inputs
from minprot_ds.finetune.metrics import Predictions, compute_metrics, flat_metrics, json_safe, read_predictions, write_predictions
from minprot_ds.finetune.tasks import Encoded, TaskSpec, collate, encode_split, eval_batches, load_model, task_spec, train_batches
from minprot_ds.optim import build_optimizer, warmup_linear_schedule
from minprot_ds.tracking import Tracker, environment_params
from minprot_ds.vocab import write_tokenizer_files

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "minprot-finetune"
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.tsv"
MODEL_DIR = "model"


@dataclass
class FinetuneConfig:
    """Defaults are the MinProtBert recipe: AdamW lr 2e-5, batch 8, 3 epochs, weight decay 0.01, all layers trained."""

    task: str
    model: str
    train: Path
    test: Path
    out: Path
    valid: Path | None = None
    epochs: int = 3
    batch_size: int = 8
    lr: float = 2e-5
    weight_decay: float = 0.01
    grad_clip: float = 1.0  # Hugging Face Trainer's default max_grad_norm; a DeepSpeed config sets its own
    seed: int = 0
    max_train_samples: int | None = None
    max_eval_samples: int | None = None  # cap on valid and test rows (quick checks)
    deepspeed: Path | None = None
    tracking_uri: str | None = None
    experiment: str = DEFAULT_EXPERIMENT
    run_name: str | None = None
    role: str = "auto"
    dataset_name: str | None = None
    strict: bool = False
    tracking: bool = True
    system_metrics: bool = False


@dataclass
class FinetuneResult:
    out: Path
    metrics: dict[str, Any]
    mlflow_run_id: str | None
    model_dir: Path | None
    tags: dict[str, str] = field(default_factory=dict)


# --- steppers: the only place plain PyTorch and DeepSpeed differ ------------------------------------------

class PlainStepper:
    """AdamW (no decay on biases / LayerNorm) with linear decay to zero, as the Trainer does by default."""

    def __init__(self, model: torch.nn.Module, *, lr: float, weight_decay: float, total_steps: int, grad_clip: float):
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.module = model.to(self.device)
        self.optimizer = build_optimizer(model, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.999), eps=1e-8)
        self.scheduler = warmup_linear_schedule(self.optimizer, warmup_steps=0, total_steps=total_steps)
        self.grad_clip = grad_clip

    def train_step(self, batch: dict[str, torch.Tensor]) -> float:
        self.module.train()
        loss = self.module(**batch).loss
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        return float(loss.detach())

    @property
    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]


class DeepSpeedStepper:
    """The same optimizer and schedule inside a DeepSpeed engine (ZeRO, fp16 loss scaling, clipping from the JSON)."""

    def __init__(self, model: torch.nn.Module, ds: dict[str, Any], *, lr: float, weight_decay: float, total_steps: int):
        import deepspeed

        offload = ds.get("zero_optimization", {}).get("offload_optimizer", {}).get("device", "none") != "none"
        optimizer = build_optimizer(model, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.999), eps=1e-8,
                                    cpu_offload=offload)
        scheduler = warmup_linear_schedule(optimizer, warmup_steps=0, total_steps=total_steps)
        self.engine, _, _, self.scheduler = deepspeed.initialize(model=model, optimizer=optimizer,
                                                                 lr_scheduler=scheduler, config=ds)
        self.module = self.engine.module
        self.device = self.engine.device

    def train_step(self, batch: dict[str, torch.Tensor]) -> float:
        self.engine.train()
        loss = self.engine(**batch).loss
        self.engine.backward(loss)
        self.engine.step()  # also steps the schedule
        return float(loss.detach())

    @property
    def lr(self) -> float:
        return self.engine.get_lr()[0]


# --- prediction -----------------------------------------------------------------------------------------

def predict(module: torch.nn.Module, enc: Encoded, spec: TaskSpec, batch_size: int, device: torch.device) -> tuple[Predictions, float]:
    """Class probabilities for every row (every residue for Q3) and the mean loss; the module is left in eval mode."""
    module.eval()
    probs: list[np.ndarray | None] = [None] * len(enc)
    loss_sum, loss_rows = 0.0, 0
    with torch.no_grad():  # not inference_mode: ZeRO-3 gathers parameters in its forward hooks
        for rows in eval_batches(enc.lengths, batch_size):
            batch = {k: v.to(device) for k, v in collate(enc, rows, spec).items()}
            out = module(**batch)
            if not math.isnan(float(out.loss)):  # NaN when a Q3 batch has no labelled residue
                loss_sum, loss_rows = loss_sum + float(out.loss) * len(rows), loss_rows + len(rows)
            p = torch.softmax(out.logits.float(), dim=-1).cpu().numpy()
            for r, i in enumerate(rows):
                probs[i] = p[r, 1:len(enc.tokens[i]) + 1] if spec.per_residue else p[r]
    loss = loss_sum / loss_rows if loss_rows else math.nan
    if not spec.per_residue:
        stacked = np.stack(probs).astype(np.float64) if probs else np.zeros((0, spec.num_labels))
        return Predictions(enc.ids, np.asarray(enc.labels, dtype=np.int64), stacked, stacked.argmax(axis=1)), loss
    ids, positions, residues = [], [], []
    for i, rid in enumerate(enc.ids):
        n = len(enc.tokens[i])
        ids.extend([rid] * n)
        positions.extend(range(1, n + 1))
        residues.extend(enc.sequences[i][:n])
    stacked = np.concatenate(probs).astype(np.float64) if probs else np.zeros((0, spec.num_labels))
    labels = np.concatenate(enc.labels) if enc.labels else np.zeros(0, dtype=np.int64)
    return Predictions(ids, labels, stacked, stacked.argmax(axis=1), np.asarray(positions), residues), loss


# --- the job --------------------------------------------------------------------------------------------

def _save_model(module: torch.nn.Module, folder: Path, rank: int) -> Path | None:
    """save_pretrained + ProtBert tokenizer files; under ZeRO-3 every rank gathers, rank 0 writes."""
    import contextlib

    params = list(module.parameters())
    gather = contextlib.nullcontext()
    if params and hasattr(params[0], "ds_id"):
        import deepspeed

        gather = deepspeed.zero.GatheredParameters(params, modifier_rank=None)
    with gather:
        if rank != 0:
            return None
        module.save_pretrained(folder, safe_serialization=True)
        write_tokenizer_files(folder)
    return folder


def run(cfg: FinetuneConfig, *, echo: Callable[[str], None] | None = None) -> FinetuneResult:
    """Train, predict, write and track one fine-tune; returns the test metrics (rank 0; other ranks get {})."""
    say = echo or log.info
    spec = task_spec(cfg.task)
    for name in ("epochs", "batch_size"):
        if getattr(cfg, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1 (got {getattr(cfg, name)})")
    role, provenance = links.model_provenance(cfg.model, cfg.role)
    inputs = load_inputs(cfg.task, Path(cfg.train), Path(cfg.test), None if cfg.valid is None else Path(cfg.valid),
                         dataset_name=cfg.dataset_name, strict=cfg.strict)
    train = encode_split(inputs.train, spec, cfg.max_train_samples)
    valid = encode_split(inputs.valid, spec, cfg.max_eval_samples) if inputs.valid is not None else None
    test = encode_split(inputs.test, spec, cfg.max_eval_samples)

    torch.manual_seed(cfg.seed)  # the head's initial weights
    model = load_model(cfg.model, spec)
    rank, world = 0, 1
    ds = None
    if cfg.deepspeed is not None:
        from minprot_ds.distributed import init_distributed

        ds = read_ds_config(cfg.deepspeed, flag="--deepspeed", micro_batch=cfg.batch_size,
                            owner="the fine-tune job's --lr and --weight-decay own the optimizer and its linear schedule")
        rank, world = init_distributed()
    steps_per_epoch = len(train_batches(train.lengths, cfg.batch_size, cfg.seed, 0)) // world
    if steps_per_epoch == 0:
        raise UserError(f"--train has {len(train)} rows, too few for one batch on each of {world} ranks")
    total_steps = steps_per_epoch * cfg.epochs
    if ds is None:
        stepper: PlainStepper | DeepSpeedStepper = PlainStepper(
            model, lr=cfg.lr, weight_decay=cfg.weight_decay, total_steps=total_steps, grad_clip=cfg.grad_clip)
    else:
        stepper = DeepSpeedStepper(model, ds, lr=cfg.lr, weight_decay=cfg.weight_decay, total_steps=total_steps)

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    link_tags = links.link_tags(provenance, cfg.tracking_uri) if rank == 0 else {}
    if rank == 0 and cfg.tracking:
        links.ensure_experiment(cfg.tracking_uri, cfg.experiment)
    tags = {
        links.TAG_TASK: spec.name, links.TAG_DATASET: inputs.dataset.name, links.TAG_ROLE: role,
        "minprot.dataset_variant": inputs.dataset.variant, "minprot.dataset_label": inputs.dataset.label,
        "minprot.organism": inputs.dataset.organism, "minprot.test_dataset": inputs.test_dataset.label,
        "minprot.model": str(cfg.model), "minprot.job": "finetune", **link_tags,
    }
    tags = {k: v for k, v in tags.items() if v}
    tracker = Tracker.start(
        tracking_uri=cfg.tracking_uri, run_dir=out, experiment=cfg.experiment,
        run_name=cfg.run_name or f"{spec.name}-{inputs.dataset.label}-{role}".replace(" ", "-"),
        resume_run_id=None, enabled=cfg.tracking and rank == 0, system_metrics=cfg.system_metrics,
    )
    with tracker:
        tracker.set_tags(tags)
        layers = model.config.num_hidden_layers
        params = {
            "task": spec.name, "model": str(cfg.model), "model_role": role, "train": str(cfg.train),
            "valid": str(cfg.valid or ""), "test": str(cfg.test), "epochs": cfg.epochs, "batch_size": cfg.batch_size,
            "lr": cfg.lr, "weight_decay": cfg.weight_decay, "grad_clip": cfg.grad_clip, "seed": cfg.seed,
            "max_train_samples": cfg.max_train_samples or "", "max_eval_samples": cfg.max_eval_samples or "",
            "deepspeed": str(cfg.deepspeed or ""), "world_size": world, "device": str(stepper.device),
            "model.layers": layers, "model.hidden_size": model.config.hidden_size,
            "model.parameters": sum(p.numel() for p in model.parameters()),
            "rows.train": len(train), "rows.valid": len(valid) if valid else 0, "rows.test": len(test),
            "rows.truncated": train.truncated + test.truncated + (valid.truncated if valid else 0),
            **environment_params(),
        }
        tracker.log_params(params)
        say(f"fine-tuning {role} {cfg.model} ({layers} layers) on {spec.name}: {len(train)} train / "
            f"{len(valid) if valid else 0} valid / {len(test)} test rows, {total_steps} steps")

        step, history = 0, []
        log_every = max(1, total_steps // 50)
        train_seconds = 0.0
        for epoch in range(cfg.epochs):
            batches = train_batches(train.lengths, cfg.batch_size, cfg.seed, epoch)[rank::world][:steps_per_epoch]
            started, losses = time.perf_counter(), []
            for rows in batches:
                batch = {k: v.to(stepper.device) for k, v in collate(train, rows, spec).items()}
                losses.append(stepper.train_step(batch))
                step += 1
                if step % log_every == 0 or step == total_steps:
                    tracker.log_metrics({"train/loss": losses[-1], "train/lr": stepper.lr, "train/epoch": epoch + 1}, step)
            train_seconds += time.perf_counter() - started
            epoch_log = {"train/epoch_loss": float(np.mean(losses))}
            if valid is not None:
                pred, loss = predict(stepper.module, valid, spec, cfg.batch_size * 2, stepper.device)
                valid_metrics = compute_metrics(pred, spec)
                epoch_log |= flat_metrics(valid_metrics, "valid") | {"valid/loss": loss}
            tracker.log_metrics(epoch_log, step)
            history.append({"epoch": epoch + 1, "step": step, **epoch_log})
            say(f"epoch {epoch + 1}/{cfg.epochs}: train loss {epoch_log['train/epoch_loss']:.4f}"
                + (f", valid accuracy {epoch_log['valid/accuracy']:.4f}" if valid is not None else ""))

        started = time.perf_counter()
        pred, test_loss = predict(stepper.module, test, spec, cfg.batch_size * 2, stepper.device)
        infer_seconds = time.perf_counter() - started
        model_dir = _save_model(stepper.module, out / MODEL_DIR, rank)
        if rank != 0:
            return FinetuneResult(out, {}, None, None)

        # Metrics from the file as written, so metrics.json always equals a recomputation from predictions.tsv.
        path = write_predictions(pred, spec, out / PREDICTIONS_FILE)
        test_metrics = compute_metrics(read_predictions(path, spec), spec) | {"loss": test_loss}
        train_rows = len(train) if world == 1 else steps_per_epoch * world * cfg.batch_size  # approx. under DP
        residues = int(test.lengths.sum())
        runtime = {
            "train_seconds": train_seconds,
            "train_samples_per_second": train_rows * cfg.epochs / train_seconds if train_seconds else math.nan,
            "inference_seconds": infer_seconds,
            "inference_samples_per_second": len(test) / infer_seconds if infer_seconds else math.nan,
            "inference_residues_per_second": residues / infer_seconds if infer_seconds else math.nan,
        }
        metrics = {
            "task": spec.name, "classes": list(spec.classes), "model": str(cfg.model), "model_role": role,
            "dataset": asdict(inputs.dataset), "test_dataset": asdict(inputs.test_dataset),
            "mlflow_run_id": tracker.run_id, "distill_run_id": provenance.get("mlflow_run_id"),
            "test": test_metrics, "valid": history[-1] if valid is not None else None, "history": history,
            "runtime": runtime, "world_size": world, "device": str(stepper.device),
            "rows": {"train": len(train), "valid": len(valid) if valid else 0, "test": len(test)},
            "truncated_to_512": {"train": train.truncated, "valid": valid.truncated if valid else 0, "test": test.truncated},
        }
        (out / METRICS_FILE).write_text(json.dumps(json_safe(metrics), indent=2, allow_nan=False) + "\n")
        tracker.log_metrics(flat_metrics(test_metrics, "test") | {f"runtime/{k}": v for k, v in runtime.items()}, step)
        tracker.log_artifact(out / METRICS_FILE)
        tracker.log_artifact(path)
        say("test: " + ", ".join(f"{k} {test_metrics[k]:.4f}" for k in ("accuracy", "f1", "roc_auc", "mcc"))
            + f"; train {train_seconds:.1f} s, inference {infer_seconds:.2f} s; outputs in {out}")
        return FinetuneResult(out, metrics, tracker.run_id, model_dir, tags)
