"""Tiny random ProtBert- and ESM-2-format models, fine-tuned-model folders and FASTA files (predict/embed tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from minprot_ds.models.masked_lm import save_random_protbert

TINY = dict(num_layers=2, hidden_size=32, num_heads=4, intermediate_size=64)
RESIDUES = list("LAGVESIKRDTPNQFYMHCW")


def random_sequences(n: int, low: int, high: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(RESIDUES, int(rng.integers(low, high)))) for _ in range(n)]


def write_fasta(path: Path, records: list[tuple[str, str]]) -> Path:
    path.write_text("".join(f">{title}\n{seq}\n" for title, seq in records))
    return path


@pytest.fixture(name="random_sequences", scope="session")
def _random_sequences():
    return random_sequences


@pytest.fixture(name="write_fasta", scope="session")
def _write_fasta():
    return write_fasta


@pytest.fixture(scope="session")
def encoder_dir(tmp_path_factory) -> Path:
    return save_random_protbert(tmp_path_factory.mktemp("encoder") / "model", seed=0, **TINY)


@pytest.fixture(scope="session")
def esm_encoder_dir(tmp_path_factory) -> Path:
    """A tiny random ESM-2 model (EsmForMaskedLM with EsmTokenizer's files), as an ESM-2 teacher or student is."""
    from minprot_ds.models.masked_lm import save_random_esm2

    return save_random_esm2(tmp_path_factory.mktemp("esm_encoder") / "model", seed=0, **TINY)


def save_task_model(encoder: Path, task: str, folder: Path, seed: int = 0, pooling: str = "cls") -> Path:
    """A fine-tuned model folder as `minprot finetune` saves it (untrained head, so the test needs no training)."""
    from minprot_ds.finetune.tasks import task_spec
    from minprot_ds.scoring.heads import build_task_model
    from minprot_ds.scoring.heads import save_task_model as save

    spec = task_spec(task)
    model = build_task_model(
        str(encoder), task=task, classes=spec.classes, per_residue=spec.per_residue, seed=seed, pooling=pooling
    )
    with torch.no_grad():  # a head with some spread, so probabilities differ visibly between proteins
        model.head.weight.mul_(100.0)
    save(model, folder, rank=0)
    return folder


@pytest.fixture(scope="session")
def dna_model(encoder_dir, tmp_path_factory) -> Path:
    return save_task_model(encoder_dir, "dna-binding", tmp_path_factory.mktemp("dna") / "model")


@pytest.fixture(scope="session")
def q3_model(encoder_dir, tmp_path_factory) -> Path:
    return save_task_model(encoder_dir, "q3", tmp_path_factory.mktemp("q3") / "model")


@pytest.fixture(scope="session")
def proteome(tmp_path_factory) -> Path:
    """24 proteins of 20-1000 residues (some need windows), a duplicate sequence, a bad letter, an empty record,
    lower case, a trailing '*' and a U."""
    seqs = random_sequences(24, 20, 1000, seed=3)
    records = [(f"prot{i} protein number {i}", s) for i, s in enumerate(seqs)]
    records.insert(5, ("same_as_2 a copy of prot2", seqs[2]))
    records.insert(9, ("bad_letters has a J", "MKTJAYIAKQR"))
    records.insert(12, ("empty no sequence", ""))
    records.append(("lower lower case with a stop", seqs[0][:50].lower() + "*"))
    records.append(("selenocysteine has a U", "MKUAL" + seqs[1][:40]))
    return write_fasta(tmp_path_factory.mktemp("fasta") / "proteome.fasta", records)
