"""`minprot predict` / `embed` / `merge` in-process on tiny random models: rows, order, failures, budgets,
windows, embeddings against a hand-written mean, shards, resume refusal, output formats."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from minprot_ds.cli import app
from minprot_ds.errors import UserError
from minprot_ds.inference.job import merge, run
from minprot_ds.inference.options import EmbedOptions, PredictOptions, default_max_tokens
from minprot_ds.inference.records import clean
from minprot_ds.scoring.models import pick_device


def read_tsv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def fasta_titles(path: Path) -> list[tuple[str, str]]:
    from Bio.SeqIO.FastaIO import SimpleFastaParser

    with open(path) as fh:
        return list(SimpleFastaParser(fh))


def predict(model, fasta, out, **kw):
    return run(PredictOptions(model=model, fasta=fasta, out=out, progress=False, **kw))


def embed(model, fasta, out, **kw):
    return run(EmbedOptions(model=model, fasta=fasta, out=out, progress=False, **kw))


def test_rows_follow_the_input_with_duplicates_and_bad_records_handled(dna_model, proteome, tmp_path):
    result = predict(dna_model, proteome, tmp_path / "p.tsv", chunk_records=7)
    rows = read_tsv(tmp_path / "p.tsv")
    records = fasta_titles(proteome)
    assert [r["id"] for r in rows] == [t.split()[0] for t, _ in records]  # one row per record, input order
    assert [r["description"] for r in rows] == [t.split(None, 1)[1] for t, _ in records]
    assert [int(r["length"]) for r in rows] == [len(clean(s)[0]) for _, s in records]
    failed = [r for r in rows if r["status"] != "ok"]
    assert [(r["id"], r["probability"], r["label"]) for r in failed] == [("bad_letters", "", ""), ("empty", "", "")]
    assert "J" in failed[0]["status"] and failed[1]["status"] == "no residues"
    by_id = {r["id"]: r for r in rows}
    assert by_id["same_as_2"]["probability"] == by_id["prot2"]["probability"]
    assert by_id["lower"]["length"] == "50"
    failures = read_tsv(tmp_path / "p.tsv.failures.tsv")
    assert [f["id"] for f in failures] == ["bad_letters", "empty"]
    assert "J" in failures[0]["reason"] and "no residues" in failures[1]["reason"]
    summary = json.loads((tmp_path / "p.tsv.json").read_text())
    c = summary["counts"]
    assert (c["records"], c["written"], c["duplicates"], sum(c["failures"].values())) == (
        len(rows),
        len(rows) - 2,
        1,
        2,
    )
    assert c["windowed"] == sum(int(r["windows"]) > 1 for r in rows) > 0
    assert summary["model"]["sha256"] and summary["info"]["task"] == "dna-binding"
    assert {r["label"] for r in rows if r["status"] == "ok"} <= {"non-binding", "DNA-binding"}
    assert result.summary["counts"] == c


def test_duplicate_ids_are_refused_with_the_list_or_renamed(dna_model, tmp_path, random_sequences, write_fasta):
    seqs = random_sequences(4, 30, 60, seed=1)
    fasta = write_fasta(tmp_path / "dup.fasta", [("a", seqs[0]), ("b", seqs[1]), ("a x", seqs[2]), ("b", seqs[3])])
    with pytest.raises(UserError, match=r"2 ids .*'a', 'b'.*--dedupe-ids"):
        predict(dna_model, fasta, tmp_path / "d.tsv")
    predict(dna_model, fasta, tmp_path / "d.tsv", dedupe_ids=True)
    assert [r["id"] for r in read_tsv(tmp_path / "d.tsv")] == ["a", "b", "a_2", "b_2"]


def test_the_token_budget_does_not_change_the_probabilities(dna_model, proteome, tmp_path):
    predict(dna_model, proteome, tmp_path / "small.tsv", max_tokens=520)
    predict(dna_model, proteome, tmp_path / "big.tsv", max_tokens=16384)
    small = [float(r["probability"]) for r in read_tsv(tmp_path / "small.tsv") if r["status"] == "ok"]
    big = [float(r["probability"]) for r in read_tsv(tmp_path / "big.tsv") if r["status"] == "ok"]
    np.testing.assert_allclose(small, big, atol=1e-5)


def _direct(model_dir: Path, seq: str, per_residue: bool) -> np.ndarray:
    """The model's own single forward pass on [CLS] seq [SEP], no batching, no windows."""
    from minprot_ds.scoring.heads import load_task_model
    from minprot_ds.vocab import CLS_ID, SEP_ID, encode

    model = load_task_model(model_dir)
    ids = torch.tensor([[CLS_ID, *encode(seq).tolist(), SEP_ID]])
    with torch.no_grad():
        probs = torch.softmax(model(ids, torch.ones_like(ids)), -1)[0].numpy()
    return probs[1:-1] if per_residue else probs


def test_a_window_that_covers_the_protein_equals_the_single_pass(
    dna_model, q3_model, tmp_path, random_sequences, write_fasta
):
    seqs = random_sequences(6, 30, 400, seed=5)
    fasta = write_fasta(tmp_path / "s.fasta", [(f"s{i}", s) for i, s in enumerate(seqs)])
    predict(dna_model, fasta, tmp_path / "d.tsv", window=400, stride=200)
    got = [float(r["probability"]) for r in read_tsv(tmp_path / "d.tsv")]
    np.testing.assert_allclose(got, [_direct(dna_model, s, False)[1] for s in seqs], atol=1e-5)
    predict(q3_model, fasta, tmp_path / "q.parquet", window=400, stride=200)
    table = pq.read_table(tmp_path / "q.parquet").to_pylist()
    for row, seq in zip(table, seqs):
        want = _direct(q3_model, seq, True)
        got = np.stack([row["prob_H"], row["prob_E"], row["prob_C"]], axis=1)
        np.testing.assert_allclose(got, want, atol=1e-5)
        assert row["states"] == "".join(np.array(["H", "E", "C"])[want.argmax(1)]) and row["windows"] == 1


def test_long_proteins_by_windows_truncation_or_skip(q3_model, tmp_path, random_sequences, write_fasta):
    seq = random_sequences(1, 700, 701, seed=9)[0]
    fasta = write_fasta(tmp_path / "l.fasta", [("long", seq), ("short", seq[:100])])
    predict(q3_model, fasta, tmp_path / "w.ss3", window=300, stride=150)
    lines = (tmp_path / "w.ss3").read_text().splitlines()
    assert lines[0] == ">long" and lines[1] == seq and len(lines[2]) == 700 and set(lines[2]) <= set("HEC")
    predict(q3_model, fasta, tmp_path / "t.parquet", window=300, stride=150, long="truncate")
    rows = pq.read_table(tmp_path / "t.parquet").to_pylist()
    assert (
        len(rows[0]["prob_H"]) == 300
        and json.loads((tmp_path / "t.parquet.json").read_text())["counts"]["truncated"] == 1
    )
    predict(q3_model, fasta, tmp_path / "s.tsv", window=300, stride=150, long="skip")
    assert {r["id"] for r in read_tsv(tmp_path / "s.tsv")} == {"short"}
    assert "--long skip" in read_tsv(tmp_path / "s.tsv.failures.tsv")[0]["reason"]


def test_embeddings_equal_a_hand_written_mean_of_the_last_hidden_state(encoder_dir, proteome, tmp_path):
    from transformers import AutoModel

    from minprot_ds.vocab import CLS_ID, SEP_ID, encode

    embed(encoder_dir, proteome, tmp_path / "e.h5", max_tokens=2048)
    model = AutoModel.from_pretrained(str(encoder_dir)).eval()
    records = {t.split()[0]: clean(s)[0] for t, s in fasta_titles(proteome)}
    with h5py.File(tmp_path / "e.h5") as f:
        by_id = {ds.attrs["original_id"]: ds[()] for ds in f.values()}
        assert list(by_id)[:3] == ["prot0", "prot1", "prot2"]
    checked = 0
    for rid in ("prot0", "prot1", "same_as_2", "lower"):
        seq = records[rid]
        if len(seq) > 512:
            continue
        ids = torch.tensor([[CLS_ID, *encode(seq).tolist(), SEP_ID]])
        with torch.no_grad():
            hidden = model(input_ids=ids).last_hidden_state[0, 1:-1]
        np.testing.assert_allclose(by_id[rid], hidden.mean(0).numpy(), atol=1e-5)
        checked += 1
    assert checked >= 2


def test_esm2_embeddings_equal_the_mean_of_esm_models_last_hidden_state(esm_encoder_dir, proteome, tmp_path):
    """embed of an ESM-2 model: the mean over residues of transformers' EsmModel last hidden state (<cls>, <eos>
    excluded), its input made by EsmTokenizer; the window follows the model (1,022 residues), so proteins of up to
    1,000 residues are single passes, not 512-residue windows."""
    from transformers import AutoTokenizer, EsmModel

    embed(esm_encoder_dir, proteome, tmp_path / "e.h5", max_tokens=4096)
    model = EsmModel.from_pretrained(str(esm_encoder_dir), add_pooling_layer=False).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(esm_encoder_dir))
    records = {t.split()[0]: clean(s)[0] for t, s in fasta_titles(proteome)}
    with h5py.File(tmp_path / "e.h5") as f:
        by_id = {ds.attrs["original_id"]: ds[()] for ds in f.values()}
    long = [rid for rid in by_id if len(records[rid]) > 512]
    assert long, "the proteome has proteins longer than ProtBert's window"
    for rid in ["prot0", "prot1", *long[:2]]:
        ids = torch.tensor([tokenizer(records[rid])["input_ids"]])
        with torch.no_grad():
            hidden = model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[0, 1:-1]
        np.testing.assert_allclose(by_id[rid], hidden.mean(0).numpy(), atol=1e-5)


def test_embed_formats_layers_and_per_residue(encoder_dir, tmp_path, random_sequences, write_fasta):
    seqs = random_sequences(5, 20, 80, seed=2)
    fasta = write_fasta(tmp_path / "e.fasta", [(f"a/{i}", s) for i, s in enumerate(seqs)])
    embed(encoder_dir, fasta, tmp_path / "r.npz", per_residue=True, layers="-1,0", half=True)
    with np.load(tmp_path / "r.npz") as z:
        assert list(z.keys()) == [f"a/{i}" for i in range(5)]
        assert z["a/0"].shape == (len(seqs[0]), 64) and z["a/0"].dtype == np.float16
    embed(encoder_dir, fasta, tmp_path / "c.parquet", pooling="cls")
    table = pq.read_table(tmp_path / "c.parquet")
    assert table.column("id").to_pylist() == [f"a/{i}" for i in range(5)]
    assert len(table.column("embedding")[0]) == 32 and b"minprot" in table.schema.metadata


def test_shards_merged_equal_a_single_run(encoder_dir, proteome, tmp_path):
    embed(encoder_dir, proteome, tmp_path / "one.h5", chunk_records=5)
    for i in range(3):
        res = embed(encoder_dir, proteome, tmp_path / f"m{i}" / "x.h5", chunk_records=5, shard=f"{i}/3")
        assert res.out is None
    merge([tmp_path / f"m{i}" / "x.h5.parts" for i in range(3)], tmp_path / "merged.h5")
    with h5py.File(tmp_path / "one.h5") as a, h5py.File(tmp_path / "merged.h5") as b:
        assert list(a) == list(b)
        for k in a:
            np.testing.assert_array_equal(a[k][()], b[k][()])
    with pytest.raises(UserError, match="chunks are missing"):
        merge([tmp_path / "m0" / "x.h5.parts"], tmp_path / "partial.h5")


def test_a_changed_model_input_or_setting_is_refused_by_name(encoder_dir, dna_model, proteome, tmp_path, write_fasta):
    out = tmp_path / "e.h5"
    embed(encoder_dir, proteome, out)
    res = embed(encoder_dir, proteome, out)  # a rerun resumes: nothing left to compute
    assert res.computed_chunks == 0 and out.is_file()
    with pytest.raises(UserError, match="--pool mean, not cls"):
        embed(encoder_dir, proteome, out, pooling="cls")
    with pytest.raises(UserError, match="another model"):
        embed(dna_model.parent / "model", proteome, out)
    other = write_fasta(tmp_path / "o.fasta", [("x", "MKTAYIAKQR")])
    with pytest.raises(UserError, match="another input"):
        embed(encoder_dir, other, out)


def test_cli_errors_are_one_line(encoder_dir, dna_model, proteome, tmp_path, capsys):
    from minprot_ds.cli.common import run_cli

    def cli(*args: str) -> str:
        with pytest.raises(SystemExit) as exit_:
            run_cli(app, list(args))
        assert exit_.value.code == 1
        return " ".join(capsys.readouterr().err.split())

    assert "writes .h5, .npz, .parquet" in cli(
        "embed", "--model", str(encoder_dir), "--fasta", str(proteome), "--out", str(tmp_path / "x.csv")
    )
    assert "has no minprot_task.json" in cli(
        "predict", "--model", str(encoder_dir), "--fasta", str(proteome), "--out", str(tmp_path / "x.tsv")
    )
    assert "--max-tokens 100 cannot hold" in cli(
        "predict",
        "--model",
        str(dna_model),
        "--fasta",
        str(proteome),
        "--out",
        str(tmp_path / "x.tsv"),
        "--max-tokens",
        "100",
    )


def test_out_of_memory_halves_the_batch_and_a_lone_window_that_fails_is_a_failure(dna_model, random_sequences):
    """CPUs have no device memory to exhaust: a scorer that raises torch's OOM error above a batch size stands in."""
    from minprot_ds.scoring.forward import WindowSettings, score
    from minprot_ds.scoring.models import TaskScorer, load_task

    model, info = load_task(dna_model, torch.float32, torch.device("cpu"))
    real = TaskScorer(model, False)

    class Tight(TaskScorer):
        def run(self, input_ids, attention_mask, lengths):
            if len(lengths) > 2 or max(lengths) > 300:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return real.run(input_ids, attention_mask, lengths)

    proteins = dict(enumerate(random_sequences(9, 30, 120, seed=7) + ["M" * 400]))
    settings = WindowSettings(512, 256)
    with torch.inference_mode():
        free = score(real, proteins, settings, 16384, torch.device("cpu"))
        tight = score(Tight(model, False), proteins, settings, 16384, torch.device("cpu"))
    assert set(tight.outputs) == set(range(9)) and "out of memory" in tight.failures[9]
    for k in range(9):
        np.testing.assert_allclose(tight.outputs[k], free.outputs[k], atol=1e-6)


def test_mlflow_run_is_tagged_and_linked_to_the_finetune_run(dna_model, proteome, tmp_path):
    import shutil

    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    ft_run = client.create_run(client.create_experiment("ft", artifact_location=(tmp_path / "a").as_uri())).info.run_id
    model = shutil.copytree(dna_model, tmp_path / "model")
    meta = json.loads((model / "minprot_task.json").read_text())
    (model / "minprot_task.json").write_text(json.dumps(meta | {"mlflow_run_id": ft_run}))
    predict(model, proteome, tmp_path / "p.parquet", mlflow=True, tracking_uri=uri, experiment="pred")
    runs = client.search_runs([client.get_experiment_by_name("pred").experiment_id])
    assert len(runs) == 1
    run_ = runs[0]
    assert run_.data.tags["minprot.job"] == "predict" and run_.data.tags["minprot.task"] == "dna-binding"
    assert run_.data.tags["minprot.finetune_run_id"] == ft_run and run_.data.tags["mlflow.parentRunId"] == ft_run
    assert run_.data.metrics["failures"] == 2 and run_.data.metrics["perf/residues_per_s"] > 0
    # the params are the command's options (PredictOptions), with the settings they resolved to
    assert run_.data.params["fasta"] == str(proteome)
    assert run_.data.params["max_tokens"] == str(default_max_tokens(pick_device().type))  # the device's default
    assert run_.data.params["window"] == "512"  # the model's, where --window was not given
    assert (
        json.loads(pq.read_schema(tmp_path / "p.parquet").metadata[b"minprot"])["info"]["finetune"]["mlflow_run_id"]
        == ft_run
    )
