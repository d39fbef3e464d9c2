"""Hardware throughput of the distillation: real engine steps per setting, a sweep, the naive baseline,
and the projected wall time of a full run.

Each setting (token budget, ZeRO stage, activation checkpointing, loss impl, precision) builds the run's
own components (`build_stream`, `build_engine`) and times `DistillEngine.step` after warm-up: `repeats`
timed windows of `steps` steps each, the median window reported. The time split comes from separate
steps run with a phase timer (`DistillEngine.step(..., phase_timer=)`) that syncs the device around each
phase (syncs would slow the headline steps, so those run unsynchronised). Every rank runs the same
settings in the same order (DeepSpeed can be initialised repeatedly in one process); rank 0 reports.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import itertools
import math
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from minprot_ds import distributed
from minprot_ds.bench.memory import skip_reason
from minprot_ds.bench.naive import NaiveLoop
from minprot_ds.data.batching import DEFAULT_MAX_ROWS, DEFAULT_MAX_TOKENS
from minprot_ds.data.synthetic import sample_lengths, write_synthetic_corpus
from minprot_ds.distill.build import build_engine, build_stream
from minprot_ds.distill.config import COMPILE_MODES, DistillConfig
from minprot_ds.distill.flops import mfu, peak_tflops
from minprot_ds.distill.losses import resolve_impl
from minprot_ds.distributed import init_distributed
from minprot_ds.ds_config import PRECISIONS, for_setting
from minprot_ds.errors import UserError
from minprot_ds.models.masked_lm import MODEL_PRESETS, save_random_preset

LOSS_IMPLS = ("eager", "compiled", "triton")
# The run config's defaults: rows scale with the budget.
REFERENCE_MAX_TOKENS, REFERENCE_MAX_ROWS = DEFAULT_MAX_TOKENS, DEFAULT_MAX_ROWS
SPLIT_PHASES = ("teacher_forward", "student_forward_backward", "loss", "optimizer")
# The engine's step phases, as the report groups them (the loss's own backward is in the student's share).
PHASE_GROUP = {
    "teacher_forward": "teacher_forward",
    "student_forward": "student_forward_backward",
    "loss": "loss",
    "backward": "student_forward_backward",
    "optimizer": "optimizer",
}


# --- settings -----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Setting:
    """One point of the sweep."""

    max_tokens: int
    max_rows: int
    zero_stage: int
    activation_checkpointing: bool
    loss_impl: str  # eager | compiled | triton
    precision: str  # fp32 | bf16 | fp16
    compile: str = "none"  # none | teacher | all (model.compile)

    @property
    def label(self) -> str:
        ckpt = "ckpt" if self.activation_checkpointing else "no-ckpt"
        label = f"{self.precision} z{self.zero_stage} {self.max_tokens}tok/{self.max_rows}rows {ckpt} {self.loss_impl}"
        return label if self.compile == "none" else f"{label} compile={self.compile}"


def default_rows(max_tokens: int) -> int:
    """Rows per micro-batch scaled with the token budget, at the run config's default ratio
    (DEFAULT_MAX_TOKENS → DEFAULT_MAX_ROWS: 8192 → 64)."""
    return max(1, round(REFERENCE_MAX_ROWS * max_tokens / REFERENCE_MAX_TOKENS))


def sweep_settings(
    *,
    max_tokens: Sequence[int],
    zero_stages: Sequence[int],
    checkpointing: Sequence[bool],
    loss_impls: Sequence[str],
    precisions: Sequence[str],
    compiles: Sequence[str] = ("none",),
    max_rows: int | None = None,
) -> list[Setting]:
    """The cartesian product of the sweep axes, validated (each bad value named with the fix)."""
    for p in precisions:
        if p not in PRECISIONS:
            raise UserError(f"--precision {p!r} is not one of {', '.join(PRECISIONS)}.")
    for impl in loss_impls:
        if impl not in LOSS_IMPLS:
            raise UserError(f"--loss-impl {impl!r} is not one of {', '.join(LOSS_IMPLS)}.")
    for mode in compiles:
        if mode not in COMPILE_MODES:
            raise UserError(f"--compile {mode!r} is not one of {', '.join(COMPILE_MODES)}.")
        if mode == "all" and 3 in zero_stages:
            raise UserError("--compile all does not go with --zero-stage 3 (not supported); sweep them separately.")
    for z in zero_stages:
        if z not in (0, 1, 2, 3):
            raise UserError(f"--zero-stage {z} is not a ZeRO stage; use 0, 1, 2 or 3.")
    for t in max_tokens:
        if t < 520:
            raise UserError(
                f"--max-tokens {t} cannot hold a 512-residue sequence (514 tokens padded to 520); use >= 520."
            )
    return [
        Setting(t, max_rows or default_rows(t), z, c, impl, p, mode)
        for p, t, z, c, impl, mode in itertools.product(
            precisions, max_tokens, zero_stages, checkpointing, loss_impls, compiles
        )
    ]


def ds_config_for(setting: Setting, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """The DeepSpeed config of a setting: `base` (a user's JSON, optional) with stage and precision set."""
    return for_setting(base, zero_stage=setting.zero_stage, precision=setting.precision, micro_batch=setting.max_rows)


# --- hardware facts -----------------------------------------------------------------------------------


def cpu_bf16_native() -> bool:
    """Whether this CPU has bf16 matmul instructions (AVX512-BF16 or AMX); without them bf16 is emulated."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags for f in ("avx512_bf16", "amx_bf16"))


def hardware_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,  # > cpu_count: shared cores
        "processor": platform.processor() or platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_bf16_native": cpu_bf16_native(),
        "world_size": distributed.world_size(),
    }
    if torch.cuda.is_available():
        info["gpu_memory_gb"] = torch.cuda.get_device_properties(0).total_memory / 2**30
        info["cuda_bf16"] = torch.cuda.is_bf16_supported()
    return info


# --- inputs -------------------------------------------------------------------------------------------


def random_models(folder: Path, preset_name: str, seed: int = 0) -> tuple[Path, int]:
    """A random teacher in the preset's shape and format (ProtBert's or ESM-2's); returns (folder, student layers)."""

    if preset_name not in MODEL_PRESETS:
        raise UserError(f"--preset {preset_name!r} is unknown; choose one of {', '.join(MODEL_PRESETS)}.")
    p = MODEL_PRESETS[preset_name]
    teacher = save_random_preset(folder / f"teacher-{preset_name}", preset_name, seed=seed)
    return teacher, p.student_layers


# --- measuring one setting ----------------------------------------------------------------------------


@dataclasses.dataclass
class Result:
    """One setting's figures: rates are medians over repeat windows, per run (all ranks) unless named
    per device. status is ok, oom (did not fit) or error (message in `error`)."""

    setting: Setting
    status: str = "ok"
    error: str | None = None
    loss_impl_ran: str | None = None
    steps: int = 0
    repeats: int = 0
    step_time_s: float = math.nan
    sequences_per_s: float = math.nan
    residues_per_s: float = math.nan
    tokens_per_s: float = math.nan  # padded tokens
    padding_fraction: float = math.nan
    useful_flops_per_step: float = math.nan  # real tokens only (MFU's numerator), per run
    executed_flops_per_step: float = math.nan  # padded tokens, per run
    engine_flops_per_step: float = math.nan  # what StepStats.flops reported: equals useful_flops_per_step
    tflops_per_device: float = math.nan  # useful
    executed_tflops_per_device: float = math.nan
    mfu: float | None = None
    peak_memory_gb: float = math.nan
    memory_scope: str = ""
    residues_per_cpu_s: float = math.nan
    time_split_s: dict[str, float] = dataclasses.field(default_factory=dict)  # per step, summed micro-batches
    time_split_fraction: dict[str, float] = dataclasses.field(default_factory=dict)
    repeat_residues_per_s: list[float] = dataclasses.field(default_factory=list)
    repeat_residues_per_cpu_s: list[float] = dataclasses.field(default_factory=list)  # per device
    skipped_steps: int = 0
    graphs_compiled_in_windows: int = 0  # torch.compile graphs built while timing (their compile time is in the rate)

    @property
    def fits(self) -> bool:
        return self.status == "ok"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


def _peak_memory(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30, "device allocator peak of this setting"
    import resource

    # On CPU only the process-wide high-water mark exists: later settings report at least earlier ones.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "process peak RSS (monotonic across settings)"


class PhaseClock:
    """A phase timer for `DistillEngine.step`: syncs the device around each phase and adds its seconds
    to the report's groups (SPLIT_PHASES)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds = dict.fromkeys(SPLIT_PHASES, 0.0)

    @contextlib.contextmanager
    def __call__(self, phase: str):
        _sync(self.device)
        t0 = time.perf_counter()
        yield
        _sync(self.device)
        self.seconds[PHASE_GROUP[phase]] += time.perf_counter() - t0


def phase_timed_step(engine, micro_batches: list[dict]) -> dict[str, float]:
    """One engine step with each phase synced and timed: seconds per SPLIT_PHASES group."""
    clock = PhaseClock(engine.device)
    engine.step(micro_batches, phase_timer=clock)
    return clock.seconds


def _compiled_graphs() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def _warm_until_compiled(engine, batches, max_steps: int = 20) -> None:
    """Steps until one compiles no new graph (torch.compile builds graphs lazily, per shape class), so
    compile time stays out of the timed windows. Every rank steps together: ranks agree on stopping."""
    for _ in range(max_steps):
        before = _compiled_graphs()
        engine.step(next(batches))
        new = torch.tensor([_compiled_graphs() - before], dtype=torch.float64, device=engine.device)
        if dist.is_initialized():
            dist.all_reduce(new)
        if new.item() == 0:
            return


@dataclasses.dataclass
class RunInputs:
    """What every setting shares: the teacher folder, the corpus, the step counts."""

    teacher: str
    student_layers: int
    corpus: str
    steps: int = 5
    warmup: int = 2
    repeats: int = 3
    split_steps: int = 2
    num_workers: int = 0
    seed: int = 0
    lr: float = 5e-5
    peak_tflops: float | None = None
    memory_limit_gb: float | None = None
    ds_base: dict[str, Any] | None = None


def measure_setting(setting: Setting, inputs: RunInputs, between: Callable[[], Any] | None = None) -> Result:
    """Build stream + engine for `setting`, warm up, time `repeats` windows of `steps` engine steps,
    calling `between()` after each window (the paired baseline's window, on rank 0). A setting the memory
    plan says cannot fit the device is not run (status oom)."""
    reason = skip_reason(setting, inputs, dist.get_world_size() if dist.is_initialized() else 1)
    if reason is not None:
        return Result(setting, status="oom", error=reason)
    try:
        return _measure(setting, inputs, between)
    except UserError:
        raise
    except Exception as err:  # a setting that fails must not end the sweep; the report says why
        status = "oom" if _is_oom(err) else "error"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return Result(setting, status=status, error=f"{type(err).__name__}: {first}"[:500])
    finally:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def build_setting(setting: Setting, inputs: RunInputs, planned_steps: int):
    """(engine, stream) for one setting: the run config a user would write for it."""

    rank = distributed.rank()
    world = distributed.world_size()
    config = DistillConfig()
    config.model.teacher = inputs.teacher
    config.model.student_layers = inputs.student_layers
    config.model.activation_checkpointing = setting.activation_checkpointing
    config.model.compile = setting.compile
    config.data.corpus = inputs.corpus
    config.data.max_tokens = setting.max_tokens
    config.data.max_rows = setting.max_rows
    config.data.num_workers = inputs.num_workers
    config.data.seed = inputs.seed
    config.loss.impl = "eager"  # the engine is built with eager, then switched to the setting's impl below
    config.optimizer.lr = inputs.lr
    config.schedule.warmup_steps = 0
    stream = build_stream(config, "train", rank=rank, world_size=world, grad_accum=1)
    engine, _ = build_engine(
        config, ds_config_for(setting, inputs.ds_base), planned_steps=planned_steps, dtype=PRECISIONS[setting.precision]
    )
    engine.loss = dataclasses.replace(engine.loss, impl=resolve_impl(setting.loss_impl, engine.device))
    return engine, stream


def _measure(setting: Setting, inputs: RunInputs, between: Callable[[], Any] | None) -> Result:
    world = distributed.world_size()
    total = inputs.warmup + inputs.repeats * inputs.steps + inputs.split_steps
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    engine, stream = build_setting(setting, inputs, planned_steps=total + 1)
    dev = engine.device
    batches = iter(stream)
    try:
        for _ in range(inputs.warmup):
            engine.step(next(batches))
        if setting.compile != "none":
            start = stream.state_dict()
            _warm_until_compiled(engine, batches)
            # Time the same batches as the settings without compile (their lengths set the rate).
            stream.load_state_dict(start)
            batches = iter(stream)
        graphs_before = _compiled_graphs()
        windows, skipped = [], 0
        for _ in range(inputs.repeats):
            useful = executed = engine_flops = 0.0
            seqs = residues = tokens = 0
            _sync(dev)
            w0, c0 = time.perf_counter(), time.process_time()
            for _ in range(inputs.steps):
                micro = next(batches)
                stats = engine.step(micro)
                for b in micro:  # this rank's share; scaled to the run below (ranks get similar shares)
                    flops = engine.micro_batch_flops(b)
                    useful += flops.useful
                    executed += flops.executed
                engine_flops += stats.flops
                seqs, residues, tokens = seqs + stats.sequences, residues + stats.residues, tokens + stats.tokens
                skipped += int(stats.skipped)
            _sync(dev)
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            local = torch.tensor([useful, executed], dtype=torch.float64, device=dev)
            if dist.is_initialized():
                dist.all_reduce(local)
            windows.append(
                dict(
                    wall=wall,
                    cpu=cpu,
                    seqs=seqs,
                    residues=residues,
                    tokens=tokens,
                    useful=float(local[0]),
                    executed=float(local[1]),
                    engine=engine_flops,
                )
            )
            if between is not None:
                between()  # other ranks wait in the next step's first collective
        graphs_in_windows = _compiled_graphs() - graphs_before
        splits = [phase_timed_step(engine, next(batches)) for _ in range(inputs.split_steps)]
        memory, scope = _peak_memory(dev)
    finally:
        del batches
    med = sorted(windows, key=lambda w: w["residues"] / w["wall"])[len(windows) // 2]
    n = inputs.steps
    useful_tflops = med["useful"] / med["wall"] / world / 1e12
    peak = inputs.peak_tflops or peak_tflops(hardware_info()["device"], setting.precision)
    split_s = {p: statistics.median(s[p] for s in splits) for p in SPLIT_PHASES} if splits else {}
    split_total = sum(split_s.values()) or math.nan
    result = Result(
        setting,
        loss_impl_ran=engine.loss.impl,
        steps=n,
        repeats=inputs.repeats,
        step_time_s=med["wall"] / n,
        sequences_per_s=med["seqs"] / med["wall"],
        residues_per_s=med["residues"] / med["wall"],
        tokens_per_s=med["tokens"] / med["wall"],
        padding_fraction=1.0 - (med["residues"] + 2 * med["seqs"]) / med["tokens"],
        useful_flops_per_step=med["useful"] / n,
        executed_flops_per_step=med["executed"] / n,
        engine_flops_per_step=med["engine"] / n,
        tflops_per_device=useful_tflops,
        executed_tflops_per_device=med["executed"] / med["wall"] / world / 1e12,
        mfu=mfu(useful_tflops * 1e12, peak) if peak else None,
        peak_memory_gb=memory,
        memory_scope=scope,
        residues_per_cpu_s=med["residues"] / world / med["cpu"],
        time_split_s=split_s,
        time_split_fraction={p: v / split_total for p, v in split_s.items()},
        repeat_residues_per_s=[w["residues"] / w["wall"] for w in windows],
        repeat_residues_per_cpu_s=[w["residues"] / world / w["cpu"] for w in windows],
        skipped_steps=skipped,
        graphs_compiled_in_windows=graphs_in_windows,
    )
    if inputs.memory_limit_gb is not None and memory > inputs.memory_limit_gb:
        result.status = "oom"
        result.error = f"peak memory {memory:.2f} GB exceeds --memory-limit-gb {inputs.memory_limit_gb:g}"
    del engine
    return result


# --- the whole benchmark ------------------------------------------------------------------------------


def fastest(results: Sequence[Result], precision: str | None = None) -> Result | None:
    """The fitting setting with the most residues/s (optionally of one precision)."""
    ok = [r for r in results if r.fits and (precision is None or r.setting.precision == precision)]
    return max(ok, key=lambda r: r.residues_per_s, default=None)


def project_hours(sequences_per_s: float, world: int, *, epochs: float, sequences: float, gpus: int) -> float:
    """Wall hours of `epochs` over `sequences` on `gpus` devices, from a rate measured on `world` devices,
    assuming per-device throughput stays constant (no scaling loss: a lower bound on the wall time)."""
    per_device = sequences_per_s / max(world, 1)
    return epochs * sequences / (per_device * gpus) / 3600


def run_benchmark(
    settings: Sequence[Setting],
    inputs: RunInputs,
    *,
    baseline: bool = True,
    naive_batch_size: int = 16,
    naive_steps: int | None = None,
    projection: dict[str, float] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Measure every setting, then pair each precision's fastest with the naive baseline, and report.

    Pairing: the fastest setting of each precision is measured again (or, when it is the precision's
    only setting, measured just once) with a naive window (rank 0 only, at the same precision: fp32, or
    bf16/fp16 with the student under autocast) after each of its windows; the ratio is the median of the
    per-pair ratios, so slow drift of a shared machine cancels out.
    """
    rank = distributed.rank()
    world = distributed.world_size()
    counts = {p: sum(s.precision == p for s in settings) for p in {s.precision for s in settings}}
    results: dict[Setting, Result] = {}
    for i, s in enumerate(settings):
        if baseline and counts[s.precision] == 1:
            continue  # its only measurement is the paired one below
        results[s] = measure_setting(s, inputs)
        _log_result(log if rank == 0 else None, f"[{i + 1}/{len(settings)}]", results[s])
    report: dict[str, Any] = {
        "hardware": hardware_info(),
        "inputs": {k: v for k, v in dataclasses.asdict(inputs).items() if k != "ds_base"},
        "world_size": world,
        "precisions": sorted(counts),
        "baseline_precision": min(counts) if baseline else None,  # of "baseline"; "baselines" has one per precision
    }
    if baseline:
        report.update(
            _paired_baseline(
                settings,
                results,
                inputs,
                counts,
                naive_batch_size=naive_batch_size,
                naive_steps=naive_steps or inputs.steps,
                log=log if rank == 0 else None,
            )
        )
    ordered = [results[s] for s in settings if s in results]
    report["results"] = [_result_dict(r) for r in ordered]
    best = fastest(ordered)
    report["fastest"] = _result_dict(best) if best else None
    if projection and best is not None:
        report["projection"] = {
            **projection,
            "setting": best.setting.label,
            "hours": project_hours(best.sequences_per_s, world, **projection),
        }
    return report


def _log_result(log: Callable[[str], None] | None, prefix: str, r: Result) -> None:
    if log is not None:
        what = f"{r.residues_per_s:,.0f} residues/s" if r.fits else f"{r.status}: {r.error}"
        log(f"{prefix} {r.setting.label}: {what}")


def _paired_baseline(
    settings: Sequence[Setting],
    results: dict[Setting, Result],
    inputs: RunInputs,
    counts: dict[str, int],
    *,
    naive_batch_size: int,
    naive_steps: int,
    log: Callable[[str], None] | None,
) -> dict[str, Any]:
    """The naive loop's figures and, per precision, the paired ratio of its fastest setting (see run_benchmark)."""

    rank = distributed.rank()
    world = distributed.world_size()
    baselines: dict[str, Any] = {}
    ratios: dict[str, Any] = {}
    for precision in sorted(counts):
        # Timings differ per rank, so rank 0 decides which setting to pair and tells the others.
        if counts[precision] == 1:
            choice = [next(s for s in settings if s.precision == precision)]
        else:
            best = fastest(list(results.values()), precision)
            choice = [best.setting if best else None]
        if dist.is_initialized() and world > 1:
            dist.broadcast_object_list(choice, src=0)
        setting = choice[0]
        if setting is None:
            continue
        baseline = None
        if rank == 0:  # the naive loop at the precision of the setting it is paired with
            if log:
                log(
                    f"naive baseline: random batches of {naive_batch_size} padded to the longest, {precision}"
                    f"{'' if precision == 'fp32' else ' (teacher in ' + precision + ', student under autocast)'}, "
                    "a window after each of the paired setting's windows"
                )
            baseline = NaiveLoop(
                inputs.teacher,
                inputs.corpus,
                student_layers=inputs.student_layers,
                batch_size=naive_batch_size,
                lr=inputs.lr,
                seed=inputs.seed,
                precision=precision,
            )
            baseline.step()  # warm-up
        between = (lambda loop=baseline: loop.window(naive_steps)) if baseline else None
        r = measure_setting(setting, inputs, between=between)
        if counts[precision] == 1:
            results[setting] = r
        _log_result(log, "[paired]", r)
        if baseline is None:
            continue
        baselines[precision] = dataclasses.asdict(baseline.result(naive_steps))
        pairs = baseline.windows
        baseline = between = None  # its models go before the next precision's are built
        if not r.fits:
            continue
        wall = [ours / world / (w["residues"] / w["wall"]) for ours, w in zip(r.repeat_residues_per_s, pairs)]
        cpu = [ours / (w["residues"] / w["cpu"]) for ours, w in zip(r.repeat_residues_per_cpu_s, pairs)]
        # per device: the baseline runs on one device
        ratios[precision] = {
            "setting": setting.label,
            "baseline_precision": precision,
            "residues_per_s_ratio": statistics.median(wall),
            "residues_per_cpu_s_ratio": statistics.median(cpu),
            "pair_ratios": wall,
            "residues_per_s": r.residues_per_s,
        }
    if not baselines:
        return {}
    return {"baseline": baselines[min(baselines)], "baselines": baselines, "ratios": ratios}


def _result_dict(r: Result) -> dict[str, Any]:
    d = dataclasses.asdict(r)
    d["label"] = r.setting.label
    d["fits"] = r.fits
    return d


# --- inputs and the whole run ------------------------------------------------------------------------


def prepare_inputs(
    work: Path,
    *,
    preset: str,
    teacher: str | None,
    corpus: str | None,
    sequences: int,
    lengths_file: Path | None,
    seed: int,
) -> tuple[str, int, str, str]:
    """(teacher folder, student layers, corpus folder, where the lengths came from), made in `work`
    where not given. Rank 0 writes; other ranks wait at a barrier and read the same folder."""

    if preset not in MODEL_PRESETS:
        raise UserError(f"--preset {preset!r} is unknown; choose one of {', '.join(MODEL_PRESETS)}.")
    rank = distributed.rank()
    source = corpus or ""
    student_layers = MODEL_PRESETS[preset].student_layers
    if teacher is None:
        teacher_dir = work / f"teacher-{preset}"
        if rank == 0:
            random_models(work, preset, seed)
    else:
        teacher_dir = Path(teacher)
    if corpus is None:
        lengths, source = sample_lengths(sequences, seed, lengths_file)
        corpus_dir = work / "corpus"
        if rank == 0:
            write_synthetic_corpus(corpus_dir, lengths, seed=seed)
    else:
        corpus_dir = Path(corpus)
        if not (corpus_dir / "manifest.json").is_file():
            raise UserError(
                f"--corpus {corpus_dir} has no manifest.json; pass a folder made by `minprot data prepare`."
            )
    if dist.is_initialized():
        dist.barrier()
    return str(teacher_dir), student_layers, str(corpus_dir), source


def scratch_dir(work: Path | None) -> tuple[Path, bool]:
    """The work folder (made) and whether it is a temporary one to remove; all ranks share rank 0's."""
    if work is not None:
        work.mkdir(parents=True, exist_ok=True)
        return work, False
    name = [tempfile.mkdtemp(prefix="minprot-bench-")] if distributed.rank() == 0 else [None]
    if distributed.world_size() > 1:
        dist.broadcast_object_list(name, src=0)
    return Path(name[0]), True


def benchmark(
    settings: Sequence[Setting],
    *,
    preset: str = "cpu-small",
    teacher: str | None = None,
    corpus: str | None = None,
    synthetic_sequences: int = 20_000,
    lengths_file: Path | None = None,
    work_dir: Path | None = None,
    ds_base: dict[str, Any] | None = None,
    baseline: bool = True,
    naive_batch_size: int = 16,
    naive_steps: int | None = None,
    projection: dict[str, float] | None = None,
    log: Callable[[str], None] = print,
    **run_inputs: Any,
) -> dict[str, Any] | None:
    """The whole benchmark on every rank: inputs (made in a scratch folder where not given), the sweep,
    the baseline. `run_inputs` are RunInputs fields (steps, warmup, repeats, ...). Returns the report on
    rank 0, None elsewhere."""

    rank, _ = init_distributed()
    work, temporary = scratch_dir(work_dir)
    try:
        teacher_dir, layers, corpus_dir, source = prepare_inputs(
            work,
            preset=preset,
            teacher=teacher,
            corpus=corpus,
            sequences=synthetic_sequences,
            lengths_file=lengths_file,
            seed=run_inputs.get("seed", 0),
        )
        inputs = RunInputs(teacher=teacher_dir, student_layers=layers, corpus=corpus_dir, ds_base=ds_base, **run_inputs)
        report = run_benchmark(
            settings,
            inputs,
            baseline=baseline,
            naive_batch_size=naive_batch_size,
            naive_steps=naive_steps,
            projection=projection,
            log=log if rank == 0 else (lambda _: None),
        )
        report["preset"] = preset if teacher is None else f"{teacher} (student {layers} layers)"
        report["corpus"] = corpus or f"synthetic, {synthetic_sequences} rows, lengths from {source}"
        if dist.is_initialized():
            dist.barrier()  # nobody removes the scratch folder while another rank still reads it
    finally:
        if temporary and rank == 0:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    return report if rank == 0 else None
