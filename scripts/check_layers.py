"""Check the floor order of minprot-ds's imports: no file cycle, no package cycle, no import against the floors.

Reads every import of `minprot_ds/` and `data_prep/` with `ast` (those inside functions too), and fails on
- a cycle between files;
- a cycle between packages (a package is a file's folder: `minprot_ds.distill`, `data_prep.tasks`, ...);
- an import of a package on the same or a higher floor than the importer's, other than its own package;
- an import of the project's own code inside a function, except in `minprot_ds.cli` (whose commands import their
  job when they run, so that `minprot --help` loads no torch) or with a `# lazy: why` comment on its line.

The floors, lowest first, are written once here and in `minprot_ds/__init__.py`'s docstring (a test checks that
both list the same packages). Usage: `python scripts/check_layers.py [--graph]`; exit 1 with one line per
violation.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOTS = ("minprot_ds", "data_prep")
LAZY_PACKAGE = "minprot_ds.cli"  # its commands import their job when they run: `minprot --help` stays light

# Lowest first. A package may import its own modules and those of packages on lower floors only.
FLOORS: list[tuple[str, tuple[str, ...]]] = [
    ("ground", ("minprot_ds",)),
    ("formats", ("minprot_ds.data", "minprot_ds.models")),
    ("data_prep", ("data_prep",)),
    ("data_prep tasks", ("data_prep.tasks",)),
    ("scoring", ("minprot_ds.scoring",)),
    ("losses", ("minprot_ds.distill.losses",)),
    ("distill job", ("minprot_ds.distill",)),
    ("downstream jobs", ("minprot_ds.finetune", "minprot_ds.inference")),
    ("benchmarks", ("minprot_ds.bench",)),
    ("cli", ("minprot_ds.cli",)),
]


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported module
    line: int
    in_function: bool
    lazy: bool = False  # a `# lazy:` comment on its line


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_of(module: str, modules: dict[str, Path]) -> str:
    return module if modules[module].name == "__init__.py" else module.rsplit(".", 1)[0]


def collect(root: Path = REPO) -> tuple[dict[str, Path], list[Import]]:
    modules = {module_name(p, root): p for r in ROOTS for p in sorted((root / r).rglob("*.py"))}
    imports: list[Import] = []
    for module, path in modules.items():
        text = path.read_text()
        lines = text.split("\n")
        tree = ast.parse(text, str(path))
        package = package_of(module, modules)
        functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        nested = {id(c) for f in functions for c in ast.walk(f)}
        seen: set[Import] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                candidates = [[a.name] for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                candidates = [[f"{base}.{a.name}", base] for a in node.names]
            else:
                continue
            for names in candidates:
                # `from pkg import module` names the module; `from module import thing` names the module.
                target = next((n for n in names if n in modules), None)
                if target is not None and target != module:
                    lazy = "# lazy:" in lines[node.lineno - 1]
                    seen.add(Import(module, target, node.lineno, id(node) in nested, lazy))
        imports += sorted(seen, key=lambda i: (i.line, i.target))
    return modules, imports


def floor_of(package: str) -> int:
    for i, (_, packages) in enumerate(FLOORS):
        if package in packages:
            return i
    raise KeyError(package)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan), each a cycle or several."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def violations(root: Path = REPO) -> list[str]:
    modules, imports = collect(root)
    problems = []
    file_edges: dict[str, set[str]] = defaultdict(set)
    package_edges: dict[str, set[str]] = defaultdict(set)
    for imp in imports:
        file_edges[imp.source].add(imp.target)
        if imp.in_function and not imp.lazy and not imp.source.startswith(LAZY_PACKAGE):
            problems.append(
                f"{modules[imp.source].relative_to(root)}:{imp.line}: {imp.target} imported inside a function; "
                "import it at the top, or say why not in a `# lazy: ...` comment on the line"
            )
        src_pkg, dst_pkg = package_of(imp.source, modules), package_of(imp.target, modules)
        if src_pkg == dst_pkg:
            continue
        package_edges[src_pkg].add(dst_pkg)
        where = f"{modules[imp.source].relative_to(root)}:{imp.line}"
        try:
            src_floor, dst_floor = floor_of(src_pkg), floor_of(dst_pkg)
        except KeyError as err:
            problems.append(
                f"{where}: package {err.args[0]} is on no floor; add it to FLOORS in scripts/check_layers.py"
            )
            continue
        if dst_floor >= src_floor:
            problems.append(
                f"{where}: {imp.source} ({FLOORS[src_floor][0]}) imports {imp.target} ({FLOORS[dst_floor][0]}), "
                "which is not on a lower floor"
            )
    problems += [f"file cycle: {' <-> '.join(c)}" for c in cycles(file_edges)]
    problems += [f"package cycle: {' <-> '.join(c)}" for c in cycles(package_edges)]
    return problems


def summary(root: Path = REPO) -> dict[str, int]:
    modules, imports = collect(root)
    return {
        "modules": len(modules),
        "internal_imports": len(imports),
        "inside_functions": sum(i.in_function for i in imports),
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    problems = violations()
    for line in problems:
        print(line)
    s = summary()
    print(
        f"{s['modules']} modules, {s['internal_imports']} internal imports ({s['inside_functions']} inside "
        f"functions), {len(problems)} violation(s)",
        file=sys.stderr,
    )
    if "--graph" in argv:
        modules, imports = collect()
        for imp in imports:
            print(f"{imp.source} -> {imp.target}{' (in function)' if imp.in_function else ''}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
