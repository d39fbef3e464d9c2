"""`minprot compare TEACHER STUDENT` end to end on two small fine-tune folders (predictions.tsv written here in
the format `minprot finetune` writes, and the metrics.json field it reads)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from minprot_ds.cli import app
from minprot_ds.cli.common import run_cli
from minprot_ds.finetune.metrics import Predictions, write_predictions
from minprot_ds.finetune.tasks import task_spec

DNA = task_spec("dna-binding")


def fake_run(
    folder: Path, accuracy: float, seed: int, n: int = 300, labels_seed: int = 0, groups: list[str] | None = None
) -> Path:
    """A fine-tune --out folder with n proteins' predictions, right with probability `accuracy` (and the rows'
    homology components when `groups` are given, as on a `data split` test set)."""
    rng, labels = np.random.default_rng(seed), np.random.default_rng(labels_seed).integers(0, 2, n)
    predicted = np.where(rng.random(n) < accuracy, labels, 1 - labels)
    p1 = np.where(predicted == 1, 0.5 + rng.random(n) * 0.5, 0.5 - rng.random(n) * 0.5).clip(0.01, 0.99)
    pred = Predictions([f"P{i:04d}" for i in range(n)], labels, np.stack([1 - p1, p1], 1), (p1 > 0.5).astype(int))
    pred.groups = groups
    folder.mkdir(parents=True)
    write_predictions(pred, DNA, folder / "predictions.tsv")
    (folder / "metrics.json").write_text(json.dumps({"task": "dna-binding"}))
    return folder


def test_compare_prints_the_paired_table_and_writes_json(tmp_path: Path) -> None:
    teacher = fake_run(tmp_path / "teacher", 0.9, seed=1)
    student = fake_run(tmp_path / "student", 0.6, seed=2)
    result = CliRunner().invoke(
        app, ["compare", str(teacher), str(student), "--bootstrap", "300", "--json", str(tmp_path / "c.json")]
    )
    assert result.exit_code == 0, result.output
    out = result.output
    assert "margin: student ≥ 0.98 × teacher" in out and "over proteins (300 proteins), 300 resamples" in out
    (accuracy,) = [line for line in out.splitlines() if line.startswith("| accuracy |")]
    assert "inferior" in accuracy and "McNemar p = " in accuracy
    assert "DeLong p = " in next(line for line in out.splitlines() if line.startswith("| roc_auc |"))
    (saved,) = json.loads((tmp_path / "c.json").read_text())
    assert saved["metrics"]["accuracy"]["verdict"] == "inferior" and saved["mcnemar_accuracy"]["p"] < 1e-6


def test_compare_pairs_seed_by_seed(tmp_path: Path) -> None:
    for seed in (0, 1):
        fake_run(tmp_path / "teacher" / f"seed-{seed}", 0.9, seed=10 + seed)
        fake_run(tmp_path / "student" / f"seed-{seed}", 0.9, seed=20 + seed, n=300)
    result = CliRunner().invoke(app, ["compare", str(tmp_path / "teacher"), str(tmp_path / "student")])
    assert result.exit_code == 0, result.output
    heads = [line for line in result.output.splitlines() if line.startswith("dna-binding seed-")]
    assert [h.split(":")[0] for h in heads] == ["dna-binding seed-0", "dna-binding seed-1"]
    assert f"{tmp_path / 'teacher' / 'seed-1'}, student {tmp_path / 'student' / 'seed-1'}" in heads[1]


def test_compare_refuses_different_rows_in_one_sentence(tmp_path: Path, capsys) -> None:
    teacher = fake_run(tmp_path / "teacher", 0.9, seed=1, n=300)
    student = fake_run(tmp_path / "student", 0.9, seed=2, n=250)
    with pytest.raises(SystemExit) as exit_:
        run_cli(app, ["compare", str(teacher), str(student)])
    assert exit_.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "do not hold the same test rows" in err[0] and "--max-eval-samples" in err[0], err


def test_compare_resamples_the_components_both_files_carry(tmp_path: Path) -> None:
    components = [str(i // 5) for i in range(300)]  # 60 components of 5 proteins
    teacher = fake_run(tmp_path / "teacher", 0.9, seed=1, groups=components)
    student = fake_run(tmp_path / "student", 0.9, seed=2, groups=components)
    result = CliRunner().invoke(app, ["compare", str(teacher), str(student), "--bootstrap", "200"])
    assert result.exit_code == 0, result.output
    assert "percentile bootstrap over homology components (60 components), 200 resamples" in result.output


@pytest.mark.parametrize("other", [None, [str(i // 3) for i in range(300)]], ids=["none", "different"])
def test_compare_refuses_files_whose_components_differ_in_one_sentence(tmp_path: Path, capsys, other) -> None:
    teacher = fake_run(tmp_path / "teacher", 0.9, seed=1, groups=[str(i // 5) for i in range(300)])
    student = fake_run(tmp_path / "student", 0.9, seed=2, groups=other)
    with pytest.raises(SystemExit) as exit_:
        run_cli(app, ["compare", str(teacher), str(student)])
    assert exit_.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "homology components to resample are not the same" in err[0], err
    assert ("none" in err[0]) if other is None else ("row 4 different components" in err[0]), err
