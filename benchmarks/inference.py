"""Inference throughput: `minprot embed` / `minprot predict` against a naive loop, teacher and student.

The naive loop is what the ProtTrans example notebooks do: Bio.SeqIO, batches of 8 in file order, the
tokenizer on space-separated residues padded to the batch's longest, plain transformers under no_grad, a
mean over each protein's residues (embed) or the head's softmax (predict). minprot's path is the real
command (`inference.job.run`: FASTA stream, length-sorted token-budget batches, inference mode, SDPA,
chunks and manifest, output file) timed end to end. Both run on the same UniRef50-like lengths (20-512
residues, the corpus' range, so the naive loop's 512 cut changes nothing) in the same process; each
setting's figure is the median of --repeats timed runs after one warm-up, and "max |diff|" is the largest
difference between the two paths' outputs. Several --max-tokens budgets are timed against one naive loop (the
default: the device's, minprot_ds.inference.options.default_max_tokens); --layers keeps a preset's width at a
depth a CPU runs in minutes (the per-layer cost, hence the budget's effect, does not depend on depth). The
preset names the family too: an esm2-* preset times ESM-2 models (EsmForMaskedLM's encoder, ESM-2's tokenizer
on unspaced residues in the naive loop, as ESM's examples do). Prints a table and writes JSON.

    .venv/bin/python benchmarks/inference.py --preset cpu-small --proteins 256 --repeats 3
    .venv/bin/python benchmarks/inference.py --preset protbert --layers 2 --modes embed --max-tokens 2048 8192
    .venv/bin/python benchmarks/inference.py --preset esm2-150m --layers 2 --modes embed --proteins 64
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import SHARED_LENGTHS, make_console, print_table, time_repeats, write_json  # noqa: E402

RESIDUES = list("LAGVESIKRDTPNQFYMHCW")


def make_inputs(folder: Path, preset: str, proteins: int, seed: int, layers: int | None = None) -> dict[str, Path]:
    """Random teacher and student encoders in the preset's shape and family (the teacher `layers` deep if given,
    the student half as deep), a dna-binding head on each, a FASTA."""
    from minprot_ds.bench.throughput import random_models
    from minprot_ds.data.synthetic import sample_lengths
    from minprot_ds.finetune.tasks import task_spec
    from minprot_ds.models.masked_lm import save_random_preset
    from minprot_ds.scoring.heads import build_task_model, save_task_model

    if layers is None:
        teacher, student_layers = random_models(folder, preset, seed)
    else:
        teacher = save_random_preset(folder / "teacher", preset, seed=seed, num_layers=layers)
        student_layers = max(1, layers // 2)
    student = save_random_preset(folder / "student", preset, seed=seed + 1, num_layers=student_layers)
    spec = task_spec("dna-binding")
    out = {"teacher": teacher, "student": student}
    for role, enc in (("teacher", teacher), ("student", student)):
        model = build_task_model(str(enc), task=spec.name, classes=spec.classes, per_residue=False, seed=seed)
        out[f"{role}-task"] = save_task_model(model, folder / f"{role}-task", rank=0)
    lengths, source = sample_lengths(proteins, seed, SHARED_LENGTHS if SHARED_LENGTHS.is_file() else None)
    rng = np.random.default_rng(seed)
    fasta = folder / "proteins.fasta"
    fasta.write_text("".join(f">p{i}\n{''.join(rng.choice(RESIDUES, n))}\n" for i, n in enumerate(lengths)))
    out["fasta"] = fasta
    out["lengths_source"] = source  # type: ignore[assignment]
    return out


def naive(model_dir: Path, fasta: Path, mode: str) -> np.ndarray:
    """The notebook loop; returns [N, H] mean embeddings or [N] positive-class probabilities."""
    from Bio import SeqIO
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from minprot_ds.models.family import family_of
    from minprot_ds.scoring.heads import load_task_model

    hf_logging.set_verbosity_error()  # the MLM head's unused weights are expected
    family = family_of(model_dir)
    # ProtBert's folder gives BertTokenizer (do_lower_case False), ESM-2's EsmTokenizer: the notebooks' tokenizers
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = (load_task_model(model_dir) if mode == "predict" else AutoModel.from_pretrained(str(model_dir))).eval()
    seqs = [str(r.seq) for r in SeqIO.parse(str(fasta), "fasta")]
    out = []
    with torch.no_grad():
        for start in range(0, len(seqs), 8):
            batch = seqs[start : start + 8]
            enc = tokenizer(
                [family.vocab.spaced(s) for s in batch],
                padding=True,
                truncation=True,
                max_length=family.max_residues + 2,
                return_tensors="pt",
            )
            if mode == "predict":
                out.extend(torch.softmax(model(enc["input_ids"], enc["attention_mask"]), -1)[:, 1].tolist())
                continue
            hidden = model(**enc).last_hidden_state
            for j, s in enumerate(batch):
                out.append(hidden[j, 1 : len(s) + 1].mean(0).numpy())
    return np.asarray(out)


def minprot(model_dir: Path, fasta: Path, mode: str, out: Path, max_tokens: int) -> None:
    from minprot_ds.inference.job import run
    from minprot_ds.inference.options import EmbedOptions, PredictOptions

    options = PredictOptions if mode == "predict" else EmbedOptions
    run(options(model=model_dir, fasta=fasta, out=out, max_tokens=max_tokens, progress=False))


def read_minprot(out: Path, mode: str) -> np.ndarray:
    if mode == "predict":
        lines = out.read_text().splitlines()[1:]
        return np.asarray([float(line.split("\t")[3]) for line in lines])
    import h5py

    with h5py.File(out) as f:
        return np.stack([ds[()] for ds in f.values()])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument(
        "--preset", default="cpu-small", help="model shapes (minprot_ds.models.masked_lm.MODEL_PRESETS); random weights"
    )
    p.add_argument("--proteins", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--layers", type=int, default=None, help="teacher layers (default: the preset's); student: half")
    p.add_argument("--modes", nargs="+", choices=("embed", "predict"), default=["embed", "predict"])
    p.add_argument(
        "--max-tokens", type=int, nargs="+", default=[None], help="token budgets to time (default: the device's)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=Path("benchmarks/results/inference.json"))
    args = p.parse_args(argv)

    from minprot_ds.inference.options import default_max_tokens
    from minprot_ds.scoring.models import pick_device

    console = make_console()
    device = pick_device().type
    work = Path(tempfile.mkdtemp(prefix="minprot-inference-bench-"))
    try:
        inputs = make_inputs(work, args.preset, args.proteins, args.seed, args.layers)
        fasta = inputs["fasta"]
        residues = sum(len(line) for line in fasta.read_text().splitlines() if not line.startswith(">"))
        results = []
        for mode in args.modes:
            for role in ("teacher", "student"):
                model_dir = inputs[role] if mode == "embed" else inputs[f"{role}-task"]
                out = work / f"{mode}-{role}" / ("out.h5" if mode == "embed" else "out.tsv")

                # The closures below run within this iteration only.
                def clean() -> None:  # noqa: B023
                    shutil.rmtree(out.parent, ignore_errors=True)  # noqa: B023

                last: dict[str, np.ndarray] = {}

                def run_naive() -> None:
                    last["naive"] = naive(model_dir, fasta, mode)  # noqa: B023

                t_naive = time_repeats(run_naive, args.repeats)
                for budget in args.max_tokens:
                    t_ours = time_repeats(
                        lambda: minprot(model_dir, fasta, mode, out, budget),  # noqa: B023
                        args.repeats,
                        setup=clean,
                    )
                    diff = float(np.abs(read_minprot(out, mode) - last["naive"]).max())
                    results.append(
                        {
                            "mode": mode,
                            "model": role,
                            "max_tokens": budget if budget is not None else default_max_tokens(device),
                            "naive": t_naive.as_dict(),
                            "minprot": t_ours.as_dict(),
                            "naive_residues_per_s": residues / t_naive.wall_median,
                            "minprot_residues_per_s": residues / t_ours.wall_median,
                            "speedup": t_naive.wall_median / t_ours.wall_median,
                            "speedup_cpu_time": t_naive.cpu_median / t_ours.cpu_median,
                            "max_abs_diff": diff,
                        }
                    )
        by = {(r["mode"], r["model"], r["max_tokens"]): r for r in results}
        for r in results:
            r["student_over_teacher"] = (
                by[(r["mode"], "student", r["max_tokens"])]["minprot_residues_per_s"]
                / by[(r["mode"], "teacher", r["max_tokens"])]["minprot_residues_per_s"]
            )
        rows = [
            [
                f"{r['mode']} {r['model']}",
                f"{r['max_tokens']:,}",
                f"{r['naive_residues_per_s']:,.0f}",
                f"{r['minprot_residues_per_s']:,.0f}",
                f"{r['minprot_residues_per_s'] / residues * args.proteins:,.1f}",
                f"{r['speedup']:.2f}x",
                f"{r['speedup_cpu_time']:.2f}x",
                f"{r['student_over_teacher']:.2f}x" if r["model"] == "student" else None,
                f"{r['max_abs_diff']:.1e}",
            ]
            for r in results
        ]
        print_table(
            f"inference, {args.preset}{f' ({args.layers} layers)' if args.layers else ''} on {device}, "
            f"{args.proteins} proteins ({residues:,} residues), median of {args.repeats}",
            [
                "setting",
                "max tokens",
                "naive res/s",
                "minprot res/s",
                "minprot prot/s",
                "vs naive",
                "vs naive, CPU s",
                "student/teacher",
                "max |diff|",
            ],
            rows,
            console,
        )
        path = write_json(
            args.json,
            "inference",
            {
                "args": {k: str(v) for k, v in vars(args).items()},
                "residues": residues,
                "lengths": inputs["lengths_source"],
                "results": results,
            },
        )
        console.print(f"JSON: {path}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
