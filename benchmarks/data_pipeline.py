"""Data pipeline throughput: FASTA → token ids (prep) and shards → masked batches (loader), each against
the naive path a plain transformers + PyTorch user would write, measured in the same run.

Stages (each on the real UniRef50 sample in ../shared/data when present, and on a synthetic FASTA with
UniRef50-like lengths written to a temporary folder):
  prep encoding     data_prep.fasta.read_blocks + encode_block in this process (what one --workers
                    process does), against Bio.SeqIO.parse + transformers BertTokenizer on space-joined
                    residues + a Python list per record. Goal: >= 20x the naive path.
  prepare (e2e)     data_prep.corpus.prepare_corpus with --workers W (Arrow shards, sha256, manifest),
                    against the same naive path (which writes nothing): a conservative ratio, no goal.
  loader            DistillStream (token-budget batches, MLM masking, tensors) with DataLoader workers=0,
                    against a map-style Dataset over datasets.Dataset.from_file(...)[i], a random sampler
                    and a torch collate (pad to the longest, torch.bernoulli masking 80/10/10).
                    Goal: >= 5M residues/s on one core.
  epoch planning    minprot_ds.bench.data_pipeline.measure_planning on 43M rows resampled from the UniRef50-like
                    lengths: seconds, no baseline.

Residues/s are per CPU-second of this process (plus its reaped worker processes): on one busy core that
equals residues per wall second, and it moves far less than wall time when other users load the
machine (ratios of the same run are steadier still). Wall-clock figures are in the JSON too. The loaders
run with one torch thread. Prep rates count every input residue (records
dropped by the 20–512 filter included), so ours and naive share one denominator and the ratio is the
ratio of times. Before timing, the script checks that the tokenizer's ids equal minprot_ds.vocab.encode
and that the naive path keeps exactly the records and ids ours does.

    python benchmarks/data_pipeline.py  # default sizes, table + benchmarks/results/data_pipeline.json
    python benchmarks/data_pipeline.py --records 50000 --repeats 9 --workers 2   # larger, steadier
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from Bio import SeqIO
from common import SHARED_LENGTHS, Timing, fmt_rate, make_console, print_table, time_repeats, write_json
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset

from data_prep.corpus import prepare_corpus
from data_prep.fasta import encode_block, read_blocks
from minprot_ds import vocab
from minprot_ds.bench.data_pipeline import measure_loader_throughput, measure_planning, time_batches
from minprot_ds.data.manifest import load_manifest
from minprot_ds.data.synthetic import sample_lengths as draw_lengths
from minprot_ds.errors import UserError

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
DEFAULT_UNIREF50 = SHARED_DATA / "uniref50" / "uniref50_train_filt.fasta"
DEFAULT_LENGTHS = SHARED_LENGTHS
REFERENCE_VOCAB = REPO.parent / "shared" / "reference" / "prot_bert" / "vocab.txt"
DEFAULT_OUT = REPO / "benchmarks" / "results" / "data_pipeline.json"

PREP_GOAL_RATIO = 20.0
LOADER_GOAL_RESIDUES_PER_S = 5e6
MIN_LEN, MAX_LEN = 20, 512

console = make_console()


# --- inputs -------------------------------------------------------------------------------------------


def sample_lengths(lengths_file: Path | None, count: int, seed: int) -> tuple[np.ndarray, str]:
    """`count` lengths drawn with replacement from the file, or from the log-normal fallback (the
    package's one rule, minprot_ds.data.synthetic.sample_lengths)."""
    return draw_lengths(count, seed, lengths_file)


def write_synthetic_fasta(path: Path, lengths: np.ndarray, seed: int) -> Path:
    """UniRef50-style records of random residues: the 20 standard ones, X at 0.1% and U/Z/O/B at 0.01%
    each (so the rare-letter mapping is exercised), 60 residues a line."""
    rng = np.random.default_rng(seed)
    letters = np.frombuffer(b"LAGVESIKRDTPNQFYMHCWXUZOB", dtype=np.uint8)
    p = np.r_[np.full(20, (1 - 0.001 - 0.0004) / 20), 0.001, np.full(4, 0.0001)]
    residues = rng.choice(letters, int(lengths.sum()), p=p / p.sum()).tobytes()
    with open(path, "wb") as fh:
        start = 0
        for i, n in enumerate(lengths.tolist()):
            seq = residues[start : start + n]
            start += n
            fh.write(b">UniRef50_SYN%07d n=1 Tax=synthetic TaxID=0 RepID=SYN%07d\n" % (i, i))
            fh.write(b"\n".join(seq[j : j + 60] for j in range(0, n, 60)) + b"\n")
    return path


def make_tokenizer(work: Path) -> tuple[Any, str]:
    """transformers' BertTokenizer on ProtBert's vocab.txt (the shared reference, else ours written out).

    transformers 5 reads the vocabulary from `vocab=` and silently ignores `vocab_file=` (every residue
    would become [UNK]), so the version decides the keyword; `check_tokenizer` then proves it loaded.
    """
    import transformers
    from transformers import BertTokenizer

    path = REFERENCE_VOCAB if REFERENCE_VOCAB.is_file() else vocab.write_vocab(work)
    if int(transformers.__version__.split(".")[0]) >= 5:
        tokenizer = BertTokenizer(vocab=str(path), do_lower_case=False)
    else:
        tokenizer = BertTokenizer(vocab_file=str(path), do_lower_case=False)
    return tokenizer, str(path)


def check_tokenizer(tokenizer: Any) -> None:
    """The baseline is only honest if it computes the same ids: compare on sequences with rare letters."""
    rng = np.random.default_rng(1)
    samples = ["MKTAYIAKQRQISFVKSHFSRQ", "UZOBX", "ACDEFGHIKLMNPQRSTVWYXUBZO"]
    samples += ["".join(rng.choice(list(vocab.RESIDUE_TOKENS), rng.integers(1, 300))) for _ in range(20)]
    for seq in samples:
        theirs = tokenizer(" ".join(seq), add_special_tokens=False)["input_ids"]
        if theirs != vocab.encode(seq).tolist():
            raise SystemExit(
                f"BertTokenizer's ids differ from minprot_ds.vocab.encode on {seq[:40]!r} "
                f"({theirs[:10]} vs {vocab.encode(seq)[:10].tolist()}); the naive baseline would be dishonest."
            )


# --- prep: ours and naive -----------------------------------------------------------------------------


def ours_encode(path: Path, seed: int = 0) -> list:
    """What one prepare worker does per block, for the whole file in this process."""
    return [encode_block(block, MIN_LEN, MAX_LEN, seed) for block in read_blocks(path)]


_RARE = str.maketrans("UZOB", "XXXX")


def naive_prepare(path: Path, tokenizer: Any) -> tuple[list[list[int]], int]:
    """(token id lists of the kept records, input residues): the per-record Python path."""
    kept: list[list[int]] = []
    residues = 0
    for record in SeqIO.parse(str(path), "fasta"):
        seq = str(record.seq).upper().rstrip("*").translate(_RARE)
        residues += len(seq)
        if not MIN_LEN <= len(seq) <= MAX_LEN:
            continue
        ids = tokenizer(" ".join(seq), add_special_tokens=False)["input_ids"]
        if vocab.UNK_ID in ids:  # a letter ProtBert does not know: dropped, as ours does
            continue
        kept.append(ids)
    return kept, residues


def check_same_output(path: Path, tokenizer: Any) -> int:
    """Run both paths once (untimed); they must keep the same records with the same ids. Returns input residues."""
    naive, residues = naive_prepare(path, tokenizer)
    blocks = ours_encode(path)
    ours_rows = sum(len(b.lengths) for b in blocks)
    ours_tokens = np.concatenate([b.tokens for b in blocks]) if blocks else np.zeros(0, np.uint8)
    naive_tokens = np.fromiter((t for ids in naive for t in ids), dtype=np.uint8)
    if ours_rows != len(naive) or not np.array_equal(ours_tokens, naive_tokens):
        raise SystemExit(
            f"on {path} the naive path keeps {len(naive)} records ({len(naive_tokens)} residues) and ours "
            f"{ours_rows} ({len(ours_tokens)}), or their ids differ; the comparison would not be like for like."
        )
    return residues


# --- loader: naive ------------------------------------------------------------------------------------


class NaiveShardDataset(Dataset):
    """One record per item as Python lists, from the same Arrow shards, through `datasets`."""

    def __init__(self, shard_paths: list[Path]) -> None:
        import datasets

        self.table = datasets.concatenate_datasets([datasets.Dataset.from_file(str(p)) for p in shard_paths])

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, i: int) -> list[int]:
        return self.table[i]["tokens"]


_STANDARD = torch.from_numpy(vocab.STANDARD_RESIDUE_IDS.astype(np.int64))


def naive_collate(records: list[list[int]]) -> dict[str, Any]:
    """Pad to the longest with torch, then DataCollatorForLanguageModeling-style 15% / 80-10-10 masking."""
    seqs = [torch.tensor([vocab.CLS_ID, *r, vocab.SEP_ID]) for r in records]
    ids = pad_sequence(seqs, batch_first=True, padding_value=vocab.PAD_ID)
    attention = (ids != vocab.PAD_ID).long()
    special = (ids == vocab.PAD_ID) | (ids == vocab.CLS_ID) | (ids == vocab.SEP_ID)
    labels = ids.clone()
    chance = torch.full(ids.shape, 0.15).masked_fill_(special, 0.0)
    selected = torch.bernoulli(chance).bool()
    labels[~selected] = -100
    to_mask = torch.bernoulli(torch.full(ids.shape, 0.8)).bool() & selected
    ids[to_mask] = vocab.MASK_ID
    to_random = torch.bernoulli(torch.full(ids.shape, 0.5)).bool() & selected & ~to_mask
    ids[to_random] = _STANDARD[torch.randint(len(_STANDARD), (int(to_random.sum()),))]
    residues = sum(len(r) for r in records)
    return {"input_ids": ids, "attention_mask": attention, "labels": labels, "num_residues": residues}


def naive_loader_throughput(shard_paths: list[Path], *, seconds: float, batch_size: int, seed: int) -> dict[str, float]:
    """Residues/s of the naive loader over `seconds`, timed like measure_loader_throughput."""
    dataset = NaiveShardDataset(shard_paths)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        collate_fn=naive_collate,
        num_workers=0,
        generator=torch.Generator().manual_seed(seed),
    )

    def forever():
        while True:
            yield from loader

    batches = forever()
    next(batches)  # build the iterator and sampler outside the timed loop, as ours does

    def pull() -> list[tuple[int, int, int]]:
        batch = next(batches)
        return [(batch["num_residues"], batch["input_ids"].numel(), batch["input_ids"].shape[0])]

    return {**time_batches(pull, seconds), "batch_size": batch_size}


def median_of(runs: list[dict[str, float]], key: str) -> float:
    return float(np.median([r[key] for r in runs]))


# --- the stages ---------------------------------------------------------------------------------------


def bench_input(name: str, fasta: Path, work: Path, tokenizer: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The prep, prepare and loader rows of one input FASTA."""
    residues = check_same_output(fasta, tokenizer)
    console.print(f"[bold]{name}[/]: {fasta} ({residues:,} input residues)")
    rows = []

    ours = time_repeats(lambda: ours_encode(fasta, args.seed), args.repeats)
    naive = time_repeats(lambda: naive_prepare(fasta, tokenizer), args.repeats)
    rows.append(_ratio_row("prep encoding (1 worker)", name, residues, ours, naive, goal_ratio=PREP_GOAL_RATIO))

    counter = iter(range(1 << 30))
    outs = work / f"prepared-{name}"
    last: dict[str, Path] = {}

    def fresh_out() -> None:  # prepare_corpus is idempotent: each repeat needs a folder of its own
        shutil.rmtree(outs, ignore_errors=True)
        last["out"] = outs / str(next(counter))

    e2e = time_repeats(
        lambda: prepare_corpus([fasta], last["out"], workers=args.workers, seed=args.seed),
        args.repeats,
        setup=fresh_out,
    )
    row = _ratio_row(
        f"prepare e2e ({args.workers} worker{'s' if args.workers > 1 else ''})",
        name,
        residues,
        e2e,
        naive,
        goal_ratio=None,
    )
    row["workers"] = args.workers
    # per worker: CPU time already sums every process; wall time is spread over the workers
    row["ours_residues_per_worker_wall_s"] = residues / e2e.wall_median / args.workers
    rows.append(row)

    corpus = last["out"]
    train = load_manifest(corpus).splits["train"]
    shards = [corpus / shard.path for shard in train.shards]
    torch.set_num_threads(1)
    ours_runs = [
        measure_loader_throughput(corpus, seconds=args.loader_seconds, seed=args.seed) for _ in range(args.repeats)
    ]
    naive_runs = [
        naive_loader_throughput(shards, seconds=args.loader_seconds, batch_size=args.naive_batch_size, seed=args.seed)
        for _ in range(args.repeats)
    ]
    ours_rate = median_of(ours_runs, "residues_per_cpu_s")
    naive_rate = median_of(naive_runs, "residues_per_cpu_s")
    rows.append(
        {
            "stage": "loader (1 core)",
            "input": name,
            "ours_residues_per_s": ours_rate,
            "naive_residues_per_s": naive_rate,
            "ratio": ours_rate / naive_rate,
            "goal": f">= {LOADER_GOAL_RESIDUES_PER_S / 1e6:g}M res/s",
            "met": ours_rate >= LOADER_GOAL_RESIDUES_PER_S,
            "ours_residues_per_wall_s": median_of(ours_runs, "residues_per_s"),
            "naive_residues_per_wall_s": median_of(naive_runs, "residues_per_s"),
            "ours_padding_fraction": median_of(ours_runs, "padding_fraction"),
            "naive_padding_fraction": median_of(naive_runs, "padding_fraction"),
            "ours_runs": ours_runs,
            "naive_runs": naive_runs,
            "train_rows": train.rows,
        }
    )
    return rows


def _ratio_row(
    stage: str, name: str, residues: int, ours: Timing, naive: Timing, goal_ratio: float | None
) -> dict[str, Any]:
    ratio = naive.cpu_median / ours.cpu_median
    return {
        "stage": stage,
        "input": name,
        "input_residues": residues,
        "ours_residues_per_s": residues / ours.cpu_median,
        "naive_residues_per_s": residues / naive.cpu_median,
        "ratio": ratio,
        "goal": None if goal_ratio is None else f">= {goal_ratio:g}x naive",
        "met": None if goal_ratio is None else ratio >= goal_ratio,
        "ours_residues_per_wall_s": residues / ours.wall_median,
        "naive_residues_per_wall_s": residues / naive.wall_median,
        "ours_timing": ours.as_dict(),
        "naive_timing": naive.as_dict(),
    }


def bench_planning(args: argparse.Namespace) -> dict[str, Any]:
    lengths, source = sample_lengths(args.lengths, args.plan_rows, args.seed)
    lengths = lengths.astype(np.int32)
    runs = [measure_planning(lengths, seed=args.seed) for _ in range(args.plan_repeats)]
    return {
        "stage": f"epoch planning ({args.plan_rows / 1e6:g}M rows)",
        "input": "UniRef50-like lengths",
        "lengths_source": source,
        "cpu_seconds": median_of(runs, "cpu_seconds"),
        "wall_seconds": median_of(runs, "seconds"),
        "micro_batches": runs[0]["micro_batches"],
        "padding_fraction": runs[0]["padding_fraction"],
        "runs": runs,
    }


# --- entry --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed repeats per measurement; the median is reported (default 5)"
    )
    parser.add_argument(
        "--records",
        type=int,
        default=5_000,
        help="records in the synthetic FASTA (default 5000, ~1M residues: 1-3 s of naive work a repeat)",
    )
    parser.add_argument(
        "--uniref50",
        type=Path,
        default=DEFAULT_UNIREF50,
        help="real UniRef50 FASTA sample, read in place "
        "(default ../shared/data/uniref50/uniref50_train_filt.fasta; skipped if absent)",
    )
    parser.add_argument("--no-uniref50", action="store_true", help="skip the real UniRef50 sample")
    parser.add_argument(
        "--lengths",
        type=Path,
        default=DEFAULT_LENGTHS,
        help="one length a line to sample synthetic records from (default ../shared/data/lengths/"
        "uniref50_like_lengths.txt; if absent, a log-normal with the same median and mean)",
    )
    parser.add_argument("--workers", type=int, default=1, help="--workers of the end-to-end prepare row (default 1)")
    parser.add_argument("--loader-seconds", type=float, default=1.0, help="seconds per loader measurement (default 1)")
    parser.add_argument(
        "--naive-batch-size", type=int, default=32, help="rows per batch of the naive loader (default 32)"
    )
    parser.add_argument(
        "--plan-rows",
        type=int,
        default=43_000_000,
        help="rows of the planned epoch (default 43M, UniRef50 after the filter)",
    )
    parser.add_argument(
        "--plan-repeats", type=int, default=3, help="repeats of the planning row (default 3; each takes seconds)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="scratch folder for the synthetic FASTA and corpora (default: a temporary one, removed)",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="JSON results (default benchmarks/results/data_pipeline.json)"
    )
    args = parser.parse_args(argv)
    for name in ("repeats", "records", "workers", "naive_batch_size", "plan_rows", "plan_repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.loader_seconds <= 0:
        parser.error("--loader-seconds must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    scratch = args.work_dir or Path(tempfile.mkdtemp(prefix="minprot-bench-data-"))
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        return _run(args, scratch)
    except UserError as err:
        console.print(f"[red]error:[/] {err}")
        return 1
    finally:
        if args.work_dir is None:
            shutil.rmtree(scratch, ignore_errors=True)


def _run(args: argparse.Namespace, work: Path) -> int:
    torch_threads = torch.get_num_threads()
    tokenizer, vocab_path = make_tokenizer(work)
    check_tokenizer(tokenizer)

    inputs: list[tuple[str, Path]] = []
    notes = []
    if not args.no_uniref50:
        if args.uniref50.is_file():
            inputs.append(("uniref50 sample", args.uniref50))
        else:
            notes.append(f"real UniRef50 sample {args.uniref50} is absent: skipped")
    lengths, lengths_source = sample_lengths(args.lengths, args.records, args.seed)
    synthetic = write_synthetic_fasta(work / "synthetic.fasta", lengths, args.seed)
    inputs.append((f"synthetic {args.records:,}", synthetic))
    if lengths_source.startswith("log-normal"):
        notes.append(f"lengths file {args.lengths} is absent: synthetic lengths from a {lengths_source}")
    for note in notes:
        console.print(f"[yellow]note:[/] {note}")

    rows: list[dict[str, Any]] = []
    try:
        for name, path in inputs:
            rows.extend(bench_input(name, path, work, tokenizer, args))
    finally:
        torch.set_num_threads(torch_threads)  # bench_input pins the loaders to one thread
    planning = bench_planning(args)

    _print(rows, planning, args)
    payload = {
        "description": "residues/s per CPU-second (this process + reaped workers); ratios measured in the same run",
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "tokenizer": {"class": type(tokenizer).__module__ + "." + type(tokenizer).__name__, "vocab": vocab_path},
        "synthetic_lengths_source": lengths_source,
        "notes": notes,
        "rows": rows,
        "planning": planning,
    }
    path = write_json(args.out, "data_pipeline", payload)
    console.print(f"wrote {path}")
    return 0


def _print(rows: list[dict[str, Any]], planning: dict[str, Any], args: argparse.Namespace) -> None:
    def met(value: bool | None) -> str | None:
        return None if value is None else ("[green]yes[/]" if value else "[red]no[/]")

    table_rows = [
        (
            r["stage"],
            r["input"],
            fmt_rate(r["ours_residues_per_s"]),
            fmt_rate(r["naive_residues_per_s"]),
            f"{r['ratio']:.1f}x",
            r["goal"],
            met(r["met"]),
        )
        for r in rows
    ]
    table_rows.append(
        (
            planning["stage"],
            planning["input"],
            f"{planning['cpu_seconds']:.2f} CPU-s ({planning['wall_seconds']:.2f} s wall)",
            None,
            None,
            None,
            None,
        )
    )
    print_table(
        f"data pipeline, residues per CPU-second (median of {args.repeats}; planning median of {args.plan_repeats})",
        ("stage", "input", "ours res/s", "naive res/s", "ratio", "goal", "met?"),
        table_rows,
        console,
        text_columns=2,
    )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    console.print(
        f"CPU-second rates; wall-clock rates are in the JSON (1-min load average {load:.1f} on "
        f"{os.cpu_count()} cores during this run)."
    )


if __name__ == "__main__":
    sys.exit(main())
