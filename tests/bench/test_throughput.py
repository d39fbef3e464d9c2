"""`minprot bench throughput` / benchmarks/throughput.py: a short real run on cpu-small (fields of the
JSON and CSV, FLOP accounting consistent with the engine's, the baseline ratio reported, the
projection), plus the sweep's validation and the CLI's errors. No assertion on speed."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from minprot_ds.bench import throughput as tp
from minprot_ds.cli import app
from minprot_ds.errors import UserError

REPO = Path(__file__).resolve().parents[2]


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# --- fast: settings, DeepSpeed configs, projection, FLOPs per micro-batch --------------------------


def test_sweep_is_the_product_of_its_axes_with_rows_scaled_to_the_budget():
    settings = tp.sweep_settings(
        max_tokens=[4096, 8192],
        zero_stages=[1, 2, 3],
        checkpointing=[False, True],
        loss_impls=["eager"],
        precisions=["fp32"],
    )
    assert len(settings) == 12 and len(set(settings)) == 12
    assert {s.max_rows for s in settings if s.max_tokens == 4096} == {32}
    assert {s.max_rows for s in settings if s.max_tokens == 8192} == {64}
    fixed = tp.sweep_settings(
        max_tokens=[4096], zero_stages=[2], checkpointing=[False], loss_impls=["eager"], precisions=["fp32"], max_rows=7
    )
    assert fixed[0].max_rows == 7
    compiled = tp.sweep_settings(
        max_tokens=[8192],
        zero_stages=[1, 2],
        checkpointing=[False],
        loss_impls=["eager"],
        precisions=["fp32"],
        compiles=["none", "teacher", "all"],
    )
    assert len(compiled) == 6 and {s.compile for s in compiled} == {"none", "teacher", "all"}
    assert "compile=teacher" in compiled[1].label and "compile" not in compiled[0].label


@pytest.mark.parametrize(
    "axis, value, option",
    [
        ("precisions", ["fp8"], "--precision"),
        ("loss_impls", ["fused"], "--loss-impl"),
        ("zero_stages", [4], "--zero-stage"),
        ("max_tokens", [512], "--max-tokens"),
        ("compiles", ["max"], "--compile"),
        ("zero_stages", [3], "--compile all does not go with --zero-stage 3"),
    ],
)
def test_bad_sweep_values_name_their_option(axis, value, option):
    axes = dict(
        max_tokens=[8192],
        zero_stages=[2],
        checkpointing=[False],
        loss_impls=["eager"],
        precisions=["fp32"],
        compiles=["all"] if option.startswith("--compile all") else ["none"],
    )
    axes[axis] = value
    with pytest.raises(UserError, match=option):
        tp.sweep_settings(**axes)


def test_ds_config_sets_stage_and_precision_over_a_user_base():
    base = json.loads((REPO / "ds_configs" / "zero2_v100_fp16.json").read_text())
    for precision, key in (("fp16", "fp16"), ("bf16", "bf16"), ("fp32", None)):
        setting = tp.Setting(8192, 64, 3, False, "eager", precision)
        ds = tp.ds_config_for(setting, base)
        assert ds["zero_optimization"]["stage"] == 3
        assert ds["train_micro_batch_size_per_gpu"] == 64 and ds["gradient_accumulation_steps"] == 1
        enabled = {k for k in ("fp16", "bf16") if ds.get(k, {}).get("enabled")}
        assert enabled == ({key} if key else set())
        assert "optimizer" not in ds and "scheduler" not in ds
    assert base["zero_optimization"]["stage"] == 2  # the caller's dict is left alone


def test_projection_by_hand():
    # 100 sequences/s measured on 2 devices = 50 per device; 3 epochs of 43M on 8 devices.
    hours = tp.project_hours(100.0, 2, epochs=3, sequences=43e6, gpus=8)
    assert hours == pytest.approx(3 * 43e6 / (50 * 8) / 3600)


def test_cli_help_and_a_bad_option():
    runner = CliRunner()
    result = runner.invoke(app, ["bench", "throughput", "--help"])
    assert result.exit_code == 0
    for option in (
        "--precision",
        "--max-tokens",
        "--zero-stage",
        "--checkpointing",
        "--loss-impl",
        "--project-epochs",
        "--mlflow",
        "--peak-tflops",
    ):
        assert option in result.output
    bad = runner.invoke(app, ["bench", "throughput", "--checkpointing", "maybe"])
    assert bad.exit_code != 0 and "--checkpointing" in str(bad.exception)


class _FakeNaive:
    """Stands in for NaiveLoop: each window runs at the next rate of `rates` (residues per wall/CPU second)."""

    rates = iter(())  # shared by the loops of all precisions, in the order their windows run
    made: list[str] = []

    def __init__(self, *args, precision="fp32", **kwargs):
        self.windows, self.precision = [], precision
        _FakeNaive.made.append(precision)

    def step(self):
        pass

    def window(self, steps):
        rate = next(_FakeNaive.rates)
        self.windows.append(dict(wall=1.0, cpu=1.0, rows=10, residues=rate, tokens=2 * rate + 20))

    def result(self, steps):
        from minprot_ds.bench.naive import NaiveResult

        return NaiveResult(4, steps, len(self.windows), 1.0, 1.0, 1.0, 0.5, 1.0, 1.0, precision=self.precision)


def test_baseline_is_paired_window_by_window_with_the_fastest_setting(monkeypatch):
    """The ratio is the median of per-pair ratios; a precision's only setting is measured once, a swept
    precision's fastest is measured again with the baseline between its windows."""

    calls = []
    speed = {(2, "fp32"): [300.0, 400.0, 500.0], (1, "bf16"): [1000.0, 900.0, 800.0], (2, "bf16"): [10.0] * 3}

    def fake_measure(setting, inputs, between=None):
        calls.append((setting.zero_stage, setting.precision, between is not None))
        rates = speed[(setting.zero_stage, setting.precision)]
        for _ in rates:
            if between:
                between()
        return tp.Result(
            setting,
            residues_per_s=sorted(rates)[1],
            sequences_per_s=1.0,
            repeat_residues_per_s=rates,
            repeat_residues_per_cpu_s=rates,
        )

    monkeypatch.setattr(tp, "measure_setting", fake_measure)
    monkeypatch.setattr(tp, "NaiveLoop", _FakeNaive)
    _FakeNaive.rates, _FakeNaive.made = iter([100.0, 200.0, 100.0, 50.0, 50.0, 50.0]), []
    settings = [
        tp.Setting(8192, 64, 2, False, "eager", "fp32"),
        tp.Setting(8192, 64, 1, False, "eager", "bf16"),
        tp.Setting(8192, 64, 2, False, "eager", "bf16"),
    ]
    report = tp.run_benchmark(settings, tp.RunInputs(teacher="t", student_layers=1, corpus="c"), log=lambda _: None)
    # bf16 swept (2 settings, unpaired), then its fastest again (paired); fp32's only setting once (paired)
    assert calls == [(1, "bf16", False), (2, "bf16", False), (1, "bf16", True), (2, "fp32", True)]
    assert [r["label"] for r in report["results"]] == [s.label for s in settings]
    bf16, fp32 = report["ratios"]["bf16"], report["ratios"]["fp32"]
    assert bf16["pair_ratios"] == [10.0, 4.5, 8.0] and bf16["residues_per_s_ratio"] == 8.0
    assert fp32["pair_ratios"] == [6.0, 8.0, 10.0] and fp32["residues_per_s_ratio"] == 8.0
    assert report["fastest"]["label"] == settings[1].label
    # each precision's naive loop runs at that precision (a fair baseline), and the report says so
    assert _FakeNaive.made == ["bf16", "fp32"] and bf16["baseline_precision"] == "bf16"
    assert {p: b["precision"] for p, b in report["baselines"].items()} == {"bf16": "bf16", "fp32": "fp32"}


# --- slow: a real short run of the script ----------------------------------------------------------


@pytest.mark.slow
def test_short_cpu_small_run_writes_consistent_json_csv_png(tmp_path):
    out = tmp_path / "results" / "throughput.json"
    cmd = [
        sys.executable,
        str(REPO / "benchmarks" / "throughput.py"),
        "--preset",
        "cpu-small",
        "--max-tokens",
        "1024",
        "--zero-stage",
        "1,2",
        "--steps",
        "1",
        "--warmup",
        "1",
        "--repeats",
        "2",
        "--split-steps",
        "1",
        "--synthetic-sequences",
        "300",
        "--naive-steps",
        "1",
        "--naive-batch-size",
        "4",
        "--peak-tflops",
        "2.0",
        "--project-epochs",
        "3",
        "--sequences",
        "43e6",
        "--gpus",
        "8",
        "--work-dir",
        str(tmp_path / "work"),
        "--out",
        str(out),
    ]
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    }
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "vs naive baseline (fp32): fp32" in proc.stdout and "projected: 3 epochs" in proc.stdout

    report = json.loads(out.read_text())
    assert report["benchmark"] == "throughput" and {"cpu_count", "torch", "load_average"} <= set(report["hardware"])
    assert report["precisions"] == ["fp32"] and report["baseline_precision"] == "fp32"
    assert isinstance(report["hardware"]["cpu_bf16_native"], bool)
    results = report["results"]
    assert [r["setting"]["zero_stage"] for r in results] == [1, 2]
    for r in results:
        assert r["status"] == "ok", r["error"]
        for key in (
            "sequences_per_s",
            "residues_per_s",
            "tokens_per_s",
            "tflops_per_device",
            "peak_memory_gb",
            "useful_flops_per_step",
            "executed_flops_per_step",
            "step_time_s",
        ):
            assert _number(r[key]) and r[key] > 0, (key, r[key])
        assert 0 <= r["padding_fraction"] < 1
        # FLOP accounting: the engine's StepStats.flops equal the benchmark's own count of the same batches,
        # padding only adds, and TFLOP/s and MFU follow from the step time and --peak-tflops.
        assert r["engine_flops_per_step"] == pytest.approx(r["useful_flops_per_step"], rel=1e-9)
        assert r["executed_flops_per_step"] >= r["useful_flops_per_step"]
        assert r["tflops_per_device"] == pytest.approx(r["useful_flops_per_step"] / r["step_time_s"] / 1e12, rel=1e-6)
        assert r["mfu"] == pytest.approx(r["tflops_per_device"] / 2.0, rel=1e-9)
        assert r["tokens_per_s"] >= r["residues_per_s"] + 2 * r["sequences_per_s"] - 1e-6
        assert set(r["time_split_fraction"]) == set(tp.SPLIT_PHASES)
        assert sum(r["time_split_fraction"].values()) == pytest.approx(1.0)
    fastest = report["fastest"]
    assert fastest["residues_per_s"] == max(r["residues_per_s"] for r in results)

    baseline = report["baseline"]
    assert baseline["precision"] == "fp32" and baseline["batch_size"] == 4 and _number(baseline["residues_per_s"])
    ratio = report["ratios"]["fp32"]
    assert ratio["setting"] == fastest["label"]  # re-measured with a naive window after each of its 2 windows
    assert len(ratio["pair_ratios"]) == 2 and baseline["repeats"] == 2
    assert ratio["residues_per_s_ratio"] == pytest.approx(sum(ratio["pair_ratios"]) / 2)
    projection = report["projection"]
    assert projection["hours"] == pytest.approx(3 * 43e6 / (fastest["sequences_per_s"] * 8) / 3600)

    rows = list(csv.DictReader(out.with_suffix(".csv").open()))
    assert [row["label"] for row in rows] == [r["label"] for r in results] + ["naive baseline"]
    for column in (
        "zero_stage",
        "residues_per_s",
        "tflops_per_device",
        "mfu",
        "peak_memory_gb",
        "padding_fraction",
        "split_teacher_forward_frac",
        "split_optimizer_frac",
    ):
        assert column in rows[0]
    assert float(rows[0]["residues_per_s"]) == pytest.approx(results[0]["residues_per_s"])
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_compiled_setting_warms_up_until_compiled_and_times_the_same_batches(tmp_path):
    """--compile teacher: compile time stays out of the windows (no graph built while timing), and the
    windows cover the same batches as the eager setting's (equal residues per window)."""
    out = tmp_path / "compiled.json"
    cmd = [
        sys.executable,
        str(REPO / "benchmarks" / "throughput.py"),
        "--preset",
        "tiny",
        "--compile",
        "none,teacher",
        "--max-tokens",
        "1024",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--repeats",
        "1",
        "--split-steps",
        "0",
        "--synthetic-sequences",
        "300",
        "--no-baseline",
        "--work-dir",
        str(tmp_path / "work"),
        "--out",
        str(out),
    ]
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    }
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    eager, compiled = json.loads(out.read_text())["results"]
    assert (eager["setting"]["compile"], compiled["setting"]["compile"]) == ("none", "teacher")
    assert compiled["status"] == "ok" and compiled["graphs_compiled_in_windows"] == 0
    per_window = [r["residues_per_s"] * r["step_time_s"] * r["steps"] for r in (eager, compiled)]
    assert per_window[0] == pytest.approx(per_window[1])


def test_naive_baseline_reads_an_esm2_teacher_in_esm_ids(tiny_esm_teacher_dir, tmp_path):
    """The naive loop (the baseline of `bench throughput`) on an ESM-2 teacher: the same masked batch as for
    ProtBert, in ESM-2's ids (<cls>/<eos>/<pad>/<mask>), and its steps run and train the EsmForMaskedLM student."""
    import numpy as np
    import torch

    from minprot_ds.bench.naive import NaiveBatches, NaiveLoop
    from minprot_ds.vocab import ESM2
    from tests.data.conftest import write_corpus

    corpus = write_corpus(tmp_path / "corpus", {"train": [12, 30, 7, 25, 40, 9, 16, 33]}).path
    bert, esm = (
        next(iter(NaiveBatches(corpus, 4, seed=1))),
        next(iter(NaiveBatches(corpus, 4, seed=1, family_vocab=ESM2))),
    )
    remap = torch.from_numpy(ESM2.from_protbert.astype(np.int64))
    assert torch.equal(esm["input_ids"], remap[bert["input_ids"]])
    labelled = bert["labels"] != -100
    assert torch.equal(esm["labels"] != -100, labelled) and torch.equal(
        esm["labels"][labelled], remap[bert["labels"][labelled]]
    )
    assert (esm["input_ids"][:, 0] == ESM2.bos_id).all() and (esm["input_ids"] == ESM2.pad_id).any()

    loop = NaiveLoop(tiny_esm_teacher_dir, corpus, student_layers=2, batch_size=4)
    before = {k: v.clone() for k, v in loop.student.state_dict().items()}
    window = loop.window(2)
    assert type(loop.student).__name__ == "EsmForMaskedLM" and window["rows"] == 8
    assert any(not torch.equal(v, before[k]) for k, v in loop.student.state_dict().items())
