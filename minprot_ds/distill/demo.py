"""The embedded default job: a synthetic protein corpus, a tiny ProtBert-format teacher pre-trained
briefly by MLM (a random teacher would leave nothing to distil), then a 2-rank DeepSpeed distillation.

The corpus is made, not shipped: sequences drawn from a few dozen synthetic "families", each a
position-specific residue profile with mutations and indels, so masked residues are predictable from
context and a small model learns something in a minute of CPU time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from data_prep.corpus import prepare_corpus
from minprot_ds.distill.pretrain import pretrain_teacher
from minprot_ds.distributed import free_port
from minprot_ds.errors import UserError
from minprot_ds.models.masked_lm import save_random_protbert
from minprot_ds.vocab import STANDARD_RESIDUES

TEACHER_SHAPE = dict(num_layers=4, hidden_size=128, num_heads=4, intermediate_size=512)


def synthetic_fasta(path: Path, *, sequences: int = 3000, families: int = 8, seed: int = 0) -> Path:
    """Write protein-like sequences (60-300 aa), each from one of `families` first-order Markov chains.

    Transition rows are sparse (Dirichlet 0.05), so a masked residue is largely predictable from its
    neighbours and its family: a model of a few layers learns it within a few hundred steps.
    """
    rng = np.random.default_rng(seed)
    alphabet = np.frombuffer(STANDARD_RESIDUES[:20].encode(), dtype=np.uint8)
    chains = rng.dirichlet(np.full(20, 0.05), size=(families, 20)).cumsum(axis=2)
    with open(path, "w") as fh:
        for i in range(sequences):
            cum = chains[int(rng.integers(families))]
            length = int(rng.integers(60, 300))
            draws = rng.random(length)
            picks = np.empty(length, dtype=np.int64)
            picks[0] = rng.integers(20)
            for j in range(1, length):
                picks[j] = min(int(np.searchsorted(cum[picks[j - 1]], draws[j])), 19)
            seq = alphabet[picks].tobytes().decode()
            fh.write(f">SYN{i:06d} synthetic family sequence\n")
            for start in range(0, len(seq), 60):
                fh.write(seq[start : start + 60] + "\n")
    return path


def launcher_command(nprocs: int, script: Path, args: list[str]) -> list[str]:
    """The real deepspeed launcher of this environment, as `deepspeed --num_gpus N script args`."""
    launcher = Path(sys.executable).with_name("deepspeed")
    if not launcher.exists():
        found = shutil.which("deepspeed")
        if not found:
            raise UserError("the deepspeed launcher is not on PATH; install the package (pip install deepspeed).")
        launcher = Path(found)
    # Fixed loopback master port per run avoids clashes between concurrent jobs on one machine.
    return [str(launcher), "--num_gpus", str(nprocs), "--master_port", str(free_port()), str(script), *args]


def repo_file(relative: str) -> Path:
    """A file of the source checkout (launch scripts, configs): the demo runs from a checkout."""
    path = Path(__file__).resolve().parents[2] / relative
    if not path.exists():
        raise UserError(f"{relative} not found beside the package; run the demo from a source checkout of minprot-ds.")
    return path


def run_demo(
    run_root: Path,
    *,
    ranks: int = 2,
    teacher_steps: int = 200,
    distill_steps: int = 100,
    ds_config: str = "ds_configs/cpu_zero2.json",
    console=None,
) -> dict:
    """Make data, pre-train the teacher, distil on `ranks` CPU ranks; returns RUN/summary.json as a dict."""
    import json

    say = console.print if console else print
    run_root.mkdir(parents=True, exist_ok=True)
    fasta = synthetic_fasta(run_root / "synthetic.fasta")
    corpus = run_root / "corpus"
    prepare_corpus([fasta], corpus, valid_fraction=0.05, seed=0)
    say(f"corpus: {corpus}")
    teacher = run_root / "teacher"
    if not (teacher / "config.json").is_file():
        save_random_protbert(teacher, **TEACHER_SHAPE, seed=0)
        acc = pretrain_teacher(teacher, corpus, steps=teacher_steps, seed=0, max_tokens=2048, log=say)
        say(f"teacher: {teacher} (MLM accuracy on valid after pre-training: {acc:.3f})")
    distill_dir = run_root / "distill"
    args = [
        "--config",
        str(repo_file("launch/configs/demo.toml")),
        "--deepspeed_config",
        str(repo_file(ds_config)),
        "--run-dir",
        str(distill_dir),
        "--set",
        f'model.teacher="{teacher}"',
        "--set",
        f'data.corpus="{corpus}"',
        "--set",
        f"schedule.total_steps={distill_steps}",
    ]
    cmd = launcher_command(ranks, repo_file("launch/distill.py"), args)
    say("distilling: " + " ".join(cmd))
    proc = subprocess.run(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if proc.returncode != 0:
        raise UserError(f"the distillation exited with status {proc.returncode}; its log is above.")
    return json.loads((distill_dir / "summary.json").read_text())
