"""`minprot report`: fine-tune runs read back from MLflow, as the MinProtBert report's tables and bar charts.

Table A: for each task, train set, test set and setting, the full test set and (under --test-filter) its
leak-free rows, each with its n and positives: teacher and student metrics with their 95% CIs, the test set's
leakage (exact / near-identical / homologs of N) and, for binary tasks, the length-only and homology-transfer
baselines on the same rows. Table B: runtime of teacher vs student and the student's saving in %. Table C:
dataset variants (full / SUB / CUT) and the test set each was scored on. Table D: organisms (Swiss-Prot sets).

Runs are merged (mean ± sample std over seeds) only when every recorded option that can change the numbers is
equal — every fine-tune option except those in IGNORED, so an option added later groups by itself — and what
their CIs resample (proteins, or homology components drawn whole: the `ci_unit` a fine-tune records), and, per
row, the model's provenance (the distillation run of a student, else the model named). Runs that differ are
kept apart, and the `setting` column names what differs. Written as report.md, report.json and PNG charts.
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
from minprot_ds.finetune.options import FinetuneConfig
from minprot_ds.finetune.uncertainty import CI_UNIT, COMPONENTS
from minprot_ds.models import provenance as links
from minprot_ds.options import cli_fields

METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc", "mcc", "brier", "ece")
COUNTS = ("n", "positives")
LEAKAGE = ("exact", "near_identical", "homologs")
BASELINES = ("length", "homology")
ROLES = ("teacher", "student")
# Options that do not change a run's numbers (or that rows already tell apart): where outputs go, which seed
# (seeds are what a group averages), the model (a row's role and provenance) and the CIs' resample count.
IGNORED = frozenset(
    {"out", "tracking_uri", "experiment", "run_name", "seed", "seeds", "model", "role", "dataset_name", "bootstrap"}
)


def grouping_settings() -> list[str]:
    """What a report groups runs by: every logged fine-tune option not in IGNORED, and CI_UNIT (not an option, but
    CIs over other units are other numbers)."""
    options = [c.name for c in cli_fields(FinetuneConfig) if c.field.metadata["log"] and c.name not in IGNORED]
    return [*options, CI_UNIT]


def _setting_name(name: str) -> str:
    """How the tables name a setting: its flag (`--pooling`), or `CIs over` for what the CIs resample."""
    return "CIs over" if name == CI_UNIT else f"--{name.replace('_', '-')}"


def _shown(name: str, value: str) -> str:
    """A recorded value as the tables show it (paths by their last part)."""
    if not value:
        return "(not recorded)" if name == CI_UNIT else "(unset)"
    return Path(value).name if "/" in value else value


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
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)  # name -> test metrics (+ _ci_low/_high)
    settings: dict[str, str] = field(default_factory=dict)  # grouping_settings() as recorded ("" when absent)
    provenance: str = ""  # the student's distillation run, else the model named
    counts: dict[str, float] = field(default_factory=dict)  # test n, positives
    ci: dict[str, list[float]] = field(default_factory=dict)  # metric -> [low, high]
    filtered: dict[str, float] = field(default_factory=dict)  # test_filtered metrics, counts, _ci_low/_high
    baselines_filtered: dict[str, dict[str, float]] = field(default_factory=dict)
    test_filter: str = "none"
    setting: str = "–"  # filled by the tables: the settings that tell this run's group apart


@dataclass
class Stat:
    """A metric over repeated runs: mean, sample std (n > 1) and count; with the runs' 95% CI bounds (their
    mean over the runs: the test-sampling uncertainty of one run) when known."""

    mean: float
    std: float
    n: int
    low: float = math.nan
    high: float = math.nan

    @classmethod
    def of(cls, values: list[float], lows: list[float] | None = None, highs: list[float] | None = None) -> Stat:
        finite = [v for v in values if not math.isnan(v)]
        if not finite:
            return cls(math.nan, math.nan, 0)
        mean = sum(finite) / len(finite)
        std = math.sqrt(sum((v - mean) ** 2 for v in finite) / (len(finite) - 1)) if len(finite) > 1 else math.nan
        return cls(mean, std, len(finite), _mean(lows or []), _mean(highs or []))


def _metric(sets: list[dict[str, float]], name: str) -> Stat:
    """`name` over scored sets logged flat (name, name_ci_low, name_ci_high)."""
    return Stat.of(
        [s.get(name, math.nan) for s in sets],
        [s.get(f"{name}_ci_low", math.nan) for s in sets],
        [s.get(f"{name}_ci_high", math.nan) for s in sets],
    )


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
    options = grouping_settings()

    def scored(prefix: str, m: dict[str, float]) -> dict[str, float]:
        names = [*METRICS, *COUNTS, *(f"{k}_ci_{end}" for k in METRICS for end in ("low", "high"))]
        return {k: m[f"{prefix}/{k}"] for k in names if f"{prefix}/{k}" in m}

    for run in runs:
        tags, m, params = run.data.tags, run.data.metrics, run.data.params
        distill = tags.get(links.TAG_DISTILL_RUN, "")
        model = tags.get("minprot.model", params.get("model", ""))
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
                model=model,
                train_rows=int(_num(params.get("rows.train")) if params.get("rows.train") else 0),
                metrics={k: _num(m.get(f"test/{k}")) for k in METRICS},
                train_seconds=_num(m.get("runtime/train_seconds")),
                inference_seconds=_num(m.get("runtime/inference_seconds")),
                distill_run_id=distill,
                test_rows=int(_num(params.get("rows.test")) if params.get("rows.test") else 0),
                leakage={k: m[f"leakage/test_{k}"] for k in LEAKAGE if f"leakage/test_{k}" in m},
                baselines={b: scored(f"baseline_{b}", m) for b in BASELINES if f"baseline_{b}/accuracy" in m},
                settings={k: params.get(k, "") for k in options},
                provenance=f"distillation run {distill}" if distill else model,
                counts={k: m[f"test/{k}"] for k in COUNTS if f"test/{k}" in m},
                ci={k: [m[f"test/{k}_ci_low"], m[f"test/{k}_ci_high"]] for k in METRICS if f"test/{k}_ci_low" in m},
                filtered=scored("test_filtered", m),
                baselines_filtered={
                    b: scored(f"baseline_{b}_filtered", m) for b in BASELINES if f"baseline_{b}_filtered/accuracy" in m
                },
                test_filter=params.get("test_filter", "none"),
            )
        )
    return rows


def varying(rows: list[RunRow]) -> list[str]:
    """The grouping settings whose recorded value differs between some of `rows`."""
    return [k for k in grouping_settings() if len({r.settings.get(k, "") for r in rows}) > 1]


def setting_key(row: RunRow) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(row.settings.items()))


def setting_label(row: RunRow, differing: list[str]) -> str:
    """What sets this row's group apart: `--pooling mean, --lr 0.001, CIs over proteins`, or "–"."""
    return ", ".join(f"{_setting_name(k)} {_shown(k, row.settings.get(k, ''))}" for k in differing) or "–"


def _settings(rows: list[RunRow], where, named: tuple[str, ...] = ()) -> list[tuple[tuple, list[RunRow]]]:
    """Groups of runs with equal `where(row)` and equal settings, each row's `setting` set to what tells its group
    apart from the others of the same `where`, and the settings `named` always."""
    out = []
    for place, here in _group(rows, where).items():
        differing = [k for k in grouping_settings() if k in varying(here) or k in named]
        for key, runs in _group(here, lambda r: (setting_key(r),)).items():
            for r in runs:
                r.setting = setting_label(r, differing)
            out.append(((*place, *key), runs))
    return out


def check_mergeable(runs: list[RunRow]) -> None:
    """Refuse to average runs that differ in a setting (the grouping above never asks it; a guard for callers)."""
    for name in grouping_settings():
        values = sorted({r.settings.get(name, "") for r in runs})
        if len(values) > 1:
            what = "what their CIs resample" if name == CI_UNIT else _setting_name(name)
            raise UserError(
                f"runs {', '.join(r.run_id[:8] for r in runs)} differ in {what} "
                f"({' vs '.join(_shown(name, v) for v in values)}); they cannot be merged into one mean"
            )
    sources = sorted({r.provenance for r in runs})
    if len(sources) > 1:
        raise UserError(
            f"runs {', '.join(r.run_id[:8] for r in runs)} come from different models ({' vs '.join(sources)})"
        )


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


def leakage_cell(runs: list[RunRow], filtered: bool = False) -> str:
    """exact / near-identical / homologs of N test proteins; each distinct value when the runs disagree (a seeded
    --max-train-samples draws other training rows per seed). `filtered`: of the rows --test-filter kept."""
    measured = [r for r in runs if r.leakage]
    if not measured:
        return "not measured"
    cells = set()
    for r in measured:
        leak, n = (_kept_leakage(r.leakage, r.test_filter), r.filtered.get("n")) if filtered else (r.leakage, None)
        cells.add("/".join(str(int(leak.get(k, 0))) for k in LEAKAGE) + f" of {int(n or r.test_rows)}")
    return "; ".join(sorted(cells))


def _kept_leakage(leakage: dict[str, float], test_filter: str) -> dict[str, float]:
    """The leakage of the test rows a filter keeps: the classes nest (exact ⊆ near-identical ⊆ homologs), so
    `near-identical` removes the first two and keeps the homologs that are not near-identical, `homologs` all."""
    if test_filter == "homologs":
        return dict.fromkeys(LEAKAGE, 0)
    if test_filter == "near-identical":
        return {
            "exact": 0,
            "near_identical": 0,
            "homologs": leakage.get("homologs", 0) - leakage.get("near_identical", 0),
        }
    return leakage


def _count(values: list[float]) -> str:
    found = sorted({int(v) for v in values if not math.isnan(v)})
    if not found:
        return "–"
    return str(found[0]) if len(found) == 1 else f"{found[0]}–{found[-1]}"


def _row_key(row: RunRow) -> tuple:
    return (_role_order(row.role), row.role, row.provenance)


def table_a(rows: list[RunRow]) -> Table:
    t = Table(
        "Table A: test metrics by task, dataset, setting and model, on the full test set and its leak-free rows "
        "(mean ± std over runs, [95% CI]; leakage = test proteins with an exact / near-identical / homologous copy "
        "among the training rows)",
        ["task", "train set", "test set", "setting", "scored on", "model", "runs", "n", "positives", "leakage"]
        + list(METRICS),
    )
    units = sorted({r.settings.get(CI_UNIT, "") for r in rows})
    named = (CI_UNIT,) if len(units) > 1 else ()  # every row says what its CIs resample when the table mixes them
    for (task, data, test, _), runs in _settings(rows, lambda r: (r.task, r.dataset_label, r.test_dataset), named):
        setting = runs[0].setting
        head = [task, data, test, setting]
        models = _group(runs, _row_key)
        full = ("full", lambda r: {**r.metrics, **r.counts, **_flat_ci(r.ci)}, lambda r, b: r.baselines.get(b))
        sets = [(*full, leakage_cell(runs))]
        if any(r.filtered for r in runs):
            leak_free = (
                f"leak-free ({runs[0].test_filter})",
                lambda r: r.filtered,
                lambda r, b: r.baselines_filtered.get(b),
            )
            sets.append((*leak_free, leakage_cell(runs, filtered=True)))
        for scored_on, of_model, of_baseline, leak in sets:
            for (_, role, provenance), mine in models.items():
                check_mergeable(mine)
                found = [of_model(r) for r in mine if of_model(r)]
                if not found:
                    continue
                alike = {k[2] for k in models if k[1] == role}  # models of this role: name them when several
                name = role if len(alike) == 1 else f"{role} ({provenance})"
                t.rows.append(_line(head, scored_on, name, found, leak))
            for baseline in BASELINES:
                done = [of_baseline(r, baseline) for r in runs if of_baseline(r, baseline)]
                if done:
                    t.rows.append(_line(head, scored_on, f"baseline: {baseline}", done, leak))
    t.note = (
        "Runs merge only when every option that changes the numbers is equal (all fine-tune options but "
        + ", ".join(f"--{k.replace('_', '-')}" for k in sorted(IGNORED))
        + ") and what their CIs resample, and the model's provenance too; `setting` names the settings that differ "
        "between runs of one task, train and test set. "
        f"One run: its value [95% percentile bootstrap CI over {_ci_units(units)}]; several (seeds): mean ± sample "
        "std [the runs' mean CI bounds]; – where a metric is undefined (e.g. precision when nothing is predicted "
        "positive, ROC-AUC with one class). "
        "Baselines (binary tasks, same rows): length = logistic regression on sequence length; homology = the "
        "label of the best MMseqs2 hit among the training rows. leak-free = the rows --test-filter keeps."
    )
    return t


def _ci_units(units: list[str]) -> str:
    """What the CIs of a table resample, in words, from the runs' recorded units."""
    if len(units) > 1:
        return "the unit each row's `setting` names (CIs over proteins, or over homology components drawn whole)"
    if units == [COMPONENTS]:
        return "the test set's homology components, each drawn whole"
    if units == ["proteins"]:
        return "the test set's proteins"
    return units[0] if units and units[0] else "a unit the runs did not record (runs of an older minprot)"


def _flat_ci(ci: dict[str, list[float]]) -> dict[str, float]:
    return {f"{k}_ci_{end}": v for k, (low, high) in ci.items() for end, v in (("low", low), ("high", high))}


def _line(head: list, scored_on: str, model: str, sets: list[dict[str, float]], leak: str) -> list[object]:
    return [
        *head,
        scored_on,
        model,
        len(sets),
        _count([s.get("n", math.nan) for s in sets]),
        _count([s.get("positives", math.nan) for s in sets]),
        leak,
        *(_metric(sets, k) for k in METRICS),
    ]


def table_b(rows: list[RunRow]) -> Table:
    t = Table(
        "Table B: runtime of teacher vs student (seconds; saving = 1 - student / teacher)",
        [
            "task",
            "train set",
            "setting",
            "teacher train s",
            "student train s",
            "train saving %",
            "teacher inference s",
            "student inference s",
            "inference saving %",
        ],
    )
    for (task, data, _), runs in _settings(rows, lambda r: (r.task, r.dataset_label)):
        by_role = {role: [r for r in runs if r.role == role] for role in ROLES}
        tt, st = (_mean([r.train_seconds for r in by_role[x]]) for x in ROLES)
        ti, si = (_mean([r.inference_seconds for r in by_role[x]]) for x in ROLES)
        t.rows.append([task, data, runs[0].setting, tt, st, _saving(tt, st), ti, si, _saving(ti, si)])
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
            "setting",
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
    for place, alike in _settings(picked, lambda r: (r.task, r.dataset, order.get(r.variant, 3), r.dataset_label)):
        task, data, _, label, _ = place
        for (_, role, _), runs in _group(alike, _row_key).items():
            _variant_line(t, task, data, label, role, runs)
    if not t.rows:
        t.note = "No SUB/CUT runs yet: make them with `minprot data reduce` and `minprot data random-subset`."
    return t


def _variant_line(t: Table, task: str, data: str, label: str, role: str, runs: list[RunRow]) -> None:
    variant = label[len(data) :].strip() or "full"
    tests = sorted({r.test_dataset for r in runs})
    t.rows.append(
        [
            task,
            data,
            variant,
            runs[0].setting,
            role,
            max(r.train_rows for r in runs),
            ", ".join(tests),
            leakage_cell(runs),
            len(runs),
            *(Stat.of([r.metrics[k] for r in runs]) for k in ("accuracy", "f1", "roc_auc", "mcc")),
        ]
    )


def table_d(rows: list[RunRow]) -> Table:
    t = Table(
        "Table D: organisms (Swiss-Prot DNA-binding sets)",
        ["organism", "variant", "setting", "model", "runs", "leakage", "accuracy", "f1", "roc_auc", "mcc", "train s"],
    )
    groups = _settings(
        [r for r in rows if r.organism], lambda r: (r.organism, r.dataset_label[len(r.dataset) :].strip() or "full")
    )
    for (organism, variant, _), alike in groups:
        for (_, role, _), runs in _group(alike, _row_key).items():
            t.rows.append(
                [
                    organism,
                    variant,
                    runs[0].setting,
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
        ci = f" [{value.low:.2f}, {value.high:.2f}]" if math.isfinite(value.low) and math.isfinite(value.high) else ""
        return _cell(value.mean) + (f" ± {value.std:.3f}" if value.n > 1 else "") + ci
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
    as_roles = Table(table.title, ["task", "train set", "setting", "model", "train s"])
    for task, data, setting, tt, st, *_ in table.rows:
        as_roles.rows += [[task, data, setting, "teacher", tt], [task, data, setting, "student", st]]
    return _bar_chart(as_roles, [0, 1, 2], 4, 3, "Table B: training time", "seconds", path)


def render(tables: list[Table], out: Path, sources: list[str], run_count: int) -> list[Path]:
    a, b, c, d = tables
    model_a = a.columns.index("model")
    charts = [
        _bar_chart(
            a,
            [0, 1, 2, 3, 4],
            a.columns.index("mcc"),
            model_a,
            "Table A: test MCC by model",
            "MCC",
            out / "table_a_mcc.png",
        ),
        _bar_chart(
            a,
            [0, 1, 2, 3, 4],
            a.columns.index("accuracy"),
            model_a,
            "Table A: test accuracy by model",
            "accuracy",
            out / "table_a_accuracy.png",
        ),
        _runtime_chart(b, out / "table_b_runtime.png"),
        _bar_chart(
            c,
            [0, 1, 2, 3],
            c.columns.index("accuracy"),
            c.columns.index("model"),
            "Table C: accuracy by dataset variant",
            "accuracy",
            out / "table_c_variants.png",
        ),
        _bar_chart(
            d,
            [0, 1, 2],
            d.columns.index("accuracy"),
            d.columns.index("model"),
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
