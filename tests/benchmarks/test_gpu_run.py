"""benchmarks/gpu/: the one-command GPU run (run.sh → run.py) and the carried wheel folder (build_carry.py).

The dry run is the same script on CPU at tiny shapes: it must run every step and report each as a row,
so the script cannot rot between GPU sessions. The driver's own mechanics (a failing step, a step past its
budget, a run past its deadline) are checked with real subprocesses. No assertion on speed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GPU = REPO / "benchmarks" / "gpu"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"gpu_{name}", GPU / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def runpy():
    return _load("run")


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> tuple[dict, str, Path]:
    """run.sh --dry-run once, without a carried folder (CI has none): (gpu_run.json, stdout, OUT)."""
    root = tmp_path_factory.mktemp("gpu_dry")
    out = root / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable}
    proc = subprocess.run(
        [
            "bash",
            str(GPU / "run.sh"),
            "--dry-run",
            "--carry",
            str(root / "no-carry"),
            "--scratch",
            str(root / "scratch"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "gpu_run.json").read_text()), proc.stdout, out


@pytest.mark.slow
def test_dry_run_reports_every_step(dry_run, runpy):
    report, stdout, out = dry_run
    assert report["mode"] == "dry-run" and report["complete"] is True
    steps = {s["name"]: s for s in report["steps"]}
    assert list(steps) == [s.name for s in runpy.plan()]
    install = steps["install"]
    assert install["status"] == "skipped" and "build_carry.py" in install["error"]
    must_run = [
        "environment",
        "matmul-peak",
        "loss-tests",
        "loss-kernels-bf16",
        "loss-kernels-fp16",
        "throughput-bf16",
        "throughput-fp16",
        "step-profile",
        "throughput-compile",
        "throughput-esm2-bf16",
    ]
    for name in must_run:
        assert steps[name]["status"] == "ok", (name, steps[name]["error"])
        assert steps[name]["commands"] and steps[name]["seconds"] > 0
    for name in ("memory-plan", "memory-plan-esm2"):
        assert steps[name]["status"] == "ok", steps[name]["error"]
        assert steps[name]["data"]["ratios"]

    tests = steps["loss-tests"]["data"]
    assert tests["failed"] is None and tests["passed"] >= 2  # eager at real shapes, fp16 and bf16, runs on CPU
    assert {label.split("[")[1] for label, _ in steps["loss-tests"]["rows"]} == {
        f"{d}-{i}]" for d in ("fp16", "bf16") for i in ("eager", "triton", "compiled")
    }
    kernels = steps["loss-kernels-bf16"]["data"]
    assert kernels["device_type"] == "cpu" and {r["impl"] for r in kernels["rows"]} == {"eager", "triton"}
    bf16 = steps["throughput-bf16"]["data"]
    assert [(r["setting"]["precision"], r["setting"]["activation_checkpointing"]) for r in bf16["results"]] == [
        ("bf16", True)
    ]
    assert all(r["fits"] and r["mfu"] > 0 for r in bf16["results"])  # MFU against the measured matmul rate
    assert bf16["ratios"]["bf16"]["residues_per_s_ratio"] > 0 and bf16["projection"]["hours"] > 0
    # The later throughput steps reuse the first one's random teacher and corpus.
    assert (
        "--teacher" in steps["throughput-fp16"]["commands"][0]
        and "--work-dir" in steps["throughput-bf16"]["commands"][0]
    )
    assert steps["throughput-fp16"]["data"]["fastest"]["engine_flops_per_step"] > 0
    assert (
        "(student 2 layers)" in steps["throughput-fp16"]["data"]["preset"]
    )  # tiny's student, not the default preset's
    assert [r["setting"]["precision"] for r in steps["throughput-fp16"]["data"]["results"]] == ["fp32"]
    # ESM-2: its own random teacher (esm2-tiny's, made by the step), the corpus the ProtBert steps made, bf16
    esm = steps["throughput-esm2-bf16"]
    assert esm["data"]["preset"] == "esm2-tiny" and "--corpus" in esm["commands"][0]
    assert [(r["setting"]["precision"], r["fits"]) for r in esm["data"]["results"]] == [("bf16", True)]
    assert esm["data"]["ratios"]["bf16"]["residues_per_s_ratio"] > 0  # the naive loop ran on ESM-2 too
    assert "--preset esm2-tiny" in steps["memory-plan-esm2"]["commands"][0]
    assert len(steps["memory-plan-esm2"]["data"]["ratios"]) == 1
    profile = steps["step-profile"]["data"]
    assert profile["precision"] == "bf16" and len(profile["loops"]) == 2
    assert set(report["goals"]) >= {"distillation step ≥ 50% MFU in bf16", "3 epochs of UniRef50 on 8×V100, fp16"}
    assert "days" in report["goals"]["3 epochs of UniRef50 on 8×V100, fp16"]

    # One table on stdout and in gpu_run.md; every step's output in gpu_run.log; nothing else in OUT.
    for name in steps:
        assert name in stdout
    assert sorted(p.name for p in out.iterdir()) == ["gpu_run.json", "gpu_run.log", "gpu_run.md"]
    assert "| step | status | s | result |" in (out / "gpu_run.md").read_text()
    assert "===== loss-tests:" in (out / "gpu_run.log").read_text()


def _run(runpy, tmp_path, deadline_s=0.0):
    args = runpy.argparse.Namespace(
        out=tmp_path / "out", scratch=tmp_path / "scratch", carry=tmp_path / "carry", deadline_s=deadline_s
    )
    args.out.mkdir()
    return runpy.Run(args, dry=False)  # GPU budgets (a dry run stretches them)


def test_a_failing_step_is_a_row_with_its_error(runpy, tmp_path):
    run = _run(runpy, tmp_path)
    code = "import sys; print('working'); print('ValueError: the setting is wrong', file=sys.stderr); sys.exit(3)"
    step = runpy.Step("bad", "fails", 60, lambda r: [[sys.executable, "-c", code]])
    outcome = runpy.execute(run, step)
    assert outcome.status == "failed"
    assert outcome.error == "exit status 3: ValueError: the setting is wrong"
    run.log.flush()
    assert "working" in (tmp_path / "out" / "gpu_run.log").read_text()


def test_a_step_past_its_budget_is_stopped_with_its_children(runpy, tmp_path):
    run = _run(runpy, tmp_path)
    pid_file = tmp_path / "child.pid"
    # The step starts a child that would outlive it; the whole process group must go.
    code = (
        f"import subprocess, sys, time; c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
        f"open({str(pid_file)!r}, 'w').write(str(c.pid)); print('started', flush=True); time.sleep(600)"
    )
    step = runpy.Step("slow", "sleeps", 3, lambda r: [[sys.executable, "-c", code]])
    outcome = runpy.execute(run, step)
    assert outcome.status == "timeout" and "budget of 3 s" in outcome.error and "started" in outcome.error
    child = int(pid_file.read_text())
    for _ in range(100):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the step's child {child} outlived the step")


def test_a_step_without_time_left_is_skipped_and_unmet_needs_skip(runpy, tmp_path):
    run = _run(runpy, tmp_path, deadline_s=10.0)  # less than MIN_STEP_S from the start
    outcome = runpy.execute(run, runpy.Step("late", "", 60, lambda r: [[sys.executable, "-c", "pass"]]))
    assert outcome.status == "skipped" and "no time left" in outcome.error

    later = tmp_path / "later"
    later.mkdir()
    run = _run(runpy, later)
    memory = next(s for s in runpy.plan() if s.name == "memory-plan")
    outcome = runpy.execute(run, memory)  # no throughput step ran: nothing to check the plan against
    assert outcome.status == "skipped" and "no throughput setting ran" in outcome.error


def test_carried_closure_is_what_the_image_lacks():
    build = _load("build_carry")
    image = build.image_packages()
    assert {"torch", "transformers", "numpy", "pyarrow", "triton"} <= image
    assert not {"deepspeed", "datasets", "mlflow", "biopython"} & image
    assumed: list[str] = []
    carried = build.closure(build.ROOTS, image, "3.12", assumed)
    assert {"deepspeed", "datasets", "pydantic", "pydantic-core", "hjson"} <= set(carried)
    assert not set(carried) & image  # nothing the image has travels, except ALSO's named reasons
    assert any(a.startswith("deepspeed needs torch") for a in assumed)


def test_carried_folder_installs_offline_for_cpython_312(tmp_path):
    wheels = sorted((GPU / "carry" / "wheels").glob("*.whl"))
    if not wheels:
        pytest.skip("no benchmarks/gpu/carry/wheels here (git-ignored; benchmarks/gpu/build_carry.py makes it)")
    names = [w.name.split("-")[0].lower() for w in wheels]
    assert len(names) == len(set(names)), "two versions of one distribution stop the offline install"
    # pip resolves the GPU machine's tags (CPython 3.12, x86-64 manylinux) without an index or a network.
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--dry-run",
        "--quiet",
        "--no-index",
        "--no-deps",
        "--target",
        str(tmp_path / "site"),
        "--python-version",
        "3.12",
        "--implementation",
        "cp",
        "--abi",
        "cp312",
        "--platform",
        "manylinux_2_17_x86_64",
        "--platform",
        "manylinux2014_x86_64",
        "--only-binary=:all:",
        *map(str, wheels),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    manifest = json.loads((GPU / "carry" / "manifest.json").read_text())
    assert sum(manifest["files"].values()) < 64 * 2**20
