"""The pieces under the job: token ids and label alignment, truncation, length-bucketed batches, model loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from transformers import BertTokenizer

from data_prep.tasks import load_task_data
from minprot_ds.errors import UserError
from minprot_ds.finetune.tasks import collate, crop_pieces, encode_split, sample_rows, task_spec, train_batches, whole
from minprot_ds.scoring.heads import build_task_model
from minprot_ds.vocab import CLS_ID, PAD_ID, SEP_ID


def test_q3_labels_sit_under_their_residues(shared_data: Path, teacher_dir: Path) -> None:
    casp12 = load_task_data(shared_data / "secondary_structure/CASP12_HHblits.csv", "q3").select([17, 1])
    spec = task_spec("q3")
    enc = encode_split(casp12, spec)
    batch = collate(enc, whole(enc, [0, 1]), spec)
    short, long_ = len(casp12[0]["sequence"]), len(casp12[1]["sequence"])  # 76 and 106 residues
    ids, labels = batch["input_ids"].numpy(), batch["labels"].numpy()
    assert ids.shape == (2, long_ + 2) and ids[0, 0] == CLS_ID and ids[0, short + 1] == SEP_ID
    assert (ids[0, short + 2 :] == PAD_ID).all() and batch["attention_mask"][0].sum() == short + 2
    assert labels[0, 1 : short + 1].tolist() == casp12[0]["labels"]
    assert (labels[0, [0, short + 1]] == -100).all() and (labels[0, short + 2 :] == -100).all()
    # The byte table gives the ids ProtBert's own tokenizer gives on space-separated residues.
    tokenizer = BertTokenizer.from_pretrained(teacher_dir)
    assert ids[1].tolist() == tokenizer(" ".join(casp12[1]["sequence"]))["input_ids"]


def test_training_crops_long_sequences_at_a_seeded_offset_per_epoch(shared_data: Path) -> None:
    pdb = load_task_data(shared_data / "dna_binding/pdb1075_pdb186/independent_test_dataset_PDB186.txt", "dna-binding")
    longest = int(np.argmax([len(s) for s in pdb["sequence"]]))
    spec = task_spec("dna-binding")
    enc = encode_split(pdb.select([longest, 0]), spec)
    n = len(pdb[longest]["sequence"])
    assert n > 512 and enc.longer_than(512) == 1 and len(enc.tokens[0]) == n  # kept whole, cropped per batch
    starts = {crop_pieces(enc.lengths, [0], 512, seed=0, epoch=e, random=True)[0][1] for e in range(6)}
    assert len(starts) > 1 and all(0 <= s <= n - 512 for s in starts)
    assert crop_pieces(enc.lengths, [0, 1], 512, 0, 3, True) == crop_pieces(enc.lengths, [0, 1], 512, 0, 3, True)
    assert crop_pieces(enc.lengths, [0], 512, 0, 3, random=False) == [(0, 0, 512)]  # --long truncate
    assert crop_pieces(enc.lengths, [1], 512, 0, 3, True) == [(1, 0, len(enc.tokens[1]))]  # short ones whole
    piece = crop_pieces(enc.lengths, [0], 512, seed=0, epoch=1, random=True)
    batch = collate(enc, piece, spec)
    start = piece[0][1]
    assert batch["input_ids"].shape == (1, 514) and batch["labels"].tolist() == [pdb[longest]["label"]]
    assert batch["input_ids"][0, 1:513].tolist() == enc.tokens[0][start : start + 512].tolist()


def test_capped_pdb14189_sample_is_stratified_and_seeded(shared_data: Path) -> None:
    pdb = load_task_data(shared_data / "dna_binding/pdb14189", "dna-binding")
    labels = pdb["label"]
    assert set(labels[:200]) == {0}  # the _N file is read first: the first N rows hold one class
    rows = sample_rows(labels, 200, seed=0, per_residue=False)
    picked = np.asarray(labels)[rows]
    assert len(rows) == 200 == len(set(rows)) and set(picked) == {0, 1}
    assert abs(picked.mean() - np.mean(labels)) < 0.01  # the set's positive rate
    assert rows == sample_rows(labels, 200, seed=0, per_residue=False) != sample_rows(labels, 200, 1, False)
    assert set(np.asarray(labels)[sample_rows(labels, 2, 0, False)]) == {0, 1}  # every class, however small the cap
    assert sample_rows(labels, None, 0, False) == list(range(len(labels)))


def test_train_batches_cover_each_row_once_and_follow_the_seed() -> None:
    lengths = np.random.default_rng(0).integers(20, 500, size=203)
    batches = train_batches(lengths, 8, seed=3, epoch=0)
    assert sorted(i for b in batches for i in b) == list(range(203))
    assert batches == train_batches(lengths, 8, seed=3, epoch=0) != train_batches(lengths, 8, seed=3, epoch=1)
    padded = sum(max(lengths[b]) * len(b) for b in batches)
    naive = sum(max(lengths[b]) * len(b) for b in np.array_split(np.random.default_rng(1).permutation(203), 26))
    assert padded < 0.7 * naive  # bucketing by length removes most padding


def load_model(path: str, spec, seed: int = 0, pooling: str = "cls"):
    return build_task_model(
        path, task=spec.name, classes=spec.classes, per_residue=spec.per_residue, seed=seed, pooling=pooling
    )


def test_model_gets_a_fresh_head_per_task(teacher_dir: Path) -> None:
    seq = load_model(str(teacher_dir), task_spec("membrane"))
    tok = load_model(str(teacher_dir), task_spec("q3"))
    assert seq.head.out_features == 2 and tok.head.out_features == 3 and tok.info.classes == ["H", "E", "C"]
    assert not hasattr(seq.encoder, "pooler") or seq.encoder.pooler is None  # the head reads [CLS] directly
    assert all(p.requires_grad for p in tok.parameters())


def test_model_path_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"--model .*nowhere does not exist; pass a folder holding config.json"):
        load_model(str(tmp_path / "nowhere"), task_spec("q3"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"--model .*empty has no config.json"):
        load_model(str(tmp_path / "empty"), task_spec("q3"))
    with pytest.raises(UserError, match=r"unknown --task 'ss8'; choose one of: dna-binding, membrane, q3"):
        task_spec("ss8")


def test_max_eval_samples_draws_one_test_subset_whatever_the_seed(sets, teacher_dir: Path, tmp_path: Path) -> None:
    from minprot_ds.finetune.options import FinetuneConfig
    from minprot_ds.finetune.train import load

    def job(seed: int):
        return load(
            FinetuneConfig(
                task="dna-binding",
                model=str(teacher_dir),
                train=sets["dna_train"],
                valid=sets["dna_valid"],
                test=sets["dna_test"],
                out=tmp_path / f"s{seed}",
                seed=seed,
                max_train_samples=8,
                max_eval_samples=6,
                leakage=False,
            )
        )

    a, b = job(0), job(1)
    assert len(a.test) == 6 and a.test.ids == b.test.ids and a.valid.ids == b.valid.ids
    assert a.train.ids != b.train.ids  # the training sample still follows the seed
