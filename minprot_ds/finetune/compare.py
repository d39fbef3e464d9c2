"""`minprot compare TEACHER STUDENT`: two fine-tunes read back from their predictions.tsv, paired row by row (seed by
seed for --seeds folders), and a table of the paired differences, tests and non-inferiority verdicts
(`uncertainty.paired` does the statistics). The resamples draw homology components whole when both files carry
the same `component` column, proteins when neither does."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from minprot_ds.errors import UserError
from minprot_ds.fileio import atomic_write
from minprot_ds.finetune.metrics import Predictions, json_safe, read_predictions
from minprot_ds.finetune.tasks import task_spec
from minprot_ds.finetune.train import METRICS_FILE, PREDICTIONS_FILE
from minprot_ds.finetune.uncertainty import MARGIN, RESAMPLES, SEED, paired


def runs_of(folder: Path) -> dict[str, Path]:
    """{"": folder} for one fine-tune, {"seed-N": folder/seed-N, ...} for a --seeds folder."""
    if (folder / PREDICTIONS_FILE).is_file():
        return {"": folder}
    seeds = {p.name: p for p in sorted(folder.glob("seed-*")) if (p / PREDICTIONS_FILE).is_file()}
    if not seeds:
        raise UserError(
            f"{folder} has no {PREDICTIONS_FILE} (nor seed-N/{PREDICTIONS_FILE}); pass a fine-tune --out folder"
        )
    return seeds


def pairs(teacher: Path, student: Path) -> list[tuple[str, Path, Path]]:
    """(seed, teacher run, student run): seed by seed; a single run on one side meets every seed of the other."""
    a, b = runs_of(teacher), runs_of(student)
    if "" in a or "" in b:
        return [(name or s2 or "", a.get(name, a.get("")), b.get(s2, b.get(""))) for name, s2 in _broadcast(a, b)]
    if set(a) != set(b):
        raise UserError(
            f"{teacher} has {', '.join(sorted(a))} but {student} has {', '.join(sorted(b))}; "
            "fine-tune both with the same --seeds to pair them seed by seed"
        )
    return [(name, a[name], b[name]) for name in sorted(a, key=lambda n: int(n.split("-")[1]))]


def _broadcast(a: dict[str, Path], b: dict[str, Path]) -> list[tuple[str, str]]:
    if "" in a and "" in b:
        return [("", "")]
    if "" in a:
        return [("", name) for name in b]
    return [(name, "") for name in a]


def _task(run: Path) -> str:
    path = run / METRICS_FILE
    try:
        return json.loads(path.read_text())["task"]
    except (OSError, ValueError, KeyError):
        raise UserError(f"{path} is missing or has no 'task'; pass a finished fine-tune's --out folder") from None


def _rows(pred: Predictions) -> list[tuple]:
    """(id, label[, position]) of each row: what must match for a paired comparison."""
    columns = [pred.ids, pred.labels.tolist()] + ([] if pred.positions is None else [pred.positions.tolist()])
    return list(zip(*columns))


def check_same_rows(a: Predictions, b: Predictions, where_a: Path, where_b: Path) -> None:
    """One sentence, naming the first differing row, unless both files hold the same rows in the same order."""
    rows_a, rows_b = _rows(a), _rows(b)
    if rows_a == rows_b:
        return
    first = next((i for i, (x, y) in enumerate(zip(rows_a, rows_b)) if x != y), min(len(rows_a), len(rows_b)))
    raise UserError(
        f"{where_a} ({len(rows_a)} rows) and {where_b} ({len(rows_b)} rows) do not hold the same test rows "
        f"(first difference at row {first + 1}); compare fine-tunes of one --test with the same "
        "--max-eval-samples and --long"
    )


def check_same_groups(a: Predictions, b: Predictions, where_a: Path, where_b: Path) -> None:
    """The bootstrap resamples components only when both files carry the same ones; one sentence otherwise."""
    if a.groups == b.groups:
        return
    if a.groups is None or b.groups is None:
        has, lacks = (where_a, where_b) if b.groups is None else (where_b, where_a)
        why = f"{has} has a component column and {lacks} none"
    else:
        first = next(i for i, (x, y) in enumerate(zip(a.groups, b.groups)) if x != y)
        why = f"{where_a} and {where_b} give row {first + 1} different components"
    raise UserError(
        f"{why}, so the homology components to resample are not the same; fine-tune both on the same --test folder"
    )


def compare(
    teacher: Path,
    student: Path,
    *,
    margin: float = MARGIN,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> list[dict[str, Any]]:
    """Per run pair (seed by seed): its name, the task, both folders and `uncertainty.paired`'s result."""
    found = []
    for name, run_a, run_b in pairs(Path(teacher), Path(student)):
        task = _task(run_a)
        if _task(run_b) != task:
            raise UserError(f"{run_a} is a {task} fine-tune but {run_b} a {_task(run_b)} one; compare one task")
        spec = task_spec(task)
        a, b = (read_predictions(r / PREDICTIONS_FILE, spec) for r in (run_a, run_b))
        check_same_rows(a, b, run_a / PREDICTIONS_FILE, run_b / PREDICTIONS_FILE)
        check_same_groups(a, b, run_a / PREDICTIONS_FILE, run_b / PREDICTIONS_FILE)
        result = paired(a, b, spec, resamples=resamples, seed=seed, margin=margin)
        found.append({"run": name, "task": task, "teacher": str(run_a), "student": str(run_b), **result})
    return found


def _num(x: float) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:.4f}"


def _ci(x: float, ci: list[float]) -> str:
    return f"{_num(x)} [{_num(ci[0])}, {_num(ci[1])}]"


def table(result: dict[str, Any]) -> str:
    """One comparison as a Markdown table, headed by what was resampled and the margin."""
    m = result["margin"]
    head = (
        f"{result['task']}{' ' + result['run'] if result['run'] else ''}: teacher {result['teacher']}, "
        f"student {result['student']}; {result['method']}, {result['resamples']} resamples (seed {result['seed']}); "
        f"margin: student ≥ {m:g} × teacher"
    )
    lines = [
        head,
        "",
        f"| metric | teacher | student | student − teacher [95% CI] | student − {m:g} × teacher [95% CI] "
        "| verdict | paired test |",
        "|---|---|---|---|---|---|---|",
    ]
    tests = {}
    if "delong_roc_auc" in result:
        tests["roc_auc"] = f"DeLong p = {result['delong_roc_auc']['p']:.3g}"
        mc = result["mcnemar_accuracy"]
        tests["accuracy"] = f"McNemar p = {mc['p']:.3g} (mid-p {mc['mid_p']:.3g})"
    for name, row in result["metrics"].items():
        lines.append(
            f"| {name} | {_num(row['teacher'])} | {_num(row['student'])} | "
            f"{_ci(row['difference'], row['difference_ci95'])} | "
            f"{_ci(row['non_inferiority'], row['non_inferiority_ci95'])} | {row['verdict']} | {tests.get(name, '')} |"
        )
    return "\n".join(lines)


def run_compare(
    teacher: Path,
    student: Path,
    *,
    margin: float = MARGIN,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    json_out: Path | None = None,
    echo=print,
) -> list[dict[str, Any]]:
    if not 0 < margin <= 1:
        raise UserError(f"--margin {margin} must be in (0, 1]: the share of the teacher's metric the student keeps")
    found = compare(teacher, student, margin=margin, resamples=resamples, seed=seed)
    for result in found:
        echo(table(result))
        echo("")
    if json_out is not None:
        atomic_write(Path(json_out), json.dumps(json_safe(found), indent=2, allow_nan=False) + "\n")
    return found
