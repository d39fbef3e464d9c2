"""Every GPU measurement of issue 15 in one run, on a bare offline GPU machine, in under 8 minutes.

Started by run.sh (`OUT=... bash benchmarks/gpu/run.sh [--dry-run]`). Each step is a subprocess with a
time budget of its own, inside one deadline for the whole run; a step that fails, times out or finds no
time left is a row of the table with its error, and the next step still runs. At the end: one table on
stdout, and in the output folder gpu_run.json (every figure, every step's command), gpu_run.md (the table)
and gpu_run.log (every step's output). Steps, in order of priority:

  install          the carried wheels (benchmarks/gpu/carry/wheels, see build_carry.py) into a target folder
  environment      Python, torch, CUDA, Triton, transformers, DeepSpeed, datasets; the device
  matmul-peak      the bf16 and fp16 matmul rate reached here: MFU is taken against it
  loss-tests       pytest tests/distill/losses: the compiled kernels against float64, at real shapes, fp16 and bf16
  loss-kernels-*   benchmarks/loss_kernels.py: eager vs fused vs compiled, time and peak memory, real shapes
  throughput-*     the throughput benchmark, protbert preset (random weights), 1 GPU, ZeRO-2: bf16 and fp16,
                   two token budgets, checkpointing off/on, the fused loss, the naive baseline paired,
                   the 3-epoch projection for 8 GPUs; then --compile none,teacher
  memory-plan      `minprot bench memory` for the measured settings, against their measured peaks
  throughput-esm2-bf16  the same for ESM-2: the esm2-650m preset (random weights, 33 -> 17 layers), 1 GPU,
                   ZeRO-2, bf16, fused loss at ESM-2's 33 tokens, the config's 8,192 tokens and 16,384,
                   the naive baseline paired, the 3-epoch projection
  memory-plan-esm2 `minprot bench memory --preset esm2-650m` against those settings' measured peaks
  step-profile     benchmarks/step_profile.py: time by operator family, engine vs naive

--dry-run (automatic without CUDA) runs the same steps on CPU at tiny shapes with few steps (the tiny and
esm2-tiny presets): the test
tests/benchmarks/test_gpu_run.py runs it, so this script cannot rot between GPU sessions.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CARRY = HERE / "carry"
LENGTHS_NAME = "uniref50_like_lengths.txt"
GPU_DEADLINE_S = 450.0  # the whole run, install included: under 8 minutes with room for the last step's kill
MIN_STEP_S = 20.0  # a step is not started with less time than this left
# A dry run on a small shared CPU can take many times a GPU's time (the first DeepSpeed start JIT-builds an
# op for minutes, and a build killed half-way leaves a lock later steps wait on): budgets stretch, no deadline.
DRY_BUDGET_FACTOR = 8
V100_DAYS_DISTILPROTBERT, V100_GPUS_DISTILPROTBERT = 12.0, 5  # DistilProtBert's 3 epochs on 5×V100
EPOCHS, SEQUENCES, PROJECTION_GPUS = 3, 43e6, 8  # UniRef50 20-512 residues, ~43M sequences


@dataclasses.dataclass
class Step:
    name: str
    what: str
    budget_s: float
    commands: Callable[[Run], list[list[str]]]  # built when the step starts (it may use earlier results)
    read: Callable[[Run, Step], tuple[str, list[tuple[str, str]], dict]] | None = None
    env: dict[str, str | None] = dataclasses.field(default_factory=dict)  # None removes the variable


@dataclasses.dataclass
class Outcome:
    name: str
    what: str
    status: str  # ok | failed | timeout | skipped
    seconds: float = 0.0
    budget_s: float = 0.0
    commands: list[str] = dataclasses.field(default_factory=list)
    summary: str = ""
    rows: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # sub-rows: (label, text)
    error: str | None = None
    data: dict = dataclasses.field(default_factory=dict)


class Run:
    """The plan's shared state: mode, folders, the python that runs the steps, earlier outcomes."""

    def __init__(self, args: argparse.Namespace, dry: bool):
        self.dry = dry
        self.out: Path = args.out
        self.temporary = args.scratch is None  # removed at the end (models of GBs on a GPU run)
        self.scratch = Path(args.scratch or tempfile.mkdtemp(prefix="minprot-gpu-"))
        self.scratch.mkdir(parents=True, exist_ok=True)
        self.carry: Path = args.carry
        self.site = self.scratch / "site"
        self.python = sys.executable
        self.start = time.monotonic()
        self.deadline_s = args.deadline_s if args.deadline_s is not None else (0.0 if dry else GPU_DEADLINE_S)
        self.outcomes: dict[str, Outcome] = {}
        self.log = (self.out / "gpu_run.log").open("w")
        self.work = self.scratch / "work"  # random teacher and synthetic corpus, shared by the throughput steps

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return self.deadline_s - self.elapsed() if self.deadline_s else float("inf")

    def data(self, step: str) -> dict:
        o = self.outcomes.get(step)
        return o.data if o is not None and o.status == "ok" else {}

    def file(self, name: str) -> Path:
        return self.scratch / name

    def env(self, extra: dict[str, str | None]) -> dict[str, str]:
        env = dict(os.environ)
        path = (
            [str(REPO)] + ([str(self.site)] if self.site.is_dir() else []) + [p for p in [env.get("PYTHONPATH")] if p]
        )
        env.update(
            PYTHONPATH=os.pathsep.join(path),
            PYTHONUNBUFFERED="1",
            MLFLOW_DISABLE_TELEMETRY="true",
            HF_HUB_OFFLINE="1",
            HF_DATASETS_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            TOKENIZERS_PARALLELISM="false",
        )
        if self.dry:
            env["TRITON_INTERPRET"] = "1"  # CPU: the fused kernels run in Triton's interpreter
        else:
            env.pop("TRITON_INTERPRET", None)
        for key, value in extra.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env


# --- running a step -----------------------------------------------------------------------------------

ERROR_LINE = re.compile(
    r"(\w+(Error|Exception|Interrupt)\b|^error:|^Error:|FAILED|No such (command|option)|out of memory)"
)


def last_error(text: str) -> str:
    """The most telling line of a failed step's output: the last error-looking line, else the last line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if ERROR_LINE.search(line):
            return line[:400]
    return lines[-1][:400] if lines else "no output"


def execute(run: Run, step: Step) -> Outcome:
    outcome = Outcome(step.name, step.what, "ok")
    left = run.left()
    if left < MIN_STEP_S:
        outcome.status = "skipped"
        outcome.error = f"no time left ({max(left, 0):.0f} s of the run's {run.deadline_s:.0f} s deadline)"
        return outcome
    budget = min(step.budget_s * (DRY_BUDGET_FACTOR if run.dry else 1), left)
    t0 = time.monotonic()
    try:
        commands = step.commands(run)
    except Skip as why:
        outcome.status, outcome.error = "skipped", str(why)
        return outcome
    outcome.commands = [shlex.join(c) for c in commands]
    outcome.budget_s = budget
    for cmd in commands:
        run.log.write(f"\n===== {step.name}: {shlex.join(cmd)}\n")
        run.log.flush()
        remaining = budget - (time.monotonic() - t0)
        code, out = _call(cmd, run.env(step.env), remaining)
        run.log.write(out)
        run.log.flush()
        if code is None:
            outcome.status = "timeout"
            outcome.error = f"stopped at its budget of {budget:.0f} s; last output: {last_error(out)}"
            break
        if code != 0:
            outcome.status = "failed"
            outcome.error = f"exit status {code}: {last_error(out)}"
            break
    outcome.seconds = time.monotonic() - t0
    if step.read is not None and outcome.status in ("ok", "failed"):
        try:
            outcome.summary, outcome.rows, outcome.data = step.read(run, step)
        except FileNotFoundError as err:
            if outcome.status == "ok":
                outcome.status, outcome.error = "failed", f"its output is missing: {err.filename}"
        except Exception as err:  # a figure we cannot read is reported, never guessed
            outcome.status = "failed"
            outcome.error = (
                outcome.error + "; " if outcome.error else ""
            ) + f"reading its output: {type(err).__name__}: {err}"
    if outcome.status == "ok" and outcome.data.get("failed"):
        outcome.status, outcome.error = "failed", outcome.data["failed"]
    return outcome


class Skip(Exception):
    """A step that cannot start (what it needs failed); the message says why."""


def _call(cmd: list[str], env: dict[str, str], timeout: float) -> tuple[int | None, str]:
    """(exit status or None on timeout, combined output). The step runs in its own process group, so a
    timeout stops its children too (DataLoader workers, compile workers)."""
    with tempfile.TemporaryFile("w+") as buf:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=buf, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = proc.wait(timeout=max(timeout, 1.0))
        except subprocess.TimeoutExpired:
            code = None
            for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 30)):
                try:
                    os.killpg(proc.pid, sig)
                    proc.wait(timeout=wait)
                    break
                except (subprocess.TimeoutExpired, ProcessLookupError):
                    continue
            try:  # children that outlived their parent's SIGTERM (they would hold the GPU's memory)
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        buf.seek(0)
        return code, buf.read()


# --- the steps ----------------------------------------------------------------------------------------


def py(run: Run, *args: str) -> list[str]:
    return [run.python, *args]


def install_commands(run: Run) -> list[list[str]]:
    wheels = sorted((run.carry / "wheels").glob("*.whl"))
    if not wheels:
        raise Skip(
            f"no wheels in {run.carry / 'wheels'} (build them with benchmarks/gpu/build_carry.py); "
            "the steps use this environment's packages as they are"
        )
    return [
        py(
            run,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-index",
            "--no-deps",
            "--no-compile",
            "--no-cache-dir",
            "--upgrade",
            "--target",
            str(run.site),
            *map(str, wheels),
        )
    ]


def read_install(run: Run, step: Step):
    names = sorted(p.name.split("-")[0] + " " + p.name.split("-")[1] for p in (run.carry / "wheels").glob("*.whl"))
    return f"{len(names)} wheels into {run.site}", [], {"wheels": names}


def read_env(run: Run, step: Step):
    env = json.loads(run.file("env.json").read_text())
    device = env["device"]
    if env.get("capability"):
        device += f" ({env['capability']}, {env['memory_gib']:.1f} GiB, {env['multiprocessors']} SMs)"
    software = ", ".join(
        f"{k} {env[k]}"
        for k in ("python", "torch", "cuda", "triton", "transformers", "deepspeed", "datasets")
        if env.get(k)
    )
    failed = [
        k for k in ("deepspeed", "datasets", "triton", "transformers") if str(env.get(k, "")).startswith("unavailable")
    ]
    data = {**env, "failed": f"cannot import {', '.join(failed)}" if failed else None}
    return device, [("software", software)], data


def matmul_commands(run: Run) -> list[list[str]]:
    args = (
        ["--n", "256", "--dtypes", "fp32,bf16", "--repeats", "5", "--warmup", "1"]
        if run.dry
        else ["--n", "8192", "--dtypes", "bf16,fp16", "--repeats", "20", "--warmup", "5"]
    )
    return [py(run, "benchmarks/gpu/probe.py", "matmul", *args, "--out", str(run.file("matmul.json")))]


def read_matmul(run: Run, step: Step):
    mm = json.loads(run.file("matmul.json").read_text())
    text = ", ".join(f"{d} {v:,.1f} TFLOP/s" for d, v in mm["tflops"].items())
    return f"{mm['n']}³ products: {text}", [], mm


def measured_peak(run: Run, precision: str) -> list[str]:
    """--peak-tflops from the matmul step (MFU against what this device reaches), if it ran."""
    rates = run.data("matmul-peak").get("tflops", {})
    rate = rates.get(precision) or (rates.get("fp32") if run.dry else None)
    return ["--peak-tflops", f"{rate:.4g}"] if rate else []


def loss_test_commands(run: Run) -> list[list[str]]:
    cmd = py(
        run,
        "-m",
        "pytest",
        "tests/distill/losses",
        "-q",
        "-p",
        "no:cacheprovider",
        "-o",
        "addopts=--import-mode=importlib",
        f"--junitxml={run.file('loss_tests.xml')}",
    )
    if run.dry:  # the interpreter is slow; the real-shape cases skip on CPU but are collected and reported
        cmd += ["-k", "real_shapes or single_row"]
    return [cmd]


def read_junit(run: Run, step: Step):
    root = ET.parse(run.file("loss_tests.xml")).getroot()
    cases = root.iter("testcase")
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    bad, rows = [], []
    for case in cases:
        name = case.get("name", "?")
        problem = case.find("failure") if case.find("failure") is not None else case.find("error")
        if problem is not None:
            counts["failed"] += 1
            message = (problem.get("message") or problem.text or "").strip().splitlines()
            bad.append(f"{name}: {message[0][:200] if message else ''}")
        elif case.find("skipped") is not None:
            counts["skipped"] += 1
        else:
            counts["passed"] += 1
        if "real_shapes" in name:
            rows.append(
                (
                    name,
                    "failed" if problem is not None else ("skipped" if case.find("skipped") is not None else "passed"),
                )
            )
    summary = ", ".join(f"{v} {k}" for k, v in counts.items())
    return (
        summary,
        rows,
        {**counts, "failures": bad, "failed": f"{counts['failed']} failed: {'; '.join(bad[:3])}" if bad else None},
    )


def loss_kernel_step(dtype: str) -> Step:
    def commands(run: Run) -> list[list[str]]:
        shapes = (
            ["--sizes", "256", "--impls", "eager,triton", "--fused-max-n", "256", "--repeats", "2", "--warmup", "1"]
            if run.dry
            else ["--sizes", "8192,32768", "--impls", "eager,triton,compiled", "--repeats", "20", "--warmup", "5"]
        )
        return [
            py(
                run,
                "benchmarks/loss_kernels.py",
                "--dtype",
                dtype,
                *shapes,
                "--out",
                str(run.file(f"loss_kernels_{dtype}.json")),
            )
        ]

    def read(run: Run, step: Step):
        report = json.loads(run.file(f"loss_kernels_{dtype}.json").read_text())
        rows = []
        for r in report["rows"]:
            label = f"N={r['n']:,} {r['impl']}"
            if "skipped" in r:
                rows.append((label, f"skipped: {r['skipped']}"))
                continue
            mem = "memory n/a (interpreter)" if r.get("peak_mib") is None else f"peak {r['peak_mib']:.1f} MiB"
            rows.append(
                (label, f"{r['time_ms']:.3f} ms, {mem}" + ("" if r["impl"] == "eager" else f"; {_vs_eager(r)}"))
            )
        first = min(r["n"] for r in report["rows"])
        fused = next((r for r in report["rows"] if r["n"] == first and r["impl"] == "triton" and "time_ms" in r), None)
        return (f"fused at N={first:,}: {_vs_eager(fused)}" if fused else "fused kernel not timed"), rows, report

    return Step(f"loss-kernels-{dtype}", f"eager vs fused vs compiled loss, {dtype}", 45, commands, read)


def _vs_eager(r: dict) -> str:
    memory = (
        f"{r['memory_vs_eager']:.2f}× its memory" if r.get("memory_vs_eager") is not None else "memory not compared"
    )
    return f"{r['speedup_vs_eager']:.2f}× eager's speed at {memory}"


def throughput_common(run: Run, precision: str, preset: str) -> list[str]:
    """The model and corpus: a preset's random teacher made by its first throughput step in run.work and reused by
    later ones; one synthetic corpus for every step (ProtBert ids, remapped for ESM-2 when batches are built)."""
    teacher = run.work / f"teacher-{preset}"
    corpus = run.work / "corpus"
    steps = (
        ["--steps", "1", "--warmup", "0", "--repeats", "1"]
        if run.dry
        else ["--steps", "5", "--warmup", "2", "--repeats", "3"]
    )
    lengths = run.carry / LENGTHS_NAME
    # --preset also with --teacher: it sets the student's layers (15 for protbert).
    common = [
        *steps,
        "--preset",
        preset,
        "--zero-stage",
        "2",
        "--loss-impl",
        "triton",
        "--precision",
        precision,
        *measured_peak(run, precision),
    ]
    if (teacher / "config.json").is_file():
        common += ["--teacher", str(teacher)]
    else:
        common += ["--work-dir", str(run.work)]
    if (corpus / "manifest.json").is_file():
        return common + ["--corpus", str(corpus)]
    return common + [
        "--synthetic-sequences",
        "300" if run.dry else "20000",
        *(["--lengths", str(lengths)] if lengths.is_file() else []),
    ]


def throughput_step(
    name: str,
    what: str,
    precision: str,
    dry_precision: str,
    sweep: list[str],
    dry_sweep: list[str],
    budget: float,
    baseline: bool = True,
    preset: str = "protbert",
    dry_preset: str = "tiny",
) -> Step:
    def commands(run: Run) -> list[list[str]]:
        p, axes = (dry_precision, dry_sweep) if run.dry else (precision, sweep)
        projection = ["--project-epochs", str(EPOCHS), "--sequences", f"{SEQUENCES:g}", "--gpus", str(PROJECTION_GPUS)]
        return [
            py(
                run,
                "benchmarks/throughput.py",
                *throughput_common(run, p, dry_preset if run.dry else preset),
                *axes,
                *([] if baseline else ["--no-baseline"]),
                *projection,
                "--split-steps",
                "1",
                "--out",
                str(run.file(f"{name}.json")),
            )
        ]

    def read(run: Run, step: Step):
        return read_throughput(run, run.file(f"{name}.json"))

    return Step(name, what, budget, commands, read)


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def read_throughput(run: Run, path: Path):
    report = json.loads(path.read_text())
    rows = []
    for r in report["results"]:
        if not r["fits"]:
            rows.append((r["label"], f"{r['status']}: {r['error']}"))
            continue
        split = " / ".join(
            f"{100 * r['time_split_fraction'].get(k, 0):.0f}"
            for k in ("teacher_forward", "student_forward_backward", "loss", "optimizer")
        )
        rows.append(
            (
                r["label"],
                f"{r['residues_per_s']:,.0f} res/s, {r['sequences_per_s']:,.1f} seq/s, "
                f"{r['tflops_per_device']:.3g} TFLOP/s, MFU {_pct(r['mfu'])}, peak {r['peak_memory_gb']:.2f} GB, "
                f"pad {100 * r['padding_fraction']:.1f}%, teacher/student/loss/optim % {split}",
            )
        )
    for base in (report.get("baselines") or {}).values():  # one naive loop per compared precision, at that precision
        rows.append(
            (
                f"naive baseline ({base['precision']}, batch {base['batch_size']})",
                f"{base['residues_per_s']:,.0f} res/s, {base['sequences_per_s']:,.1f} seq/s, pad "
                f"{100 * base['padding_fraction']:.1f}%",
            )
        )
    for precision, ratio in (report.get("ratios") or {}).items():
        rows.append(
            (
                f"ratio vs naive ({ratio.get('baseline_precision', precision)} loop)",
                f"{ratio['residues_per_s_ratio']:.2f}× residues/s, paired with "
                f"{ratio['setting']} (pairs {', '.join(f'{x:.2f}' for x in ratio['pair_ratios'])})",
            )
        )
    best = report.get("fastest")
    ok = sum(r["fits"] for r in report["results"])
    if best is None:
        return f"no setting ran ({len(report['results'])} tried)", rows, {**report, "failed": "no setting ran"}
    summary = (
        f"{ok}/{len(report['results'])} settings ran; fastest {best['label']}: {best['residues_per_s']:,.0f} res/s, "
        f"MFU {_pct(best['mfu'])}, peak {best['peak_memory_gb']:.2f} GB"
    )
    if report.get("projection"):
        p = report["projection"]
        summary += f"; {p['epochs']:g} epochs × {p['sequences']:.3g} seq on {p['gpus']} such GPUs ≈ {p['hours']:,.1f} h"
    return summary, rows, report


def memory_step(
    name: str, what: str, sources: tuple[str, ...], preset: str, dry_preset: str, dry_gpu: str, budget: float
) -> Step:
    """`minprot bench memory` for each token budget the throughput steps `sources` ran, against their peaks."""

    def measured(run: Run) -> list[dict]:
        return [r for source in sources for r in run.data(source).get("results", []) if r["fits"]]

    def commands(run: Run) -> list[list[str]]:
        budgets = sorted({r["setting"]["max_tokens"] for r in measured(run)})
        if not budgets:
            raise Skip("no throughput setting ran, so there is no measured peak to check the plan against")
        p, gpu = (dry_preset, dry_gpu) if run.dry else (preset, "h100-80gb")
        cli = "import sys; from minprot_ds.cli import main; sys.argv[0] = 'minprot'; main()"
        return [
            py(
                run,
                "-c",
                cli,
                "bench",
                "memory",
                "--preset",
                p,
                "--gpu",
                gpu,
                "--gpus",
                "1",
                "--max-tokens",
                str(t),
                "--json",
                str(run.file(f"{name}_{t}.json")),
            )
            for t in budgets
        ]

    def read(run: Run, step: Step):
        """Each measured setting's allocator peak against the plan's prediction for its stage, precision,
        checkpointing and token budget."""
        rows, pairs = [], []
        for r in measured(run):
            s = r["setting"]
            plan = json.loads(run.file(f"{name}_{s['max_tokens']}.json").read_text())
            match = [
                p
                for p in plan["settings"]
                if p["stage"] == s["zero_stage"]
                and p["precision"] == s["precision"]
                and bool(p["checkpointing"]) == bool(s["activation_checkpointing"])
            ]
            if not match:
                rows.append((r["label"], f"measured {r['peak_memory_gb']:.2f} GB; the plan has no such setting"))
                continue
            predicted = match[0]["predicted_gb"]["total"]
            pairs.append(r["peak_memory_gb"] / predicted)
            rows.append(
                (
                    r["label"],
                    f"measured {r['peak_memory_gb']:.2f} GB ({r['memory_scope']}), predicted "
                    f"{predicted:.2f} GB: measured/predicted {r['peak_memory_gb'] / predicted:.2f}",
                )
            )
        summary = (
            f"measured/predicted peak {min(pairs):.2f}–{max(pairs):.2f} over {len(pairs)} settings"
            if pairs
            else "no setting to compare"
        )
        return summary, rows, {"comparisons": rows, "ratios": pairs}

    return Step(name, what, budget, commands, read)


def profile_commands(run: Run) -> list[list[str]]:
    shapes = (
        [
            "--preset",
            "tiny",
            "--precision",
            "bf16",
            "--steps",
            "1",
            "--warmup",
            "1",
            "--max-tokens",
            "1024",
            "--sequences",
            "200",
        ]
        if run.dry
        else [
            "--preset",
            "protbert",
            "--precision",
            "bf16",
            "--steps",
            "4",
            "--warmup",
            "2",
            "--max-tokens",
            "8192",
            "--sequences",
            "2000",
        ]
    )
    lengths = run.carry / LENGTHS_NAME
    return [
        py(
            run,
            "benchmarks/step_profile.py",
            *shapes,
            *(["--lengths", str(lengths)] if lengths.is_file() else []),
            "--out",
            str(run.file("step_profile.json")),
        )
    ]


def read_profile(run: Run, step: Step):
    report = json.loads(run.file("step_profile.json").read_text())
    engine, naive = report["loops"]
    rows = []
    for loop in (engine, naive):
        shares = sorted(loop["share"].items(), key=lambda kv: -kv[1])
        rows.append(
            (
                loop["label"],
                ", ".join(f"{k} {100 * v:.0f}%" for k, v in shares if v >= 0.01)
                + f"; GEMMs at {loop['gemm_gflops_per_s'] / 1e3:.3g} TFLOP/s",
            )
        )
    e_tok = engine["profiled_s"] / engine["tokens"]
    n_tok = naive["profiled_s"] / naive["tokens"]
    return f"per padded token the naive loop's ops take {n_tok / e_tok:.2f}× the engine's", rows, report


SWEEP = ["--max-tokens", "8192,16384", "--checkpointing", "off,on", "--compile", "none"]
DRY_SWEEP = ["--max-tokens", "1024", "--checkpointing", "on", "--compile", "none"]  # one setting: CI's time


def plan() -> list[Step]:
    return [
        Step("install", "carried wheels into a target folder (offline)", 60, install_commands, read_install),
        Step(
            "environment",
            "software and device",
            40,
            lambda run: [py(run, "benchmarks/gpu/probe.py", "env", "--out", str(run.file("env.json")))],
            read_env,
        ),
        Step("matmul-peak", "matmul rate reached here (MFU's denominator)", 30, matmul_commands, read_matmul),
        Step(
            "loss-tests",
            "pytest tests/distill/losses: kernels vs float64, real shapes, fp16 and bf16",
            100,
            loss_test_commands,
            read_junit,
        ),
        loss_kernel_step("bf16"),
        loss_kernel_step("fp16"),
        throughput_step(
            "throughput-bf16",
            "protbert, ZeRO-2, bf16: 2 budgets × checkpointing, naive paired",
            "bf16",
            "bf16",
            SWEEP,
            DRY_SWEEP,
            120,
        ),
        throughput_step(
            "throughput-fp16",
            "protbert, ZeRO-2, fp16 (V100's precision; fp32 on CPU)",
            "fp16",
            "fp32",
            SWEEP,
            ["--max-tokens", "1024", "--checkpointing", "off", "--compile", "none"],
            100,
        ),
        memory_step(
            "memory-plan",
            "minprot bench memory against the measured peaks",
            ("throughput-bf16", "throughput-fp16"),
            "protbert",
            "tiny",
            "v100-16gb",
            30,
        ),
        throughput_step(
            "throughput-esm2-bf16",
            "esm2-650m (33 -> 17 layers), ZeRO-2, bf16: 8,192 and 16,384 tokens, naive paired",
            "bf16",
            "bf16",
            ["--max-tokens", "8192,16384", "--checkpointing", "off", "--compile", "none"],
            ["--max-tokens", "1024", "--checkpointing", "off", "--compile", "none"],
            130,  # with making the 651M-parameter random teacher (2.6 GB written) and two engines' builds
            preset="esm2-650m",
            dry_preset="esm2-tiny",
        ),
        memory_step(
            "memory-plan-esm2",
            "minprot bench memory --preset esm2-650m against the measured peaks",
            ("throughput-esm2-bf16",),
            "esm2-650m",
            "esm2-tiny",
            "h100-80gb",  # a plan with bf16 (V100's has none), as the step measured
            30,
        ),
        Step(
            "step-profile",
            "benchmarks/step_profile.py: time by op family, engine vs naive",
            60,
            profile_commands,
            read_profile,
        ),
        throughput_step(
            "throughput-compile",
            "bf16, --compile none,teacher on the same batches",
            "bf16",
            "bf16",
            ["--max-tokens", "16384", "--checkpointing", "off", "--compile", "none,teacher"],
            # CPU: compiling takes minutes there (tests/distill/test_compile.py covers it); the flags still run
            ["--max-tokens", "1024", "--checkpointing", "off", "--compile", "none"],
            110,
            baseline=False,
        ),
    ]


# --- goals and report ---------------------------------------------------------------------------------


def goals(run: Run) -> list[tuple[str, str]]:
    """The issue's three goals, each against the figures this run measured (or why it cannot say)."""
    out = []
    for dtype in ("bf16", "fp16"):
        rows = run.data(f"loss-kernels-{dtype}").get("rows", [])
        n = min((r["n"] for r in rows), default=None)
        fused = next((r for r in rows if r["n"] == n and r["impl"] == "triton" and "time_ms" in r), None)
        if fused and fused.get("memory_vs_eager") is not None:
            met = fused["speedup_vs_eager"] >= 1.5 and fused["memory_vs_eager"] <= 0.5
            out.append(
                (
                    f"fused loss ≥ 1.5× eager's speed at ≤ 0.5× its memory ({dtype}, N={n:,})",
                    f"{'met' if met else 'missed'}: {fused['speedup_vs_eager']:.2f}× at "
                    f"{fused['memory_vs_eager']:.2f}×",
                )
            )
        else:
            out.append((f"fused loss ≥ 1.5× eager, ≤ 0.5× memory ({dtype})", "not measured"))
    bf16 = [r for r in run.data("throughput-bf16").get("results", []) if r["fits"] and r["mfu"] is not None]
    if bf16:
        best = max(bf16, key=lambda r: r["mfu"])
        out.append(
            (
                "distillation step ≥ 50% MFU in bf16",
                f"{'met' if best['mfu'] >= 0.5 else 'missed'}: {_pct(best['mfu'])} ({best['label']}, "
                f"against the measured matmul rate)",
            )
        )
    else:
        out.append(("distillation step ≥ 50% MFU in bf16", "not measured"))
    out.append(("3 epochs of UniRef50 on 8×V100, fp16", v100_projection(run)))
    return out


def v100_projection(run: Run) -> str:
    """Days for EPOCHS × SEQUENCES on 8 V100s, from the fp16 fastest setting's FLOPs per sequence, at the
    MFU measured here and at DeepSpeed's BERT record (~50%); against DistilProtBert's 12 days on 5×V100.
    A projection, not a measurement: V100 has no bf16, no FlashAttention-2 and other kernels."""
    best = run.data("throughput-fp16").get("fastest")
    peak = run.data("environment").get("v100_fp16_peak_tflops")
    if not best or not peak or not best.get("mfu"):
        return "not measured"
    flops_per_seq = best["tflops_per_device"] * 1e12 / best["sequences_per_s"]
    parts = []
    for label, mfu in (("at the MFU measured here", best["mfu"]), ("at 50% MFU", 0.5)):
        per_gpu = mfu * peak * 1e12 / flops_per_seq
        days = EPOCHS * SEQUENCES / (PROJECTION_GPUS * per_gpu) / 86400
        parts.append(f"{days:.3g} days {label} ({_pct(mfu)})")
    return (
        f"{'; '.join(parts)}; DistilProtBert: {V100_DAYS_DISTILPROTBERT:g} days on {V100_GPUS_DISTILPROTBERT}×V100 "
        f"(= {V100_DAYS_DISTILPROTBERT * V100_GPUS_DISTILPROTBERT / PROJECTION_GPUS:.1f} days on 8 at equal speed); "
        f"{flops_per_seq / 1e12:.2f} TFLOP per sequence, V100 fp16 peak {peak:g} TFLOP/s"
    )


def table_lines(run: Run, outcomes: list[Outcome], goal_rows: list[tuple[str, str]]) -> list[list[str]]:
    lines = []
    for o in outcomes:
        text = o.summary if o.status == "ok" else (f"{o.error}" + (f" | {o.summary}" if o.summary else ""))
        lines.append([o.name, o.status, f"{o.seconds:.0f}", text or ""])
        for label, value in o.rows:
            lines.append([f"  {label}", "", "", value])
    for label, value in goal_rows:
        lines.append([f"goal: {label}", "", "", value])
    return lines


def print_table(title: str, lines: list[list[str]]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for col in ("step", "status", "s", "result"):
        table.add_column(col, justify="right" if col == "s" else "left", overflow="fold")
    for line in lines:
        table.add_row(*map(escape, line))
    Console(width=200).print(table)


def markdown(title: str, lines: list[list[str]]) -> str:
    out = [f"**{title}**", "", "| step | status | s | result |", "|---|---|---|---|"]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in line) + " |" for line in lines]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--out", type=Path, default=os.environ.get("OUT"), help="folder for gpu_run.{json,md,log} (default $OUT)"
    )
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes, few steps (automatic without CUDA)")
    parser.add_argument(
        "--carry",
        type=Path,
        default=Path(os.environ.get("CARRY", CARRY)),
        help="the carried folder (wheels/, lengths; default benchmarks/gpu/carry or $CARRY)",
    )
    parser.add_argument("--scratch", type=Path, default=None, help="working folder (default: a new temporary one)")
    parser.add_argument(
        "--deadline-s",
        type=float,
        default=None,
        help=f"the whole run's deadline (default {GPU_DEADLINE_S:g} s on a GPU, none in a dry run)",
    )
    parser.add_argument("--only", default=None, help="comma-separated step names to run (default: all)")
    args = parser.parse_args(argv)
    if args.out is None:
        parser.error("give --out or set OUT: the folder for the table, the JSON and the log")
    args.out.mkdir(parents=True, exist_ok=True)
    cuda = _cuda_available()
    dry = args.dry_run or not cuda
    run = Run(args, dry)
    steps = plan()
    if args.only:
        wanted = set(args.only.split(","))
        if unknown := wanted - {s.name for s in steps}:
            parser.error(
                f"--only: unknown step(s) {', '.join(sorted(unknown))}; steps: {', '.join(s.name for s in steps)}"
            )
        steps = [s for s in steps if s.name in wanted]
    mode = "dry run on CPU (tiny shapes, few steps: the figures mean nothing)" if dry else "GPU"
    print(f"benchmarks/gpu/run.py: {mode}; scratch {run.scratch}; output {args.out}", flush=True)
    outcomes = []
    for step in steps:
        o = execute(run, step)
        run.outcomes[step.name] = o
        outcomes.append(o)
        print(
            f"[{run.elapsed():5.0f} s] {o.name}: {o.status} in {o.seconds:.0f} s — "
            f"{o.summary if o.status == 'ok' else o.error}",
            flush=True,
        )
        write_report(run, mode, outcomes, complete=False)  # a run killed from outside keeps what it measured
    lines = write_report(run, mode, outcomes, complete=True)
    print_table(f"GPU run ({mode}), {run.elapsed():.0f} s", lines)
    run.log.close()
    if run.temporary:
        shutil.rmtree(run.scratch, ignore_errors=True)
    print(f"wrote {run.out / 'gpu_run.json'}, {run.out / 'gpu_run.md'}, {run.out / 'gpu_run.log'}")
    return 0


def write_report(run: Run, mode: str, outcomes: list[Outcome], complete: bool) -> list[list[str]]:
    """gpu_run.json and gpu_run.md as they stand; returns the table's lines."""
    goal_rows = goals(run)
    lines = table_lines(run, outcomes, goal_rows)
    report = {
        "mode": "dry-run" if run.dry else "gpu",
        "complete": complete,
        "total_s": run.elapsed(),
        "deadline_s": run.deadline_s,
        "scratch": str(run.scratch),
        "steps": [dataclasses.asdict(o) for o in outcomes],
        "goals": dict(goal_rows),
    }
    (run.out / "gpu_run.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (run.out / "gpu_run.md").write_text(markdown(f"GPU run ({mode}), {run.elapsed():.0f} s", lines))
    return lines


def _cuda_available() -> bool:
    """Asked in a child process: importing torch here would hold a CUDA context (memory) during every step."""
    code = "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"
    return subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


if __name__ == "__main__":
    sys.exit(main())
