"""benchmarks/memory_phases.py at ProtBert's width with 2 teacher layers, and in ESM-2's format (esm2-150m's
width): both allocator settings run in their own process, every phase of every step is reported, and its table
and JSON are written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("preset", ["protbert", "esm2-150m"])
def test_memory_phases_reports_each_phase_for_both_allocators(preset, tmp_path):
    out = tmp_path / "phases.json"
    cmd = [
        sys.executable,
        str(REPO / "benchmarks" / "memory_phases.py"),
        "--preset",
        preset,
        "--work",
        str(tmp_path / "work"),
        "--out",
        str(out),
        "--teacher-layers",
        "2",
        "--student-layers",
        "1",
        "--stage",
        "2",
        "--steps",
        "2",
        "--max-tokens",
        "1040",
        "--max-rows",
        "2",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    teacher = json.loads((tmp_path / "work" / f"teacher-{preset}-2l" / "config.json").read_text())
    assert teacher["model_type"] == ("esm" if preset.startswith("esm2") else "bert")
    assert [r["allocator"] for r in result["runs"]] == ["glibc-default", "unmap-freed"]
    # the setting reached memory.measure: only the second process unmapped freed blocks
    assert [r["scope"] for r in result["runs"]] == ["peak RSS - baseline", "peak RSS - baseline, freed blocks unmapped"]
    for run in result["runs"]:
        assert [(p["step"], p["phase"]) for p in run["phases"]] == [(0, "build")] + [
            (s, ph) for s in (1, 2) for ph in ("teacher_forward", "student_forward", "loss", "backward", "optimizer")
        ]
        assert all(p["peak"] >= p["entry"] - 0.01 for p in run["phases"])  # a phase's peak is at least where it began
        assert run["peak_gb"] == max(p["peak"] for p in run["phases"]) > run["plan_gb"]["teacher_weights"]
        assert run["padded_tokens"] > 520
    assert "step peak (memory plan:" in proc.stdout and f"{preset} width" in proc.stdout
