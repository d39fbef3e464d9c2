"""`minprot distill | demo | pretrain-teacher | export`: the distillation and the jobs around it.

`minprot distill` is the job `deepspeed launch/distill.py` runs (the same options, DistillOptions): in one
process, or under any launcher."""

from __future__ import annotations

from pathlib import Path

import typer

from minprot_ds.cli.common import console
from minprot_ds.distill.options import DistillOptions
from minprot_ds.options import typer_command


def _distill(opts: DistillOptions) -> int:
    from minprot_ds.distill.job import start

    return start(opts)


distill = typer_command(
    DistillOptions,
    _distill,
    "Distil a ProtBert teacher into a smaller student with DeepSpeed "
    "(one process here; for several, `deepspeed --num_gpus N launch/distill.py` with the same "
    "options).\n\nThe run config (--config, --set) says what the run does; presets are in "
    "launch/configs/.",
    "distill",
    launcher=True,
)


def demo(
    run_root: Path = typer.Option(Path("runs/demo"), "--run-root", help="folder for the corpus, teacher and run"),
    ranks: int = typer.Option(2, min=1, help="CPU ranks the deepspeed launcher starts"),
    teacher_steps: int = typer.Option(200, min=1, help="MLM pre-training steps of the tiny teacher"),
    distill_steps: int = typer.Option(100, min=1, help="distillation steps (the planned run)"),
    ds_config: str = typer.Option("ds_configs/cpu_zero2.json", help="DeepSpeed config, relative to the checkout"),
) -> None:
    """Run the embedded default end to end on CPU: synthetic corpus → tiny teacher → 2-rank distillation.

    Ends with a checkpoint, an MLflow run, an exported student, and teacher vs student MLM accuracy.
    """
    from minprot_ds.distill.demo import run_demo

    summary = run_demo(
        run_root,
        ranks=ranks,
        teacher_steps=teacher_steps,
        distill_steps=distill_steps,
        ds_config=ds_config,
        console=console,
    )
    console.print(closing_note(summary))


def closing_note(summary: dict) -> str:
    """The demo's last lines: accuracies, where things are, and the MLflow UI command (printed unwrapped,
    so it copies as one line)."""
    valid = summary["valid"]
    teacher, student = valid["valid/teacher_mlm_accuracy"], valid["valid/student_mlm_accuracy"]
    run_dir = Path(summary["run_dir"]).resolve()
    return (
        f"\n[bold]held-out MLM accuracy[/]: teacher {teacher:.3f}, student {student:.3f} "
        f"({student / max(teacher, 1e-9):.0%} of the teacher)\n"
        f"checkpoint: {summary['checkpoint']}\nstudent (Hugging Face folder): {summary['student']}\n"
        f"MLflow run {summary['mlflow_run_id']}: open the UI with\n"
        f"  mlflow ui --backend-store-uri sqlite:///{run_dir / 'mlflow.db'}"
    )


def pretrain_teacher(
    folder: Path = typer.Argument(
        ..., help="a BertForMaskedLM or EsmForMaskedLM folder (e.g. made by the demo); trained in place"
    ),
    corpus: Path = typer.Option(..., help="a prepared corpus (minprot data prepare)"),
    steps: int = typer.Option(300, min=1, help="MLM steps"),
    lr: float = typer.Option(2e-3, min=0.0, help="peak learning rate (one-cycle schedule)"),
    seed: int = typer.Option(0),
) -> None:
    """Pre-train a small teacher briefly by MLM (for demos and tests; the real teacher is ProtBert)."""
    from minprot_ds.distill.pretrain import pretrain_teacher as run

    acc = run(folder, corpus, steps=steps, lr=lr, seed=seed, log=console.print)
    console.print(f"teacher saved in {folder}; valid MLM accuracy {acc:.3f}")


def export(
    source: Path = typer.Argument(..., help="a run dir (its newest complete checkpoint) or RUN/ckpt/global_stepN"),
    out: Path = typer.Option(..., "--out", help="folder for the Hugging Face student"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an --out that is not this checkpoint's export"),
) -> None:
    """Export a checkpoint's student as a Hugging Face folder (safetensors, tokenizer, minprot.json)."""
    from minprot_ds.distill.export import export_checkpoint

    folder = export_checkpoint(source, out, overwrite=overwrite)
    console.print(f"student exported to {folder} (load with AutoModelForMaskedLM.from_pretrained)")


COMMANDS = [("distill", distill), ("demo", demo), ("pretrain-teacher", pretrain_teacher), ("export", export)]
