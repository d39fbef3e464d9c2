"""The real run rehearsed at the teacher's true size on CPU: what day one of an 8xV100 job would meet.

A random teacher with ProtBert's exact config (../shared/reference/prot_bert/config.json: 30 layers,
hidden 1024, 16 heads, FFN 4096, 40,000 positions) saved in ProtBert's format -- or, with --teacher esm2-650m,
ESM-2 650M's (facebook/esm2_t33_650M_UR50D: 33 layers, hidden 1280, 20 heads, FFN 5120, rotary positions, 33
tokens) saved in ESM-2's -- distilled with that preset's model and loss settings (launch/configs/<teacher>.toml)
by the real deepspeed launcher on 2 CPU ranks, per ZeRO stage:

  1. run to step S with a checkpoint at step K (and S), the student exported at the end;
  2. exact resume: a copy resumed from step K redoes K+1..S: same losses, same weights, bit for bit;
  3. world-size change: a copy resumed from step K on 1 rank x 2 accumulation steps through DeepSpeed's
     universal checkpoint (same global batch): losses within float reduction order;
then `minprot export` of the last checkpoint, a reload with AutoModelForMaskedLM (parameter count checked
against the FLOP model, masks filled), two fine-tune steps of the exported student, and `minprot predict`
(the fine-tuned model) and `minprot embed` (the exported student) over a few DeepLoc proteins, one of them
longer than the model's window (512 residues for ProtBert, 1,022 for ESM-2).

Measured: per-rank peak RSS (VmHWM of each rank, polled; every process runs with glibc giving freed blocks
back at once, `LIVE_ALLOCATIONS_ENV`, so that the peak is what the ranks allocated), step time (MLflow's
perf/step_time_s), checkpoint
size and save seconds (from the checkpoint folder's appearance to its COMPLETE marker, polled), resume
load seconds (checkpoint/load_s), universal conversion seconds and its converter's peak RSS, export size
and seconds. Each is set beside the memory plan's prediction (minprot_ds/bench/memory.py).

    nice -n 10 .venv/bin/python benchmarks/rehearsal.py                       # full size, ZeRO-2 and ZeRO-3
    nice -n 10 .venv/bin/python benchmarks/rehearsal.py --teacher esm2-650m   # ESM-2 650M's size
    .venv/bin/python benchmarks/rehearsal.py --teacher-layers 4 --stages 2    # the same path, shallower
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from common import make_console, print_table, write_json

REPO = Path(__file__).resolve().parents[1]
TEACHERS = ("protbert", "esm2-650m", "esm2-150m")  # model presets with a run-config preset of the same name
PROTBERT_CONFIG = REPO.parent / "shared" / "reference" / "prot_bert" / "config.json"
DNA_BINDING = REPO.parent / "shared" / "data" / "dna_binding" / "pdb1075_pdb186"
DEEPLOC = REPO.parent / "shared" / "data" / "deeploc" / "deeploc_test_set.fasta"
GB = 2**30


# --- watching a launch: per-rank peak RSS, checkpoint and conversion events --------------------------------


class Watcher(threading.Thread):
    """Polls the launcher's process tree (VmHWM of each rank and of DeepSpeed's converter) and RUN/ckpt
    (when each checkpoint folder, its COMPLETE marker, and a universal conversion appear)."""

    def __init__(self, root_pid: int, ckpt_dir: Path, every_s: float = 0.1):
        super().__init__(daemon=True)
        self.root_pid, self.ckpt_dir, self.every_s = root_pid, ckpt_dir, every_s
        self.rank_peak: dict[int, int] = {}  # local rank -> peak RSS bytes
        self.converter_peak = 0
        self.seen: dict[str, float] = {}  # "global_step2" -> first seen; "global_step2/COMPLETE" -> first seen
        self.stop = threading.Event()

    def run(self) -> None:
        import psutil

        from minprot_ds.bench.memory_measure import peak_rss

        while not self.stop.is_set():
            try:
                procs = psutil.Process(self.root_pid).children(recursive=True)
            except psutil.Error:
                procs = []
            for p in procs:
                try:
                    cmd = " ".join(p.cmdline())
                    hwm = peak_rss(p.pid)
                except (psutil.Error, OSError):
                    continue
                if "ds_to_universal" in cmd:
                    self.converter_peak = max(self.converter_peak, hwm)
                elif "--local_rank" in cmd:
                    rank = int(cmd.split("--local_rank=")[1].split()[0]) if "--local_rank=" in cmd else 0
                    self.rank_peak[rank] = max(self.rank_peak.get(rank, 0), hwm)
            now = time.monotonic()
            if self.ckpt_dir.is_dir():
                for entry in self.ckpt_dir.iterdir():
                    name = entry.name
                    if ".tmp" in name and "_universal" in name:
                        name = name.lstrip(".").split(".tmp")[0] + ".tmp"
                    self.seen.setdefault(name, now)
                    if (entry / "COMPLETE").exists():
                        self.seen.setdefault(f"{name}/COMPLETE", now)
            self.stop.wait(self.every_s)

    def seconds(self, start: str, end: str) -> float | None:
        return self.seen[end] - self.seen[start] if start in self.seen and end in self.seen else None


def run_env() -> dict[str, str]:
    """Every process of the rehearsal: unbuffered, and its RSS following what it allocates."""
    from minprot_ds.bench.memory import LIVE_ALLOCATIONS_ENV

    return {**os.environ, "PYTHONUNBUFFERED": "1", "MLFLOW_DISABLE_TELEMETRY": "true", **LIVE_ALLOCATIONS_ENV}


def launch(run_dir: Path, args: list[str], ranks: int, timeout_s: float, log_dir: Path) -> dict[str, Any]:
    """launch/distill.py under the real deepspeed launcher, watched; raises with the log's tail if it fails."""
    from minprot_ds.distill.demo import launcher_command

    cmd = launcher_command(ranks, REPO / "launch" / "distill.py", ["--run-dir", str(run_dir), *args])
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{run_dir.name}-{int(time.time())}.log"
    t0 = time.monotonic()
    with (
        open(log, "w") as fh,
        subprocess.Popen(
            cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True, env=run_env()
        ) as proc,
    ):
        watcher = Watcher(proc.pid, run_dir / "ckpt")
        watcher.start()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        finally:
            watcher.stop.set()
            watcher.join()
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} exited with {proc.returncode} after {wall:.0f}s; log {log}:\n" + log.read_text()[-4000:]
        )
    return {"wall_s": wall, "watcher": watcher, "log": str(log)}


def link_copy(run_dir: Path, out: Path, keep: str) -> Path:
    """A copy of a run dir that resumes from checkpoint `keep`: its multi-GB files hard-linked (a resume only
    reads them; new checkpoints are new files), small files copied, later checkpoints and the student left out."""

    def copy(src: str, dst: str) -> None:
        if "/ckpt/" in src and os.path.getsize(src) > 2**20:
            os.link(src, dst)
        else:
            shutil.copy2(src, dst)

    def ignore(folder: str, names: list[str]) -> list[str]:
        if Path(folder).name == "ckpt":
            return [n for n in names if n.startswith("global_step") and n != keep]
        return [n for n in names if n in ("student", "summary.json")] if Path(folder) == run_dir else []

    shutil.rmtree(out, ignore_errors=True)
    return Path(shutil.copytree(run_dir, out, copy_function=copy, ignore=ignore))


# --- reading results back ------------------------------------------------------------------------------------


def metric(run_dir: Path, key: str) -> dict[int, float]:
    """step -> value of an MLflow metric of the run in run_dir (the latest value per step)."""
    from mlflow import MlflowClient

    summary = json.loads((run_dir / "summary.json").read_text())
    client = MlflowClient(f"sqlite:///{run_dir / 'mlflow.db'}")
    history = sorted(client.get_metric_history(summary["mlflow_run_id"], key), key=lambda m: (m.step, m.timestamp))
    return {m.step: m.value for m in history}


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def same_weights(a: Path, b: Path) -> bool:
    from safetensors.torch import load_file

    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return wa.keys() == wb.keys() and all(bool((wa[k] == wb[k]).all()) for k in wa)


# --- the rehearsal -------------------------------------------------------------------------------------------


def make_assets(work: Path, name: str, teacher_layers: int | None, sequences: int) -> tuple[Path, Path, dict]:
    """The random teacher in the preset's real config (ProtBert's own config.json for protbert; optionally fewer
    layers) and a small synthetic corpus."""
    from data_prep.corpus import prepare_corpus
    from minprot_ds.distill.demo import synthetic_fasta
    from minprot_ds.models.masked_lm import MODEL_PRESETS, save_random_preset, save_random_protbert

    preset = MODEL_PRESETS[name]
    layers = teacher_layers or preset.teacher_layers
    teacher = work / f"teacher-{name}-{layers}l"
    t0 = time.monotonic()
    if not (teacher / "model.safetensors").is_file():
        if preset.family == "esm":
            save_random_preset(teacher, name, num_layers=layers)
        else:  # ProtBert's own config.json: its 40,000-position table, which the protbert preset leaves out
            cfg = json.loads(PROTBERT_CONFIG.read_text())
            save_random_protbert(
                teacher,
                num_layers=layers,
                hidden_size=cfg["hidden_size"],
                num_heads=cfg["num_attention_heads"],
                intermediate_size=cfg["intermediate_size"],
                max_position_embeddings=cfg["max_position_embeddings"],
            )
    made_s = time.monotonic() - t0
    corpus = work / "corpus"
    if not (corpus / "manifest.json").is_file():
        prepare_corpus([synthetic_fasta(work / "syn.fasta", sequences=sequences)], corpus, valid_fraction=0.05, seed=0)
    return (
        teacher,
        corpus,
        {
            "folder": str(teacher),
            "teacher_layers": layers,
            "teacher_write_s": made_s,
            "teacher_bytes": folder_bytes(teacher),
        },
    )


def stage_run(
    stage: int, work: Path, common: list[str], steps: int, keep: int, timeout_s: float, console, universal: bool = True
) -> dict[str, Any]:
    """Run, exact resume and universal resume on 1 rank for one ZeRO stage; returns its figures."""
    ds = REPO / "ds_configs" / f"cpu_zero{stage}.json"
    run = work / f"z{stage}"
    shutil.rmtree(run, ignore_errors=True)
    logs = work / "logs"
    args = [
        *common,
        "--deepspeed_config",
        str(ds),
        "--set",
        f"schedule.total_steps={steps}",
        "--set",
        f"checkpoint.every_steps={keep}",
    ]
    console.print(f"ZeRO-{stage}: {steps} steps on 2 ranks, checkpoint at step {keep} ...")
    first = launch(run, args, 2, timeout_s, logs)
    w: Watcher = first["watcher"]
    tag = f"global_step{keep}"
    losses = metric(run, "train/loss")
    step_times = metric(run, "perf/step_time_s")
    out: dict[str, Any] = {
        "stage": stage,
        "steps": steps,
        "launch_wall_s": first["wall_s"],
        "peak_rss_gb_per_rank": {r: v / GB for r, v in sorted(w.rank_peak.items())},
        "step_time_s": statistics.median(step_times[s] for s in sorted(step_times)[1:])
        if len(step_times) > 1
        else None,
        "first_step_time_s": step_times.get(1),
        "losses": [losses[s] for s in sorted(losses)],
        "checkpoint_gb": folder_bytes(run / "ckpt" / tag) / GB,
        "save_s": {t: w.seconds(t, f"{t}/COMPLETE") for t in (tag, f"global_step{steps}")},
        "student_export_gb": folder_bytes(run / "student") / GB,
    }

    console.print(f"ZeRO-{stage}: exact resume from step {keep} ...")
    again = link_copy(run, work / f"z{stage}-resumed", tag)
    second = launch(again, [*args, "--resume", str(again / "ckpt" / tag)], 2, timeout_s, logs)
    resumed = metric(again, "train/loss")
    out["resume"] = {
        "launch_wall_s": second["wall_s"],
        "load_s": metric(again, "checkpoint/load_s").get(keep),
        "peak_rss_gb_per_rank": {r: v / GB for r, v in sorted(second["watcher"].rank_peak.items())},
        "losses_equal": all(resumed[s] == losses[s] for s in range(keep + 1, steps + 1)),
        "weights_equal": same_weights(run / "student", again / "student"),
    }
    shutil.rmtree(again / "ckpt")  # multi-GB at full size; the figures are taken

    out["_run_dir"] = str(run)
    if not universal:
        return out
    console.print(f"ZeRO-{stage}: resume from step {keep} on 1 rank x 2 accumulation steps (universal checkpoint) ...")
    one = link_copy(run, work / f"z{stage}-one-rank", tag)
    ds_one = json.loads(ds.read_text())
    ds_one["gradient_accumulation_steps"] = 2
    (work / f"cpu_zero{stage}_accum2.json").write_text(json.dumps(ds_one))
    third = launch(
        one,
        [*args, "--deepspeed_config", str(work / f"cpu_zero{stage}_accum2.json"), "--resume", str(one / "ckpt" / tag)],
        1,
        timeout_s,
        logs,
    )
    w3: Watcher = third["watcher"]
    moved = metric(one, "train/loss")
    out["universal"] = {
        "launch_wall_s": third["wall_s"],
        "convert_s": w3.seconds(f"{tag}_universal.tmp", f"{tag}_universal"),
        "converter_peak_rss_gb": w3.converter_peak / GB,
        "universal_gb": folder_bytes(one / "ckpt" / f"{tag}_universal") / GB,
        "load_s": metric(one, "checkpoint/load_s").get(keep),
        "peak_rss_gb": max(w3.rank_peak.values(), default=0) / GB,
        "max_rel_loss_diff": max(abs(moved[s] - losses[s]) / abs(losses[s]) for s in range(keep + 1, steps + 1)),
    }
    shutil.rmtree(one / "ckpt")
    return out


def export_and_reload(run: Path, work: Path, console) -> dict[str, Any]:
    """`minprot export` of the run's newest checkpoint, timed; reload with AutoModelForMaskedLM; fill masks."""
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    out = work / "exported"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [str(Path(sys.executable).with_name("minprot")), "export", str(run), "--out", str(out)]
    console.print("export: " + " ".join(cmd))
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=run_env())
    export_s = time.monotonic() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"minprot export failed: {proc.stderr[-3000:]}")
    t0 = time.monotonic()
    model = AutoModelForMaskedLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    reload_s = time.monotonic() - t0
    residues = "MKTAYIAKQRQISFVKSHFSRQ*EERLGLIEVQAPILSRVGDGTQDNLSGAEK"  # * the masked one
    text = " ".join(tokenizer.mask_token if r == "*" else r for r in residues)  # both families' tokenizers read this
    batch = tokenizer(text, return_tensors="pt")
    with torch.inference_mode():
        logits = model(**batch).logits
    where = batch["input_ids"][0] == tokenizer.mask_token_id
    filled = tokenizer.convert_ids_to_tokens(logits[0, where].argmax(-1).tolist())
    return {
        "export_s": export_s,
        "export_gb": folder_bytes(out) / GB,
        "reload_s": reload_s,
        "parameters": model.num_parameters(),
        "filled_mask": filled,
        "folder": str(out),
    }


def finetune_two_steps(student: Path, work: Path, console) -> dict[str, Any]:
    """Two optimizer steps of `minprot finetune` on PDB1075 rows (16 rows, batch 8), tested on 8 PDB186 rows."""
    if not DNA_BINDING.is_dir():
        return {"skipped": f"{DNA_BINDING} is absent"}
    out = work / "finetuned"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [
        str(Path(sys.executable).with_name("minprot")),
        "finetune",
        "--task",
        "dna-binding",
        "--model",
        str(student),
        "--train",
        str(DNA_BINDING / "Training_dataset_PDB1075.txt"),
        "--test",
        str(DNA_BINDING / "independent_test_dataset_PDB186.txt"),
        "--out",
        str(out),
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--max-train-samples",
        "16",
        "--max-eval-samples",
        "8",
    ]
    console.print("fine-tune: " + " ".join(cmd))
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=run_env())
    if proc.returncode != 0:
        raise RuntimeError(f"minprot finetune failed: {proc.stdout[-2000:]} {proc.stderr[-3000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    return {"wall_s": time.monotonic() - t0, "metrics": metrics, "model": str(out / "model")}


def few_proteins(path: Path, window: int, count: int = 8) -> dict[str, Any]:
    """The first `count` - 1 DeepLoc test proteins up to `window` long, and the first one longer (and at
    most twice as long)."""
    from Bio import SeqIO

    records, long_one = [], None
    for rec in SeqIO.parse(DEEPLOC, "fasta"):
        if window < len(rec.seq) <= 2 * window and long_one is None:
            long_one = rec
        elif len(rec.seq) <= window and len(records) < count - 1:
            records.append(rec)
        if long_one is not None and len(records) == count - 1:
            break
    chosen = [*records, long_one]
    with open(path, "w") as fh:
        for rec in chosen:
            fh.write(f">{rec.id}\n{rec.seq}\n")
    return {
        "fasta": str(path),
        "proteins": len(chosen),
        "residues": sum(len(r.seq) for r in chosen),
        "longest": max(len(r.seq) for r in chosen),
    }


def predict_and_embed(finetuned: Path, student: Path, work: Path, window: int, console) -> dict[str, Any]:
    """`minprot predict` with the fine-tuned model and `minprot embed` with the exported student, timed; one of
    the proteins is longer than the model's `window`."""
    if not DEEPLOC.is_file():
        return {"skipped": f"{DEEPLOC} is absent"}
    proteins = few_proteins(work / "few.fasta", window)
    out: dict[str, Any] = {"input": proteins}
    minprot = str(Path(sys.executable).with_name("minprot"))
    for name, cmd, result in (
        (
            "predict",
            [minprot, "predict", "--model", str(finetuned), "--out", str(work / "few.predictions.tsv")],
            work / "few.predictions.tsv",
        ),
        (
            "embed",
            [minprot, "embed", "--model", str(student), "--out", str(work / "few.embeddings.h5")],
            work / "few.embeddings.h5",
        ),
    ):
        for stale in work.glob(f"{result.name}*"):
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
        cmd += ["--fasta", proteins["fasta"]]
        console.print(f"{name}: " + " ".join(cmd))
        t0 = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=run_env())
        if proc.returncode != 0:
            raise RuntimeError(f"minprot {name} failed: {proc.stdout[-2000:]} {proc.stderr[-3000:]}")
        out[name] = {"wall_s": time.monotonic() - t0, "output": str(result), "bytes": result.stat().st_size}
    import h5py
    import pandas as pd

    rows = pd.read_csv(work / "few.predictions.tsv", sep="\t", comment="#")
    with h5py.File(work / "few.embeddings.h5") as h5:
        shapes = {h5[k].attrs.get("original_id", k): h5[k].shape for k in h5}
    out["predict"]["rows"] = len(rows)
    out["embed"]["proteins"] = len(shapes)
    out["embed"]["dims"] = sorted({s[-1] for s in shapes.values()})
    return out


def parameter_counts(teacher: Path, student_layers: int) -> dict[str, Any]:
    """The teacher's and student's parameter counts by the FLOP model's formula (what the loaders must report)."""
    from transformers import AutoConfig

    from minprot_ds.bench.memory import model_params

    cfg = AutoConfig.from_pretrained(teacher)
    return {"teacher": model_params(cfg, cfg.num_hidden_layers), "student": model_params(cfg, student_layers)}


def predicted(
    stage: int, teacher: Path, student_layers: int, max_tokens: int, max_rows: int, world: int
) -> dict[str, float]:
    """The memory plan's per-rank prediction for this CPU run (fp32, 2 ranks)."""
    from transformers import AutoConfig

    from minprot_ds.bench.memory import Plan, estimate

    cfg = AutoConfig.from_pretrained(teacher)
    plan = Plan(stage=stage, precision="fp32", checkpointing=False, gpus=world)
    return estimate(
        cfg, student_layers, plan, max_tokens=max_tokens, max_rows=max_rows, longest=min(max_tokens, 514)
    ).as_gb()


def add_predictions(
    figures: dict[str, Any], teacher: Path, student_layers: int, max_tokens: int, max_rows: int
) -> None:
    """The memory plan's figures beside a stage's measured ones: per rank of the 2-rank run, and for the
    1-rank resume when it ran."""
    figures["predicted_gb_per_rank"] = predicted(figures["stage"], teacher, student_layers, max_tokens, max_rows, 2)
    if "universal" in figures:
        figures["universal"]["predicted_gb"] = predicted(
            figures["stage"], teacher, student_layers, max_tokens, max_rows, 1
        )


def bare_process_gb() -> float:
    """Peak RSS of a rank before it builds anything (interpreter, torch, DeepSpeed, transformers, the process
    group): what a CPU rank's peak holds beyond the memory plan, which predicts what the job allocates."""
    code = (
        "import deepspeed.runtime.zero.stage3, deepspeed.runtime.zero.stage_1_and_2, "
        "transformers.models.bert.modeling_bert;"
        "from minprot_ds.distributed import init_distributed; init_distributed();"
        "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO, env=run_env()
    ).stdout
    return int(out.split()[-1]) * 1024 / GB


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument(
        "--work", type=Path, default=REPO / "runs" / "rehearsal", help="scratch folder (multi-GB at full size)"
    )
    p.add_argument(
        "--teacher",
        choices=TEACHERS,
        default="protbert",
        help="the teacher's real shape and format, and the run-config preset (launch/configs/TEACHER.toml)",
    )
    p.add_argument("--stages", default="2,3", help="ZeRO stages, comma-separated")
    p.add_argument(
        "--teacher-layers", type=int, default=None, help="fewer teacher layers than the real model's (tests)"
    )
    p.add_argument(
        "--student-layers",
        type=int,
        default=None,
        help="default: the preset's (protbert 15, esm2-650m 17, esm2-150m 15); half with --teacher-layers",
    )
    p.add_argument("--steps", type=int, default=3, help="steps per run; the checkpoint to resume from is --keep")
    p.add_argument("--keep", type=int, default=2, help="the step whose checkpoint is resumed")
    p.add_argument(
        "--max-tokens", type=int, default=1040, help="token budget per micro-batch (the preset's 8192 is for GPUs)"
    )
    p.add_argument("--max-rows", type=int, default=8)
    p.add_argument("--sequences", type=int, default=400, help="synthetic corpus rows")
    p.add_argument(
        "--skip", default="", help="parts to leave out, comma-separated: universal, finetune (the test's reduced form)"
    )
    p.add_argument("--timeout", type=float, default=1800, help="seconds per launch")
    p.add_argument(
        "--out", type=Path, default=None, help="default: benchmarks/results/rehearsal.json (rehearsal-TEACHER.json)"
    )
    p.add_argument(
        "--report",
        type=Path,
        default=None,
        help="only print the table of an earlier run's JSON (its memory-plan figures recomputed)",
    )
    args = p.parse_args(argv)
    from minprot_ds.progress import quiet_libraries

    quiet_libraries()
    if args.report is not None:
        if not args.report.is_file():
            p.error(f"--report {args.report}: no such file (the JSON an earlier run wrote with --out)")
        results = json.loads(args.report.read_text())
        results.setdefault("bare_process_gb", bare_process_gb())
        for s in results["stages"]:
            c = results["config"]
            teacher = (
                results["teacher"].get("folder") or Path(c["work"]) / f"teacher-{results['teacher']['teacher_layers']}l"
            )
            add_predictions(s, Path(teacher), results["student_layers"], c["max_tokens"], c["max_rows"])
        write_json(
            args.report, "rehearsal", {k: v for k, v in results.items() if k not in ("benchmark", "created", "machine")}
        )
        show(results, make_console())
        return 0
    from minprot_ds.models.family import FAMILIES
    from minprot_ds.models.masked_lm import MODEL_PRESETS

    preset = MODEL_PRESETS[args.teacher]
    if args.out is None:
        suffix = "" if args.teacher == "protbert" else f"-{args.teacher}"
        args.out = REPO / "benchmarks" / "results" / f"rehearsal{suffix}.json"
    if args.teacher == "protbert" and not PROTBERT_CONFIG.is_file():
        print(f"error: {PROTBERT_CONFIG} is absent; the rehearsal needs ProtBert's config.json there.", file=sys.stderr)
        return 1
    console = make_console()
    args.work.mkdir(parents=True, exist_ok=True)
    teacher, corpus, made = make_assets(args.work, args.teacher, args.teacher_layers, args.sequences)
    student_layers = args.student_layers or (
        preset.student_layers if args.teacher_layers is None else max(1, made["teacher_layers"] // 2)
    )
    counts = parameter_counts(teacher, student_layers)
    console.print(
        f"teacher {teacher}: {counts['teacher']:,} parameters; student {student_layers} layers: {counts['student']:,}"
    )
    common = [
        "--config",
        str(REPO / "launch" / "configs" / f"{args.teacher}.toml"),
        "--set",
        f'model.teacher="{teacher}"',
        "--set",
        f'data.corpus="{corpus}"',
        "--set",
        f"model.student_layers={student_layers}",
        "--set",
        f"data.max_tokens={args.max_tokens}",
        "--set",
        f"data.max_rows={args.max_rows}",
        "--set",
        "data.num_workers=0",
        "--set",
        "eval.every_steps=0",
        "--set",
        "eval.max_batches=1",
        "--set",
        "run.log_every=1",
        "--set",
        "schedule.warmup_steps=1",
        "--set",
        "checkpoint.every_minutes=0",
        "--set",
        "checkpoint.keep_last=5",
    ]
    results: dict[str, Any] = {
        "config": vars(args) | {"work": str(args.work), "out": str(args.out)},
        "teacher": {**made, "parameters": counts["teacher"]},
        "student_layers": student_layers,
        "student_parameters_flop_model": counts["student"],
        "stages": [],
    }
    results["bare_process_gb"] = bare_process_gb()
    for stage in [int(s) for s in args.stages.split(",")]:
        if results["stages"]:  # only the last stage's checkpoints are exported: free the disk before the next stage
            shutil.rmtree(Path(results["stages"][-1]["_run_dir"]) / "ckpt")
        figures = stage_run(
            stage,
            args.work,
            common,
            args.steps,
            args.keep,
            args.timeout,
            console,
            universal="universal" not in args.skip.split(","),
        )
        add_predictions(figures, teacher, student_layers, args.max_tokens, args.max_rows)
        results["stages"].append(figures)
        write_json(args.out, "rehearsal", {**results, "partial": True})  # what a later failure leaves
    last_run = Path(results["stages"][-1].pop("_run_dir"))
    for s in results["stages"]:
        s.pop("_run_dir", None)
    results["export"] = export_and_reload(last_run, args.work, console)
    results["export"]["parameters_match_flop_model"] = results["export"]["parameters"] == counts["student"]
    if "finetune" not in args.skip.split(","):
        results["finetune"] = finetune_two_steps(Path(results["export"]["folder"]), args.work, console)
        if "model" in results["finetune"]:
            results["inference"] = predict_and_embed(
                Path(results["finetune"]["model"]),
                Path(results["export"]["folder"]),
                args.work,
                FAMILIES[preset.family].max_residues,
                console,
            )
    path = write_json(args.out, "rehearsal", results)
    show(results, console)
    console.print(f"wrote {path}")
    return 0


def _gb(x: float | None) -> str | None:
    return None if x is None else f"{x:.2f}"


def _s(x: float | None) -> str | None:
    return None if x is None else f"{x:.1f}"


def show(results: dict[str, Any], console) -> None:
    """The figure x stage table of a rehearsal's results (a JSON written before --teacher existed is ProtBert's)."""
    teacher = results["config"].get("teacher", "protbert")
    print_table(
        f"rehearsal at {teacher}'s size (CPU, 2 ranks, fp32)",
        ["figure", *(f"ZeRO-{s['stage']}" for s in results["stages"])],
        table_rows(results),
        console,
    )


def table_rows(results: dict[str, Any]) -> list[list[Any]]:
    """Figure x stage rows of the table (docs/rehearsal-and-memory.md)."""
    stages = results["stages"]

    def row(name, fn):
        return [name, *(fn(s) for s in stages)]

    def once(name, value):  # a figure of the whole rehearsal, in the first stage's column
        return [name, value, *[""] * (len(stages) - 1)]

    ex = results["export"]
    return [
        row(
            "peak RSS per rank, GB (measured)", lambda s: " / ".join(_gb(v) for v in s["peak_rss_gb_per_rank"].values())
        ),
        row(
            "peak per rank, GB (memory plan + bare process)",
            lambda s: _gb(s["predicted_gb_per_rank"]["total"] + results["bare_process_gb"]),
        ),
        row("step time, s (median after step 1)", lambda s: _s(s["step_time_s"])),
        row("checkpoint size, GB", lambda s: _gb(s["checkpoint_gb"])),
        row("checkpoint save, s", lambda s: " / ".join(_s(v) or "—" for v in s["save_s"].values())),
        row("resume load, s", lambda s: _s(s["resume"]["load_s"])),
        row(
            "exact resume (losses, weights)", lambda s: f"{s['resume']['losses_equal']}, {s['resume']['weights_equal']}"
        ),
        row("universal conversion, s", lambda s: _s(s.get("universal", {}).get("convert_s"))),
        row("converter peak RSS, GB", lambda s: _gb(s.get("universal", {}).get("converter_peak_rss_gb"))),
        row("1-rank resume peak RSS, GB", lambda s: _gb(s.get("universal", {}).get("peak_rss_gb"))),
        row(
            "1-rank resume peak, GB (memory plan + bare process)",
            lambda s: (
                _gb(s["universal"]["predicted_gb"]["total"] + results["bare_process_gb"]) if "universal" in s else None
            ),
        ),
        row(
            "1-rank resume max rel. loss diff",
            lambda s: f"{s['universal']['max_rel_loss_diff']:.1e}" if "universal" in s else None,
        ),
        once("teacher parameters", f"{results['teacher']['parameters']:,}"),
        once(
            "student parameters (reloaded / FLOP model)",
            f"{ex['parameters']:,} / {results['student_parameters_flop_model']:,}",
        ),
        once("export of the last checkpoint: GB, s", f"{ex['export_gb']:.2f}, {ex['export_s']:.1f}"),
        *inference_rows(results, once),
    ]


def inference_rows(results: dict[str, Any], once) -> list[list[Any]]:
    """Rows for the fine-tune, predict and embed of the exported student (when they ran)."""
    rows = []
    ft = results.get("finetune", {})
    if "wall_s" in ft:
        rows.append(once("fine-tune 2 steps (dna-binding): s", _s(ft["wall_s"])))
    inf = results.get("inference", {})
    if "predict" in inf:
        few = inf["input"]
        what = f"{few['proteins']} DeepLoc proteins, {few['residues']:,} residues, longest {few['longest']}"
        rows.append(once(f"predict ({what}): rows, s", f"{inf['predict']['rows']}, {_s(inf['predict']['wall_s'])}"))
        rows.append(
            once(
                "embed (same proteins, .h5): proteins, dim, s",
                f"{inf['embed']['proteins']}, {inf['embed']['dims']}, {_s(inf['embed']['wall_s'])}",
            )
        )
    return rows


if __name__ == "__main__":
    sys.exit(main())
