"""The distillation job, top to bottom: config → models, data, engine, checkpointer, tracker → loop.

Each concern lives in its own module; this one only wires them together and runs the loop. Every rank
runs it (under `deepspeed launch/distill.py` or as one plain process).
"""

from __future__ import annotations

import dataclasses
import json
import signal
import time
from pathlib import Path

from minprot_ds.distill.build import build_engine, build_stream, build_tracker, eval_stream, planned_steps
from minprot_ds.distill.checkpoint import Checkpointer, TrainState
from minprot_ds.distill.config import DistillConfig, load_config
from minprot_ds.distill.export import STUDENT_CONFIG, export_student, student_provenance
from minprot_ds.distill.metrics import StepMeter
from minprot_ds.distill.options import DistillOptions
from minprot_ds.distill.watchdog import Watchdog, check_shared_run_dir
from minprot_ds.distributed import any_rank, end_torchrun_job, init_distributed, restart_count
from minprot_ds.distributed import rank as global_rank
from minprot_ds.ds_config import auto_precision, precision, read_ds_config
from minprot_ds.errors import UserError
from minprot_ds.fileio import write_json
from minprot_ds.models.folders import save_gathered
from minprot_ds.options import launch, mlflow_params
from minprot_ds.progress import TrainProgress
from minprot_ds.tracking import environment_params

REPO = Path(__file__).resolve().parents[2]  # a checkout: ds_configs/ lives beside the package


@dataclasses.dataclass
class RunResult:
    run_dir: Path
    step: int
    planned_steps: int
    mlflow_run_id: str | None
    checkpoint: Path | None
    student_dir: Path | None
    valid: dict[str, float]
    teacher_unchanged: bool  # the teacher's weights hash the same after the run as before it


class StopSignal:
    """SIGTERM/SIGUSR1 (what schedulers send before preemption): finish the step, checkpoint, exit 0."""

    def __init__(self):
        self.received_at: float | None = None
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        self.received_at = self.received_at or time.monotonic()

    def any_rank(self) -> bool:
        return any_rank(self.received_at is not None)


def run(
    config: DistillConfig,
    *,
    ds_config: str | Path,
    run_dir: str | Path,
    max_steps: int | None = None,
    resume: str = "auto",
    options: DistillOptions | None = None,
) -> RunResult:
    """The job on this rank. `options` (what the command line said) go to MLflow beside the run config."""
    rank, world = init_distributed()
    run_dir = Path(run_dir)
    check_shared_run_dir(run_dir, rank, world)
    # From here on every rank beats and watches the others (engine build and checkpoint loading included).
    with Watchdog(run_dir, config.run.collective_timeout_s, rank, world):
        return train(
            config,
            ds_config=ds_config,
            run_dir=run_dir,
            max_steps=max_steps,
            resume=resume,
            rank=rank,
            world=world,
            options=options,
        )


def train(
    config: DistillConfig,
    *,
    ds_config: str | Path,
    run_dir: Path,
    max_steps: int | None,
    resume: str,
    rank: int,
    world: int,
    options: DistillOptions | None = None,
) -> RunResult:
    """The job on joined ranks: build, resume or start, loop, export."""

    # Batches are token-budgeted, so rows per micro-batch vary: max_rows is what DeepSpeed books.
    ds = read_ds_config(
        ds_config,
        flag="DeepSpeed config",
        micro_batch=config.data.max_rows,
        owner="the run config's [optimizer] and [schedule] own it (the schedule follows the planned run)",
    )
    grad_accum = int(ds["gradient_accumulation_steps"])
    stop_signal = StopSignal()
    stream = build_stream(config, "train", rank=rank, world_size=world, grad_accum=grad_accum)
    planned = planned_steps(config, stream)
    engine, student_config = build_engine(config, ds, planned_steps=planned, dtype=precision(ds))
    checkpointer = Checkpointer(
        run_dir / "ckpt",
        config.checkpoint,
        engine=engine.student,
        stream=stream,
        seed=config.data.seed,
        model_affecting=config.model_affecting(),
        grad_accum=grad_accum,
    )
    state = checkpointer.load(resume)  # restores weights, optimizer, data cursor and RNG; or seeds the RNG
    if state.step == 0 and rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        student_config.to_json_file(str(run_dir / STUDENT_CONFIG))

    tracker = build_tracker(config, run_dir, rank=rank, resume_run_id=state.mlflow_run_id)
    state.mlflow_run_id = tracker.run_id
    stop_at = planned if max_steps is None else min(planned, max_steps)
    teacher_checksum = engine.teacher_checksum()
    meter = StepMeter(engine, precision=str(precision(ds)).removeprefix("torch."))
    valid: dict[str, float] = {}
    with tracker:
        if checkpointer.last_saved is None:
            tracker.log_params(
                {
                    "config": config.to_dict(),
                    "options": mlflow_params(options) if options is not None else {},
                    "deepspeed": ds,
                    "run": {"planned_steps": planned, "world_size": world, "loss_impl": engine.loss.impl},
                }
            )
            tracker.log_dict(ds, "deepspeed_config.json")
            tracker.log_dict(config.to_dict(), "run_config.json")
            tracker.log_artifact(Path(config.data.corpus) / "manifest.json", "data")
        tracker.log_params(environment_params())  # on resume, a changed commit or version becomes a tag
        if restart_count() is not None:  # under torchrun: how often torch elastic has restarted the job
            tracker.log_metrics({"elastic/restarts": float(restart_count())}, step=state.step)
        if checkpointer.load_s is not None:
            tracker.log_metrics({"checkpoint/load_s": checkpointer.load_s}, step=state.step)
        progress = TrainProgress(total=stop_at, start=state.step, enabled=rank == 0, log_every=config.run.log_every)
        if checkpointer.last_saved is not None:
            progress.note(f"resumed from {checkpointer.last_saved} at step {state.step} of {planned}")
        if restart_count():
            progress.note(f"torchrun restart {restart_count()}: the job resumed from its newest checkpoint")
        batches = iter(stream)
        with progress:
            while state.step < stop_at:
                stats = engine.step(next(batches))
                state.step += 1
                cursor = stream.state_dict()
                state.consumed_samples, state.epoch = cursor["consumed_samples"], cursor["epoch"]
                metrics = meter.update(stats)
                if config.run.trace_samples:
                    trace_samples(run_dir, rank, state.step, stats.samples)
                progress.update(state.step, metrics)
                if state.step % config.run.log_every == 0:
                    tracker.log_metrics(metrics, step=state.step)
                if meter.consecutive_skips > config.run.max_consecutive_skips:
                    raise UserError(
                        f"{meter.consecutive_skips} steps in a row had a non-finite loss or overflowed at step "
                        f"{state.step}; the run stops. Lower optimizer.lr, check the data, or resume from an "
                        "earlier checkpoint."
                    )
                if config.eval.every_steps and state.step % config.eval.every_steps == 0:
                    valid = engine.evaluate(eval_stream(config, rank, world), with_teacher=not valid)
                    tracker.log_metrics(valid, step=state.step)
                    progress.note(f"evaluation at step {state.step}: {_brief(valid)}")
                stopping = stop_signal.any_rank()
                saved = checkpointer.save(state, force=stopping or state.step == stop_at)
                if saved is not None:
                    tracker.log_metrics({"checkpoint/save_s": checkpointer.save_s}, step=state.step)
                    progress.note(f"checkpoint {saved} ({checkpointer.save_s:.2f} s)")
                if stopping:
                    waited = time.monotonic() - (stop_signal.received_at or time.monotonic())
                    tracker.log_metrics({"preempt/signal_to_checkpoint_s": waited}, step=state.step)
                    progress.note(f"stop signal: checkpointed step {state.step} {waited:.1f}s after the signal")
                    break
        if not stop_signal.received_at:
            valid = engine.evaluate(eval_stream(config, rank, world), with_teacher=True)
            tracker.log_metrics(valid, step=state.step)
        student_dir = export_final(engine, run_dir, state, config, rank)
        if student_dir is not None:
            tracker.log_artifact(student_dir, "student")
    return RunResult(
        run_dir,
        state.step,
        planned,
        state.mlflow_run_id,
        checkpointer.last_saved,
        student_dir,
        valid,
        teacher_unchanged=engine.teacher_checksum() == teacher_checksum,
    )


def _brief(metrics: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items()))


def trace_samples(run_dir: Path, rank: int, step: int, samples: list[int]) -> None:
    """One JSON line per step: which global rows this rank consumed (what the resume tests compare)."""
    folder = run_dir / "trace"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"rank{rank}.jsonl", "a") as fh:
        fh.write(json.dumps({"step": step, "samples": samples}) + "\n")


def export_final(engine, run_dir: Path, state: TrainState, config: DistillConfig, rank: int) -> Path | None:
    """Export the student (all ranks gather ZeRO-3 partitions, rank 0 writes) to RUN/student."""
    model = engine.student.module.mlm
    meta = {
        "mlflow_run_id": state.mlflow_run_id,
        "step": state.step,
        "consumed_samples": state.consumed_samples,
        "teacher": config.model.teacher,
        **student_provenance(model.config),
    }
    return save_gathered(model, rank, lambda: export_student(model, run_dir / "student", meta))


def default_ds_config(ds_config_dir: Path) -> Path:
    """bf16 ZeRO-2 where the GPU has bf16 (A100/H100), fp16 ZeRO-2 on older GPUs (V100), fp32 on CPU."""
    names = {"bf16": "zero2_bf16.json", "fp16": "zero2_v100_fp16.json", "fp32": "cpu_zero2.json"}
    return ds_config_dir / names[auto_precision()]


def start(opts: DistillOptions) -> int:
    """The job from its options (what `minprot distill` and launch/distill.py run): a UserError becomes one
    line on stderr and exit status 1."""
    import sys

    overrides = list(opts.set)
    if opts.tracking_uri:
        overrides.append(f'tracking.tracking_uri="{opts.tracking_uri}"')
    run_dir = opts.run_dir or Path("runs") / Path(opts.config).stem
    try:
        cfg = load_config(opts.config, overrides)
        ds_config = default_ds_config(REPO / "ds_configs") if opts.deepspeed_config == "auto" else opts.deepspeed_config
        result = run(
            cfg, ds_config=ds_config, run_dir=run_dir, max_steps=opts.max_steps, resume=opts.resume, options=opts
        )
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        end_torchrun_job()  # not worth a restart: it would fail the same way
        return 1
    if global_rank() == 0:
        write_summary(result)
    return 0


def main(argv: list[str] | None = None) -> int:
    """launch/distill.py: every rank parses the same options (DistillOptions) and runs the job."""
    return launch({"distill": (DistillOptions, start)}, argv=argv, description=DistillOptions.__doc__)


def write_summary(result: RunResult) -> None:
    """RUN/summary.json and a few lines on stdout: where everything is."""
    summary = {
        "run_dir": str(result.run_dir),
        "step": result.step,
        "planned_steps": result.planned_steps,
        "mlflow_run_id": result.mlflow_run_id,
        "checkpoint": str(result.checkpoint) if result.checkpoint else None,
        "student": str(result.student_dir) if result.student_dir else None,
        "valid": result.valid,
        "teacher_unchanged": result.teacher_unchanged,
    }
    write_json(result.run_dir / "summary.json", summary)  # atomic: its presence means the run finished
    print(
        f"step {result.step}/{result.planned_steps}; checkpoint {summary['checkpoint']}; student {summary['student']}"
    )
    for key, value in result.valid.items():
        print(f"  {key} = {value:.4f}")
