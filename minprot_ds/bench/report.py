"""What the throughput benchmark writes: the table and summary lines, JSON (atomically), CSV, a PNG plot
and an MLflow run. Everything here reads the report dict that `throughput.benchmark` returns."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from minprot_ds.bench.throughput import SPLIT_PHASES
from minprot_ds.fileio import write_json
from minprot_ds.tracking import Tracker

TABLE_COLUMNS = (
    "setting",
    "status",
    "seq/s",
    "res/s",
    "tok/s",
    "pad %",
    "TFLOP/s/dev",
    "MFU %",
    "peak GB",
    "teacher %",
    "student f+b %",
    "loss %",
    "optim %",
)


def table_rows(report: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for r in report["results"]:
        if not r["fits"]:
            rows.append([r["label"], r["status"]] + [None] * (len(TABLE_COLUMNS) - 2))
            continue
        frac = r["time_split_fraction"]
        rows.append(
            [
                r["label"],
                "ok",
                f"{r['sequences_per_s']:.1f}",
                f"{r['residues_per_s']:,.0f}",
                f"{r['tokens_per_s']:,.0f}",
                f"{100 * r['padding_fraction']:.1f}",
                f"{r['tflops_per_device']:.3g}",
                None if r["mfu"] is None else f"{100 * r['mfu']:.1f}",
                f"{r['peak_memory_gb']:.2f}",
                *(f"{100 * frac.get(p, math.nan):.0f}" for p in SPLIT_PHASES),
            ]
        )
    for b in baselines(report):
        rows.append(
            [
                f"naive baseline ({b['precision']}, batch {b['batch_size']})",
                "ok",
                f"{b['sequences_per_s']:.1f}",
                f"{b['residues_per_s']:,.0f}",
                f"{b['tokens_per_s']:,.0f}",
                f"{100 * b['padding_fraction']:.1f}",
                None,
                None,
                None,
                None,
                None,
                None,
                None,
            ]
        )
    return rows


def baselines(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The naive baselines of a report, one per precision (each at the precision it was compared with)."""
    if "baselines" in report:
        return [report["baselines"][p] for p in sorted(report["baselines"])]
    return [report["baseline"]] if report.get("baseline") else []


def summary_lines(report: dict[str, Any]) -> list[str]:
    lines = []
    best = report.get("fastest")
    if best:
        lines.append(
            f"fastest setting that fits: {best['label']} — {best['residues_per_s']:,.0f} residues/s, "
            f"{best['sequences_per_s']:.1f} sequences/s"
        )
    for precision, r in report.get("ratios", {}).items():
        lines.append(
            f"vs naive baseline ({r.get('baseline_precision', 'fp32')}): {precision} "
            f"{r['residues_per_s_ratio']:.2f}x residues/s "
            f"({r['residues_per_cpu_s_ratio']:.2f}x per CPU-second) with {r['setting']}; median of "
            f"{len(r['pair_ratios'])} paired windows: {', '.join(f'{x:.2f}' for x in r['pair_ratios'])}"
        )
    p = report.get("projection")
    if p:
        lines.append(
            f"projected: {p['epochs']:g} epochs of {p['sequences']:.3g} sequences on {p['gpus']} devices "
            f"≈ {p['hours']:.1f} h ({p['hours'] / 24:.2f} days) with {p['setting']}"
        )
    hw = report["hardware"]
    if hw["device"] == "cpu" and "bf16" in report["precisions"] and not hw["cpu_bf16_native"]:
        lines.append("note: this CPU has no AVX512-BF16/AMX: bf16 ran emulated")
    return lines


def write_csv(report: dict[str, Any], path: Path) -> Path:
    rows = []
    for r in report["results"]:
        flat = {"label": r["label"], **r["setting"]}
        for k, v in r.items():
            if k in (
                "setting",
                "label",
                "time_split_s",
                "time_split_fraction",
                "repeat_residues_per_s",
                "repeat_residues_per_cpu_s",
            ):
                continue
            flat[k] = v
        for phase in SPLIT_PHASES:
            flat[f"split_{phase}_frac"] = r["time_split_fraction"].get(phase, "")
        rows.append(flat)
    for b in baselines(report):
        rows.append(
            {
                "label": "naive baseline",
                "precision": b["precision"],
                "status": "ok",
                "sequences_per_s": b["sequences_per_s"],
                "residues_per_s": b["residues_per_s"],
                "tokens_per_s": b["tokens_per_s"],
                "padding_fraction": b["padding_fraction"],
                "step_time_s": b["step_time_s"],
                "residues_per_cpu_s": b["residues_per_cpu_s"],
            }
        )
    fields = list(dict.fromkeys(k for row in rows for k in row))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_plot(report: dict[str, Any], path: Path) -> Path:
    """Residues/s per setting (bars, baseline last) with each bar's time split stacked by fraction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fitting = [r for r in report["results"] if r["fits"]]
    labels = [r["label"] for r in fitting]
    rates = [r["residues_per_s"] for r in fitting]
    naive = baselines(report)
    for b in naive:
        labels.append(f"naive baseline ({b['precision']})")
        rates.append(b["residues_per_s"])
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(labels) + 3), 4.5))
    bottom = np.zeros(len(labels))
    for phase in SPLIT_PHASES:
        part = [r["time_split_fraction"].get(phase, 0.0) * r["residues_per_s"] for r in fitting] + [0.0] * len(naive)
        ax.bar(range(len(labels)), part, bottom=bottom, label=phase.replace("_", " "))
        bottom += np.asarray(part)
    if naive:
        ax.bar(
            range(len(fitting), len(labels)), [b["residues_per_s"] for b in naive], color="grey", label="naive baseline"
        )
    ax.set_xticks(range(len(labels)), labels, rotation=35, ha="right", fontsize=7)
    ax.set_ylabel("residues/s (bars split by time share)")
    ax.set_title(f"distillation throughput on {report['hardware']['device']}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def log_to_mlflow(
    report: dict[str, Any],
    files: Sequence[Path],
    *,
    tracking_uri: str | None,
    run_dir: Path,
    experiment: str = "minprot-bench",
) -> str | None:
    """One MLflow run: inputs as params, each setting's figures as metrics at step = its index, files as
    artifacts. Returns the run id."""

    with Tracker.start(
        tracking_uri=tracking_uri,
        run_dir=run_dir,
        experiment=experiment,
        run_name="throughput",
        resume_run_id=None,
        system_metrics=False,
    ) as tracker:
        tracker.log_params(
            {
                "inputs": report["inputs"],
                "hardware": report["hardware"],
                "precisions": ",".join(report["precisions"]),
                "baseline_precisions": ",".join(b["precision"] for b in baselines(report)),
            }
        )
        for i, r in enumerate(report["results"]):
            if r["fits"]:
                tracker.log_metrics(
                    {
                        f"bench/{k}": r[k]
                        for k in (
                            "sequences_per_s",
                            "residues_per_s",
                            "tokens_per_s",
                            "tflops_per_device",
                            "padding_fraction",
                            "peak_memory_gb",
                        )
                    },
                    step=i,
                )
        for b in baselines(report):
            tracker.log_metrics({f"bench/baseline_{b['precision']}_residues_per_s": b["residues_per_s"]}, step=0)
        for precision, ratio in report.get("ratios", {}).items():
            tracker.log_metrics({f"bench/ratio_{precision}": ratio["residues_per_s_ratio"]}, step=0)
        for f in files:
            tracker.log_artifact(f, "bench")
        return tracker.run_id


def write_benchmark_json(path: str | Path, benchmark: str, payload: dict[str, Any]) -> Path:
    """A benchmark's JSON, atomically: its name and a UTC timestamp first, then `payload`."""
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return write_json(path, {"benchmark": benchmark, "created": created, **payload})


def write_outputs(report: dict[str, Any], json_path: Path) -> list[Path]:
    """JSON (atomically), CSV and PNG beside it."""
    json_path = write_benchmark_json(json_path, "throughput", report)
    return [
        json_path,
        write_csv(report, json_path.with_suffix(".csv")),
        write_plot(report, json_path.with_suffix(".png")),
    ]
