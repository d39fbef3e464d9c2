"""Every residue scored: CASP12 and CB513 through overlapping windows, counted against the CSV itself."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from data_prep.tasks import load_task_data
from minprot_ds.finetune.evaluate import score
from minprot_ds.finetune.tasks import collate, encode_split, task_spec, whole
from minprot_ds.scoring.heads import build_task_model

CPU = torch.device("cpu")


def labelled_residues_in_csv(path: Path) -> tuple[int, int]:
    """(residues, residues with a Q3 label that no mask column sets to 0), read with the csv module alone."""
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle, skipinitialspace=True))
    header = [h.strip() for h in rows[0]]
    masks = [header.index(m) for m in ("disorder", "cb513_mask") if m in header]
    total = labelled = 0
    for row in rows[1:]:
        tags = row[header.index("dssp3")].split()
        total += len(tags)
        labelled += sum(all(float(row[m].split()[i]) != 0.0 for m in masks) for i in range(len(tags)))
    return total, labelled


@pytest.fixture(scope="module")
def q3_model(teacher_dir: Path):
    spec = task_spec("q3")
    return build_task_model(str(teacher_dir), task="q3", classes=spec.classes, per_residue=True, seed=0).eval()


@pytest.mark.parametrize("name", ["CASP12", "CB513"])
def test_every_labelled_residue_is_scored(shared_data: Path, q3_model, name: str) -> None:
    path = shared_data / f"secondary_structure/{name}_HHblits.csv"
    total, labelled = labelled_residues_in_csv(path)
    spec = task_spec("q3")
    enc = encode_split(load_task_data(path, "q3"), spec)
    scored = score(q3_model, enc, spec, batch_size=32, device=CPU, window=512, stride=256)
    pred, cov = scored.predictions, scored.coverage
    assert len(pred) == cov["residues"] == cov["residues_scored"] == total  # one prediction per residue
    assert int((pred.labels != -100).sum()) == cov["labelled_residues_scored"] == cov["labelled_residues"] == labelled
    assert cov["residue_coverage"] == 1.0 and cov["sequences_longer_than_window"] > 0
    for rid, n in zip(enc.ids, enc.lengths):  # positions 1..n of each protein, once each
        mine = pred.positions[[i for i, r in enumerate(pred.ids) if r == rid]] if name == "CASP12" else None
        if mine is not None:
            assert mine.tolist() == list(range(1, n + 1))
    truncated = score(q3_model, enc, spec, batch_size=32, device=CPU, window=512, stride=256, long="truncate")
    lost = sum(max(0, n - 512) for n in enc.lengths)
    assert truncated.coverage["residues_scored"] == total - lost and truncated.coverage["residue_coverage"] < 1.0


def test_a_window_as_long_as_the_protein_is_the_single_pass(shared_data: Path, q3_model, teacher_dir: Path) -> None:
    spec = task_spec("q3")
    casp12 = load_task_data(shared_data / "secondary_structure/CASP12_HHblits.csv", "q3")
    enc = encode_split(casp12.select([12, 17, 1]), spec)  # 563, 76 and 106 residues
    longest = int(enc.lengths.max())
    scored = score(q3_model, enc, spec, batch_size=1, device=CPU, window=longest, stride=longest // 2)
    assert scored.coverage["windows"] == 3
    with torch.no_grad():
        single = [
            torch.softmax(
                q3_model(**{k: v for k, v in collate(enc, whole(enc, [i]), spec).items() if k != "labels"}).float(), -1
            )[0, 1:-1].numpy()
            for i in range(3)
        ]
    # Equal to float tolerance, not bitwise: the token budget may batch the short proteins together, padded.
    np.testing.assert_allclose(scored.predictions.probs, np.concatenate(single).astype(np.float64), atol=1e-6)
    # Short windows: still every residue once, and sequence-level tasks combine the windows' probabilities.
    windowed = score(q3_model, enc, spec, batch_size=4, device=CPU, window=128, stride=64)
    assert windowed.coverage["windows"] > 3 and len(windowed.predictions) == int(enc.lengths.sum())
    dna = task_spec("dna-binding")
    seq_model = build_task_model(str(teacher_dir), task=dna.name, classes=dna.classes, per_residue=False, seed=0).eval()
    enc2 = encode_split(casp12.select([12, 17]).map(lambda r: {"label": 1}), dna)
    probs = score(seq_model, enc2, dna, batch_size=4, device=CPU, window=128, stride=64).predictions.probs
    assert probs.shape == (2, 2) and np.allclose(probs.sum(1), 1.0)
