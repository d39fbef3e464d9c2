"""Rehearse run.sh on CPU in an environment shaped like the GPU machine's, so a GPU session finds no
missing package or broken install there. Needs PyPI (pins, wheels); run it from the project's venv:

    .venv/bin/python benchmarks/gpu/simulate.py [--sim-dir /tmp/minprot-gpu-sim]

What it builds in --sim-dir:
- venv/: a virtual environment WITHOUT this project's packages; it sees only the distributions of the GPU
  image (image_packages.txt), linked read-only from this venv, so DeepSpeed, datasets, MLflow, biopython
  and everything else the image lacks cannot be imported, as there;
- transformers, huggingface_hub and tokenizers at the image's versions (KINDS.md's pip list) instead of
  this venv's, where PyPI has them for this interpreter;
- carry311/: build_carry.py's folder for this interpreter (the GPU's is for CPython 3.12).
Then it checks that the real carried folder (benchmarks/gpu/carry, CPython 3.12) installs offline into a
target folder under a CPython 3.12 interpreter and imports there (the parts that need no torch), and runs
`run.sh --dry-run` in the rehearsal environment with carry311: install offline, then every step.

What stays different from the GPU machine (and so is checked only there): Python 3.11 instead of 3.12,
this venv's torch (CPU) and Triton instead of torch 2.11 + CUDA 13 and Triton 3.6, numpy 2.4 (2.5 has no
3.11 build), no GPU: the kernels are interpreted, fp16 runs as fp32, compiled settings are not timed.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

from packaging.requirements import Requirement

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_carry import DEFAULT_OUT, HERE, REPO, image_versions, normalize  # noqa: E402

PINNED = ("transformers", "huggingface-hub", "tokenizers")  # pure Python or abi3: installable for any 3.x
# must not import before the install (minprot_ds: PYTHONPATH)
ABSENT = ("deepspeed", "datasets", "mlflow", "Bio", "minprot_ds")
PY312 = Path.home() / ".pyenv" / "versions" / "3.12.1" / "bin" / "python3.12"


def link_image(image: Path, skip: set[str]) -> list[str]:
    """Symlink the top-level entries of every installed distribution the image has (except `skip`) into
    `image`; returns their names. The first distribution of a name on sys.path wins, as imports do."""
    wanted = set(image_versions()) - skip
    linked, seen = [], set()
    image.mkdir(parents=True)
    for dist in md.distributions():
        name = normalize(dist.metadata["Name"] or "")
        if name not in wanted or name in seen:
            continue
        seen.add(name)
        base = Path(dist.locate_file(""))
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in sorted(tops):
            src, dst = base / top, image / top
            if src.exists() and not dst.exists():
                dst.symlink_to(src)
        linked.append(f"{name} {dist.version}")
    return linked


def fill_missing(pins: Path, image: set[str]) -> list[str]:
    """Install into `pins` what the pinned distributions require that the image has but this venv lacks
    (hub 1.33 needs httpx, which this venv's newer hub replaced): the rehearsal must not miss what the
    image holds. Returns the requirements added."""
    env = {"extra": ""}
    added: list[str] = []
    while True:
        dists = list(md.distributions(path=[str(pins)]))
        have = {normalize(d.metadata["Name"]) for d in dists}
        need = set()
        for dist in dists:
            for text in dist.requires or []:
                req = Requirement(text)
                name = normalize(req.name)
                if (req.marker and not req.marker.evaluate(env)) or name in have or name not in image:
                    continue
                try:
                    md.distribution(name)
                except md.PackageNotFoundError:
                    need.add(f"{name}{req.specifier}")
        if not need:
            return added
        run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--only-binary=:all:",
                "--upgrade",
                "--target",
                pins,
                *sorted(need),
            ]
        )
        added += sorted(need)


def run(cmd: list, **kw) -> subprocess.CompletedProcess:
    print("+", " ".join(map(str, cmd)), flush=True)
    return subprocess.run([str(c) for c in cmd], check=True, **kw)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sim-dir", type=Path, default=Path("/tmp/minprot-gpu-sim"))
    parser.add_argument("--carry", type=Path, default=DEFAULT_OUT, help="the GPU's carried folder (CPython 3.12)")
    args, passthrough = parser.parse_known_args(argv)
    sim = args.sim_dir.resolve()
    # DeepSpeed's CPU op, JIT-built once (minutes on a small machine), survives a rebuild of the rest.
    extensions = sim.parent / f"{sim.name}-torch-extensions"
    if sim.exists():
        shutil.rmtree(sim)
    sim.mkdir(parents=True)

    # 1. The image's packages, nothing else. They live outside the venv's prefix, so pip in it never
    #    uninstalls through the links.
    versions = image_versions()
    pins = sim / "pins"
    pinned = []
    for name in PINNED:
        try:
            run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--no-deps",
                    "--only-binary=:all:",
                    "--upgrade",
                    "--target",
                    pins,
                    f"{name}=={versions[name]}",
                ]
            )
            pinned.append(name)
        except subprocess.CalledProcessError:
            print(f"note: {name}=={versions[name]} is not on PyPI for this interpreter; the rehearsal uses this venv's")
    added = fill_missing(pins, set(versions)) if pinned else []
    linked = link_image(sim / "image", skip=set(pinned))
    venv.EnvBuilder(with_pip=False, symlinks=True).create(sim / "venv")
    sim_python = sim / "venv" / "bin" / "python"
    purelib = subprocess.run(
        [sim_python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(purelib) / "gpu_image.pth").write_text(f"{pins}\nimport site; site.addsitedir({str(sim / 'image')!r})\n")
    print(
        f"rehearsal environment: {len(linked)} distributions of the image linked, pinned: "
        f"{', '.join(f'{n}=={versions[n]}' for n in pinned) or 'none'}; what they need from the image and this venv "
        f"lacks: {', '.join(added) or 'nothing'}"
    )
    probe = (
        "import importlib.util as u, sys; bad = [m for m in sys.argv[1:] if u.find_spec(m)]; "
        "print('importable:', bad); sys.exit(bool(bad))"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    run([sim_python, "-c", probe, *ABSENT], env=env, cwd="/")

    # 2. The GPU's carried folder: offline install into a target folder under CPython 3.12, and imports.
    wheels = sorted((args.carry / "wheels").glob("*.whl"))
    if not wheels:
        print(f"no wheels in {args.carry / 'wheels'}: run benchmarks/gpu/build_carry.py first", file=sys.stderr)
        return 1
    if PY312.is_file():
        target = sim / "site312"
        run(
            [
                PY312,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-index",
                "--no-deps",
                "--no-compile",
                "--no-cache-dir",
                "--target",
                target,
                *wheels,
            ]
        )
        run(
            [
                PY312,
                "-c",
                "import pydantic, pydantic_core, hjson, dill, multiprocess, annotated_types, typing_inspection; "
                "print('CPython 3.12 imports the carried pydantic', pydantic.VERSION)",
            ],
            env={**env, "PYTHONPATH": str(target)},
        )
    else:
        print(f"note: no CPython 3.12 at {PY312}; the 3.12 wheels were not installed here")

    # 3. This interpreter's carried folder, and the dry run in the rehearsal environment.
    run(
        [
            sys.executable,
            HERE / "build_carry.py",
            "--python-version",
            f"{sys.version_info.major}.{sys.version_info.minor}",
            "--out",
            sim / "carry311",
        ]
    )
    out = sim / "out"
    run(
        ["bash", HERE / "run.sh", "--dry-run", "--carry", sim / "carry311", "--scratch", sim / "scratch", *passthrough],
        env={**env, "PYTHON": str(sim_python), "OUT": str(out), "TORCH_EXTENSIONS_DIR": str(extensions)},
        cwd=REPO,
    )
    print(f"rehearsal done: {out}/gpu_run.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
