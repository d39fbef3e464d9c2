"""`minprot report`: fine-tune runs read back from MLflow, as the MinProtBert report's tables and bar charts.

Table A: test metrics per task, dataset and model role, with the test set's leakage (how many test proteins
occur in the training rows: exact / near-identical / homologs of N) next to them and, for binary tasks, the
length-only and homology-transfer baselines on the same splits. Table B: runtime of teacher vs student and
the student's saving in %. Table C: dataset variants (full / SUB / CUT) and the test set each was scored on.
Table D: organisms (Swiss-Prot sets). Repeated runs of one setting (seeds) show mean ± std (sample std) and
their count. Written as report.md, report.json and one PNG per table.
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from minprot_ds.errors import UserError
from minprot_ds.finetune.metrics import json_safe
from minprot_ds.models import provenance as links

METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc", "positive_rate", "mcc")
LEAKAGE = ("exact", "near_identical", "homologs")
BASELINES = ("length", "homology")
ROLES = ("teacher", "student")


@dataclass
class RunRow:
    """One finished fine-tune run, as the tables need it."""

    run_id: str
    task: str
    dataset: str  # name, e.g. PDB14189 or swissprot-human
    variant: str  # full / sub / cut
    dataset_label: str  # name + variant (+ SUB identity)
    test_dataset: str
    organism: str
    role: str
    model: str
    train_rows: int
    metrics: dict[str, float]
    train_seconds: float
    inference_seconds: float
    distill_run_id: str = ""
    test_rows: int = 0
    leakage: dict[str, float] = field(default_factory=dict)  # test_exact / near_identical / homologs, {} if unmeasured
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)  # name -> test metrics


@dataclass
class Stat:
    """A metric over repeated runs: mean, sample std (n > 1) and count."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Stat:
        finite = [v for v in values if not math.isnan(v)]
        if not finite:
            return cls(math.nan, math.nan, 0)
        mean = sum(finite) / len(finite)
        std = math.sqrt(sum((v - mean) ** 2 for v in finite) / (len(finite) - 1)) if len(finite) > 1 else math.nan
        return cls(mean, std, len(finite))


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[object]] = field(default_factory=list)
    note: str = ""


def resolve_uri(uri: str | None) -> str:
    """A tracking URI; a run folder (with mlflow.db) or a .db file becomes sqlite:///…."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise UserError(
            "no MLflow store given; pass --tracking-uri (a URI, a fine-tune --out folder, or an mlflow.db file)"
        )
    if "://" in uri:
        return uri
    path = Path(uri).expanduser().resolve()
    if path.is_dir() and (path / "mlflow.db").is_file():
        return f"sqlite:///{path / 'mlflow.db'}"
    if path.is_file():
        return f"sqlite:///{path}"
    raise UserError(f"--tracking-uri {uri} is neither a URI nor a folder holding mlflow.db nor a database file")


def _num(value: object) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def collect_runs(uri: str, experiments: list[str] | None = None) -> list[RunRow]:
    """Finished fine-tune runs (tag minprot.job = finetune) of the named experiments, or of all of them."""
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    client = MlflowClient(tracking_uri=uri)
    if experiments:
        found = []
        for name in experiments:
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise UserError(f"MLflow at {uri} has no experiment {name!r}; check --experiment")
            found.append(exp)
    else:
        found = client.search_experiments(view_type=ViewType.ACTIVE_ONLY)
    if not found:
        return []
    runs = client.search_runs(
        [e.experiment_id for e in found],
        filter_string="tags.`minprot.job` = 'finetune' and attributes.status = 'FINISHED'",
        max_results=50_000,
    )
    rows = []
    for run in runs:
        tags, m, params = run.data.tags, run.data.metrics, run.data.params
        rows.append(
            RunRow(
                run_id=run.info.run_id,
                task=tags.get(links.TAG_TASK, "?"),
                dataset=tags.get(links.TAG_DATASET, "?"),
                variant=tags.get("minprot.dataset_variant", "full"),
                dataset_label=tags.get("minprot.dataset_label", tags.get(links.TAG_DATASET, "?")),
                test_dataset=tags.get("minprot.test_dataset", ""),
                organism=tags.get("minprot.organism", ""),
                role=tags.get(links.TAG_ROLE, "?"),
                model=tags.get("minprot.model", params.get("model", "")),
                train_rows=int(_num(params.get("rows.train")) if params.get("rows.train") else 0),
                metrics={k: _num(m.get(f"test/{k}")) for k in METRICS},
                train_seconds=_num(m.get("runtime/train_seconds")),
                inference_seconds=_num(m.get("runtime/inference_seconds")),
                distill_run_id=tags.get(links.TAG_DISTILL_RUN, ""),
                test_rows=int(_num(params.get("rows.test")) if params.get("rows.test") else 0),
                leakage={k: m[f"leakage/test_{k}"] for k in LEAKAGE if f"leakage/test_{k}" in m},
                baselines={
                    b: {k: _num(m.get(f"baseline_{b}/{k}")) for k in METRICS}
                    for b in BASELINES
                    if f"baseline_{b}/accuracy" in m
                },
            )
        )
    return rows


# --- tables ---------------------------------------------------------------------------------------------


def _mean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


def _group(rows: list[RunRow], key) -> dict[tuple, list[RunRow]]:
    groups: dict[tuple, list[RunRow]] = defaultdict(list)
    for row in rows:
        groups[key(row)].append(row)
    return dict(sorted(groups.items(), key=lambda kv: tuple(str(k) for k in kv[0])))


def _role_order(role: str) -> int:
    return ROLES.index(role) if role in ROLES else len(ROLES)


def _saving(teacher: float, student: float) -> float:
    """How much less time the student took, in % of the teacher's time."""
    if math.isnan(teacher) or math.isnan(student) or teacher <= 0:
        return math.nan
    return 100.0 * (1.0 - student / teacher)


def leakage_cell(runs: list[RunRow]) -> str:
    """exact / near-identical / homologs of N test proteins (the first run's: runs of a group share their splits)."""
    measured = [r for r in runs if r.leakage]
    if not measured:
        return "not measured"
    r = measured[0]
    return "/".join(str(int(r.leakage.get(k, 0))) for k in LEAKAGE) + f" of {r.test_rows}"


def table_a(rows: list[RunRow]) -> Table:
    t = Table(
        "Table A: test metrics by task, dataset and model (mean ± std over runs; leakage = test proteins "
        "with an exact / near-identical / homologous copy among the training rows)",
        ["task", "train set", "test set", "model", "runs", "leakage", *METRICS],
    )
    groups = _group(rows, lambda r: (r.task, r.dataset_label, r.test_dataset))
    for (task, data, test), runs in groups.items():
        leak = leakage_cell(runs)
        for role, mine in _group(runs, lambda r: (_role_order(r.role), r.role)).items():
            t.rows.append(
                [task, data, test, role[1], len(mine), leak, *(Stat.of([r.metrics[k] for r in mine]) for k in METRICS)]
            )
        for name in BASELINES:
            done = [r.baselines[name] for r in runs if name in r.baselines]
            if done:
                t.rows.append(
                    [
                        task,
                        data,
                        test,
                        f"baseline: {name}",
                        len(done),
                        leak,
                        *(Stat.of([b[k] for b in done]) for k in METRICS),
                    ]
                )
    t.note = (
        "Baselines (binary tasks, same splits): length = logistic regression on sequence length; homology = the "
        "label of the best MMseqs2 hit among the training rows."
    )
    return t


def table_b(rows: list[RunRow]) -> Table:
    t = Table(
        "Table B: runtime of teacher vs student (seconds; saving = 1 - student / teacher)",
        [
            "task",
            "train set",
            "teacher train s",
            "student train s",
            "train saving %",
            "teacher inference s",
            "student inference s",
            "inference saving %",
        ],
    )
    for (task, data), runs in _group(rows, lambda r: (r.task, r.dataset_label)).items():
        by_role = {role: [r for r in runs if r.role == role] for role in ROLES}
        tt, st = (_mean([r.train_seconds for r in by_role[x]]) for x in ROLES)
        ti, si = (_mean([r.inference_seconds for r in by_role[x]]) for x in ROLES)
        t.rows.append([task, data, tt, st, _saving(tt, st), ti, si, _saving(ti, si)])
    t.note = "A saving needs both a teacher and a student run of the same task and train set."
    return t


def table_c(rows: list[RunRow]) -> Table:
    t = Table(
        "Table C: dataset variants (full, SUB = MMseqs2 representatives, CUT = random subset with SUB's label "
        "counts), each scored on the test set named",
        [
            "task",
            "dataset",
            "variant",
            "model",
            "train rows",
            "test set",
            "leakage",
            "runs",
            "accuracy",
            "f1",
            "roc_auc",
            "mcc",
        ],
    )
    with_variants = {(r.task, r.dataset) for r in rows if r.variant != "full"}
    picked = [r for r in rows if (r.task, r.dataset) in with_variants]
    order = {"full": 0, "sub": 1, "cut": 2}
    groups = _group(
        picked, lambda r: (r.task, r.dataset, order.get(r.variant, 3), r.dataset_label, _role_order(r.role), r.role)
    )
    for (task, data, _, label, _, role), runs in groups.items():
        variant = label[len(data) :].strip() or "full"
        tests = sorted({r.test_dataset for r in runs})
        t.rows.append(
            [
                task,
                data,
                variant,
                role,
                max(r.train_rows for r in runs),
                ", ".join(tests),
                leakage_cell(runs),
                len(runs),
                *(Stat.of([r.metrics[k] for r in runs]) for k in ("accuracy", "f1", "roc_auc", "mcc")),
            ]
        )
    if not t.rows:
        t.note = "No SUB/CUT runs yet: make them with `minprot data reduce` and `minprot data random-subset`."
    return t


def table_d(rows: list[RunRow]) -> Table:
    t = Table(
        "Table D: organisms (Swiss-Prot DNA-binding sets)",
        ["organism", "variant", "model", "runs", "leakage", "accuracy", "f1", "roc_auc", "mcc", "train s"],
    )
    groups = _group(
        [r for r in rows if r.organism],
        lambda r: (r.organism, r.dataset_label[len(r.dataset) :].strip() or "full", _role_order(r.role), r.role),
    )
    for (organism, variant, _, role), runs in groups.items():
        t.rows.append(
            [
                organism,
                variant,
                role,
                len(runs),
                leakage_cell(runs),
                *(Stat.of([r.metrics[k] for r in runs]) for k in ("accuracy", "f1", "roc_auc", "mcc")),
                _mean([r.train_seconds for r in runs]),
            ]
        )
    if not t.rows:
        t.note = "No runs on organism sets yet: build them with `minprot data swissprot --organism ...`."
    return t


def build_tables(rows: list[RunRow]) -> list[Table]:
    return [table_a(rows), table_b(rows), table_c(rows), table_d(rows)]


# --- rendering ------------------------------------------------------------------------------------------


def _cell(value: object) -> str:
    if isinstance(value, Stat):
        if value.n == 0:
            return "–"
        return _cell(value.mean) + (f" ± {value.std:.3f}" if value.n > 1 else "")
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value).replace("|", "\\|")


def to_markdown(table: Table) -> str:
    lines = [f"### {table.title}", ""]
    if table.rows:
        lines.append("| " + " | ".join(table.columns) + " |")
        lines.append("|" + "|".join("---" for _ in table.columns) + "|")
        lines.extend("| " + " | ".join(_cell(v) for v in row) + " |" for row in table.rows)
        lines.append("")
    if table.note:
        lines += [f"_{table.note}_", ""]
    return "\n".join(lines)


def _bar_chart(
    table: Table, label_cols: list[int], value_col: int, group_col: int, title: str, ylabel: str, path: Path
) -> Path | None:
    """Grouped bars: x = the label columns joined, one bar per value of `group_col` (the model role)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    import numpy as np

    data: dict[str, dict[str, float]] = defaultdict(dict)
    for row in table.rows:
        value = row[value_col]
        data[" / ".join(str(row[i]) for i in label_cols)][str(row[group_col])] = (
            value.mean if isinstance(value, Stat) else value
        )
    if not data:
        return None
    groups = sorted({g for values in data.values() for g in values}, key=_role_order)
    x = np.arange(len(data))
    width = 0.8 / max(len(groups), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(data) + 2), 4.5))
    for j, group in enumerate(groups):
        heights = [data[k].get(group, math.nan) for k in data]
        ax.bar(x + (j - (len(groups) - 1) / 2) * width, np.nan_to_num(heights, nan=0.0), width, label=group)
    ax.set_xticks(x, list(data), rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _runtime_chart(table: Table, path: Path) -> Path | None:
    as_roles = Table(table.title, ["task", "train set", "model", "train s"])
    for task, data, tt, st, *_ in table.rows:
        as_roles.rows += [[task, data, "teacher", tt], [task, data, "student", st]]
    return _bar_chart(as_roles, [0, 1], 3, 2, "Table B: training time", "seconds", path)


def render(tables: list[Table], out: Path, sources: list[str], run_count: int) -> list[Path]:
    a, b, c, d = tables
    charts = [
        _bar_chart(
            a, [0, 1, 2], a.columns.index("mcc"), 3, "Table A: test MCC by model", "MCC", out / "table_a_mcc.png"
        ),
        _bar_chart(
            a,
            [0, 1, 2],
            a.columns.index("accuracy"),
            3,
            "Table A: test accuracy by model",
            "accuracy",
            out / "table_a_accuracy.png",
        ),
        _runtime_chart(b, out / "table_b_runtime.png"),
        _bar_chart(
            c,
            [0, 1, 2],
            c.columns.index("accuracy"),
            3,
            "Table C: accuracy by dataset variant",
            "accuracy",
            out / "table_c_variants.png",
        ),
        _bar_chart(
            d,
            [0, 1],
            d.columns.index("accuracy"),
            2,
            "Table D: accuracy by organism",
            "accuracy",
            out / "table_d_organisms.png",
        ),
    ]
    charts = [p for p in charts if p is not None]
    body = [
        "# Downstream fine-tuning: teacher vs student",
        "",
        f"{run_count} finished fine-tune runs from {', '.join(sources)}.",
        "",
    ]
    body += [to_markdown(t) for t in tables]
    body += ["### Charts", ""] + [f"![{p.stem}]({p.name})" for p in charts] + [""]
    (out / "report.md").write_text("\n".join(body))
    return charts


def build_report(tracking_uris: list[str] | None, out: str | Path, experiments: list[str] | None = None) -> Path:
    """Read every store, write report.md, report.json and the charts into `out`; returns report.md."""
    uris = [resolve_uri(u) for u in (tracking_uris or [None])]
    rows = [row for uri in uris for row in collect_runs(uri, experiments)]
    if not rows:
        where = f" in experiment(s) {', '.join(experiments)}" if experiments else ""
        raise UserError(f"no finished fine-tune runs{where} at {', '.join(uris)}; run `minprot finetune` first")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tables = build_tables(rows)
    render(tables, out, uris, len(rows))
    payload = {"sources": uris, "runs": [asdict(r) for r in rows], "tables": [asdict(t) for t in tables]}
    (out / "report.json").write_text(json.dumps(json_safe(payload), indent=2, allow_nan=False, default=str) + "\n")
    return out / "report.md"
