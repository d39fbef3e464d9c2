"""The typed run config of a distillation: TOML file + `--set section.key=value` overrides, validated.

Everything a run needs, except what belongs to DeepSpeed's own JSON (ZeRO stage, precision, gradient
clipping and accumulation, loss scaling), lives here, in sections. Unknown keys, wrong types and
impossible combinations fail before any work, with a message naming the key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import tomllib

from minprot_ds.data.batching import DEFAULT_MAX_ROWS, DEFAULT_MAX_TOKENS
from minprot_ds.data.masking import MaskingOptions
from minprot_ds.distill.engine import KD_POSITIONS, NORMALIZE
from minprot_ds.distill.losses import IMPLS
from minprot_ds.errors import UserError

COMPILE_MODES = ("none", "teacher", "all")


@dataclasses.dataclass
class ModelConfig:
    teacher: str = "Rostlab/prot_bert"  # hub id or local folder of a BertForMaskedLM
    student_layers: int = 15
    layer_strategy: str = "alternate"  # alternate | random | comma-separated teacher layer indices
    layer_seed: int = 0  # for layer_strategy = "random"
    student: str = ""  # an existing student folder to continue from, instead of copying teacher layers
    activation_checkpointing: bool = False
    compile: str = "none"  # none | teacher | all: torch.compile the teacher's encoder (inference) / also the student's


@dataclasses.dataclass
class DataConfig:
    corpus: str = "data/uniref50"  # a folder made by `minprot data prepare`
    seed: int = 0  # seeds the sample order and the masking
    max_tokens: int = DEFAULT_MAX_TOKENS  # padded tokens per micro-batch (rows x padded length)
    max_rows: int = DEFAULT_MAX_ROWS
    pad_to_multiple_of: int = 8
    num_workers: int = 2
    mask_probability: float = 0.15


@dataclasses.dataclass
class LossConfig:
    temperature: float = 2.0
    weights: list[float] = dataclasses.field(default_factory=lambda: [1 / 3, 1 / 3, 1 / 3])  # mlm, kd, cos
    kd_positions: str = "masked"  # masked | all (DistilBERT's default: every non-pad position)
    kd_temperature_squared: bool = True  # L_kd times τ² (DistilBERT); false: MinProtBert's public loop
    impl: str = "auto"  # auto | eager | compiled | triton
    # global-tokens: each term over the step's global count of its tokens (Megatron); micro-batch: a mean per
    # micro-batch, averaged (the old behaviour). Model-affecting. See minprot_ds/distill/engine.py.
    normalize: str = "global-tokens"


@dataclasses.dataclass
class OptimizerConfig:
    lr: float = 5e-5
    weight_decay: float = 0.01
    betas: list[float] = dataclasses.field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8


@dataclasses.dataclass
class ScheduleConfig:
    epochs: int = 3  # the planned run: the LR schedule and data order follow it
    total_steps: int = 0  # > 0 overrides epochs as the planned run length
    warmup_steps: int = 1000


@dataclasses.dataclass
class CheckpointConfig:
    every_steps: int = 1000
    every_minutes: float = 60.0
    keep_last: int = 3
    keep_every: int = 0  # > 0: also keep every checkpoint whose step is a multiple of this, forever


@dataclasses.dataclass
class EvalConfig:
    every_steps: int = 1000  # 0: only at the end
    max_batches: int = 0  # 0: the whole valid split


@dataclasses.dataclass
class TrackingConfig:
    experiment: str = "minprot-distill"
    tracking_uri: str = ""  # empty: an embedded SQLite store in the run dir
    run_name: str = ""
    system_metrics: bool = True


@dataclasses.dataclass
class RunConfig:
    log_every: int = 10
    max_consecutive_skips: int = 20  # non-finite losses / fp16 overflows in a row before the run stops
    trace_samples: bool = False  # append each step's sample indices to RUN/trace/rank{r}.jsonl (data audits)
    # Hang watchdog: a rank whose heartbeat is silent this long ends (or, under torchrun, restarts) the job;
    # 0 turns it off. Bounds DeepSpeed's 10-minute collective timeout; see minprot_ds/distill/watchdog.py.
    collective_timeout_s: float = 300.0


@dataclasses.dataclass
class DistillConfig:
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)
    checkpoint: CheckpointConfig = dataclasses.field(default_factory=CheckpointConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    tracking: TrackingConfig = dataclasses.field(default_factory=TrackingConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def layer_choice(self) -> str | list[int]:
        """The student layer strategy as `build_student` takes it: a name or a list of indices."""
        strategy = self.model.layer_strategy
        if strategy in ("alternate", "random"):
            return strategy
        return [int(i) for i in strategy.split(",")]

    def model_affecting(self) -> dict[str, Any]:
        """The settings a resumed run must not change (shapes, layers, data order, masking, loss weighting)."""
        m, d = self.model, self.data
        return {
            "model.teacher": m.teacher,
            "model.student_layers": m.student_layers,
            "model.layer_strategy": m.layer_strategy,
            "model.layer_seed": m.layer_seed,
            "model.student": m.student,
            "data.seed": d.seed,
            "data.max_tokens": d.max_tokens,
            "data.max_rows": d.max_rows,
            "data.pad_to_multiple_of": d.pad_to_multiple_of,
            "data.mask_probability": d.mask_probability,
            "loss.normalize": self.loss.normalize,
        }


def _check_type(key: str, value: Any, annotation: Any) -> Any:
    """Coerce/validate one value against its annotation; ints are accepted where floats are expected."""
    origin = typing.get_origin(annotation)
    if origin in (list, list):
        (item_type,) = typing.get_args(annotation)
        if not isinstance(value, list):
            raise UserError(f"config key {key} must be a list of {item_type.__name__}, got {value!r}.")
        return [_check_type(f"{key}[{i}]", v, item_type) for i, v in enumerate(value)]
    if origin is types.UnionType:
        raise TypeError(f"unsupported annotation {annotation}")
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is bool and not isinstance(value, bool):
        raise UserError(f"config key {key} must be true or false, got {value!r}.")
    if annotation is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise UserError(f"config key {key} must be an integer, got {value!r}.")
    if not isinstance(value, annotation):
        raise UserError(f"config key {key} must be a {annotation.__name__}, got {value!r}.")
    return value


def _parse_override(text: str) -> tuple[str, str, Any]:
    """`section.key=value` with a TOML value (bare words are taken as strings)."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise UserError(f"--set {text!r} is not of the form section.key=value (e.g. --set optimizer.lr=1e-4).")
    dotted, raw = text.split("=", 1)
    section, key = dotted.strip().split(".", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return section, key, value


def from_dict(raw: dict[str, Any], source: str = "config") -> DistillConfig:
    hints = typing.get_type_hints(DistillConfig)
    sections = {}
    for section, values in raw.items():
        if section not in hints:
            known = ", ".join(hints)
            raise UserError(f"{source}: unknown section [{section}]; known sections: {known}.")
        if not isinstance(values, dict):
            raise UserError(f"{source}: [{section}] must be a table of keys.")
        cls = hints[section]
        fields = typing.get_type_hints(cls)
        checked = {}
        for key, value in values.items():
            if key not in fields:
                raise UserError(
                    f"{source}: unknown key {section}.{key}; known keys of [{section}]: {', '.join(fields)}."
                )
            checked[key] = _check_type(f"{section}.{key}", value, fields[key])
        sections[section] = cls(**checked)
    config = DistillConfig(**sections)
    validate(config, source)
    return config


def load_config(path: str | Path | None, overrides: list[str] = ()) -> DistillConfig:
    """Read a TOML run config (or the defaults when path is None) and apply `section.key=value` overrides."""
    raw: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise UserError(f"config file {path} does not exist; presets are in launch/configs/.")
        try:
            raw = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as err:
            raise UserError(f"{path} is not valid TOML: {err}.") from err
    for text in overrides:
        section, key, value = _parse_override(text)
        raw.setdefault(section, {})
        if not isinstance(raw[section], dict):
            raise UserError(f"--set {text!r}: [{section}] is not a section.")
        raw[section][key] = value
    return from_dict(raw, source)


def validate(c: DistillConfig, source: str = "config") -> None:
    """Impossible values and combinations, each named by its key."""

    def fail(key: str, why: str) -> None:
        raise UserError(f"{source}: {key} {why}.")

    if c.model.student_layers < 1:
        fail("model.student_layers", "must be at least 1")
    strategy = c.model.layer_strategy
    if strategy not in ("alternate", "random"):
        try:
            layers = [int(i) for i in strategy.split(",")]
        except ValueError:
            fail(
                "model.layer_strategy", f"must be alternate, random or comma-separated layer indices, not {strategy!r}"
            )
        if len(layers) != c.model.student_layers:
            fail(
                "model.layer_strategy",
                f"lists {len(layers)} layers but model.student_layers is {c.model.student_layers}",
            )
    if c.model.compile not in COMPILE_MODES:
        fail("model.compile", f"must be one of {', '.join(COMPILE_MODES)}, not {c.model.compile!r}")
    if c.data.max_tokens < 8:
        fail("data.max_tokens", "must be at least 8")
    if c.data.max_rows < 1:
        fail("data.max_rows", "must be at least 1")
    if c.data.pad_to_multiple_of < 1:
        fail("data.pad_to_multiple_of", "must be at least 1")
    if c.data.num_workers < 0:
        fail("data.num_workers", "must be 0 or more")
    try:  # the masking owns its range: one check, whoever builds the options
        MaskingOptions(probability=c.data.mask_probability)
    except UserError as err:
        fail("data.mask_probability", f"is refused by the masking: {err}")
    if c.loss.temperature <= 0:
        fail("loss.temperature", "must be positive")
    if len(c.loss.weights) != 3 or any(w < 0 for w in c.loss.weights) or sum(c.loss.weights) == 0:
        fail("loss.weights", "must be three non-negative numbers (mlm, kd, cos), not all zero")
    if c.loss.kd_positions not in KD_POSITIONS:
        fail("loss.kd_positions", f"must be {' or '.join(KD_POSITIONS)}, not {c.loss.kd_positions!r}")
    if c.loss.normalize not in NORMALIZE:
        fail("loss.normalize", f"must be {' or '.join(NORMALIZE)}, not {c.loss.normalize!r}")
    if c.loss.impl not in IMPLS:
        fail("loss.impl", f"must be one of {', '.join(IMPLS)}, not {c.loss.impl!r}")
    if c.optimizer.lr <= 0:
        fail("optimizer.lr", "must be positive")
    if len(c.optimizer.betas) != 2 or not all(0 <= b < 1 for b in c.optimizer.betas):
        fail("optimizer.betas", "must be two numbers in [0, 1)")
    if c.schedule.epochs < 1 and c.schedule.total_steps < 1:
        fail("schedule.epochs", "must be at least 1 (or set schedule.total_steps)")
    if c.schedule.warmup_steps < 0:
        fail("schedule.warmup_steps", "must be 0 or more")
    if c.checkpoint.every_steps < 0 or c.checkpoint.every_minutes < 0:
        fail("checkpoint.every_steps", "and checkpoint.every_minutes must be 0 (off) or more")
    if c.checkpoint.keep_every < 0:
        fail("checkpoint.keep_every", "must be 0 (off) or more")
    if c.checkpoint.keep_last < 1:
        fail("checkpoint.keep_last", "must be at least 1")
    if c.run.log_every < 1:
        fail("run.log_every", "must be at least 1")
    if c.run.collective_timeout_s < 0:
        fail("run.collective_timeout_s", "must be 0 (off) or more seconds")
