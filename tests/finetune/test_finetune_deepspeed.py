"""The DeepSpeed path: launch/finetune.py in one CPU process with ZeRO-2 (ds_configs/cpu_zero2.json)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_launch_script_under_deepspeed_zero2_on_cpu(sets: dict[str, Path], teacher_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, str(REPO / "launch/finetune.py"), "--task", "membrane", "--model", str(teacher_dir),
         "--train", str(sets["mem_train"]), "--test", str(sets["mem_test"]), "--out", str(out), "--epochs", "2",
         "--batch-size", "4", "--lr", "1e-3", "--deepspeed", str(REPO / "ds_configs/cpu_zero2.json")],
        capture_output=True, text=True, timeout=900, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 1 and metrics["rows"] == {"train": 16, "valid": 0, "test": 10}
    assert len(metrics["history"]) == 2 and metrics["history"][1]["step"] == 8  # 16 rows / 4 per step, 2 epochs
    assert (out / "model" / "model.safetensors").is_file() and (out / "mlflow.db").is_file()
    assert not (tmp_path / "mlruns").exists()  # artifacts stay under --out
