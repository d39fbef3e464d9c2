"""Smoke test of benchmarks/data_pipeline.py at a tiny size: it runs, its baseline is like for like, and
its JSON has every field with numeric rates and ratios (no assertion on speed)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture()
def bench(monkeypatch):
    # The script imports its sibling `common` the way `python benchmarks/data_pipeline.py` sees it.
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location("data_pipeline_bench", BENCHMARKS / "data_pipeline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def test_tiny_run_writes_complete_json(bench, tmp_path, capsys):
    out = tmp_path / "results" / "data_pipeline.json"
    argv = [
        "--records",
        "150",
        "--repeats",
        "1",
        "--loader-seconds",
        "0.05",
        "--plan-rows",
        "20000",
        "--plan-repeats",
        "1",
        "--no-uniref50",
        "--work-dir",
        str(tmp_path / "work"),
        "--out",
        str(out),
    ]
    assert bench.main(argv) == 0
    printed = capsys.readouterr().out
    assert "prep encoding" in printed and "loader" in printed and f"wrote {out}" in printed

    result = json.loads(out.read_text())
    assert result["benchmark"] == "data_pipeline"
    assert {"cpu_count", "python", "torch", "load_average"} <= set(result["machine"])
    assert result["tokenizer"]["class"].endswith("BertTokenizer")
    rows = {row["stage"].split(" (")[0]: row for row in result["rows"]}
    assert set(rows) == {"prep encoding", "prepare e2e", "loader"}
    for row in rows.values():
        assert row["input"] == "synthetic 150"
        for key in (
            "ours_residues_per_s",
            "naive_residues_per_s",
            "ratio",
            "ours_residues_per_wall_s",
            "naive_residues_per_wall_s",
        ):
            assert _number(row[key]) and row[key] > 0, (row["stage"], key, row[key])
        assert row["ratio"] == pytest.approx(row["ours_residues_per_s"] / row["naive_residues_per_s"])
    assert isinstance(rows["prep encoding"]["met"], bool) and isinstance(rows["loader"]["met"], bool)
    assert rows["prepare e2e"]["met"] is None and rows["prepare e2e"]["workers"] == 1
    assert len(rows["prep encoding"]["ours_timing"]["cpu_s"]) == 1
    assert 0 <= rows["loader"]["ours_padding_fraction"] < 1 and 0 <= rows["loader"]["naive_padding_fraction"] < 1
    planning = result["planning"]
    assert planning["runs"][0]["rows"] == 20000
    assert _number(planning["cpu_seconds"]) and planning["micro_batches"] > 0


def test_naive_prep_keeps_what_ours_keeps(bench, tmp_path):
    # Lower case, a trailing '*', rare letters, a letter ProtBert lacks (J), too short and too long:
    # the check that guards the comparison passes only if both paths keep the same records and ids.
    fasta = tmp_path / "edge.fasta"
    fasta.write_text(
        ">a\nmktayiakqrqisfvkshfsrq*\n>b\nMKUZOBXAAAAAAAAAAAAAAAAA\n>c\nMKJAAAAAAAAAAAAAAAAAAAAA\n"
        ">d\nMKA\n>e\n" + "A" * 600 + "\n>f\nACDEFGHIKLMNPQRSTVWY\n"
    )
    tokenizer, _ = bench.make_tokenizer(tmp_path)
    bench.check_tokenizer(tokenizer)
    assert bench.check_same_output(fasta, tokenizer) == 22 + 24 + 24 + 3 + 600 + 20
    kept, _ = bench.naive_prepare(fasta, tokenizer)
    assert len(kept) == 3  # a, b, f


def test_help_explains_the_options(bench, capsys):
    with pytest.raises(SystemExit) as exc:
        bench.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for option in ("--repeats", "--records", "--uniref50", "--workers", "--loader-seconds", "--out"):
        assert option in text
