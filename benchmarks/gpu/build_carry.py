"""Rebuild benchmarks/gpu/carry/ (git-ignored), what run.sh needs on the GPU machine beyond its image.

The GPU machines are offline and their image (image_packages.txt) lacks DeepSpeed and `datasets`, which
the throughput and profile steps import. This script carries them as wheels, plus every distribution in
their dependency closure that the image lacks, each at the version installed in THIS environment (the
versions the project's tests ran with). DeepSpeed ships only a source distribution: its wheel is built
here with `pip wheel --no-deps --no-build-isolation` (pure Python; its CUDA ops JIT-build at run time if
a step needs one). Binary wheels are fetched for the GPU machine's interpreter (CPython 3.12, x86-64
manylinux). It also copies ../shared's UniRef50-like length sample (the throughput benchmark's lengths),
since ../shared does not travel with the working tree. Needs PyPI; run it from the project's venv:

    .venv/bin/python benchmarks/gpu/build_carry.py                     # -> benchmarks/gpu/carry/
    .venv/bin/python benchmarks/gpu/build_carry.py --python-version 3.11 --out /tmp/carry311   # for simulate.sh

The total must stay under the device tool's 64 MiB for the working tree and carried paths together;
the script prints the sizes and refuses to finish above that.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DEFAULT_OUT = HERE / "carry"
ROOTS = ("deepspeed", "datasets")  # what the steps import that the image lacks (mlflow, biopython: not needed)
# Image packages carried anyway, because a carried one needs a version the image may not have:
ALSO = {
    "typing-extensions": "pydantic and pydantic-core need typing_extensions >= 4.16 (Sentinel); KINDS.md gives "
    "no version for the image's"
}
LENGTHS = REPO.parent / "shared" / "data" / "lengths" / "uniref50_like_lengths.txt"
LIMIT_BYTES = 64 * 2**20  # the device tool's limit on the working tree plus carried paths
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def image_packages(path: Path = HERE / "image_packages.txt") -> set[str]:
    return set(image_versions(path))


def image_versions(path: Path = HERE / "image_packages.txt") -> dict[str, str | None]:
    """{distribution: version on the image, or None where KINDS.md gives none}."""
    found = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.strip().partition("==")
            found[normalize(name)] = version or None
    return found


def closure(
    roots: tuple[str, ...], provided: set[str], python_version: str, assumed: list[str] | None = None
) -> dict[str, str]:
    """{distribution: installed version} of the roots and their requirements (markers evaluated for Linux
    x86-64 and `python_version`, extras left out), stopping at distributions the image provides; the
    requirements left to the image are appended to `assumed` ("datasets needs pyarrow>=24.0.0")."""
    env = default_environment()
    env.update(
        python_version=python_version,
        python_full_version=f"{python_version}.0",
        sys_platform="linux",
        platform_system="Linux",
        platform_machine="x86_64",
        implementation_name="cpython",
    )
    found: dict[str, str] = {}
    todo = list(roots)
    while todo:
        name = normalize(todo.pop())
        if name in found or name in provided:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            raise SystemExit(
                f"{name} is not installed in {sys.prefix}; run this script with the project's venv "
                "(.venv/bin/python), where scripts/setup.sh installed it"
            ) from None
        found[name] = dist.version
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({**env, "extra": ""}):
                todo.append(req.name)
                if normalize(req.name) in provided and assumed is not None:
                    assumed.append(f"{name} needs {normalize(req.name)}{req.specifier}")
    return found


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True)


def build_deepspeed(version: str, wheels: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        pip("download", "--quiet", "--no-deps", "--no-binary=:all:", "-d", tmp, f"deepspeed=={version}")
        sdist = next(Path(tmp).glob("deepspeed-*.tar.gz"))
        # No build isolation: DeepSpeed's setup.py imports torch, and an isolated build would fetch one (GBs).
        # DS_BUILD_OPS=0: no op is compiled ahead; the wheel is pure Python.
        env = {**os.environ, "DS_BUILD_OPS": "0"}
        if not _has_bdist_wheel():  # setuptools < 70.1 without the `wheel` package (e.g. a venv's bundled 65)
            tools = Path(tmp) / "build-tools"
            pip("install", "--quiet", "--target", str(tools), "setuptools>=70.1")
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tools), env.get("PYTHONPATH")]))
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--quiet",
                "--no-deps",
                "--no-build-isolation",
                "-w",
                str(wheels),
                str(sdist),
            ],
            check=True,
            env=env,
        )


def _has_bdist_wheel() -> bool:
    import setuptools
    from packaging.version import Version

    return Version(setuptools.__version__) >= Version("70.1") or importlib.util.find_spec("wheel") is not None


def download(name: str, version: str, wheels: Path, python_version: str) -> None:
    plat = [a for p in PLATFORMS for a in ("--platform", p)]
    pip(
        "download",
        "--quiet",
        "--no-deps",
        "--only-binary=:all:",
        "--implementation",
        "cp",
        "--python-version",
        python_version,
        *plat,
        "-d",
        str(wheels),
        f"{name}=={version}",
    )


def tree_bytes() -> int:
    """Bytes of what the device tool sends besides carried paths: tracked and untracked-not-ignored files."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    return sum((REPO / f.decode()).stat().st_size for f in files if f and (REPO / f.decode()).is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="folder to (re)build (default benchmarks/gpu/carry)"
    )
    parser.add_argument("--python-version", default="3.12", help="the target interpreter (GPU image: 3.12)")
    args = parser.parse_args(argv)

    assumed: list[str] = []
    carried = closure(ROOTS, image_packages() - set(ALSO), args.python_version, assumed)
    carried.update(closure(tuple(ALSO), set(), args.python_version))
    if args.out.exists():
        shutil.rmtree(args.out)
    wheels = args.out / "wheels"
    wheels.mkdir(parents=True)
    for name, version in sorted(carried.items()):
        print(f"carry {name}=={version}", flush=True)
        if name == "deepspeed":
            build_deepspeed(version, wheels)
        else:
            download(name, version, wheels, args.python_version)
    if LENGTHS.is_file():
        shutil.copy(LENGTHS, args.out / LENGTHS.name)
    else:
        print(f"note: {LENGTHS} is absent; the throughput steps will draw log-normal lengths")

    files = sorted(p for p in args.out.rglob("*") if p.is_file())
    versions = image_versions()
    print("left to the image (its version, where KINDS.md gives one):")
    for line in sorted(set(assumed)):
        need = Requirement(line.split(" needs ")[1])
        print(f"  {line}   [image: {versions.get(need.name) or 'version unknown'}]")
    manifest = {
        "python_version": args.python_version,
        "left_to_the_image": sorted(set(assumed)),
        "built_with": {"python": platform.python_version(), "torch": _version("torch")},
        "distributions": carried,
        "files": {str(p.relative_to(args.out)): p.stat().st_size for p in files},
    }
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    carry_bytes = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    tree = tree_bytes()
    for p in files:
        print(f"{p.stat().st_size / 2**20:8.2f} MiB  {p.relative_to(REPO) if p.is_relative_to(REPO) else p}")
    print(
        f"carried: {carry_bytes / 2**20:.2f} MiB; working tree: {tree / 2**20:.2f} MiB; "
        f"together {(carry_bytes + tree) / 2**20:.2f} of {LIMIT_BYTES / 2**20:.0f} MiB"
    )
    if carry_bytes + tree > LIMIT_BYTES:
        print("too large for the device tool: carry less, or make the steps need less", file=sys.stderr)
        return 1
    return 0


def _version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
