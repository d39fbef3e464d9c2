"""Our token ids are ProtBert's: checked against transformers' BertTokenizer on the reference vocab.txt."""

from __future__ import annotations

import random

import numpy as np
import transformers
from transformers import BertTokenizer

from minprot_ds import vocab


def reference_entries(shared_reference) -> list[str]:
    # The reference file ends with an empty line: 30 entries, not 31.
    lines = (shared_reference / "prot_bert" / "vocab.txt").read_text().split("\n")
    return [line for line in lines if line]


def reference_tokenizer(shared_reference) -> BertTokenizer:
    path = str(shared_reference / "prot_bert" / "vocab.txt")
    # transformers 5 takes `vocab=` and silently ignores `vocab_file=` (leaving only the 5 special tokens).
    if int(transformers.__version__.split(".")[0]) >= 5:
        tokenizer = BertTokenizer(vocab=path, do_lower_case=False)
    else:
        tokenizer = BertTokenizer(vocab_file=path, do_lower_case=False)
    assert tokenizer.convert_tokens_to_ids("O") == 29  # the vocabulary really was loaded
    return tokenizer


def test_token_table_equals_reference_vocab(shared_reference):
    assert list(vocab.TOKENS) == reference_entries(shared_reference)
    assert vocab.VOCAB_SIZE == 30


def test_encode_equals_bert_tokenizer_on_random_sequences(shared_reference):
    tokenizer = reference_tokenizer(shared_reference)
    rng = random.Random(0)
    letters = vocab.RESIDUE_TOKENS  # all 25, rare U, B, Z, O and X included
    for i in range(300):
        weights = [1.0] * 20 + [3.0] * 5 if i % 2 else None  # every other sequence rich in rare letters
        seq = "".join(rng.choices(letters, weights=weights, k=rng.randint(1, 600)))
        expected = tokenizer(" ".join(seq), add_special_tokens=False)["input_ids"]
        ours = vocab.encode(seq)
        assert ours.dtype == np.uint8
        assert ours.tolist() == expected, seq
    with_specials = tokenizer(" ".join("MKUBZOX"))["input_ids"]
    assert with_specials == [vocab.CLS_ID, *vocab.encode("MKUBZOX").tolist(), vocab.SEP_ID]


def test_write_vocab_equals_reference(shared_reference, tmp_path):
    written = vocab.write_vocab(tmp_path)
    assert [line for line in written.read_text().split("\n") if line] == reference_entries(shared_reference)
    assert written.read_text().splitlines() == reference_entries(shared_reference)
    reloaded = (
        BertTokenizer(vocab=str(written), do_lower_case=False)
        if int(transformers.__version__.split(".")[0]) >= 5
        else BertTokenizer(vocab_file=str(written), do_lower_case=False)
    )
    assert reloaded(" ".join("LAGVO"), add_special_tokens=False)["input_ids"] == vocab.encode("LAGVO").tolist()


def test_rare_residues_read_as_x_on_letters_and_ids():
    seq = "MKUZOBXAcuz"
    assert vocab.rare_to_x(seq) == "MKXXXXXAcuz"  # upper case only: callers upper-case first
    assert vocab.rare_ids_to_x(vocab.encode(seq)).tolist() == vocab.encode("MKXXXXXAcXX").tolist()
    assert vocab.rare_ids_to_x(vocab.encode("MJ"))[1] == vocab.INVALID
