"""Where a distillation step's time goes: the engine's step against the naive loop's, by operator family.

Both loops run on the same random ProtBert-format models (a preset, cpu-small by default) and the same
synthetic corpus with UniRef50-like lengths, one process, no launcher. torch.profiler records a few
steps of each after warm-up, and each op's self time goes to a family (matrix multiplies, attention,
softmax/layer norm, elementwise, indexing and copies, optimizer, communication; see
minprot_ds.bench.profile). The table gives microseconds per padded token: where the two loops spend
alike per token, the engine's gain is the padding it removes; where the naive loop spends more, the
gain is work the engine does not do. Below it, the achieved FLOP rate of each loop's matrix multiplies
and that of a lone torch.addmm (or matmul) of the heaviest GEMM shape each ran.

The profiler adds overhead of its own: use the throughput benchmark for rates, this one for shares.

    python benchmarks/step_profile.py                     # cpu-small, 8192-token batches vs naive batches of 16
    python benchmarks/step_profile.py --steps 10 --max-tokens 16384 --out /tmp/profile.json
"""

from __future__ import annotations

import argparse
import ast
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from common import SHARED_LENGTHS, make_console, print_table, write_json

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
from minprot_ds.data.batching import DEFAULT_MAX_TOKENS  # noqa: E402

DEFAULT_OUT = REPO / "benchmarks" / "results" / "step_profile.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--preset",
        default="cpu-small",
        help="model shapes (minprot_ds.models.masked_lm.MODEL_PRESETS; default cpu-small)",
    )
    parser.add_argument("--steps", type=int, default=6, help="profiled steps per loop (default 6)")
    parser.add_argument("--warmup", type=int, default=2, help="unprofiled steps first (default 2)")
    parser.add_argument(
        "--max-tokens",
        type=int,
        default=DEFAULT_MAX_TOKENS,
        help=f"engine token budget per micro-batch (default {DEFAULT_MAX_TOKENS})",
    )
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "bf16", "fp16"],
        help="both loops' precision (default fp32; fp16 needs a GPU)",
    )
    parser.add_argument(
        "--lengths",
        type=Path,
        default=SHARED_LENGTHS,
        help="lengths file for the synthetic corpus (default ../shared's UniRef50-like sample)",
    )
    parser.add_argument("--naive-batch-size", type=int, default=16, help="rows per naive batch (default 16)")
    parser.add_argument("--sequences", type=int, default=4000, help="rows of the synthetic corpus (default 4000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="scratch folder (default: a temporary one, removed)"
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="JSON results (default benchmarks/results/step_profile.json)"
    )
    args = parser.parse_args(argv)
    for name in ("steps", "max_tokens", "naive_batch_size", "sequences"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from minprot_ds.bench import throughput as tp
    from minprot_ds.bench.naive import NaiveLoop
    from minprot_ds.bench.profile import bare_gemm_gflops, mm_operands, profile_loop
    from minprot_ds.distributed import init_distributed

    init_distributed()
    teacher, layers, corpus, source = tp.prepare_inputs(
        work,
        preset=args.preset,
        teacher=None,
        corpus=None,
        sequences=args.sequences,
        lengths_file=args.lengths,
        seed=args.seed,
    )
    setting = tp.sweep_settings(
        max_tokens=[args.max_tokens],
        zero_stages=[2],
        checkpointing=[False],
        loss_impls=["eager"],
        precisions=[args.precision],
    )[0]
    inputs = tp.RunInputs(teacher=teacher, student_layers=layers, corpus=corpus, seed=args.seed)
    engine, stream = tp.build_setting(setting, inputs, planned_steps=args.warmup + args.steps + 1)
    batches = iter(stream)

    def engine_step() -> tuple[int, int]:
        stats = engine.step(next(batches))
        return stats.tokens, stats.residues

    naive = NaiveLoop(
        teacher,
        corpus,
        student_layers=layers,
        batch_size=args.naive_batch_size,
        seed=args.seed,
        precision=args.precision,
    )

    def naive_step() -> tuple[int, int]:
        batch = naive.step()
        return batch["input_ids"].numel(), batch["num_residues"]

    loops = [
        profile_loop(setting.label, engine_step, steps=args.steps, warmup=args.warmup),
        profile_loop(f"naive (batch {args.naive_batch_size})", naive_step, steps=args.steps, warmup=args.warmup),
    ]
    bare = []
    for loop in loops:
        top = loop.gemm_shapes[0] if loop.gemm_shapes else None
        operands = mm_operands(top["op"], ast.literal_eval(top["input_shapes"])) if top else None
        bare.append(
            {
                "loop": loop.label,
                "op": top and top["op"],
                "operands": operands,
                "precision": args.precision,
                "gflops_per_s": bare_gemm_gflops(
                    *operands,
                    bias=top["op"] == "aten::addmm",
                    device=str(engine.device),
                    dtype=tp.PRECISIONS[args.precision],
                )
                if operands
                else None,
            }
        )
    return {
        "preset": args.preset,
        "precision": args.precision,
        "lengths": source,
        "setting": setting.label,
        "loops": [p.as_dict() for p in loops],
        "bare_gemm": bare,
    }


def show(report: dict[str, Any]) -> None:
    from minprot_ds.bench.profile import FAMILIES

    engine, naive = report["loops"]
    rows = []
    for family in FAMILIES:
        e, n = engine["us_per_padded_token"][family], naive["us_per_padded_token"][family]
        rows.append(
            [
                family,
                f"{e:.2f}",
                f"{100 * engine['share'][family]:.1f}",
                f"{n:.2f}",
                f"{100 * naive['share'][family]:.1f}",
                f"{n / e:.2f}" if e else None,
            ]
        )
    e_all, n_all = (1e6 * loop["profiled_s"] / loop["tokens"] for loop in (engine, naive))
    rows.append(["all profiled ops", f"{e_all:.2f}", "100", f"{n_all:.2f}", "100", f"{n_all / e_all:.2f}"])
    console = make_console()
    print_table(
        f"step time by op family, µs per padded token ({report['preset']}, {engine['steps']} profiled steps)",
        ["family", "engine µs/tok", "engine %", "naive µs/tok", "naive %", "naive/engine per tok"],
        rows,
        console=console,
    )
    for loop in (engine, naive):
        pad = 1 - (loop["residues"] / loop["tokens"])
        console.print(
            f"{loop['label']}: {loop['tokens']:,} padded tokens ({100 * pad:.1f}% padding or special), "
            f"{loop['residues'] / loop['seconds']:,.0f} residues/s under the profiler, "
            f"{1e6 * loop['untracked_s'] / loop['tokens']:.2f} µs/token outside any op (Python, numpy)"
        )
    for loop, bare in zip((engine, naive), report["bare_gemm"]):
        lone = f"{bare['gflops_per_s']:.1f}" if bare["gflops_per_s"] else "—"
        console.print(
            f"GEMM rate {loop['label']}: {loop['gemm_gflops_per_s']:.1f} GFLOP/s in the step; a lone "
            f"{bare['precision']} {bare['op']} of its heaviest shape {bare['operands']}: {lone} GFLOP/s"
        )


def main(argv: list[str] | None = None) -> int:
    from minprot_ds.errors import UserError

    args = parse_args(argv)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="minprot-profile-"))
    try:
        report = run(args, work)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    show(report)
    print(f"wrote {write_json(args.out, 'step_profile', report)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
