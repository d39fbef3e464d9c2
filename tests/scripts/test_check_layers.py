"""scripts/check_layers.py: the tree keeps its floors, and the checker finds what it is for."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import minprot_ds

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "check_layers.py"


def _checker():
    spec = importlib.util.spec_from_file_location("check_layers", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_layers"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_tree_has_no_cycle_and_no_import_against_the_floors():
    run = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stdout
    assert "0 violation(s)" in run.stderr


def test_the_package_docstring_lists_the_checkers_floors():
    listed = set(re.findall(r"`((?:minprot_ds|data_prep)(?:\.\w+)*)`", minprot_ds.__doc__))
    floors = {p for _, packages in _checker().FLOORS for p in packages}
    assert floors - {"minprot_ds"} <= listed, floors - listed


def _copy(tree: Path) -> Path:
    for root in ("minprot_ds", "data_prep"):
        shutil.copytree(REPO / root, tree / root, ignore=shutil.ignore_patterns("__pycache__"))
    return tree


def test_a_file_cycle_an_upward_import_and_a_package_cycle_are_found(tmp_path):
    checker = _checker()
    tree = _copy(tmp_path)
    # a file cycle inside one package, through an import hidden in a function
    (tree / "minprot_ds" / "bench" / "memory.py").write_text(
        (tree / "minprot_ds" / "bench" / "memory.py").read_text()
        + "\n\ndef _late():\n    from minprot_ds.bench import throughput\n"
    )
    # the formats floor reaching up into a job
    (tree / "minprot_ds" / "data" / "masking.py").write_text(
        (tree / "minprot_ds" / "data" / "masking.py").read_text() + "\nfrom minprot_ds.finetune import train\n"
    )
    problems = checker.violations(tree)
    assert any(p.startswith("file cycle:") and "minprot_ds.bench.memory" in p for p in problems), problems
    assert any("minprot_ds/data/masking.py" in p and "not on a lower floor" in p for p in problems), problems
    assert any(p.startswith("package cycle:") and "minprot_ds.data" in p for p in problems), problems
    assert any("minprot_ds/bench/memory.py" in p and "inside a function" in p for p in problems), problems


def test_an_import_inside_a_function_needs_a_reason(tmp_path):
    tree = _copy(tmp_path)
    target = tree / "minprot_ds" / "distill" / "export.py"
    target.write_text(target.read_text() + "\n\ndef _late():\n    from minprot_ds.fileio import write_json\n")
    problems = _checker().violations(tree)
    assert [p for p in problems if "export.py" in p and "inside a function" in p], problems
    target.write_text(target.read_text().replace("import write_json\n", "import write_json  # lazy: a reason\n"))
    assert _checker().violations(tree) == []
