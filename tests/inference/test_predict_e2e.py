"""Real processes: `deepspeed --num_gpus 2 launch/predict.py` on 2 CPU ranks equals a one-process run, and a
run killed mid-way (SIGKILL, no chance to clean up) resumed by rerunning equals an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from minprot_ds.inference.job import run
from minprot_ds.inference.options import EmbedOptions, PredictOptions
from minprot_ds.inference.parts import parts_dir
from minprot_ds.models.masked_lm import save_random_protbert

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def _run(cmd: list[str], timeout: float = 900) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError(f"{cmd} did not finish in {timeout} s:\n{out[-3000:]}") from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out)


def _tsv(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines()]


def test_two_ranks_under_the_deepspeed_launcher_equal_one_process(dna_model, proteome, tmp_path):
    one = tmp_path / "one.tsv"
    run(PredictOptions(model=dna_model, fasta=proteome, out=one, chunk_records=4, progress=False))
    two = tmp_path / "two.tsv"
    result = _run(
        [
            str(BIN / "deepspeed"),
            "--num_gpus",
            "2",
            "launch/predict.py",
            "--model",
            str(dna_model),
            "--fasta",
            str(proteome),
            "--out",
            str(two),
            "--chunk-records",
            "4",
        ]
    )
    assert result.returncode == 0, result.stdout[-4000:]
    assert "2 ranks" in result.stdout
    a, b = _tsv(one), _tsv(two)
    assert [r[:3] + r[4:] for r in a] == [r[:3] + r[4:] for r in b]  # ids, descriptions, lengths, labels, windows
    # a failed record keeps its row with an empty probability (and its reason in `status`)
    assert [r[3] == "" for r in a[1:]] == [r[3] == "" for r in b[1:]]
    scored_a, scored_b = ([float(r[3]) for r in t[1:] if r[3]] for t in (a, b))
    np.testing.assert_allclose(scored_a, scored_b, rtol=1e-5, atol=1e-7)
    assert (tmp_path / "one.tsv.failures.tsv").read_text() == (tmp_path / "two.tsv.failures.tsv").read_text()


def test_a_killed_run_resumed_equals_an_uninterrupted_one(tmp_path, random_sequences, write_fasta):
    # A model big enough that the run takes seconds, so the kill lands between its first and last chunk.
    model = save_random_protbert(
        tmp_path / "model", num_layers=3, hidden_size=64, num_heads=4, intermediate_size=256, seed=2
    )
    seqs = random_sequences(80, 150, 350, seed=21)
    fasta = write_fasta(tmp_path / "in.fasta", [(f"p{i}", s) for i, s in enumerate(seqs)])
    out = tmp_path / "killed.h5"
    parts = parts_dir(out)
    chunks = 20
    proc = subprocess.Popen(
        [
            sys.executable,
            "launch/predict.py",
            "embed",
            "--model",
            str(model),
            "--fasta",
            str(fasta),
            "--out",
            str(out),
            "--chunk-records",
            "4",
        ],
        cwd=REPO,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while not (parts / "chunk-000000.npz").exists() and proc.poll() is None:
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done = len(list(parts.glob("chunk-*.npz")))
    assert 0 < done < chunks and not out.exists(), f"the kill landed after {done} of {chunks} chunks"

    resumed = run(EmbedOptions(model=model, fasta=fasta, out=out, chunk_records=4, progress=False))
    assert resumed.computed_chunks == chunks - done
    whole = tmp_path / "whole.h5"
    run(EmbedOptions(model=model, fasta=fasta, out=whole, chunk_records=4, progress=False))
    with h5py.File(out) as a, h5py.File(whole) as b:
        assert list(a) == list(b) == [f"p{i}" for i in range(80)]
        for k in a:
            np.testing.assert_allclose(a[k][()], b[k][()], rtol=1e-6, atol=1e-6)
