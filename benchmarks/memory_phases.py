"""Where a distillation step's peak memory comes from, on CPU: each phase's peak RSS, with glibc's default
allocator and with freed blocks unmapped at once, beside the memory plan's parts.

One process per allocator setting (a peak RSS never goes down): it builds the engine for a random teacher
in a model preset's format and width (`--preset`, default protbert: hidden 1024, FFN 4096, 40,000 positions;
esm2-*: ESM-2's format, rotary positions) at `--teacher-layers` layers, runs `--steps` steps, and around each
phase (teacher_forward, student_forward, loss, backward, optimizer; `DistillEngine.step(phase_timer=)`) resets
the kernel's peak (`/proc/self/clear_refs`) and reads it back.
Figures are GB above the process before the models were built.

    .venv/bin/python benchmarks/memory_phases.py --teacher-layers 8 --student-layers 6 --stage 3
    .venv/bin/python benchmarks/memory_phases.py --preset esm2-150m --teacher-layers 6 --student-layers 3 --stage 2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

from common import make_console, print_table, write_json

REPO = Path(__file__).resolve().parents[1]
GB = 2**30
ALLOCATORS = ("glibc-default", "unmap-freed")


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One process: `memory.measure` with each phase's (entry, peak, exit) recorded, above the bare process."""
    from transformers import AutoConfig

    from minprot_ds.bench import memory as mem
    from minprot_ds.bench import memory_measure as measured_mem

    phases: list[dict[str, Any]] = []
    step = 0

    @contextlib.contextmanager
    def phase(name: str):
        nonlocal step
        step += name == "teacher_forward"  # one micro-batch per step: each step begins with the teacher
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset VmHWM to the current RSS
        entry = measured_mem.rss()
        yield
        phases.append(
            {"step": step, "phase": name, "entry": entry, "peak": measured_mem.peak_rss(), "exit": measured_mem.rss()}
        )

    plan = mem.Plan(args.stage, "fp32", False, 1)
    measured = measured_mem.measure(
        args.teacher,
        args.student_layers,
        plan,
        corpus=args.corpus,
        max_tokens=args.max_tokens,
        max_rows=args.max_rows,
        steps=args.steps,
        phase_timer=phase,
        unmap_freed=args.allocator == "unmap-freed",
    )
    before, padded = measured["baseline_bytes"], measured["padded_tokens"]
    for p in phases:
        p.update({k: (p[k] - before) / GB for k in ("entry", "peak", "exit")})
    est = mem.estimate(
        AutoConfig.from_pretrained(args.teacher),
        args.student_layers,
        plan,
        max_tokens=padded,
        max_rows=args.max_rows,
        longest=padded,
    )
    return {
        "allocator": args.allocator,
        "scope": measured["scope"],
        "padded_tokens": padded,
        "phases": phases,
        "peak_gb": max(p["peak"] for p in phases),
        "plan_gb": est.as_gb(),
    }


def make_inputs(work: Path, preset: str, teacher_layers: int) -> tuple[Path, Path]:
    """A random teacher in the preset's family and width (its config as `minprot bench memory --preset` plans
    it: ProtBert's 40,000 positions for protbert) and a corpus of 510-residue rows (every micro-batch full)."""
    from data_prep.corpus import prepare_corpus
    from minprot_ds.bench.memory import preset_config
    from minprot_ds.models.masked_lm import MODEL_PRESETS, save_random_esm2, save_random_protbert

    p = MODEL_PRESETS[preset]
    teacher = work / f"teacher-{preset}-{teacher_layers}l"
    if not (teacher / "model.safetensors").is_file():
        shape = dict(
            num_layers=teacher_layers,
            hidden_size=p.hidden_size,
            num_heads=p.num_heads,
            intermediate_size=p.intermediate_size,
        )
        if p.family == "esm":
            save_random_esm2(teacher, **shape)
        else:
            save_random_protbert(
                teacher, **shape, max_position_embeddings=preset_config(preset).max_position_embeddings
            )
    corpus = work / "corpus"
    if not (corpus / "manifest.json").is_file():
        rng = random.Random(0)
        with open(work / "long.fasta", "w") as fh:
            for i in range(120):
                fh.write(f">L{i}\n" + "".join(rng.choice("ACDEFGHIKLMNPQRSTVWY") for _ in range(510)) + "\n")
        prepare_corpus([work / "long.fasta"], corpus, valid_fraction=0.05, seed=0)
    return teacher, corpus


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    from minprot_ds.models.masked_lm import MODEL_PRESETS

    p.add_argument(
        "--preset",
        default="protbert",
        choices=list(MODEL_PRESETS),
        help="the teacher's family and width (minprot_ds.models.masked_lm.MODEL_PRESETS); random weights",
    )
    p.add_argument("--teacher-layers", type=int, default=8)
    p.add_argument("--student-layers", type=int, default=6)
    p.add_argument("--stage", type=int, default=3, choices=(1, 2, 3), help="ZeRO stage (1 rank, fp32)")
    p.add_argument("--max-tokens", type=int, default=2080)
    p.add_argument("--max-rows", type=int, default=4)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument(
        "--work", type=Path, default=REPO / "runs" / "memory_phases", help="teacher and corpus are kept here"
    )
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "memory_phases.json")
    p.add_argument("--allocator", choices=ALLOCATORS, help=argparse.SUPPRESS)  # the child process's
    p.add_argument("--teacher", help=argparse.SUPPRESS)
    p.add_argument("--corpus", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.allocator:
        print("RESULT " + json.dumps(child(args)))
        return 0
    args.work.mkdir(parents=True, exist_ok=True)
    teacher, corpus = make_inputs(args.work, args.preset, args.teacher_layers)
    runs = []
    for allocator in ALLOCATORS:
        cmd = [
            sys.executable,
            __file__,
            *(argv if argv is not None else sys.argv[1:]),
            "--allocator",
            allocator,
            "--teacher",
            str(teacher),
            "--corpus",
            str(corpus),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return 1
        runs.append(json.loads(proc.stdout.split("RESULT ", 1)[1]))
    rows = [
        [f"{ph['step']}", ph["phase"], *(f"{r['phases'][i][k]:.2f}" for r in runs for k in ("entry", "peak"))]
        for i, ph in enumerate(runs[0]["phases"])
    ]
    plan = runs[0]["plan_gb"]
    rows.append(
        ["", f"step peak (memory plan: {plan['total']:.2f})", *(x for r in runs for x in ("", f"{r['peak_gb']:.2f}"))]
    )
    print_table(
        f"peak RSS by phase, GB above the bare process ({args.preset} width, ZeRO-{args.stage}, 1 rank, fp32, "
        f"{args.teacher_layers}-layer teacher, {args.student_layers}-layer student, {runs[0]['padded_tokens']} tokens)",
        ["step", "phase", *(f"{r['allocator']}: {k}" for r in runs for k in ("entry", "peak"))],
        rows,
        make_console(),
    )
    print("memory plan parts, GB: " + ", ".join(f"{k} {v:.2f}" for k, v in plan.items()))
    write_json(args.out, "memory_phases", {"config": {k: str(v) for k, v in vars(args).items()}, "runs": runs})
    return 0


if __name__ == "__main__":
    sys.exit(main())
