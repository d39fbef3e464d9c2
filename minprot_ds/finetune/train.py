"""One fine-tune job, in four stages that read top to bottom: `load` (sets, model, stepper, leakage),
`train`, `evaluate` (every residue, through overlapping windows) and `write` (metrics.json,
predictions.tsv, leakage.tsv, model/), all recorded as one MLflow run.

The loop is the same for teacher and student and for every task; only `tasks.TaskSpec` differs.
`--batch-size` is the global batch: under the deepspeed launcher each step's batch is split over the ranks
(so the result does not depend on the number of GPUs), and every rank predicts the whole test set, so
ZeRO-3's partitioned forward stays in lockstep; rank 0 measures leakage, writes the outputs and talks to MLflow.
"""

from __future__ import annotations

import dataclasses
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

from data_prep.tasks.overlap import Overlap, Thresholds, measure
from minprot_ds.distributed import init_distributed
from minprot_ds.ds_config import read_ds_config
from minprot_ds.errors import UserError
from minprot_ds.fileio import atomic_write, read_json
from minprot_ds.finetune.baselines import homology_transfer, length_only
from minprot_ds.finetune.calibration import (
    apply_threshold,
    choose_threshold,
    plot_title,
    reliability_plot,
    reliability_table,
)
from minprot_ds.finetune.evaluate import Scored, score
from minprot_ds.finetune.inputs import TaskInputs, load_inputs
from minprot_ds.finetune.metrics import (
    Predictions,
    compute_metrics,
    flat_metrics,
    json_safe,
    read_predictions,
    write_predictions,
)
from minprot_ds.finetune.options import FinetuneConfig
from minprot_ds.finetune.steppers import DeepSpeedStepper, PlainStepper
from minprot_ds.finetune.tasks import Encoded, TaskSpec, collate, crop_pieces, encode_split, task_spec, train_batches
from minprot_ds.finetune.uncertainty import CI_UNIT, confidence_intervals, flat_intervals
from minprot_ds.models import provenance as links
from minprot_ds.models.family import family_of, family_of_config
from minprot_ds.options import check_bounds, launch, mlflow_params
from minprot_ds.outputs import check_out
from minprot_ds.scoring.heads import TaskModel, build_task_model, save_task_model
from minprot_ds.scoring.windows import FINETUNE_LONG_MODES, check_positions, check_window, model_window
from minprot_ds.tracking import Tracker, environment_params

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.tsv"
LEAKAGE_FILE = "leakage.tsv"
MODEL_DIR = "model"
RELIABILITY_FILE = "reliability.png"
EVAL_SUBSET_SEED = 0  # --max-eval-samples draws one valid/test subset whatever the training --seed
TEST_FILTERS = ("none", "near-identical", "homologs")


@dataclass
class FinetuneResult:
    out: Path
    metrics: dict[str, Any]
    mlflow_run_id: str | None
    model_dir: Path | None
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class Job:
    """What `load` builds and the later stages use."""

    cfg: FinetuneConfig
    spec: TaskSpec
    role: str
    provenance: dict[str, Any]
    inputs: TaskInputs
    train: Encoded
    valid: Encoded | None
    test: Encoded
    model: TaskModel
    stepper: PlainStepper | DeepSpeedStepper
    rank: int
    world: int
    steps_per_epoch: int
    test_overlap: Overlap | None  # rank 0 only
    valid_overlap: Overlap | None

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.cfg.epochs

    def batches(self, epoch: int) -> list[list[int]]:
        """This rank's rows of each global batch of the epoch (batches smaller than the world are skipped)."""
        lengths = np.minimum(self.train.lengths, self.cfg.window)
        batches = train_batches(lengths, self.cfg.batch_size, self.cfg.seed, epoch)
        return [b[self.rank :: self.world] for b in batches if len(b) >= self.world]


def _check(cfg: FinetuneConfig) -> FinetuneConfig:
    """The options and --out (before any file is read), then the window, which follows the model; returns cfg
    with its window."""
    check_bounds(cfg)
    for name in ("epochs", "batch_size"):
        if getattr(cfg, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1 (got {getattr(cfg, name)})")
    if cfg.test_filter not in TEST_FILTERS:
        raise UserError(f"unknown --test-filter {cfg.test_filter!r}; choose one of: {', '.join(TEST_FILTERS)}")
    if cfg.leakage:
        _thresholds(cfg).check()
    if cfg.test_filter != "none" and not cfg.leakage:
        raise UserError(f"--test-filter {cfg.test_filter} needs the leakage search; drop --no-leakage")
    given = cfg
    check_out(cfg.out, folder=True, overwrite=cfg.overwrite, ours=lambda out: _same_run(out, given))
    cfg = with_model_window(cfg)
    check_window(cfg.window, cfg.stride, long=cfg.long, long_modes=FINETUNE_LONG_MODES, aggregate=cfg.aggregate)
    return cfg


def _same_run(out: Path, cfg: FinetuneConfig) -> bool:
    """--out holds no fine-tune's outputs (e.g. only a shared MLflow store), or those of one with these options."""
    if not any((out / name).exists() for name in (METRICS_FILE, PREDICTIONS_FILE, MODEL_DIR)):
        return True
    if not (out / METRICS_FILE).is_file():
        return False
    stored, mine = read_json(out / METRICS_FILE).get("options") or {}, json_safe(mlflow_params(cfg))
    for unset in [k for k in ("window", "stride") if mine.get(k) == ""]:  # the model's, resolved in the run
        stored.pop(unset, None), mine.pop(unset)
    return stored == mine


def _thresholds(cfg: FinetuneConfig) -> Thresholds:
    return Thresholds(cfg.near_identity, cfg.homolog_identity, cfg.coverage)


def _overlap(split: Encoded, train: Encoded, cfg: FinetuneConfig) -> Overlap:
    try:
        return measure(split.sequences, train.sequences, _thresholds(cfg), sensitivity=cfg.leakage_sensitivity)
    except UserError as err:
        raise UserError(
            f"{err} (the fine-tune measures test/train overlap with MMseqs2; --no-leakage skips it)"
        ) from None


def with_model_window(cfg: FinetuneConfig) -> FinetuneConfig:
    """cfg with --window and --stride as given, else the model's (`scoring.windows.model_window`)."""
    window, stride = model_window(cfg.window, cfg.stride, lambda: family_of(cfg.model, "--model"))
    return dataclasses.replace(cfg, window=window, stride=stride)


def load(cfg: FinetuneConfig) -> Job:
    """Inputs, the model and its optimizer (inside DeepSpeed with --deepspeed), and the test/valid leakage."""
    cfg = _check(cfg)
    spec = task_spec(cfg.task)
    role, provenance = links.model_provenance(cfg.model, cfg.role)
    inputs = load_inputs(
        cfg.task,
        Path(cfg.train),
        Path(cfg.test),
        None if cfg.valid is None else Path(cfg.valid),
        dataset_name=cfg.dataset_name,
        strict=cfg.strict,
    )
    train = encode_split(inputs.train, spec, cfg.max_train_samples, cfg.seed)
    valid = (
        encode_split(inputs.valid, spec, cfg.max_eval_samples, EVAL_SUBSET_SEED) if inputs.valid is not None else None
    )
    test = encode_split(inputs.test, spec, cfg.max_eval_samples, EVAL_SUBSET_SEED)

    torch.manual_seed(cfg.seed)  # dropout; the head's initial weights come from the seed alone (heads.init_head)
    model = build_task_model(
        cfg.model,
        task=spec.name,
        classes=spec.classes,
        per_residue=spec.per_residue,
        seed=cfg.seed,
        pooling=cfg.pooling,
        window=cfg.window,
        stride=cfg.stride,
        aggregate=cfg.aggregate,
        provenance=provenance,
    )
    check_positions(cfg.window, model.encoder.config.max_position_embeddings, "--model")
    rank, world, ds = 0, 1, None
    if cfg.deepspeed is not None:
        ds = read_ds_config(
            cfg.deepspeed,
            flag="--deepspeed",
            micro_batch=cfg.batch_size,
            owner="the fine-tune job's --lr and --weight-decay own the optimizer and its linear schedule",
        )
        rank, world = init_distributed()
        if cfg.batch_size % world:
            raise UserError(
                f"--batch-size {cfg.batch_size} is the global batch and must split evenly over the "
                f"{world} ranks; pass a multiple of {world}"
            )
        ds["train_micro_batch_size_per_gpu"] = cfg.batch_size // world
    test_overlap = valid_overlap = None
    if rank == 0 and cfg.leakage:
        test_overlap = _overlap(test, train, cfg)
        valid_overlap = _overlap(valid, train, cfg) if valid is not None else None
    steps_per_epoch = sum(len(b) >= world for b in train_batches(train.lengths, cfg.batch_size, cfg.seed, 0))
    if steps_per_epoch == 0:
        raise UserError(f"--train has {len(train)} rows, too few for one batch on each of {world} ranks")
    total = steps_per_epoch * cfg.epochs
    if ds is None:
        stepper: PlainStepper | DeepSpeedStepper = PlainStepper(
            model, lr=cfg.lr, weight_decay=cfg.weight_decay, total_steps=total, grad_clip=cfg.grad_clip
        )
    else:
        stepper = DeepSpeedStepper(model, ds, lr=cfg.lr, weight_decay=cfg.weight_decay, total_steps=total)
    return Job(
        cfg,
        spec,
        role,
        provenance,
        inputs,
        train,
        valid,
        test,
        model,
        stepper,
        rank,
        world,
        steps_per_epoch,
        test_overlap,
        valid_overlap,
    )


def _score(job: Job, enc: Encoded) -> Scored:
    cfg = job.cfg
    return score(
        job.stepper.module,
        enc,
        job.spec,
        batch_size=cfg.batch_size * 2,
        device=job.stepper.device,
        window=cfg.window,
        stride=cfg.stride,
        long=cfg.long,
        aggregate=cfg.aggregate,
    )


def train(job: Job, tracker: Tracker, say: Callable[[str], None]) -> tuple[list[dict], float, int, Predictions | None]:
    """The epochs: (per-epoch log, seconds spent training, training rows seen by this rank, the last epoch's
    valid predictions or None). The per-epoch valid metrics take the argmax (threshold 0.5)."""
    cfg, stepper = job.cfg, job.stepper
    vocab = family_of_config(stepper.module.encoder.config, "--model").vocab
    step, history, seconds, seen, last_valid = 0, [], 0.0, 0, None
    log_every = max(1, job.total_steps // 50)
    for epoch in range(cfg.epochs):
        started, losses = time.perf_counter(), []
        for rows in job.batches(epoch):
            pieces = crop_pieces(job.train.lengths, rows, cfg.window, cfg.seed, epoch, random=cfg.long == "window")
            batch = {k: v.to(stepper.device) for k, v in collate(job.train, pieces, job.spec, vocab).items()}
            losses.append(stepper.train_step(batch))
            step, seen = step + 1, seen + len(rows)
            if step % log_every == 0 or step == job.total_steps:
                tracker.log_metrics({"train/loss": losses[-1], "train/lr": stepper.lr, "train/epoch": epoch + 1}, step)
        seconds += time.perf_counter() - started
        epoch_log = {"train/epoch_loss": float(np.mean(losses))}
        if job.valid is not None:
            scored = _score(job, job.valid)
            last_valid = scored.predictions
            epoch_log |= flat_metrics(compute_metrics(scored.predictions, job.spec), "valid") | {
                "valid/loss": scored.loss
            }
        tracker.log_metrics(epoch_log, step)
        history.append({"epoch": epoch + 1, "step": step, **epoch_log})
        say(
            f"epoch {epoch + 1}/{cfg.epochs}: train loss {epoch_log['train/epoch_loss']:.4f}"
            + (f", valid accuracy {epoch_log['valid/accuracy']:.4f}" if job.valid is not None else "")
        )
    return history, seconds, seen * job.world, last_valid


def decide_threshold(job: Job, valid: Predictions | None, say: Callable[[str], None]) -> dict[str, Any]:
    """metrics.json `threshold`: binary sequence tasks choose it on the valid split (calibration.RULE), never on
    test; the model folder stores it for `predict`. Other tasks take the argmax."""
    if job.spec.per_residue or job.spec.num_labels != 2:
        return {"value": None, "source": "argmax", "rule": "the most probable class (not a binary task)"}
    chosen = choose_threshold(valid)
    if chosen["source"] == "default":
        say(
            f"threshold: {chosen['value']} by default ({chosen['reason']}); give the task a valid split (--valid, "
            "or a --train folder with one) to choose it there"
        )
    else:
        say(
            f"threshold: {chosen['value']:.4g}, chosen on the valid split ({chosen['valid_rows']} rows, "
            f"{chosen['valid_positives']} positives): valid MCC {chosen['valid_mcc']:.4f} "
            f"(at 0.5: {chosen['valid_mcc_at_0.5']:.4f})"
        )
    job.model.info.threshold, job.model.info.threshold_source = chosen["value"], chosen["source"]
    return chosen


def _subset(pred: Predictions, keep: np.ndarray) -> Predictions:
    return Predictions(
        [pred.ids[i] for i in np.nonzero(keep)[0]],
        pred.labels[keep],
        pred.probs[keep],
        pred.predicted[keep],
        None if pred.positions is None else pred.positions[keep],
        None if pred.residues is None else [pred.residues[i] for i in np.nonzero(keep)[0]],
        None if pred.groups is None else [pred.groups[i] for i in np.nonzero(keep)[0]],
    )


def leakage_summary(job: Job) -> dict[str, Any] | None:
    if job.test_overlap is None:
        return None
    passing = job.test_overlap.rows_passing(job.cfg.test_filter)
    return {
        "test": job.test_overlap.summary(),
        "valid": job.valid_overlap.summary() if job.valid_overlap else None,
        "test_filter": job.cfg.test_filter,
        "test_rows_passing": len(passing),
    }


def write_leakage(job: Job, path: Path) -> Path:
    """leakage.tsv: per test row its overlap class, closest training row and whether --test-filter keeps it."""
    import csv

    overlap, train_ids = job.test_overlap, job.train.ids
    kept = set(overlap.rows_passing(job.cfg.test_filter))
    with open(path, "w", newline="") as handle:
        out = csv.writer(handle, delimiter="\t", lineterminator="\n")
        out.writerow(["id", "class", "closest_train_id", "identity", "query_coverage", "kept"])
        for i, (rid, cls, hit) in enumerate(zip(job.test.ids, overlap.classes, overlap.best)):
            out.writerow(
                [
                    rid,
                    cls,
                    train_ids[hit.target] if hit else "",
                    f"{hit.identity:.3f}" if hit else "",
                    f"{hit.query_coverage:.3f}" if hit else "",
                    int(i in kept),
                ]
            )
    return path


def scored_set(pred: Predictions, spec: TaskSpec, resamples: int) -> dict[str, Any]:
    """A scored set's metrics and their 95% CIs (`ci95`, `ci_method`): its homology components resampled whole
    when its rows carry them, else its proteins; seeded."""
    return compute_metrics(pred, spec) | confidence_intervals(pred, spec, resamples=resamples)


def baselines(job: Job) -> dict[str, dict] | None:
    """Binary tasks: the length-only and homology-transfer baselines on this job's own splits (rank 0), each on
    the full test set and, under --test-filter, on its kept rows (`filtered`)."""

    if job.spec.per_residue or job.spec.num_labels != 2:
        return None
    train_y, test_y = np.asarray(job.train.labels), np.asarray(job.test.labels)
    resamples = job.cfg.bootstrap
    predictions = {"length": length_only(job.train.lengths, train_y, job.test.ids, job.test.lengths, test_y)}
    if job.test_overlap is not None:
        predictions["homology"] = homology_transfer(job.test_overlap, train_y, job.test.ids, test_y)
    kept = None
    if job.test_overlap is not None and job.cfg.test_filter != "none":
        kept = np.zeros(len(job.test), dtype=bool)
        kept[job.test_overlap.rows_passing(job.cfg.test_filter)] = True
    found = {}
    for name, pred in predictions.items():
        pred = dataclasses.replace(pred, groups=job.test.components)  # the model's resampling units
        found[name] = scored_set(pred, job.spec, resamples)
        if kept is not None:
            found[name]["filtered"] = scored_set(_subset(pred, kept), job.spec, resamples)
    return found


def parse_seeds(seeds: str) -> list[int]:
    try:
        values = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--seeds {seeds!r} must be comma-separated integers, e.g. 0,1,2") from None
    if not values or len(set(values)) != len(values):
        raise UserError(f"--seeds {seeds!r} must name at least one seed, each once, e.g. 0,1,2")
    return values


def run(cfg: FinetuneConfig, *, echo: Callable[[str], None] | None = None) -> FinetuneResult:
    """One fine-tune, or with --seeds one per seed under OUT/seed-N and OUT/seeds.json (mean ± std)."""
    if not cfg.seeds:
        return run_one(cfg, echo=echo)
    import dataclasses

    results = []
    for seed in parse_seeds(cfg.seeds):
        one = dataclasses.replace(
            cfg,
            seed=seed,
            seeds=None,
            out=Path(cfg.out) / f"seed-{seed}",
            run_name=f"{cfg.run_name}-seed{seed}" if cfg.run_name else None,
        )
        results.append(run_one(one, echo=echo))
    if not results[0].metrics:  # ranks other than 0
        return results[-1]
    summary = seeds_summary([r.metrics for r in results])
    summary["runs"] = [str(r.out) for r in results]
    summary["mlflow_run_ids"] = [r.mlflow_run_id for r in results]
    atomic_write(Path(cfg.out) / "seeds.json", json.dumps(json_safe(summary), indent=2, allow_nan=False) + "\n")
    (echo or log.info)(
        "over seeds "
        + cfg.seeds
        + ": "
        + ", ".join(
            f"{k} {summary['test'][k]['mean']:.4f} ± {summary['test'][k]['std']:.4f}"
            for k in ("accuracy", "mcc")
            if k in summary["test"]
        )
    )
    return results[-1]


def _over_seeds(sets: list[dict | None]) -> dict[str, dict[str, float]] | None:
    """Mean and sample std (0 for one seed) of each number of one scored set over the seeds; None if unscored."""
    if not sets or any(s is None for s in sets):
        return None
    out = {}
    for key, value in sets[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            values = np.array([math.nan if s.get(key) is None else s[key] for s in sets], dtype=np.float64)
            out[key] = {
                "mean": float(np.mean(values)),
                "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            }
    return out


def seeds_summary(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """seeds.json: mean ± std over the seeds of the test set, the filtered test set, every baseline (on both) and
    the threshold. The valid/test rows are the same for every seed (EVAL_SUBSET_SEED)."""
    first = per_seed[0]
    summary: dict[str, Any] = {
        "seeds": [m["seed"] for m in per_seed],
        "test": _over_seeds([m["test"] for m in per_seed]),
        "test_filtered": _over_seeds([m.get("test_filtered") for m in per_seed]),
        "threshold": _over_seeds([m.get("threshold") for m in per_seed]),
        "baselines": None,
    }
    if first.get("baselines"):
        summary["baselines"] = {
            name: {
                "test": _over_seeds([m["baselines"][name] for m in per_seed]),
                "test_filtered": _over_seeds([m["baselines"][name].get("filtered") for m in per_seed]),
            }
            for name in first["baselines"]
        }
    return summary


def write(
    job: Job,
    tracker: Tracker,
    scored: Scored,
    out: Path,
    trained: dict[str, Any],
    say: Callable[[str], None],
    threshold: dict[str, Any],
) -> dict[str, Any]:
    """Rank 0: predictions.tsv (classes at `threshold`), leakage.tsv, reliability.png and metrics.json (full and
    filtered test set, baselines, calibration, coverage, runtime), logged to MLflow; returns the metrics."""
    cfg, spec, test, valid, inputs = job.cfg, job.spec, job.test, job.valid, job.inputs
    history, train_seconds, train_rows = trained["history"], trained["train_seconds"], trained["train_rows"]
    infer_seconds = trained["inference_seconds"]
    # Metrics from the file as written, so metrics.json always equals a recomputation from predictions.tsv.
    predicted = scored.predictions
    if threshold["value"] is not None:
        predicted = apply_threshold(predicted, threshold["value"])
    path = write_predictions(predicted, spec, out / PREDICTIONS_FILE)
    written = read_predictions(path, spec)
    test_metrics = compute_metrics(written, spec) | {"loss": scored.loss}
    test_metrics |= confidence_intervals(written, spec, resamples=cfg.bootstrap)
    filtered = filtered_pred = None
    if job.test_overlap is not None and cfg.test_filter != "none":
        kept = np.zeros(len(test), dtype=bool)
        kept[job.test_overlap.rows_passing(cfg.test_filter)] = True
        filtered_pred = _subset(written, kept[scored.row_of])
        filtered = {
            "filter": cfg.test_filter,
            "rows": int(kept.sum()),
            **scored_set(filtered_pred, spec, cfg.bootstrap),
        }
    curves = {"test": reliability_table(written)}
    if filtered_pred is not None:
        curves[f"test_filtered ({cfg.test_filter})"] = reliability_table(filtered_pred)
    binary = not spec.per_residue and spec.num_labels == 2
    plot = reliability_plot(
        curves,
        binary,
        plot_title(spec.name, job.role, Path(str(cfg.model)).name, inputs.test_dataset.label),
        out / RELIABILITY_FILE,
    )
    calibration = {
        "brier": "mean (P(class 1) - label)^2" if binary else "mean over residues of the sum over classes of (p - 1)^2",
        "ece": "sum over 10 equal-width bins of [0, 1] of (rows in bin / rows) x |mean stated probability - "
        + ("fraction of positives| (stated: P(class 1))" if binary else "fraction right| (stated: P(predicted class))"),
        "reliability": curves,
        "plot": RELIABILITY_FILE,
    }
    if job.test_overlap is not None:
        write_leakage(job, out / LEAKAGE_FILE)
    found = baselines(job)
    residues = int(test.lengths.sum())
    runtime = {
        "train_seconds": train_seconds,
        "train_samples_per_second": train_rows / train_seconds if train_seconds else math.nan,
        "inference_seconds": infer_seconds,
        "inference_samples_per_second": len(test) / infer_seconds if infer_seconds else math.nan,
        "inference_residues_per_second": residues / infer_seconds if infer_seconds else math.nan,
    }
    metrics = {
        "task": spec.name,
        "classes": list(spec.classes),
        "model": str(cfg.model),
        "model_role": job.role,
        "dataset": asdict(inputs.dataset),
        "test_dataset": asdict(inputs.test_dataset),
        "mlflow_run_id": tracker.run_id,
        "distill_run_id": job.provenance.get("mlflow_run_id"),
        "seed": cfg.seed,
        "pooling": cfg.pooling,
        "threshold": threshold,
        "test": test_metrics,
        "test_filtered": filtered,
        "calibration": calibration,
        "leakage": leakage_summary(job),
        "coverage": scored.coverage,
        "baselines": found,
        "valid": history[-1] if valid is not None else None,
        "history": history,
        "runtime": runtime,
        "world_size": job.world,
        "global_batch": cfg.batch_size,
        "device": str(job.stepper.device),
        "rows": {"train": len(job.train), "valid": len(valid) if valid else 0, "test": len(test)},
        "options": mlflow_params(job.cfg),  # a rerun with the same options may replace these outputs
    }
    atomic_write(out / METRICS_FILE, json.dumps(json_safe(metrics), indent=2, allow_nan=False) + "\n")
    logged = flat_metrics(test_metrics, "test") | flat_intervals(test_metrics["ci95"], "test")
    logged |= {f"runtime/{k}": v for k, v in runtime.items()}
    logged |= {f"coverage/{k}": v for k, v in scored.coverage.items() if isinstance(v, (int, float))}
    if filtered is not None:
        logged |= flat_metrics(filtered, "test_filtered") | flat_intervals(filtered["ci95"], "test_filtered")
    if threshold["value"] is not None:
        logged["threshold"] = threshold["value"]
    for name, values in (found or {}).items():
        logged |= flat_metrics(values, f"baseline_{name}") | flat_intervals(values["ci95"], f"baseline_{name}")
        if values.get("filtered"):
            part = values["filtered"]
            logged |= flat_metrics(part, f"baseline_{name}_filtered")
            logged |= flat_intervals(part["ci95"], f"baseline_{name}_filtered")
    tracker.log_metrics(logged, job.total_steps)
    tracker.log_params({CI_UNIT: test_metrics["ci_method"]["unit"]})  # the report groups runs by it
    for artifact in (out / METRICS_FILE, path, out / LEAKAGE_FILE, plot):
        if artifact.is_file():
            tracker.log_artifact(artifact)
    cov = scored.coverage
    say(
        "test: "
        + ", ".join(f"{k} {test_metrics[k]:.4f}" for k in ("accuracy", "f1", "roc_auc", "mcc", "brier", "ece"))
        + f"; {cov['residues_scored']} of {cov['residues']} residues scored ({cfg.long})"
        + f"; train {train_seconds:.1f} s, inference {infer_seconds:.2f} s; outputs in {out}"
    )
    return metrics


def run_one(cfg: FinetuneConfig, *, echo: Callable[[str], None] | None = None) -> FinetuneResult:
    """Train, predict, write and track one fine-tune; returns the test metrics (rank 0; other ranks get {})."""
    say = echo or log.info
    job = load(cfg)
    cfg = job.cfg  # with the model's window
    spec, rank, world = job.spec, job.rank, job.world
    inputs, train_set, valid, test = job.inputs, job.train, job.valid, job.test
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    link_tags = links.link_tags(job.provenance, cfg.tracking_uri) if rank == 0 else {}
    if rank == 0 and cfg.tracking:
        links.ensure_experiment(cfg.tracking_uri, cfg.experiment)
    tags = {
        links.TAG_TASK: spec.name,
        links.TAG_DATASET: inputs.dataset.name,
        links.TAG_ROLE: job.role,
        "minprot.dataset_variant": inputs.dataset.variant,
        "minprot.dataset_label": inputs.dataset.label,
        "minprot.organism": inputs.dataset.organism,
        "minprot.test_dataset": inputs.test_dataset.label,
        "minprot.model": str(cfg.model),
        "minprot.job": "finetune",
        **link_tags,
    }
    tags = {k: v for k, v in tags.items() if v}
    tracker = Tracker.start(
        tracking_uri=cfg.tracking_uri,
        run_dir=out,
        experiment=cfg.experiment,
        run_name=cfg.run_name or f"{spec.name}-{inputs.dataset.label}-{job.role}".replace(" ", "-"),
        resume_run_id=None,
        enabled=cfg.tracking and rank == 0,
        system_metrics=cfg.system_metrics,
    )
    with tracker:
        tracker.set_tags(tags)
        model = job.model
        layers = model.encoder.config.num_hidden_layers
        params = {
            **mlflow_params(cfg),
            "model_role": job.role,
            "world_size": world,
            "device": str(job.stepper.device),
            "model.layers": layers,
            "model.hidden_size": model.info.hidden_size,
            "model.parameters": sum(p.numel() for p in model.parameters()),
            "rows.train": len(train_set),
            "rows.valid": len(valid) if valid else 0,
            "rows.test": len(test),
            "rows.longer_than_window": train_set.longer_than(cfg.window)
            + test.longer_than(cfg.window)
            + (valid.longer_than(cfg.window) if valid else 0),
            **environment_params(),
        }
        tracker.log_params(params)
        leakage = leakage_summary(job)
        if leakage is not None:
            t = leakage["test"]
            say(
                f"leakage: of {t['query_sequences']} test sequences, {t['exact']} occur verbatim in the training rows, "
                f"{t['near_identical']} are near-identical and {t['homologs']} homologous to one"
            )
            tracker.log_metrics({f"leakage/test_{k}": t[k] for k in ("exact", "near_identical", "homologs")}, 0)
        say(
            f"fine-tuning {job.role} {cfg.model} ({layers} layers) on {spec.name}: {len(train_set)} train / "
            f"{len(valid) if valid else 0} valid / {len(test)} test rows, {job.total_steps} steps"
        )

        history, train_seconds, train_rows, last_valid = train(job, tracker, say)
        threshold = decide_threshold(job, last_valid, say)
        started = time.perf_counter()
        scored = _score(job, test)
        infer_seconds = time.perf_counter() - started
        model.info.mlflow_run_id = tracker.run_id
        model_dir = save_task_model(job.stepper.module, out / MODEL_DIR, rank)
        if rank != 0:
            return FinetuneResult(out, {}, None, None)

        metrics = write(
            job,
            tracker,
            scored,
            out,
            {
                "history": history,
                "train_seconds": train_seconds,
                "train_rows": train_rows,
                "inference_seconds": infer_seconds,
            },
            say,
            threshold,
        )
        return FinetuneResult(out, metrics, tracker.run_id, model_dir, tags)


def start(cfg: FinetuneConfig, echo: Callable[..., None] = print) -> int:
    """The job from its options (what `minprot finetune` and launch/finetune.py run)."""
    result = run(cfg, echo=echo)
    if result.mlflow_run_id:
        echo(f"MLflow run {result.mlflow_run_id}; metrics in {result.out / 'metrics.json'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """launch/finetune.py: every rank parses the same options (FinetuneConfig) and runs the job."""
    return launch(
        {"finetune": (FinetuneConfig, start)},
        argv=argv,
        description="Fine-tune a ProtBert-format model "
        "(teacher or student) on a downstream task. Every rank runs this script.",
    )
