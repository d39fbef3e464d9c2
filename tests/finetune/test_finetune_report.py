"""`minprot report` on the fine-tune runs of this session: Tables A–D as markdown and PNG charts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from minprot_ds.cli import app
from minprot_ds.errors import UserError
from minprot_ds.finetune.report import METRICS, build_report, build_tables, collect_runs

pytestmark = pytest.mark.slow  # uses the shared `runs` fixture

PNG = b"\x89PNG\r\n\x1a\n"


def test_report_from_two_stores(runs, tmp_path: Path) -> None:
    out = tmp_path / "report"
    # The shared store (4 runs) and a job's own default store (--out folder with mlflow.db).
    result = CliRunner().invoke(
        app, ["report", "--tracking-uri", runs.uri, "--tracking-uri", str(runs.outs["mem_student"]), "--out", str(out)]
    )
    assert result.exit_code == 0, (result.output, result.exception)
    text = (out / "report.md").read_text()
    for title in ("Table A", "Table B", "Table C", "Table D"):
        assert f"### {title}" in text
    assert "7 finished fine-tune runs" in text  # 5 + the two seeds
    leakage = json.loads((runs.outs["dna_teacher"] / "metrics.json").read_text())["leakage"]["test"]
    leak = f"{leakage['exact']}/{leakage['near_identical']}/{leakage['homologs']} of 12"
    assert f"| dna-binding | PDB1075 | PDB186 | teacher | 1 | {leak} |" in text
    assert f"| dna-binding | PDB1075 | PDB186 | student | 3 | {leak} |" in text  # one run + two seeds: mean ± std
    for name in ("length", "homology"):
        assert f"| dna-binding | PDB1075 | PDB186 | baseline: {name} | 4 | {leak} |" in text
    assert "| membrane | DeepLoc | DeepLoc | student | 1 |" in text and "| q3 | CASP12 | CASP12 | teacher | 1 |" in text
    # Table C names the test set (6 + 6 training rows of the SUB).
    assert "| dna-binding | swissprot-human | SUB 85% | student | 12 | PDB186 |" in text
    assert "| human | SUB 85% | student | 1 | " in text  # Table D
    for chart in ("table_a_mcc", "table_a_accuracy", "table_b_runtime", "table_c_variants", "table_d_organisms"):
        assert (out / f"{chart}.png").read_bytes()[:8] == PNG and f"![{chart}]({chart}.png)" in text
    payload = json.loads((out / "report.json").read_text())
    assert len(payload["runs"]) == 7 and len(payload["tables"]) == 4


def test_saving_is_one_minus_student_over_teacher(runs) -> None:
    rows = collect_runs(runs.uri, ["minprot-finetune"])
    table_b = build_tables(rows)[1]
    (line,) = [r for r in table_b.rows if r[:2] == ["dna-binding", "PDB1075"]]
    teacher = json.loads((runs.outs["dna_teacher"] / "metrics.json").read_text())["runtime"]
    student = json.loads((runs.outs["dna_student"] / "metrics.json").read_text())["runtime"]
    assert line[2] == pytest.approx(teacher["train_seconds"]) and line[3] == pytest.approx(student["train_seconds"])
    assert line[4] == pytest.approx(100 * (1 - student["train_seconds"] / teacher["train_seconds"]))
    assert line[7] == pytest.approx(100 * (1 - student["inference_seconds"] / teacher["inference_seconds"]))
    # Table A's numbers are the runs' test metrics.
    table_a = build_tables(rows)[0]
    (student_row,) = [r for r in table_a.rows if r[:4] == ["dna-binding", "PDB1075", "PDB186", "student"]]
    written = json.loads((runs.outs["dna_student"] / "metrics.json").read_text())["test"]
    assert [s.mean for s in student_row[6:]] == pytest.approx(
        [written[k] if written[k] is not None else float("nan") for k in METRICS], nan_ok=True
    )


def test_seeds_give_mean_and_std(runs) -> None:
    import numpy as np

    out = runs.outs["seeds"]
    per_seed = [json.loads((out / f"seed-{s}" / "metrics.json").read_text()) for s in (0, 1)]
    assert [m["seed"] for m in per_seed] == [0, 1]
    summary = json.loads((out / "seeds.json").read_text())
    for key in ("accuracy", "mcc", "roc_auc", "pr_auc"):
        values = [m["test"][key] for m in per_seed]
        assert summary["test"][key]["mean"] == pytest.approx(np.mean(values))
        assert summary["test"][key]["std"] == pytest.approx(np.std(values, ddof=1))
    (row,) = [r for r in build_tables(collect_runs(runs.uri, ["minprot-seeds"]))[0].rows if r[3] == "student"]
    accuracy = row[6 + METRICS.index("accuracy")]
    assert (
        row[4] == 2
        and accuracy.n == 2
        and accuracy.std == pytest.approx(np.std([m["test"]["accuracy"] for m in per_seed], ddof=1))
    )


def test_report_filters_by_experiment(runs, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"has no experiment 'nope'; check --experiment"):
        build_report([runs.uri], tmp_path, ["nope"])
    # The distillation's experiment exists but holds no fine-tune run.
    with pytest.raises(UserError, match=r"no finished fine-tune runs in experiment\(s\) minprot-distill"):
        build_report([runs.uri], tmp_path, ["minprot-distill"])
