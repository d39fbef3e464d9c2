"""Does distillation pay? A teacher, its students and their ablations on real proteins, with 95% CIs (issue 22).

1. Data: the real sequences in ../shared/data (UniRef50 samples, FLIP secondary structure, PDB14189, PDB1075 /
   PDB186 / PDB180, UniSwiss, DeepLoc) pooled; letters outside ProtBert's vocabulary, nucleotide strings and
   lengths outside 20-512 dropped; exact duplicates removed (`minprot data prepare`); a held-out split drawn by a
   hash of the sequence; a DeepLoc membrane/soluble probe split into probe-train and probe-test, probe-test
   proteins with a homolog in probe-train dropped; then every training protein that is a homolog (>= 30%
   identity over >= 80% of either sequence, MMseqs2 easy-search -s 7.5) of a held-out or probe-test protein is
   removed from the training corpus. Every count is printed and kept in the JSON.
2. Teacher: a ProtBert-format BertForMaskedLM pre-trained here by MLM on that corpus
   (minprot_ds/distill/pretrain.py); its held-out loss is followed during pre-training, and the slope over the
   last quarter of its steps says how far from converged it is.
3. Variants, one student shape (the teacher's layers halved), the same optimizer steps, token budget and, per
   seed, the same data order and masks; each trained by the real distillation job (minprot_ds.distill.job.run:
   DeepSpeed ZeRO-2, fp32, one CPU rank): pruned (teacher's `alternate` layers, untrained), mlm-only (1/0/0),
   distill (the default loss), distill-random-init, distill-kd-all (loss.kd_positions = all), minprotbert-loss
   (1/0.5/0.1, no tau^2). The seed (data.seed) changes the student's data order and masks.
4. Measures: held-out MLM cross-entropy, perplexity and accuracy on one fixed set of masked positions shared by
   every row; a linear probe (scikit-learn logistic regression on mean-pooled frozen embeddings) for DeepLoc
   membrane vs soluble, scored on probe-test; parameters; residues/s of the teacher's and the student's encoder
   on the same held-out batches, timed in interleaved rounds (every student has one shape). CIs:
   percentile bootstrap over held-out (or probe-test) proteins, jointly with a resample of the seeds; retention
   (student / teacher) and the paired difference distill - mlm-only (paired by seed and protein).

Resumable: the corpus, the teacher and every (variant, seed) result are cached under --work, and an interrupted
training unit resumes from its newest checkpoint (the job's own resume). Outputs: a table, a PNG of held-out loss
vs step per variant, and the JSON (--out).

    .venv/bin/python benchmarks/distillation_value.py --work runs/distillation_value      # the full run
    .venv/bin/python benchmarks/distillation_value.py --quick --work /tmp/dv --out /tmp/dv.json
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import make_console, print_table, write_json

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO))  # noqa: E402  (run as a script from anywhere)

from data_prep.corpus import prepare_corpus  # noqa: E402
from data_prep.tasks.fasta import read_fasta  # noqa: E402
from data_prep.tasks.overlap import search  # noqa: E402
from minprot_ds.errors import UserError  # noqa: E402
from minprot_ds.finetune.uncertainty import draw, percentile_interval  # noqa: E402
from minprot_ds.progress import quiet_libraries  # noqa: E402
from minprot_ds.vocab import CLS_ID, IGNORE_INDEX, PAD_ID, SEP_ID, decode, encode, rare_to_x  # noqa: E402

TITLE = "does distillation pay? teacher, students and ablations on real proteins"
SOURCES = {  # name -> files under ../shared/data
    "uniref50": ["uniref50/uniref50_train_filt.fasta", "uniref50/uniref2022_UR50.fasta"],
    "flip-secondary-structure": ["secondary_structure/flip_sampled/sequences.fasta"],
    "pdb14189": ["dna_binding/pdb14189/PDB14189_P.txt", "dna_binding/pdb14189/PDB14189_N.txt"],
    "pdb1075-pdb186-pdb180": [
        "dna_binding/pdb1075_pdb186/Training_dataset_PDB1075.txt",
        "dna_binding/pdb1075_pdb186/independent_test_dataset_PDB186.txt",
        "dna_binding/pdb1075_pdb186/independent_test_dataset_PDB180.txt",
    ],
    "uniswiss": [
        "dna_binding/uniswiss_train/UniSwiss-Tr-posi.fasta",
        "dna_binding/uniswiss_train/UniSwiss-Tr-nega.fasta",
    ],
    "deeploc": ["deeploc/deeploc_test_set.fasta", "deeploc/setHARD.fasta"],
}
PROBE_FILE = "deeploc/deeploc_test_set.fasta"
MIN_LEN, MAX_LEN = 20, 512
HOMOLOG_IDENTITY, HOMOLOG_COVERAGE, SENSITIVITY = 0.30, 0.80, 7.5
EVAL_SEED = 20261202  # the one set of masked held-out positions every row is scored on
VARIANTS = ("teacher", "pruned", "mlm-only", "distill", "distill-random-init", "distill-kd-all", "minprotbert-loss")
TRAINED = VARIANTS[2:]
LOSS = {  # the run-config overrides of each trained variant (everything else is shared)
    "mlm-only": ["loss.weights=[1.0, 0.0, 0.0]"],
    "distill": [],
    "distill-random-init": [],
    "distill-kd-all": ['loss.kd_positions="all"'],
    "minprotbert-loss": ["loss.weights=[1.0, 0.5, 0.1]", "loss.kd_temperature_squared=false"],
}
RESAMPLES = 1000


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything that shapes the results; a --work folder holds one set of them."""

    pool_limit: int  # 0: every pooled sequence; else a hash-chosen subset of this size (--quick)
    probe_limit: int  # DeepLoc probe proteins kept (0: all)
    valid_fraction: float
    teacher_layers: int
    hidden: int
    heads: int
    teacher_steps: int
    teacher_lr: float
    student_steps: int
    student_lr: float
    warmup_steps: int
    max_tokens: int
    seeds: int
    eval_every: int  # held-out loss during training every this many steps (the curve)
    eval_batches: int  # held-out micro-batches in each of those evaluations
    speed_batches: int  # held-out micro-batches timed for residues/s
    speed_rounds: int  # interleaved timing rounds (teacher, student) after a warm-up

    @property
    def student_layers(self) -> int:
        return self.teacher_layers // 2


FULL = Settings(
    pool_limit=0,
    probe_limit=0,
    valid_fraction=0.03,
    teacher_layers=4,
    hidden=128,
    heads=4,
    teacher_steps=700,
    teacher_lr=2e-3,
    student_steps=120,
    student_lr=1e-3,
    warmup_steps=12,
    max_tokens=4096,
    seeds=3,
    eval_every=20,
    eval_batches=4,
    speed_batches=16,
    speed_rounds=7,
)
TIMING_ONLY = ("speed_batches", "speed_rounds")  # timed afresh by every invocation: no cached result depends on them
QUICK = dataclasses.replace(
    FULL,
    pool_limit=2000,
    probe_limit=200,
    valid_fraction=0.06,
    teacher_steps=20,
    student_steps=4,
    warmup_steps=1,
    max_tokens=2048,
    seeds=2,
    eval_every=2,
    eval_batches=2,
    speed_batches=2,
    speed_rounds=2,
)


def cpu_s() -> float:
    """CPU seconds of this process (all its threads): steadier than wall time on a shared machine."""
    return time.process_time()


def gemm_rate() -> float:
    """GFLOP/s of a 2048x128 @ 128x512 fp32 matmul now: how busy the machine is (about 100 on 2 idle cores of
    the CI machine's EPYC); the JSON keeps it beside the timings."""
    import torch

    a, w = torch.randn(2048, 128), torch.randn(128, 512)
    a @ w
    t0 = time.perf_counter()
    for _ in range(50):
        a @ w
    return 50 * 2 * 2048 * 128 * 512 / (time.perf_counter() - t0) / 1e9


def say(*parts: Any) -> None:
    print(*parts, flush=True)


def digest(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def load_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def dump_json(path: Path, value: Any) -> None:
    from minprot_ds.fileio import write_json as atomic

    atomic(path, value)


# --- 1. data ------------------------------------------------------------------------------------------------


def clean(sequence: str) -> tuple[str, str | None]:
    """Upper case, U/Z/O/B as X; the reason it is dropped, if it is."""
    seq = rare_to_x("".join(sequence.split()).upper())
    if not seq:
        return seq, "empty"
    if (encode(seq) == 255).any():
        return seq, "letters outside the vocabulary"
    if set(seq) <= set("ACGTNX"):
        return seq, "nucleotide string"
    if not MIN_LEN <= len(seq) <= MAX_LEN:
        return seq, f"length outside {MIN_LEN}-{MAX_LEN}"
    return seq, None


def read_pool() -> tuple[dict[str, str], dict[str, Any]]:
    """Unique cleaned sequences -> the source that first held them; per-source counts."""
    pool: dict[str, str] = {}
    counts: dict[str, Any] = {}
    for source, files in SOURCES.items():
        c = {"records": 0, "kept": 0, "duplicates": 0, "dropped": {}}
        for name in files:
            path = SHARED / name
            if not path.is_file():
                raise UserError(f"{path} is missing; the benchmark reads the real data in ../shared/data.")
            for rec in read_fasta(path):
                c["records"] += 1
                seq, why = clean(rec.sequence)
                if why:
                    c["dropped"][why] = c["dropped"].get(why, 0) + 1
                elif seq in pool:
                    c["duplicates"] += 1
                else:
                    pool[seq] = source
                    c["kept"] += 1
        counts[source] = c
    return pool, counts


def read_probe(limit: int) -> tuple[list[str], list[int], dict[str, int]]:
    """DeepLoc membrane (1) / soluble (0), 20-512 aa, unique; U (unknown) and other lengths counted."""
    seqs, labels, counts = [], [], {"records": 0, "unknown_location": 0, "dropped_length_or_letters": 0}
    seen: set[str] = set()
    for rec in read_fasta(SHARED / PROBE_FILE):
        counts["records"] += 1
        tag = rec.header.split()[1].rsplit("-", 1)[1]
        if tag == "U":
            counts["unknown_location"] += 1
            continue
        seq, why = clean(rec.sequence)
        if why or seq in seen:
            key = "dropped_length_or_letters" if why else "duplicates"
            counts[key] = counts.get(key, 0) + 1
            continue
        seen.add(seq)
        seqs.append(seq)
        labels.append(1 if tag == "M" else 0)
    if limit and len(seqs) > limit:
        order = sorted(range(len(seqs)), key=lambda i: digest("probe-limit" + seqs[i]))[:limit]
        counts["left_out_by_limit"] = len(seqs) - limit
        seqs, labels = [seqs[i] for i in sorted(order)], [labels[i] for i in sorted(order)]
    return seqs, labels, counts


def homolog_pairs(queries: list[str], targets: list[str]) -> set[tuple[int, int]]:
    """(query, target) pairs with >= 30% identity over >= 80% of either sequence (MMseqs2, -s 7.5)."""
    if not queries or not targets:
        return set()
    hits = search(queries, targets, threads=2, sensitivity=SENSITIVITY, max_seqs=2000)
    return {
        (h.query, h.target)
        for h in hits
        if h.identity >= HOMOLOG_IDENTITY and max(h.query_coverage, h.target_coverage) >= HOMOLOG_COVERAGE
    }


def write_fasta(path: Path, seqs: list[str], prefix: str) -> Path:
    with open(path, "w") as fh:
        for i, seq in enumerate(seqs):
            fh.write(f">{prefix}{i:06d}\n{seq}\n")
    return path


def split_sequences(corpus: Path, split: str) -> list[str]:
    from minprot_ds.data.shards import ShardedCorpus

    c = ShardedCorpus(corpus, split)
    return [decode(t) for t in c.tokens(np.arange(len(c)))]


def prepare_data(work: Path, s: Settings) -> dict[str, Any]:
    """The corpus (train without homologs of held-out and probe-test; valid = held-out) and the probe split."""
    done = load_json(work / "data.json")
    if done is not None:
        return done
    t0, c0 = time.perf_counter(), cpu_s()
    pool, sources = read_pool()
    seqs = sorted(pool, key=lambda q: digest("pool" + q))
    if s.pool_limit:
        seqs = seqs[: s.pool_limit]
    probe, labels, probe_counts = read_probe(s.probe_limit)
    is_test = [digest("probe-split" + q) % 2 == 0 for q in probe]
    p_train = [i for i, t in enumerate(is_test) if not t]
    p_test = [i for i, t in enumerate(is_test) if t]
    leaking = {q for q, _ in homolog_pairs([probe[i] for i in p_test], [probe[i] for i in p_train])}
    probe_counts |= {
        "train": len(p_train),
        "test_before_homolog_filter": len(p_test),
        "test_dropped_homolog_of_probe_train": len(leaking),
    }
    p_test = [i for k, i in enumerate(p_test) if k not in leaking]
    probe_counts |= {
        "test": len(p_test),
        "train_membrane": sum(labels[i] for i in p_train),
        "test_membrane": sum(labels[i] for i in p_test),
    }
    test_seqs = {probe[i] for i in p_test}
    pooled = [q for q in seqs if q not in test_seqs]
    first = work / "corpus-pooled"
    prepare_corpus([write_fasta(work / "pooled.fasta", pooled, "POOL")], first, valid_fraction=s.valid_fraction, seed=0)
    held_out, train = split_sequences(first, "valid"), split_sequences(first, "train")
    queries = held_out + [probe[i] for i in p_test]
    homologs = sorted({t for _, t in homolog_pairs(queries, train)})
    gone = set(homologs)
    kept = [q for i, q in enumerate(train) if i not in gone]
    corpus = work / "corpus"
    manifest = prepare_corpus(
        [write_fasta(work / "corpus.fasta", kept + held_out, "SEQ")], corpus, valid_fraction=s.valid_fraction, seed=0
    )
    if manifest.splits["valid"].rows != len(held_out) or manifest.splits["train"].rows != len(kept):
        raise RuntimeError("the second prepare did not reproduce the held-out split; the split hash changed")
    counts = {
        "sources": sources,
        "pooled_unique": len(pool),
        "pooled_used": len(seqs),
        "probe_test_removed_from_pool": len(seqs) - len(pooled),
        "held_out": len(held_out),
        "train_before_homolog_removal": len(train),
        "train_removed_homologs": len(homologs),
        "train": len(kept),
        "train_residues": int(sum(map(len, kept))),
        "held_out_residues": int(sum(map(len, held_out))),
        "probe": probe_counts,
        "homolog_rule": f">= {HOMOLOG_IDENTITY:.0%} identity over >= {HOMOLOG_COVERAGE:.0%} of either sequence, "
        f"mmseqs easy-search -s {SENSITIVITY}",
        "seconds": round(time.perf_counter() - t0, 1),
        "cpu_seconds_python": round(cpu_s() - c0, 1),  # MMseqs2 runs in child processes, not counted here
    }
    data = {
        "corpus": str(corpus),
        "counts": counts,
        "probe": {
            "train": [[probe[i], labels[i]] for i in p_train],
            "test": [[probe[i], labels[i]] for i in p_test],
        },
    }
    dump_json(work / "data.json", data)
    return data


# --- 2. models: teacher, students ---------------------------------------------------------------------------


def fixed_eval_batches(corpus: str, max_tokens: int, limit: int = 0) -> list[dict]:
    """Held-out micro-batches with the one fixed set of masked positions (EVAL_SEED)."""
    from minprot_ds.data.stream import BatchingOptions, MaskingOptions, eval_batches

    out = []
    batching = BatchingOptions(max_tokens=max_tokens, max_rows=64)
    for i, batch in enumerate(
        eval_batches(corpus, "valid", seed=EVAL_SEED, batching=batching, masking=MaskingOptions())
    ):
        if limit and i >= limit:
            break
        out.append(batch)
    return out


def held_out_scores(model, batches: list[dict], proteins: int) -> dict[str, np.ndarray]:
    """Per held-out protein: summed cross-entropy, correct predictions and masked positions."""
    import torch
    import torch.nn.functional as F

    ce, correct, masked = np.zeros(proteins), np.zeros(proteins), np.zeros(proteins)
    model.eval()
    with torch.inference_mode():
        for b in batches:
            seq = model.bert(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state
            where = b["labels"] != IGNORE_INDEX
            logits = model.cls(seq[where]).float()
            labels = b["labels"][where]
            rows = np.asarray(b["sample_index"])[where.nonzero()[:, 0].numpy()]
            np.add.at(ce, rows, F.cross_entropy(logits, labels, reduction="none").numpy())
            np.add.at(correct, rows, (logits.argmax(-1) == labels).numpy().astype(float))
            np.add.at(masked, rows, 1.0)
    return {"ce": ce, "correct": correct, "masked": masked}


def tokens_of(seqs: list[str]) -> list[np.ndarray]:
    return [np.concatenate([[CLS_ID], encode(q), [SEP_ID]]).astype(np.int64) for q in seqs]


def embed(model, seqs: list[str], max_tokens: int) -> np.ndarray:
    """Mean over residues ([CLS]/[SEP] and padding excluded) of the last hidden state, per protein."""
    import torch

    toks = tokens_of(seqs)
    order = np.argsort([len(t) for t in toks], kind="stable")
    out = np.zeros((len(seqs), model.config.hidden_size), dtype=np.float32)
    model.eval()
    i = 0
    with torch.inference_mode():
        while i < len(order):
            width = len(toks[order[i]])
            rows = max(1, min(64, max_tokens // max(len(toks[order[min(i + 63, len(order) - 1)]]), 1)))
            chosen = order[i : i + rows]
            width = max(len(toks[j]) for j in chosen)
            ids = torch.full((len(chosen), width), PAD_ID, dtype=torch.long)
            for r, j in enumerate(chosen):
                ids[r, : len(toks[j])] = torch.from_numpy(toks[j])
            att = (ids != PAD_ID).long()
            hidden = model.bert(input_ids=ids, attention_mask=att).last_hidden_state
            residue = att.clone()
            residue[:, 0] = 0
            residue[torch.arange(len(chosen)), att.sum(1) - 1] = 0
            pooled = (hidden * residue[..., None]).sum(1) / residue.sum(1, keepdim=True)
            out[chosen] = pooled.float().numpy()
            i += len(chosen)
    return out


def probe_scores(model, probe: dict, max_tokens: int) -> dict[str, np.ndarray]:
    """Logistic regression on frozen mean-pooled embeddings: fitted on probe-train, per probe-test protein."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train, test = probe["train"], probe["test"]
    x_train, x_test = embed(model, [q for q, _ in train], max_tokens), embed(model, [q for q, _ in test], max_tokens)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    clf.fit(x_train, [y for _, y in train])
    return {"predicted": clf.predict(x_test).astype(np.int64), "label": np.array([y for _, y in test], dtype=np.int64)}


def speed(models: dict[str, Any], batches: list[dict], rounds: int) -> dict[str, Any]:
    """Residues/s of each model's encoder forward over the same held-out batches, the models timed in turn within
    each round (the order alternating between rounds) so that a change in the machine's load falls on all of them;
    wall and CPU seconds, medians over `rounds` after a warm-up, and each model's speed-up over the first with the
    range of its per-round ratios. Every student has one shape, so one student stands for all of them."""
    import torch

    residues = sum(int(b["num_residues"]) for b in batches)
    names = list(models)
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    with torch.inference_mode():
        for i in range(rounds + 1):
            for name in names if i % 2 else reversed(names):
                model = models[name].eval()
                t0, c0 = time.perf_counter(), cpu_s()
                for b in batches:
                    model.bert(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
                if i:
                    wall[name].append(time.perf_counter() - t0)
                    cpu[name].append(cpu_s() - c0)
    first = names[0]
    out: dict[str, Any] = {"residues": residues, "batches": len(batches), "rounds": rounds, "models": {}}
    for name in names:
        ratios = [a / b for a, b in zip(wall[first], wall[name])]
        out["models"][name] = {
            "residues_per_s": residues / statistics.median(wall[name]),
            "residues_per_cpu_s": residues / statistics.median(cpu[name]),
            f"speedup_over_{first}": {
                "median": statistics.median(ratios),
                "min": min(ratios),
                "max": max(ratios),
            },
            "wall_s": [round(x, 4) for x in wall[name]],
            "cpu_s": [round(x, 4) for x in cpu[name]],
        }
    return out


def score_model(model, data: dict, s: Settings, proteins: int, batches: list[dict]) -> dict:
    """Held-out MLM and probe scores, and the parameter count."""
    return {
        "held_out": held_out_scores(model, batches, proteins),
        "probe": probe_scores(model, data["probe"], s.max_tokens),
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def save_scores(path: Path, scores: dict, extra: dict) -> None:
    arrays = {f"held_out_{k}": v for k, v in scores["held_out"].items()} | {
        f"probe_{k}": v for k, v in scores["probe"].items()
    }
    np.savez(path.with_suffix(".npz"), **arrays)
    dump_json(path, {"parameters": scores["parameters"], **extra})


def load_scores(path: Path) -> dict | None:
    meta = load_json(path)
    if meta is None or not path.with_suffix(".npz").is_file():
        return None
    arrays = np.load(path.with_suffix(".npz"))
    return {
        "held_out": {k: arrays[f"held_out_{k}"] for k in ("ce", "correct", "masked")},
        "probe": {k: arrays[f"probe_{k}"] for k in ("predicted", "label")},
        **meta,
    }


def train_teacher(work: Path, data: dict, s: Settings, batches: list[dict]) -> Path:
    """Pre-train the teacher by MLM on the corpus; its held-out loss curve decides how converged it is."""
    import shutil

    import torch

    from minprot_ds.distill.pretrain import pretrain_teacher
    from minprot_ds.models.masked_lm import save_random_protbert

    folder = work / "teacher"
    if load_json(work / "teacher.json") is not None:
        return folder
    shutil.rmtree(folder, ignore_errors=True)  # an interrupted pre-training starts again
    save_random_protbert(
        folder,
        num_layers=s.teacher_layers,
        hidden_size=s.hidden,
        num_heads=s.heads,
        intermediate_size=4 * s.hidden,
        seed=0,
    )
    sample = batches[: max(4, s.eval_batches)]
    curve: list[tuple[int, float]] = []
    every = max(1, s.teacher_steps // 20)

    def on_step(step: int, loss: float, model) -> None:
        if step % every and step != s.teacher_steps:
            return
        scores = held_out_scores(model, sample, held_out_rows(data))
        model.train()
        curve.append((step, float(scores["ce"].sum() / max(scores["masked"].sum(), 1))))

    t0, c0 = time.perf_counter(), cpu_s()
    torch.manual_seed(0)
    acc = pretrain_teacher(
        folder,
        data["corpus"],
        steps=s.teacher_steps,
        lr=s.teacher_lr,
        seed=0,
        max_tokens=s.max_tokens,
        log=say,
        on_step=on_step,
    )
    dump_json(
        work / "teacher.json",
        {
            "curve": curve,
            "valid_accuracy": acc,
            "seconds": round(time.perf_counter() - t0, 1),
            "cpu_seconds": round(cpu_s() - c0, 1),
        },
    )
    return folder


def held_out_rows(data: dict) -> int:
    return int(data["counts"]["held_out"])


def convergence(curve: list[list[float]]) -> dict[str, Any]:
    """How far from converged: the held-out loss's least-squares slope over the last quarter of the steps (per
    100 steps) and its drop over that quarter."""
    steps = np.array([c[0] for c in curve], dtype=float)
    loss = np.array([c[1] for c in curve], dtype=float)
    tail = steps >= steps[-1] * 0.75
    slope = float(np.polyfit(steps[tail], loss[tail], 1)[0] * 100) if tail.sum() >= 2 else math.nan
    start = loss[tail][0] if tail.any() else math.nan
    return {
        "final_held_out_ce": float(loss[-1]),
        "slope_per_100_steps_last_quarter": slope,
        "drop_over_last_quarter": float(start - loss[-1]),
        "relative_drop_over_last_quarter": float((start - loss[-1]) / start),
        "evaluated_on": "the first held-out micro-batches with the fixed masks",
    }


def run_config(variant: str, seed: int, data: dict, teacher: Path, work: Path, s: Settings) -> list[str]:
    """`--set` overrides of the real job's run config for one (variant, seed)."""
    sets = [
        f'model.teacher="{teacher}"',
        f"model.student_layers={s.student_layers}",
        'model.layer_strategy="alternate"',
        f'data.corpus="{data["corpus"]}"',
        f"data.seed={seed}",
        f"data.max_tokens={s.max_tokens}",
        "data.max_rows=64",
        "data.num_workers=0",
        'loss.impl="eager"',
        f"optimizer.lr={s.student_lr}",
        f"schedule.total_steps={s.student_steps}",
        f"schedule.warmup_steps={s.warmup_steps}",
        f"checkpoint.every_steps={max(1, s.student_steps // 4)}",
        "checkpoint.every_minutes=0",
        "checkpoint.keep_last=1",
        f"eval.every_steps={s.eval_every}",
        f"eval.max_batches={s.eval_batches}",
        'tracking.experiment="distillation-value"',
        "tracking.system_metrics=false",
        f"run.log_every={max(1, s.student_steps // 10)}",
        *LOSS[variant],
    ]
    if variant == "distill-random-init":
        from minprot_ds.models.masked_lm import save_random_protbert

        folder = work / "random-init" / f"seed{seed}"
        if not (folder / "config.json").is_file():
            save_random_protbert(
                folder,
                num_layers=s.student_layers,
                hidden_size=s.hidden,
                num_heads=s.heads,
                intermediate_size=4 * s.hidden,
                seed=1000 + seed,
            )
        sets.append(f'model.student="{folder}"')
    return sets


def train_unit(variant: str, seed: int, data: dict, teacher: Path, work: Path, s: Settings) -> tuple[Path, list]:
    """One (variant, seed) through the real distillation job; resumes from its newest checkpoint if any."""
    from mlflow.tracking import MlflowClient

    from minprot_ds.distill.config import load_config
    from minprot_ds.distill.job import run

    run_dir = work / "units" / f"{variant}-seed{seed}"
    config = load_config(None, run_config(variant, seed, data, teacher, work, s))
    result = run(config, ds_config=REPO / "ds_configs" / "cpu_zero2.json", run_dir=run_dir, resume="auto")
    client = MlflowClient(tracking_uri=f"sqlite:///{run_dir / 'mlflow.db'}")
    history = client.get_metric_history(result.mlflow_run_id, "valid/student_mlm_loss")
    curve = sorted({m.step: m.value for m in history}.items())
    return result.student_dir, curve


# --- 3. statistics --------------------------------------------------------------------------------------------


def ci(values: np.ndarray, point: float) -> dict[str, float]:
    low, high = percentile_interval(values)
    return {"mean": float(point), "ci_low": low, "ci_high": high}


class Resampler:
    """B joint resamples: proteins (uncertainty.draw, the same draws for every model) and seeds (with
    replacement from the seeds a variant ran, the same picks for every variant: pairs by seed)."""

    def __init__(self, proteins: int, probe_proteins: int, seeds: int, resamples: int = RESAMPLES):
        self.held = draw([str(i) for i in range(proteins)], resamples=resamples, seed=0).counts.astype(float)
        self.probe = draw([str(i) for i in range(probe_proteins)], resamples=resamples, seed=1).counts.astype(float)
        self.seed_picks = np.random.default_rng(2).integers(0, seeds, size=(resamples, seeds))

    def per_seed(self, scores: dict, metric: str) -> tuple[float, np.ndarray]:
        """The metric on all proteins, and on each protein resample [B]."""
        if metric.startswith("probe_"):
            p = scores["probe"]
            correct = (p["predicted"] == p["label"]).astype(float)
            if metric == "probe_accuracy":
                return float(correct.mean()), (self.probe @ correct) / self.probe.sum(1)
            return mcc(p, np.ones(len(correct))), mcc(p, self.probe)
        h = scores["held_out"]
        num = h["ce"] if metric in ("mlm_ce", "perplexity") else h["correct"]
        point, boot = num.sum() / h["masked"].sum(), (self.held @ num) / (self.held @ h["masked"])
        if metric == "perplexity":
            return float(np.exp(point)), np.exp(boot)
        return float(point), boot

    def combine(self, per_seed: list[tuple[float, np.ndarray]]) -> tuple[float, np.ndarray]:
        """Mean over seeds; each resample averages the seeds it picked (one seed: no seed resampling)."""
        points = np.array([p for p, _ in per_seed])
        boots = np.stack([b for _, b in per_seed])  # [S, B]
        if len(per_seed) == 1:
            return float(points[0]), boots[0]
        picks = self.seed_picks[:, : len(per_seed)] % len(per_seed)
        return float(points.mean()), boots[picks, np.arange(boots.shape[1])[:, None]].mean(1)


def mcc(p: dict, weights: np.ndarray) -> np.ndarray | float:
    """Matthews correlation of the binary probe, per weight row (a resample) or for one weight vector."""
    w = np.atleast_2d(weights)
    y, yhat = p["label"], p["predicted"]
    tp, tn = w @ ((y == 1) & (yhat == 1)), w @ ((y == 0) & (yhat == 0))
    fp, fn = w @ ((y == 0) & (yhat == 1)), w @ ((y == 1) & (yhat == 0))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (tp * tn - fp * fn) / np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return float(out[0]) if weights.ndim == 1 else out


METRICS = ("mlm_ce", "perplexity", "mlm_accuracy", "probe_accuracy", "probe_mcc")
HIGHER_IS_BETTER = ("mlm_accuracy", "probe_accuracy", "probe_mcc")


def summarise(scores: dict[str, list[dict]], seeds: dict[str, list[int]], r: Resampler) -> dict[str, Any]:
    """Per variant: each metric's mean and CI, retention (student / teacher) and distill - mlm-only."""
    boots: dict[str, dict[str, tuple[float, np.ndarray]]] = {}
    variants = []
    for name, runs in scores.items():
        boots[name] = {m: r.combine([r.per_seed(sc, m) for sc in runs]) for m in METRICS}
        entry = {"name": name, "seeds": seeds[name], "metrics": {m: ci(b, p) for m, (p, b) in boots[name].items()}}
        entry["cost"] = {"parameters": runs[0]["parameters"]}
        variants.append(entry)
    teacher = boots["teacher"]
    for entry in variants:
        if entry["name"] == "teacher":
            continue
        own = boots[entry["name"]]
        entry["retention"] = {  # the same protein draws for student and teacher: a paired ratio
            m: ci(own[m][1] / teacher[m][1], own[m][0] / teacher[m][0]) for m in HIGHER_IS_BETTER
        }
    comparisons = {}
    for a, b in (("distill", "mlm-only"), ("distill", "distill-random-init"), ("distill", "distill-kd-all")):
        if a in scores and b in scores:
            diff = {}
            for m in METRICS:
                pa = [r.per_seed(sc, m) for sc in scores[a]]
                pb = [r.per_seed(sc, m) for sc in scores[b]]
                diff[m] = ci(*reversed(r.combine([(x[0] - y[0], x[1] - y[1]) for x, y in zip(pa, pb)])))
            comparisons[f"{a} - {b}"] = diff
    return {"variants": variants, "comparisons": comparisons}


# --- 4. outputs -------------------------------------------------------------------------------------------------


def fmt(m: dict[str, float], digits: int = 3) -> str:
    return f"{m['mean']:.{digits}f} [{m['ci_low']:.{digits}f}, {m['ci_high']:.{digits}f}]"


def table(summary: dict, timed: dict, console) -> None:
    rows = []
    for v in summary["variants"]:
        rate = timed["models"]["teacher" if v["name"] == "teacher" else "student"]["residues_per_s"]
        m, ret = v["metrics"], v.get("retention", {})
        rows.append(
            [
                v["name"],
                len(v["seeds"]),
                fmt(m["mlm_ce"]),
                fmt(m["perplexity"], 2),
                fmt(m["mlm_accuracy"]),
                fmt(ret["mlm_accuracy"]) if ret else None,
                fmt(m["probe_accuracy"]),
                fmt(m["probe_mcc"]),
                f"{rate / 1e3:.1f} k",
                f"{v['cost']['parameters'] / 1e6:.2f} M",
            ]
        )
    print_table(
        TITLE,
        [
            "variant",
            "seeds",
            "held-out CE",
            "perplexity",
            "MLM accuracy",
            "retention (acc)",
            "probe accuracy",
            "probe MCC",
            "residues/s",
            "params",
        ],
        rows,
        console,
    )
    rows = [[name, *(fmt(d[m], 4) for m in METRICS)] for name, d in summary["comparisons"].items()]
    print_table("paired differences (by seed and protein), 95% CI", ["difference", *METRICS], rows, console)
    rows = [
        [
            name,
            f"{t['residues_per_s']:,.0f}",
            f"{t['residues_per_cpu_s']:,.0f}",
            f"{t['speedup_over_teacher']['median']:.2f}x "
            f"({t['speedup_over_teacher']['min']:.2f}-{t['speedup_over_teacher']['max']:.2f})",
        ]
        for name, t in timed["models"].items()
    ]
    print_table(
        f"encoder speed, {timed['residues']:,} held-out residues in {timed['batches']} batches, "
        f"median of {timed['rounds']} interleaved rounds (every student has one shape)",
        ["model", "residues/s", "residues per CPU-s", "speed-up (range over rounds)"],
        rows,
        console,
    )


def curve_band(curves: list[list]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean and a t-interval over seeds at the steps every seed logged."""
    from scipy import stats

    steps = sorted(set.intersection(*(set(s for s, _ in c) for c in curves)))
    values = np.array([[dict(c)[s] for s in steps] for c in curves])
    mean = values.mean(0)
    if len(curves) < 2:
        return np.array(steps), mean, mean, mean
    half = stats.t.ppf(0.975, len(curves) - 1) * values.std(0, ddof=1) / math.sqrt(len(curves))
    return np.array(steps), mean, mean - half, mean + half


def plot(path: Path, curves: dict[str, list[list]], summary: dict, teacher_curve: list) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for name, runs in curves.items():
        steps, mean, low, high = curve_band(runs)
        (line,) = ax.plot(steps, mean, marker=".", label=f"{name} ({len(runs)} seeds)")
        ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.2)
    fixed = {v["name"]: v["metrics"]["mlm_ce"] for v in summary["variants"]}
    for name, style in (("teacher", "--"), ("pruned", ":")):
        m = fixed[name]
        ax.axhline(m["mean"], color="black", linestyle=style, label=f"{name} (fixed masks, all held-out)")
    ax.set_xlabel("student optimizer step")
    ax.set_ylabel("held-out MLM cross-entropy")
    ax.set_title("held-out loss during training (bands: 95% t-interval over seeds)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# --- the run ----------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="every variant for a few steps on a small pool (CI)")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "distillation_value", help="cache; resumable")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "distillation_value.json")
    parser.add_argument("--seeds", type=int, help="seeds per trained variant (default: 3; --quick 2)")
    parser.add_argument("--student-steps", type=int, help="optimizer steps of every trained student")
    parser.add_argument("--teacher-steps", type=int, help="MLM pre-training steps of the teacher")
    parser.add_argument("--only", nargs="*", choices=TRAINED, help="train only these variants (calibration)")
    args = parser.parse_args(argv)
    quiet_libraries()
    settings = QUICK if args.quick else FULL
    changes = {
        k: v
        for k, v in (
            ("seeds", args.seeds),
            ("student_steps", args.student_steps),
            ("teacher_steps", args.teacher_steps),
        )
        if v is not None
    }
    settings = dataclasses.replace(settings, **changes)
    if settings.seeds < 1 or settings.student_steps < 1 or settings.teacher_steps < 1:
        raise UserError("--seeds, --student-steps and --teacher-steps must be at least 1.")
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    recorded = load_json(work / "settings.json")
    cached = {k: v for k, v in dataclasses.asdict(settings).items() if k not in TIMING_ONLY}
    if recorded is not None and {k: v for k, v in recorded.items() if k not in TIMING_ONLY} != cached:
        raise UserError(
            f"--work {work} holds a run with other settings ({work / 'settings.json'}); pass another --work folder."
        )
    dump_json(work / "settings.json", dataclasses.asdict(settings))
    console = make_console()
    console.width = max(console.width, 200)  # the table's CIs stay on one line each
    started = time.perf_counter()
    gemm_at_start = gemm_rate()
    timings: dict[str, float] = {}

    data = prepare_data(work, settings)
    c = data["counts"]
    say(
        f"data: {c['pooled_unique']:,} unique real sequences pooled ({c['pooled_used']:,} used); "
        f"{c['held_out']:,} held out; {c['probe_test_removed_from_pool']:,} probe-test proteins kept out; "
        f"{c['train_removed_homologs']:,} training homologs of held-out/probe-test removed; "
        f"{c['train']:,} training sequences ({c['train_residues']:,} residues). "
        f"Probe: {c['probe']['train']} train / {c['probe']['test']} test "
        f"({c['probe']['test_dropped_homolog_of_probe_train']} test proteins with a homolog in probe-train dropped)"
    )
    for name, sc in c["sources"].items():
        say(
            f"  {name}: {sc['records']:,} records, {sc['kept']:,} new, {sc['duplicates']:,} duplicates, "
            f"dropped {sc['dropped']}"
        )
    batches = fixed_eval_batches(data["corpus"], settings.max_tokens)
    proteins = held_out_rows(data)

    t0 = time.perf_counter()
    teacher = train_teacher(work, data, settings, batches)
    timings["teacher"] = time.perf_counter() - t0
    teacher_info = load_json(work / "teacher.json")
    conv = convergence(teacher_info["curve"])
    say(
        f"teacher: held-out CE {conv['final_held_out_ce']:.3f} after {settings.teacher_steps} steps; "
        f"slope over the last quarter {conv['slope_per_100_steps_last_quarter']:+.4f} per 100 steps"
    )

    import torch

    from minprot_ds.models.masked_lm import build_student, load_student, load_teacher

    scores: dict[str, list[dict]] = {}
    seeds: dict[str, list[int]] = {}
    curves: dict[str, list[list]] = {}
    for name in ("teacher", "pruned"):
        path = work / "scores" / f"{name}.json"
        found = load_scores(path)
        if found is None:
            model = load_teacher(str(teacher), dtype=torch.float32)
            if name == "pruned":
                model = build_student(model, num_layers=settings.student_layers, strategy="alternate", seed=0)
            path.parent.mkdir(parents=True, exist_ok=True)
            save_scores(path, score_model(model, data, settings, proteins, batches), {})
            found = load_scores(path)
        scores[name], seeds[name] = [found], [0]
    variants = [v for v in TRAINED if not args.only or v in args.only]
    for name in variants:
        for seed in range(settings.seeds):
            path = work / "scores" / f"{name}-seed{seed}.json"
            found = load_scores(path)
            if found is None:
                t0, c0 = time.perf_counter(), cpu_s()
                say(f"training {name}, seed {seed}")
                student_dir, curve = train_unit(name, seed, data, teacher, work, settings)
                trained_s, trained_cpu_s = time.perf_counter() - t0, cpu_s() - c0
                model = load_student(str(student_dir))
                sc = score_model(model, data, settings, proteins, batches)
                extra = {"curve": curve, "train_s": trained_s, "train_cpu_s": trained_cpu_s}
                save_scores(path, sc, extra | {"total_s": time.perf_counter() - t0, "total_cpu_s": cpu_s() - c0})
                found = load_scores(path)
                say(f"{name} seed {seed}: trained in {trained_s:.0f} s, scored in {found['total_s'] - trained_s:.0f} s")
            scores.setdefault(name, []).append(found)
            seeds.setdefault(name, []).append(seed)
            curves.setdefault(name, []).append(found["curve"])

    r = Resampler(proteins, len(data["probe"]["test"]), settings.seeds)
    summary = summarise(scores, seeds, r)
    teacher_model = load_teacher(str(teacher), dtype=torch.float32)
    timed = speed(
        {
            "teacher": teacher_model,
            "student": build_student(teacher_model, num_layers=settings.student_layers, strategy="alternate", seed=0),
        },
        batches[: settings.speed_batches],
        settings.speed_rounds,
    )
    table(summary, timed, console)
    out = args.out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    png = plot(out.with_suffix(".png"), curves, summary, teacher_info["curve"])
    unit_s = [s["total_s"] for runs in scores.values() for s in runs if "total_s" in s]
    payload = {
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "quick": args.quick,
        "settings": dataclasses.asdict(settings) | {"student_layers": settings.student_layers},
        "counts": c,
        "teacher": {"convergence": conv, "curve": teacher_info["curve"], "pretrain_s": teacher_info["seconds"]},
        **summary,
        "speed": timed,
        "curves": curves,
        "statistics": {
            "ci": "95% percentile bootstrap, "
            f"{RESAMPLES} resamples of the held-out (or probe-test) proteins jointly with the seeds (with "
            "replacement); paired differences and retention use the same draws for both sides",
            "held_out_masks": f"one fixed set (masking seed {EVAL_SEED}) over all {proteins} held-out proteins",
            "curve": "valid/student_mlm_loss the job logs every eval.every_steps on the first eval.max_batches "
            "held-out micro-batches (masks drawn from data.seed); bands: 95% t-interval over seeds",
            "teacher_seeds": "one teacher (pre-training seed 0): its CI is over proteins only",
        },
        "gemm_gflops": {"start": round(gemm_at_start, 1), "end": round(gemm_rate(), 1)},
        "timing_s": {
            "wall_this_invocation": round(time.perf_counter() - started, 1),
            "data": c["seconds"],
            "teacher_pretrain": teacher_info["seconds"],
            "teacher_pretrain_cpu": teacher_info.get("cpu_seconds"),
            "per_trained_unit": [round(x, 1) for x in unit_s],
            "per_trained_unit_cpu": [
                round(s["total_cpu_s"], 1) for runs in scores.values() for s in runs if "total_cpu_s" in s
            ],
        },
        "plot": str(png),
    }
    write_json(out, "distillation_value", payload)
    say(f"wrote {out} and {png}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
