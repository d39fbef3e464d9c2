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
    # The seeds ran with a valid split and a test filter: a group of their own, named by what differs.
    plain = "| dna-binding | PDB1075 | PDB186 | --valid (unset), --test-filter none | full"
    assert f"{plain} | teacher | 1 | 12 | 6 | {leak} |" in text
    assert f"{plain} | student | 1 | 12 | 6 | {leak} |" in text
    for name in ("length", "homology"):
        assert f"{plain} | baseline: {name} | 2 | 12 | 6 | {leak} |" in text
    seeds = "| dna-binding | PDB1075 | PDB186 | --valid dna_valid, --test-filter near-identical"
    assert f"{seeds} | full | student | 2 | 12 | 6 | {leak} |" in text  # two seeds: mean ± std
    kept = json.loads((runs.outs["seeds"] / "seed-0" / "metrics.json").read_text())["test_filtered"]
    # The leak-free rows, baselines too, with the leakage of the rows kept: homologs that are not near-identical.
    kept_leak = f"0/0/{leakage['homologs'] - leakage['near_identical']} of {kept['n']}"
    for model in ("student", "baseline: length", "baseline: homology"):
        row = f"{seeds} | leak-free (near-identical) | {model} | 2 | {kept['n']} | {kept['positives']} | {kept_leak} |"
        assert row in text, text
    assert "| membrane | DeepLoc | DeepLoc | – | full | student | 1 |" in text
    assert "| q3 | CASP12 | CASP12 | – | full | teacher | 1 |" in text
    # Table C names the test set (6 + 6 training rows of the SUB).
    assert "| dna-binding | swissprot-human | SUB 85% | – | student | 12 | PDB186 |" in text
    assert "| human | SUB 85% | – | student | 1 | " in text  # Table D
    for chart in ("table_a_mcc", "table_a_accuracy", "table_b_runtime", "table_c_variants", "table_d_organisms"):
        assert (out / f"{chart}.png").read_bytes()[:8] == PNG and f"![{chart}]({chart}.png)" in text
    payload = json.loads((out / "report.json").read_text())
    assert len(payload["runs"]) == 7 and len(payload["tables"]) == 4
    # Every run recorded what its CIs resample (these test sets carry no components), and the note says it.
    assert {r["settings"]["ci_unit"] for r in payload["runs"]} == {"proteins"}
    assert "[95% percentile bootstrap CI over the test set's proteins]" in text


def test_saving_is_one_minus_student_over_teacher(runs) -> None:
    rows = collect_runs(runs.uri, ["minprot-finetune"])
    table_b = build_tables(rows)[1]
    (line,) = [r for r in table_b.rows if r[:3] == ["dna-binding", "PDB1075", "–"]]
    teacher = json.loads((runs.outs["dna_teacher"] / "metrics.json").read_text())["runtime"]
    student = json.loads((runs.outs["dna_student"] / "metrics.json").read_text())["runtime"]
    assert line[3] == pytest.approx(teacher["train_seconds"]) and line[4] == pytest.approx(student["train_seconds"])
    assert line[5] == pytest.approx(100 * (1 - student["train_seconds"] / teacher["train_seconds"]))
    assert line[8] == pytest.approx(100 * (1 - student["inference_seconds"] / teacher["inference_seconds"]))
    # Table A's numbers are the runs' test metrics, with their CIs.
    table_a = build_tables(rows)[0]
    first = table_a.columns.index(METRICS[0])
    (student_row,) = [
        r for r in table_a.rows if r[:3] == ["dna-binding", "PDB1075", "PDB186"] and r[4:6] == ["full", "student"]
    ]
    written = json.loads((runs.outs["dna_student"] / "metrics.json").read_text())["test"]
    assert [s.mean for s in student_row[first:]] == pytest.approx(
        [written[k] if written[k] is not None else float("nan") for k in METRICS], nan_ok=True
    )
    bounds = [v for k in METRICS for v in written["ci95"][k]]
    assert [v for s in student_row[first:] for v in (s.low, s.high)] == pytest.approx(
        [float("nan") if v is None else v for v in bounds], nan_ok=True
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
    # The leak-free rows, every baseline on both sets and the threshold are aggregated too.
    parts = {
        "test_filtered": lambda m: m["test_filtered"],
        "threshold": lambda m: m["threshold"],
        **{f"{b}/test": (lambda m, b=b: m["baselines"][b]) for b in ("length", "homology")},
        **{f"{b}/test_filtered": (lambda m, b=b: m["baselines"][b]["filtered"]) for b in ("length", "homology")},
    }
    for where, of in parts.items():
        found = summary
        for step in where.split("/"):
            found = found["baselines"][step] if step in ("length", "homology") else found[step]
        key = "value" if where == "threshold" else "accuracy"
        values = [of(m)[key] for m in per_seed]
        assert found[key]["mean"] == pytest.approx(np.mean(values)), where
        assert found[key]["std"] == pytest.approx(np.std(values, ddof=1)), where
    table_a = build_tables(collect_runs(runs.uri, ["minprot-seeds"]))[0]
    (row,) = [r for r in table_a.rows if r[4:6] == ["full", "student"]]
    accuracy = row[table_a.columns.index("accuracy")]
    assert (
        row[table_a.columns.index("runs")] == 2
        and accuracy.n == 2
        and accuracy.std == pytest.approx(np.std([m["test"]["accuracy"] for m in per_seed], ddof=1))
    )


def test_report_filters_by_experiment(runs, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"has no experiment 'nope'; check --experiment"):
        build_report([runs.uri], tmp_path, ["nope"])
    # The distillation's experiment exists but holds no fine-tune run.
    with pytest.raises(UserError, match=r"no finished fine-tune runs in experiment\(s\) minprot-distill"):
        build_report([runs.uri], tmp_path, ["minprot-distill"])


def fake_finetune_run(
    uri: str,
    pooling: str,
    accuracy: float,
    seed: int = 0,
    ci_unit: str = "proteins",
    metrics: dict[str, float] | None = None,
) -> str:
    """A finished fine-tune run as `minprot finetune` records it (tags, every option and the CIs' unit as params,
    flat test metrics with CI bounds, and any other `metrics`), without training: the report reads nothing else."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    from minprot_ds.finetune.options import FinetuneConfig
    from minprot_ds.options import mlflow_params

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("fabricated") or client.get_experiment(client.create_experiment("fabricated"))
    run = client.create_run(
        exp.experiment_id,
        tags={
            "minprot.job": "finetune",
            "minprot.task": "dna-binding",
            "minprot.dataset": "PDB1075",
            "minprot.dataset_label": "PDB1075",
            "minprot.test_dataset": "PDB186",
            "minprot.model_role": "student",
            "minprot.model": "students/s1",
        },
    )
    cfg = FinetuneConfig(
        task="dna-binding", model="students/s1", train="d/train", test="d/test", out=f"o{seed}", pooling=pooling
    )
    params = mlflow_params(cfg) | {"seed": seed, "rows.test": 186, "ci_unit": ci_unit}
    test = {"accuracy": accuracy, "n": 186, "positives": 93, "accuracy_ci_low": accuracy - 0.05}
    test["accuracy_ci_high"] = accuracy + 0.05
    logged = {f"test/{k}": v for k, v in test.items()} | (metrics or {})
    client.log_batch(
        run.info.run_id,
        metrics=[Metric(k, v, 0, 0) for k, v in logged.items()],
        params=[Param(k, str(v)) for k, v in params.items()],
    )
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def test_runs_that_differ_only_in_pooling_are_never_merged(runs, tmp_path: Path) -> None:
    import shutil

    from minprot_ds.finetune.report import check_mergeable

    # A copy of the session's store (creating an empty one takes MLflow ~10 s); the fabricated runs get their
    # own experiment.
    shutil.copyfile(runs.root / "store" / "mlflow.db", tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    fake_finetune_run(uri, "cls", 0.70, seed=0)
    fake_finetune_run(uri, "cls", 0.74, seed=1)
    fake_finetune_run(uri, "mean", 0.90, seed=0)
    rows = collect_runs(uri, ["fabricated"])
    table_a = build_tables(rows)[0]
    model, runs, accuracy = (table_a.columns.index(c) for c in ("model", "runs", "accuracy"))
    found = {r[table_a.columns.index("setting")]: r for r in table_a.rows if r[model] == "student"}
    assert set(found) == {"--pooling cls", "--pooling mean"}  # two groups, each named by what differs
    cls, mean = found["--pooling cls"], found["--pooling mean"]
    assert cls[runs] == 2 and cls[accuracy].mean == pytest.approx(0.72)  # the two seeds of one setting merge
    assert mean[runs] == 1 and mean[accuracy].mean == pytest.approx(0.90)
    assert (mean[accuracy].low, mean[accuracy].high) == pytest.approx((0.85, 0.95))
    n, positives = table_a.columns.index("n"), table_a.columns.index("positives")
    assert (mean[n], mean[positives]) == ("186", "93")
    # Asked to merge them anyway, the report refuses and names the setting.
    with pytest.raises(UserError, match=r"differ in --pooling \(cls vs mean\); they cannot be merged into one mean"):
        check_mergeable(rows)
    # The markdown shows the value with its CI.
    build_report([uri], tmp_path / "report", ["fabricated"])
    assert (
        "| --pooling mean | full | student | 1 | 186 | 93 | not measured | 0.900 [0.85, 0.95] |"
        in (tmp_path / "report" / "report.md").read_text()
    )


def test_a_real_run_with_other_pooling_gets_its_own_row(runs, sets, tmp_path: Path) -> None:
    import shutil

    from minprot_ds.finetune.options import FinetuneConfig
    from minprot_ds.finetune.report import check_mergeable
    from minprot_ds.finetune.train import run

    # The dna_student run again with --pooling mean, into a copy of the session's store.
    shutil.copyfile(runs.root / "store" / "mlflow.db", tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run(
        FinetuneConfig(
            task="dna-binding",
            model=str(runs.student),
            train=sets["dna_train"],
            test=sets["dna_test"],
            out=tmp_path / "mean",
            tracking_uri=uri,
            experiment="minprot-pooling",
            pooling="mean",
            epochs=1,
            batch_size=4,
            lr=1e-3,
        )
    )
    rows = [r for r in collect_runs(uri, ["minprot-finetune", "minprot-pooling"]) if r.role == "student"]
    pair = [r for r in rows if r.task == "dna-binding" and r.dataset_label == "PDB1075"]
    assert sorted(r.settings["pooling"] for r in pair) == ["cls", "mean"]
    with pytest.raises(UserError, match=r"differ in --pooling \(cls vs mean\)"):
        check_mergeable(pair)
    table_a = build_tables(rows)[0]
    setting, model, count = (table_a.columns.index(c) for c in ("setting", "model", "runs"))
    found = [r for r in table_a.rows if r[:3] == ["dna-binding", "PDB1075", "PDB186"] and r[model] == "student"]
    assert sorted((r[setting], r[count]) for r in found) == [("--pooling cls", 1), ("--pooling mean", 1)]


def test_runs_whose_cis_resample_other_units_are_never_merged(tmp_path: Path) -> None:
    """CIs over proteins and CIs over whole homology components are other numbers: such runs get their own rows,
    each named by its unit, and the note says what the CIs resample."""
    from minprot_ds.finetune.report import check_mergeable

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    fake_finetune_run(uri, "cls", 0.70, seed=0)
    fake_finetune_run(uri, "cls", 0.74, seed=1)
    fake_finetune_run(uri, "cls", 0.90, seed=0, ci_unit="homology components")
    rows = collect_runs(uri, ["fabricated"])
    table_a = build_tables(rows)[0]
    setting, model, runs = (table_a.columns.index(c) for c in ("setting", "model", "runs"))
    found = {r[setting]: r[runs] for r in table_a.rows if r[model] == "student"}
    assert found == {"CIs over proteins": 2, "CIs over homology components": 1}
    assert "[95% percentile bootstrap CI over the unit each row's `setting` names" in table_a.note
    with pytest.raises(UserError, match=r"differ in what their CIs resample \(homology components vs proteins\)"):
        check_mergeable(rows)
    # One unit in the table: the note names it and no row needs to.
    for unit, words in (
        ("proteins", "the test set's proteins"),
        ("homology components", "the test set's homology components, each drawn whole"),
    ):
        alone = build_tables([r for r in rows if r.settings["ci_unit"] == unit])[0]
        assert f"95% percentile bootstrap CI over {words}" in alone.note, unit
        assert {r[setting] for r in alone.rows} == {"–"}, unit


def test_an_undefined_precision_shows_as_undefined(tmp_path: Path) -> None:
    """A length baseline that predicts no positive at the threshold has no precision: its cell shows –, as other
    undefined metrics do, not 0 [0, 0]; its recall and F1 (0) stay."""
    import numpy as np

    from minprot_ds.finetune.baselines import length_only
    from minprot_ds.finetune.metrics import flat_metrics
    from minprot_ds.finetune.tasks import task_spec
    from minprot_ds.finetune.train import scored_set
    from minprot_ds.finetune.uncertainty import flat_intervals

    # One positive in ten training rows, lengths alike: P(positive) stays far below 0.5 for every test protein.
    train_lengths, train_labels = np.array([100, 110, 120, 130, 140, 150, 160, 170, 180, 190]), np.eye(10)[4]
    test_lengths, test_labels = np.array([105, 125, 145, 165, 185, 135]), np.array([1, 0, 1, 0, 1, 0])
    pred = length_only(train_lengths, train_labels.astype(int), list("abcdef"), test_lengths, test_labels)
    assert not pred.predicted.any()
    values = scored_set(pred, task_spec("dna-binding"), 100)
    logged = flat_metrics(values, "baseline_length") | flat_intervals(values["ci95"], "baseline_length")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    fake_finetune_run(uri, "cls", 0.70, metrics=logged)
    (row,) = collect_runs(uri, ["fabricated"])
    assert np.isnan(row.baselines["length"]["precision"]) and row.baselines["length"]["recall"] == 0.0
    build_report([uri], tmp_path / "report", ["fabricated"])
    text = (tmp_path / "report" / "report.md").read_text()
    (line,) = [x for x in text.splitlines() if "| baseline: length |" in x]
    cells = [c.strip() for c in line.strip("|").split("|")]
    first = 10  # task, train set, test set, setting, scored on, model, runs, n, positives, leakage
    shown = dict(zip(METRICS, cells[first:]))
    assert shown["accuracy"].startswith("0.500 [") and shown["precision"] == "–", shown
    assert shown["recall"] == "0.000 [0.00, 0.00]" and shown["f1"] == "0.000 [0.00, 0.00]", shown


def test_the_leak_free_rows_show_the_leakage_of_the_rows_kept() -> None:
    """PDB186 against PDB1075: 75 exact, 83 near-identical, 92 homologous of 186; --test-filter near-identical keeps
    103 rows, of which 9 are homologs (not near-identical), and homologs keeps none of them."""
    from minprot_ds.finetune.report import RunRow, leakage_cell

    def row(test_filter: str, kept: int) -> RunRow:
        leakage = {"exact": 75, "near_identical": 83, "homologs": 92}
        return RunRow(
            *("r", "dna-binding", "PDB1075", "full", "PDB1075", "PDB186", "", "student", "m", 1075, {}, 1.0, 1.0),
            test_rows=186,
            leakage=leakage,
            filtered={"n": kept},
            test_filter=test_filter,
        )

    assert leakage_cell([row("near-identical", 103)]) == "75/83/92 of 186"
    assert leakage_cell([row("near-identical", 103)], filtered=True) == "0/0/9 of 103"
    assert leakage_cell([row("homologs", 94)], filtered=True) == "0/0/0 of 94"
