"""README.md is the front door and docs/ holds the rest: sizes, links and the paths the text names.

Reads text files only (no package imports), so it runs in well under a second.
"""

from __future__ import annotations

import glob
import itertools
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
PAGES = [README, *DOCS]

# The two commands for a fresh machine, character for character; CI (.ci/run) runs the second.
DEMO_COMMAND = "bash scripts/setup.sh && .venv/bin/minprot demo"
TEST_COMMAND = (
    "bash scripts/setup.sh --with-mmseqs --with-slurm && .venv/bin/ruff check . && .venv/bin/ruff format --check . "
    "&& .venv/bin/python -m pytest"
)

# Where repo paths start; a backticked word starting like this must exist in the checkout.
PATH_ROOTS = (
    "minprot_ds/",
    "data_prep/",
    "launch/",
    "benchmarks/",
    "scripts/",
    "ds_configs/",
    "tests/",
    "docs/",
    ".ci/",
)
# Outputs, not sources: written by runs and benchmarks, git-ignored.
OUTPUT_PATHS = ("benchmarks/results/", "benchmarks/gpu/carry/")

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
INLINE_CODE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")


def prose(path: Path) -> str:
    """The page without its fenced code blocks (commands there name example inputs and outputs)."""
    out, fenced = [], False
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            out.append(line)
    return "\n".join(out)


def expand_braces(word: str) -> list[str]:
    """`cpu_zero{1,2,3}.json` -> the three names (shell brace expansion, one level per group)."""
    parts = re.split(r"\{([^{}]*,[^{}]*)\}", word)
    choices = [[p] if i % 2 == 0 else p.split(",") for i, p in enumerate(parts)]
    return ["".join(c) for c in itertools.product(*choices)]


def slug(heading: str) -> str:
    """GitHub's anchor for a markdown heading."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(line.lstrip("#")) for line in prose(path).splitlines() if line.startswith("#")}


def named_paths(path: Path) -> list[str]:
    words = []
    for span in INLINE_CODE.findall(prose(path)):
        words += [w.rstrip(".,;:)") for w in span.split() if w.startswith(PATH_ROOTS)]
    return words


def test_readme_is_short():
    lines = README.read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move a topic to docs/"


def test_map_of_the_code_is_near_the_top():
    lines = README.read_text().splitlines()
    hits = [i for i, line in enumerate(lines, 1) if "minprot_ds/distill/" in line]
    assert hits and hits[0] <= 60, (
        "the map of the code (a line naming minprot_ds/distill/) must be in the first 60 lines"
    )


def test_every_docs_page_is_linked_from_readme():
    assert DOCS, "docs/ has no pages"
    linked = {(README.parent / target.split("#")[0]).resolve() for target in LINK.findall(prose(README))}
    missing = [p.name for p in DOCS if p.resolve() not in linked]
    assert not missing, f"docs pages not linked from README.md: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_relative_links_resolve(page: Path):
    broken = []
    for target in LINK.findall(prose(page)):
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{page.name}: broken links {broken}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_backticked_repo_paths_exist(page: Path):
    missing = []
    for word in named_paths(page):
        if word.startswith(OUTPUT_PATHS):
            continue
        for name in expand_braces(word):
            found = glob.glob(str(REPO / name)) if any(c in name for c in "*?[") else (REPO / name).exists()
            if not found:
                missing.append(name)
    assert not missing, f"{page.name} names paths that do not exist: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_backticked_modules_exist(page: Path):
    """`minprot_ds.scoring.heads.load_task_model(...)`: the module, or the module plus one attribute."""
    missing = []
    for span in INLINE_CODE.findall(prose(page)):
        for name in re.findall(r"\b(?:minprot_ds|data_prep)(?:\.\w+)+", span):
            parts = name.split(".")
            candidates = [parts, parts[:-1]]
            if not any(
                REPO.joinpath(*c).with_suffix(".py").exists() or (REPO.joinpath(*c) / "__init__.py").exists()
                for c in candidates
                if len(c) >= 2
            ):
                missing.append(name)
    assert not missing, f"{page.name} names modules that do not exist: {missing}"


def test_the_two_commands_are_in_readme_and_ci_runs_the_test_command():
    readme = README.read_text()
    assert DEMO_COMMAND in readme.splitlines()
    assert TEST_COMMAND in readme.splitlines()
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if not line.lstrip().startswith("#")]
    readme_test_lines = [line for line in readme.splitlines() if "pytest" in line and "scripts/setup.sh" in line]
    for line in readme_test_lines:
        assert any(line in c for c in ci), f"README's test command is not what .ci/run runs: {line!r}"
