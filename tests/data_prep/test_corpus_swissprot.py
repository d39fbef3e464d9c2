"""`prepare` on the real Swiss-Prot sample (UniProt flat files turned into FASTA with biopython)."""

from __future__ import annotations

import datasets
from Bio import SeqIO

from data_prep.corpus import prepare_corpus
from minprot_ds.data.shards import ShardedCorpus
from minprot_ds.vocab import decode


def test_swissprot_sample_prepares_with_the_expected_rows(shared_data, tmp_path):
    records = []
    for dat in sorted((shared_data / "swissprot").glob("*.dat")):
        records += list(SeqIO.parse(dat, "swiss"))
    fasta = tmp_path / "sprot.fasta"
    SeqIO.write(records, fasta, "fasta")
    expected = {}
    for rec in records:
        seq = str(rec.seq).upper().translate(str.maketrans("UZOB", "XXXX"))
        if 20 <= len(seq) <= 512:
            expected.setdefault(seq, rec.id)  # identical sequences are kept once

    manifest = prepare_corpus([fasta], tmp_path / "corpus", valid_fraction=0.0, seed=0)
    assert manifest.splits["train"].rows == len(expected)
    assert manifest.drops.get("too_long", 0) + manifest.drops.get("too_short", 0) + manifest.drops.get(
        "duplicate", 0
    ) == len(records) - len(expected)
    corpus = ShardedCorpus(tmp_path / "corpus", "train")
    got = {decode(t) for t in corpus.tokens(list(range(len(corpus))))}
    assert got == set(expected)
    shard = tmp_path / "corpus" / manifest.splits["train"].shards[0].path
    assert set(datasets.Dataset.from_file(str(shard))["accession"]) <= {r.id for r in records}
