"""The DeepSpeed path: launch/finetune.py under the real deepspeed launcher, 2 CPU ranks, ZeRO-2
(ds_configs/cpu_zero2.json); --batch-size is the global batch, split over the ranks; --seeds runs one
fine-tune per seed in the same ranks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from minprot_ds.distill.demo import launcher_command

REPO = Path(__file__).resolve().parents[2]


def launch_two_ranks(args: list[str], cwd: Path) -> tuple[int, str]:
    """launch/finetune.py under the deepspeed launcher on 2 CPU ranks: (exit status, output)."""
    with subprocess.Popen(
        launcher_command(2, REPO / "launch/finetune.py", args),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=cwd,
        start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    ) as popen:
        try:
            output, _ = popen.communicate(timeout=900)
        except subprocess.TimeoutExpired:
            os.killpg(popen.pid, signal.SIGKILL)
            popen.communicate()
            raise
    return popen.returncode, output


@pytest.mark.slow
def test_launch_script_under_deepspeed_zero2_two_ranks(
    sets: dict[str, Path], teacher_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = [
        "--task",
        "membrane",
        "--model",
        str(teacher_dir),
        "--train",
        str(sets["mem_train"]),
        "--test",
        str(sets["mem_test"]),
        "--out",
        str(out),
        "--epochs",
        "2",
        "--batch-size",
        "4",
        "--lr",
        "1e-3",
        "--seeds",
        "0,1",
        "--deepspeed",
        str(REPO / "ds_configs/cpu_zero2.json"),
    ]
    status, output = launch_two_ranks(args, tmp_path)
    assert status == 0, output[-6000:]
    runs = [json.loads((out / f"seed-{seed}" / "metrics.json").read_text()) for seed in (0, 1)]
    for seed, metrics in enumerate(runs):  # one DeepSpeed engine after the other in the same ranks
        assert metrics["seed"] == seed
        assert metrics["world_size"] == 2 and metrics["rows"] == {"train": 16, "valid": 0, "test": 10}
        # 16 rows / a global batch of 4 = 4 steps per epoch, as on one rank (each rank takes 2 rows per step).
        assert metrics["global_batch"] == 4 and len(metrics["history"]) == 2 and metrics["history"][1]["step"] == 8
        assert metrics["leakage"]["test"]["query_sequences"] == 10 and metrics["coverage"]["residue_coverage"] == 1.0
        assert (out / f"seed-{seed}" / "model" / "model.safetensors").is_file()
    assert runs[0]["history"] != runs[1]["history"]  # the seed reached the head's initial weights and the order
    summary = json.loads((out / "seeds.json").read_text())
    assert summary["seeds"] == [0, 1] and len(set(summary["mlflow_run_ids"])) == 2
    assert summary["test"]["accuracy"]["mean"] == pytest.approx(
        (runs[0]["test"]["accuracy"] + runs[1]["test"]["accuracy"]) / 2
    )
    assert list(out.rglob("mlflow.db")) and not (tmp_path / "mlruns").exists()  # artifacts stay under --out


@pytest.mark.slow
def test_a_global_batch_that_does_not_split_over_the_ranks_is_refused(
    sets: dict[str, Path], teacher_dir: Path, tmp_path: Path
) -> None:
    args = [
        "--task",
        "membrane",
        "--model",
        str(teacher_dir),
        "--train",
        str(sets["mem_train"]),
        "--test",
        str(sets["mem_test"]),
        "--out",
        str(tmp_path / "out"),
        "--batch-size",
        "5",
        "--deepspeed",
        str(REPO / "ds_configs/cpu_zero2.json"),
    ]
    status, output = launch_two_ranks(args, tmp_path)
    assert status != 0
    assert (
        "error: --batch-size 5 is the global batch and must split evenly over the 2 ranks; pass a multiple of 2"
        in output
    ), output[-4000:]
    assert "Traceback" not in output and not (tmp_path / "out" / "metrics.json").exists()
