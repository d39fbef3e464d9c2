"""Every key of the run config reaches the component it configures.

KEYS names, for each `section.key`, a changed value, the overrides of the baseline it is compared with,
and a probe: what the component built from the config shows (the stream's batches, the engine's models,
optimizer and loss, the tracker's run, or a short in-process run's checkpoints, metrics and traces).
Changing the key must change what the probe sees. A key of the config that is missing from KEYS fails
the test: a new key comes with its probe (cluster: add yours after merging main).
"""

from __future__ import annotations

import dataclasses
import hashlib
import typing
from pathlib import Path

import pytest
import torch

from minprot_ds.distill.config import DistillConfig, load_config

REPO = Path(__file__).resolve().parents[2]
CPU_DS = REPO / "ds_configs" / "cpu_zero2.json"


# --- probes: what a component built from the config shows --------------------------------------------


def _digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def probe_stream(config: DistillConfig, tmp: Path):
    from minprot_ds.distill.build import build_stream

    stream = build_stream(config, "train", rank=0, world_size=1, grad_accum=1)
    batches = iter(stream)
    steps = [next(batches) for _ in range(3)]
    seen = [
        (
            tuple(int(i) for i in b["sample_index"]),
            tuple(b["input_ids"].shape),
            _digest(b["input_ids"]),
            int((b["labels"] != -100).sum()),
        )
        for step in steps
        for b in step
    ]
    return stream.num_workers, seen


def probe_eval(config: DistillConfig, tmp: Path):
    from minprot_ds.distill.build import eval_stream

    return sum(1 for _ in eval_stream(config, 0, 1))


def probe_planned(config: DistillConfig, tmp: Path):
    from minprot_ds.distill.build import build_stream, planned_steps

    return planned_steps(config, build_stream(config, "train", rank=0, world_size=1, grad_accum=1))


def _engine(config: DistillConfig):
    from minprot_ds.distill.build import build_engine
    from minprot_ds.distributed import init_distributed
    from minprot_ds.ds_config import read_ds_config

    init_distributed()  # a process group of one (gloo), as `python launch/distill.py` makes
    ds = read_ds_config(CPU_DS, flag="test", owner="the run config", micro_batch=config.data.max_rows)
    return build_engine(config, ds, planned_steps=100, dtype=torch.float32)


def probe_models(config: DistillConfig, tmp: Path):
    from minprot_ds.models.family import family_of_config

    engine, student_config = _engine(config)
    student = engine.student.module.mlm
    family = family_of_config(student_config)
    weights = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in student.parameters())).hexdigest()
    return (
        engine.teacher_checksum(),
        student_config.num_hidden_layers,
        list(getattr(student_config, "minprot_teacher_layers", [])),
        weights,
        student.is_gradient_checkpointing,
        getattr(family.encoder(engine.teacher), "_compiled_call_impl", None) is not None,
        getattr(family.encoder(student), "_compiled_call_impl", None) is not None,
        type(student).__name__,
    )


def probe_optimizer(config: DistillConfig, tmp: Path):
    engine, _ = _engine(config)
    groups = engine.student.optimizer.param_groups
    return (
        [(g["initial_lr"], g["weight_decay"], tuple(g["betas"]), g["eps"]) for g in groups],
        engine.student.lr_scheduler.get_last_lr(),
    )


def probe_loss(config: DistillConfig, tmp: Path):
    """The loss terms of one fixed batch (the stream's first) through the engine's phases."""
    from minprot_ds.distill.build import build_stream

    engine, _ = _engine(config)
    batch = engine.to_device(next(iter(build_stream(config, "train", rank=0, world_size=1, grad_accum=1)))[0])
    with torch.no_grad():
        student = engine.student_forward(batch)
        out = engine.loss_of(student, engine.teacher_forward(batch))
    return engine.loss.impl, student.logits.shape[0], round(float(out.total), 6), round(float(out.kd), 6)


def probe_step_divisors(config: DistillConfig, tmp: Path):
    """What one step's loss terms are divided by (None: each micro-batch's own counts), and the model_affecting
    entry a resume compares."""
    from minprot_ds.distill.build import build_stream

    engine, _ = _engine(config)
    step = next(iter(build_stream(config, "train", rank=0, world_size=1, grad_accum=1)))
    return engine.step_divisors(step), config.model_affecting()["loss.normalize"]


def probe_loss_impl(config: DistillConfig, tmp: Path):
    """The implementation the engine's loss runs (resolved for this device; not run: compiling takes a minute)."""
    engine, _ = _engine(config)
    return engine.loss.impl


def probe_tracker(config: DistillConfig, tmp: Path):
    from minprot_ds.distill.build import build_tracker

    run_dir = tmp / f"tracker-{len(list(tmp.glob('tracker-*')))}"
    tracker = build_tracker(config, run_dir, rank=0, resume_run_id=None)
    with tracker:
        run = tracker._client.get_run(tracker.run_id)
        experiment = tracker._client.get_experiment(run.info.experiment_id).name
        seen = (tracker.tracking_uri, experiment, run.info.run_name, tracker._monitor is not None)
    return seen


def probe_run(config: DistillConfig, tmp: Path):
    """A short in-process distillation (one rank): its checkpoints, logged metric steps and traces."""
    from mlflow import MlflowClient

    from minprot_ds.distill.job import run
    from minprot_ds.errors import UserError

    run_dir = tmp / f"run-{len(list(tmp.glob('run-*')))}"
    try:
        result = run(config, ds_config=CPU_DS, run_dir=run_dir)
    except UserError as err:
        return f"stopped: {str(err)[:40]}"
    client = MlflowClient(config.tracking.tracking_uri)

    def steps(key: str) -> list[int]:
        return sorted(m.step for m in client.get_metric_history(result.mlflow_run_id, key))

    checkpoints = sorted(
        int(p.name.removeprefix("global_step"))
        for p in (run_dir / "ckpt").glob("global_step*")
        if p.name.removeprefix("global_step").isdigit()
    )
    return (
        result.step,
        checkpoints,
        steps("train/loss"),
        steps("valid/student_mlm_loss"),
        sorted(p.name for p in (run_dir / "trace").glob("*")),
    )


def probe_watchdog(config: DistillConfig, tmp: Path):
    """The hang watchdog as distill.run builds it, for rank 0 of 2: whether it beats, and its bound."""
    from minprot_ds.distill.watchdog import Watchdog

    run_dir = tmp / f"dog-{len(list(tmp.glob('dog-*')))}"
    with Watchdog(run_dir, config.run.collective_timeout_s, rank=0, world=2) as dog:
        return (run_dir / "heartbeat" / "rank0").is_file(), dog.timeout_s


# --- the table -----------------------------------------------------------------------------------------

RUN_BASE = [
    "schedule.total_steps=3",
    "schedule.warmup_steps=0",
    "checkpoint.every_steps=0",
    "checkpoint.every_minutes=0",
    "eval.every_steps=0",
    "eval.max_batches=2",
    "run.log_every=10",
]
EVERY_STEP = [*RUN_BASE, "checkpoint.every_steps=1", "checkpoint.keep_last=1"]

# key: (changed value, baseline overrides, probe); {name} is filled from the assets fixture.
KEYS: dict[str, tuple[str, list[str], typing.Callable]] = {
    "model.teacher": ('"{teacher_b}"', [], probe_models),
    "model.student_layers": ("3", [], probe_models),
    "model.layer_strategy": ('"0,1"', [], probe_models),
    "model.layer_seed": ("1", ["model.layer_strategy=random"], probe_models),
    "model.student": ('"{student}"', [], probe_models),
    "model.activation_checkpointing": ("true", [], probe_models),
    "model.compile": ('"all"', [], probe_models),
    "data.corpus": ('"{corpus_b}"', [], probe_stream),
    "data.seed": ("1", [], probe_stream),
    "data.max_tokens": ("1024", [], probe_stream),
    "data.max_rows": ("2", [], probe_stream),
    "data.pad_to_multiple_of": ("1", [], probe_stream),
    "data.num_workers": ("1", [], probe_stream),
    "data.mask_probability": ("0.5", [], probe_stream),
    "loss.temperature": ("4.0", [], probe_loss),
    "loss.weights": ("[1.0, 0.5, 0.1]", [], probe_loss),
    "loss.kd_positions": ('"all"', [], probe_loss),
    "loss.kd_temperature_squared": ("false", [], probe_loss),
    "loss.impl": ('"compiled"', [], probe_loss_impl),
    "loss.normalize": ('"micro-batch"', [], probe_step_divisors),
    "optimizer.lr": ("1e-3", [], probe_optimizer),
    "optimizer.weight_decay": ("0.1", [], probe_optimizer),
    "optimizer.betas": ("[0.8, 0.99]", [], probe_optimizer),
    "optimizer.eps": ("1e-6", [], probe_optimizer),
    "schedule.epochs": ("1", [], probe_planned),
    "schedule.total_steps": ("7", [], probe_planned),
    "schedule.warmup_steps": ("0", [], probe_optimizer),
    "checkpoint.every_steps": ("2", RUN_BASE, probe_run),
    "checkpoint.every_minutes": ("1e-9", RUN_BASE, probe_run),
    "checkpoint.keep_last": ("2", EVERY_STEP, probe_run),
    "checkpoint.keep_every": ("2", EVERY_STEP, probe_run),
    "eval.every_steps": ("2", RUN_BASE, probe_run),
    "eval.max_batches": ("1", [], probe_eval),
    "tracking.experiment": ('"another"', [], probe_tracker),
    "tracking.tracking_uri": ('"sqlite:///{other_db}"', [], probe_tracker),
    "tracking.run_name": ('"named"', [], probe_tracker),
    "tracking.system_metrics": ("false", [], probe_tracker),
    "run.log_every": ("2", RUN_BASE, probe_run),
    "run.max_consecutive_skips": ("0", [*RUN_BASE, "optimizer.lr=1e30"], probe_run),
    "run.trace_samples": ("true", RUN_BASE, probe_run),
    "run.collective_timeout_s": ("300", ["run.collective_timeout_s=0"], probe_watchdog),
}
SLOW_PROBES = {probe_run}


def config_keys() -> list[str]:
    keys = []
    for section, cls in typing.get_type_hints(DistillConfig).items():
        keys += [f"{section}.{f.name}" for f in dataclasses.fields(cls)]
    return keys


def test_every_config_key_has_a_probe():
    missing = [k for k in config_keys() if k not in KEYS]
    unknown = [k for k in KEYS if k not in config_keys()]
    assert not missing, f"config keys without a probe in tests/distill/test_config_keys.py KEYS: {missing}"
    assert not unknown, f"KEYS names keys the config does not have: {unknown}"


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """Two tiny teachers and a student folder of each family (BERT, and ESM-2 under "esm"), two corpora (train and
    valid splits), a spare SQLite path."""
    from data_prep.corpus import prepare_corpus
    from minprot_ds.distill.demo import synthetic_fasta
    from minprot_ds.models.masked_lm import save_random_esm2, save_random_protbert

    root = tmp_path_factory.mktemp("config_keys")
    shape = dict(num_layers=6, hidden_size=32, num_heads=4, intermediate_size=64)
    corpora = {}
    for name, seed in (("corpus", 0), ("corpus_b", 1)):
        fasta = synthetic_fasta(root / f"{name}.fasta", sequences=300, seed=seed)
        prepare_corpus([fasta], root / name, valid_fraction=0.2, seed=seed)
        corpora[name] = root / name
    return {
        "teacher": save_random_protbert(root / "teacher", **shape, seed=0),
        "teacher_b": save_random_protbert(root / "teacher_b", **shape, seed=1),
        "student": save_random_protbert(root / "student", **{**shape, "num_layers": 2}, seed=2),
        "esm": {
            "teacher": save_random_esm2(root / "esm_teacher", **shape, seed=0),
            "teacher_b": save_random_esm2(root / "esm_teacher_b", **shape, seed=1),
            "student": save_random_esm2(root / "esm_student", **{**shape, "num_layers": 2}, seed=2),
        },
        **corpora,
        "other_db": root / "other.db",
        "db": root / "mlflow.db",
        "root": root,
    }


def base_overrides(assets) -> list[str]:
    """A tiny CPU run: the assets' teacher and corpus, small batches, its own MLflow store."""
    return [
        f'model.teacher="{assets["teacher"]}"',
        "model.student_layers=2",
        f'data.corpus="{assets["corpus"]}"',
        "data.max_tokens=2048",
        "data.max_rows=16",
        "data.num_workers=0",
        "loss.impl=eager",
        f'tracking.tracking_uri="sqlite:///{assets["db"]}"',
    ]


_observed: dict[tuple, object] = {}


def observe(assets, probe, overrides: list[str]):
    key = (probe.__name__, assets["teacher"], tuple(overrides))
    if key not in _observed:
        _observed[key] = probe(load_config(None, [*base_overrides(assets), *overrides]), assets["root"])
    return _observed[key]


# Every key for both families; the in-process runs (cadence, tracking of a run: nothing family-specific past the
# engine, which the other probes build) for BERT only, to keep CI time.
FAMILY_PARAMS = [
    pytest.param(k, family, marks=[pytest.mark.slow] if KEYS[k][2] in SLOW_PROBES else [], id=f"{family}-{k}")
    for family in ("bert", "esm")
    for k in KEYS
    if family == "bert" or KEYS[k][2] not in SLOW_PROBES
]


@pytest.mark.parametrize(("key", "family"), FAMILY_PARAMS)
def test_changing_a_key_reaches_its_component(key, family, assets):
    assets = {**assets, **(assets["esm"] if family == "esm" else {})}
    value, base, probe = KEYS[key]
    changed = f"{key}={value.format(**{k: str(v) for k, v in assets.items() if k != 'esm'})}"
    before = observe(assets, probe, base)
    if probe is probe_models:
        assert before[-1] == ("EsmForMaskedLM" if family == "esm" else "BertForMaskedLM")
    after = observe(assets, probe, [*base, changed])
    assert before != after, f"{changed} did not change what {probe.__name__} sees: {after}"
