"""`minprot report` on the fine-tune runs of this session: Tables A–D as markdown and PNG charts."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from minprot_ds.cli import app
from minprot_ds.errors import UserError
from minprot_ds.finetune.report import build_report, build_tables, collect_runs

pytestmark = pytest.mark.slow  # uses the shared `runs` fixture

PNG = b"\x89PNG\r\n\x1a\n"


def test_report_from_two_stores(runs, tmp_path: Path) -> None:
    out = tmp_path / "report"
    # The shared store (4 runs) and a job's own default store (--out folder with mlflow.db).
    result = CliRunner().invoke(app, ["report", "--tracking-uri", runs.uri, "--tracking-uri",
                                      str(runs.outs["mem_student"]), "--out", str(out)])
    assert result.exit_code == 0, (result.output, result.exception)
    text = (out / "report.md").read_text()
    for title in ("Table A", "Table B", "Table C", "Table D"):
        assert f"### {title}" in text
    assert "5 finished fine-tune runs" in text
    assert "| dna-binding | PDB1075 | PDB186 | teacher | 1 |" in text
    assert "| dna-binding | PDB1075 | PDB186 | student | 1 |" in text
    assert "| membrane | DeepLoc | DeepLoc | student | 1 |" in text and "| q3 | CASP12 | CASP12 | teacher | 1 |" in text
    assert "| dna-binding | swissprot-human | SUB 85% | student | 12 | 1 |" in text  # Table C: 6 + 6 rows
    assert "| human | SUB 85% | student | 1 |" in text  # Table D
    for chart in ("table_a_mcc", "table_a_accuracy", "table_b_runtime", "table_c_variants", "table_d_organisms"):
        assert (out / f"{chart}.png").read_bytes()[:8] == PNG and f"![{chart}]({chart}.png)" in text
    payload = json.loads((out / "report.json").read_text())
    assert len(payload["runs"]) == 5 and len(payload["tables"]) == 4


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
    assert student_row[5:] == pytest.approx([written[k] if written[k] is not None else float("nan")
                                             for k in ("accuracy", "precision", "recall", "f1", "roc_auc", "mcc")],
                                            nan_ok=True)


def test_report_filters_by_experiment(runs, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"has no experiment 'nope'; check --experiment"):
        build_report([runs.uri], tmp_path, ["nope"])
    # The distillation's experiment exists but holds no fine-tune run.
    with pytest.raises(UserError, match=r"no finished fine-tune runs in experiment\(s\) minprot-distill"):
        build_report([runs.uri], tmp_path, ["minprot-distill"])
