"""One code path: `minprot predict` on a fine-tune's labelled test set gives the probabilities in its
predictions.tsv, long proteins (scored by windows in both, combined by the fine-tune's --aggregate) included."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from minprot_ds.finetune.options import FinetuneConfig
from minprot_ds.finetune.train import run as finetune
from minprot_ds.inference.job import run as predict
from minprot_ds.inference.options import PredictOptions


def _tsv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, random_sequences, write_fasta) -> dict[str, Path]:
    """Train/test sets for dna-binding (labelled TSV) and q3 (NetSurfP CSV); each test set has proteins > 512."""
    root = tmp_path_factory.mktemp("labelled")
    rng = np.random.default_rng(4)
    seqs = random_sequences(12, 30, 120, seed=11) + random_sequences(4, 520, 900, seed=12)
    train, test = seqs[:8], seqs[8:]
    out = {}
    for name, part in (("train", train), ("test", test)):
        rows = [f"{name}{i}\t{s}\t{i % 2}" for i, s in enumerate(part)]
        (root / f"dna_{name}.tsv").write_text("id\tsequence\tlabel\n" + "\n".join(rows) + "\n")
        lines = [f"{name}{i},{' '.join(s)},{' '.join(rng.choice(list('HEC'), len(s)))}" for i, s in enumerate(part)]
        (root / f"q3_{name}.csv").write_text("id,input,dssp3\n" + "\n".join(lines) + "\n")
        out[f"dna_{name}"], out[f"q3_{name}"] = root / f"dna_{name}.tsv", root / f"q3_{name}.csv"
    out["fasta"] = write_fasta(root / "test.fasta", [(f"test{i}", s) for i, s in enumerate(test)])
    out["root"] = root
    return out


@pytest.mark.parametrize(
    "task,suffix,aggregate,family",
    [
        ("dna-binding", ".tsv", "mean", "bert"),
        ("dna-binding", ".tsv", "max", "bert"),
        ("q3", ".parquet", "mean", "bert"),
        ("dna-binding", ".tsv", "mean", "esm"),
    ],
)
def test_predict_on_the_test_set_gives_the_finetune_probabilities(
    task, suffix, aggregate, family, labelled, request, tmp_path
):
    """--aggregate max reaches predict through the model folder (predict has no such flag). For ESM-2 (<cls> head,
    ESM-2's ids) the window is set below the long proteins' lengths (its default, 1,022, would cover them whole),
    so windows are stitched there too."""
    key = "dna" if task == "dna-binding" else "q3"
    encoder_dir = request.getfixturevalue("esm_encoder_dir" if family == "esm" else "encoder_dir")
    window = dict(window=400, stride=200) if family == "esm" else {}
    ft = tmp_path / "ft"
    finetune(
        FinetuneConfig(
            task=task,
            model=str(encoder_dir),
            **window,
            train=labelled[f"{key}_train"],
            test=labelled[f"{key}_test"],
            out=ft,
            epochs=1,
            batch_size=4,
            lr=1e-3,
            aggregate=aggregate,
            tracking=False,
        )
    )
    expected = _tsv(ft / "predictions.tsv")
    out = tmp_path / f"pred{suffix}"
    predict(PredictOptions(model=ft / "model", fasta=labelled["fasta"], out=out, max_tokens=1500, progress=False))
    if task == "dna-binding":
        got = _tsv(out)
        assert [r["id"] for r in got] == [r["id"] for r in expected]
        assert max(int(r["windows"]) for r in got) > 1  # the long test proteins went through windows
        np.testing.assert_allclose(
            [float(r["probability"]) for r in got], [float(r["score"]) for r in expected], rtol=1e-5, atol=1e-6
        )
        return
    table = pq.read_table(out).to_pylist()
    assert sum(len(r["sequence"]) for r in table) == len(expected)  # every residue, none cut at 512
    got = np.concatenate([np.stack([r["prob_H"], r["prob_E"], r["prob_C"]], axis=1) for r in table])
    want = np.array([[float(r[f"p_{c}"]) for c in "HEC"] for r in expected])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
