"""One `predict` or `embed` job: index the input, compute this rank's missing chunks, and (rank 0, or
`minprot merge`) write OUT, OUT.failures.tsv and the summary OUT.json (e.g. dna.tsv.json).

Several ranks (`deepspeed --num_gpus N launch/predict.py`) or machines (`--shard i/N`) each take every
N-th chunk of the input; the output is assembled from the chunk files in input order, so it is the same
whatever the number of ranks, shards or restarts that produced it.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data_prep.fasta import check_fasta_start
from minprot_ds import __version__
from minprot_ds.distributed import init_distributed
from minprot_ds.errors import UserError
from minprot_ds.fileio import atomic_write, read_json, write_json
from minprot_ds.inference import records
from minprot_ds.inference.options import (
    DEFAULT_CHUNK,
    DEFAULT_CHUNK_PER_RESIDUE,
    EmbedOptions,
    InferenceOptions,
    PredictOptions,
    default_max_tokens,
)
from minprot_ds.inference.parts import FORMAT, Chunk, Parts, check_same, parts_dir
from minprot_ds.inference.progress import InferenceProgress
from minprot_ds.inference.writers import Row, open_writer, output_suffix, tsv_field
from minprot_ds.models import provenance as links
from minprot_ds.models.family import family_of_config
from minprot_ds.options import check_bounds, launch, mlflow_params
from minprot_ds.outputs import check_out
from minprot_ds.scoring import forward, heads, models
from minprot_ds.scoring.windows import check_positions, model_window
from minprot_ds.tracking import Tracker, environment_params

log = logging.getLogger(__name__)


@dataclass
class JobResult:
    out: Path | None  # None on ranks other than 0 and for shards (until `minprot merge`)
    summary: dict[str, Any] = field(default_factory=dict)
    computed_chunks: int = 0


def parse_shard(shard: str | None) -> tuple[int, int]:
    if shard is None:
        return 0, 1
    try:
        i, n = (int(x) for x in shard.split("/"))
    except ValueError:
        raise UserError(f"--shard {shard!r} is not i/N (e.g. 0/4 for the first of four machines)") from None
    if not (n >= 1 and 0 <= i < n):
        raise UserError(f"--shard {shard}: i must be between 0 and N-1 (0/{max(n, 1)} ... {max(n, 1) - 1}/{max(n, 1)})")
    return i, n


def _distributed() -> tuple[int, int]:
    """This process's rank and the world size: the launcher's process group, or a group of one."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1

    return init_distributed()


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()


def summary_path(out: Path) -> Path:
    """OUT.json after the whole name (x.tsv.json), so x.tsv and x.h5 in one folder keep their own summaries."""
    return Path(str(out) + ".json")


def old_summary_path(out: Path) -> Path:
    """Where minprot <= 0.1.0 wrote the summary (x.json for x.tsv); still read to recognise its outputs."""
    return Path(out).with_suffix(".json")


def made_by(command: str) -> Callable[[Path], bool]:
    """Whether an existing OUT is this command's: its parts folder or its summary says so (the parts manifest
    then refuses other inputs and settings; without parts the whole output is computed again)."""

    def ours(out: Path) -> bool:
        manifest = parts_dir(out) / "manifest.json"
        if manifest.is_file():
            return read_json(manifest).get("command") == command
        for path in (summary_path(out), old_summary_path(out)):
            if path.is_file():
                try:
                    doc = read_json(path)
                except UserError:
                    continue
                if doc.get("command") == command and Path(str(doc.get("output", ""))).name == Path(out).name:
                    return True
        return False

    return ours


def failures_path(out: Path) -> Path:
    return Path(str(out) + ".failures.tsv")


def parse_layers(layers: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in layers.split(","))
    except ValueError:
        raise UserError(f"--layers {layers!r} is not a comma-separated list of integers (e.g. -1 or -1,-2)") from None


def run(cfg: PredictOptions | EmbedOptions, *, echo: Callable[[str], None] | None = None) -> JobResult:
    """The job, its options as `minprot predict` / `minprot embed` take them (minprot_ds/inference/options.py)."""
    say = echo or log.info
    if cfg.command not in ("predict", "embed"):
        raise ValueError(cfg.command)
    check_bounds(cfg)
    layers = parse_layers(cfg.layers) if cfg.command == "embed" else ()
    if cfg.command == "embed" and cfg.pooling not in models.POOLS:
        raise UserError(f"--pooling {cfg.pooling!r} is unknown; choose one of: {', '.join(models.POOLS)}")
    if (cfg.max_tokens is not None and cfg.max_tokens < 1) or (cfg.chunk_records is not None and cfg.chunk_records < 1):
        raise UserError("--max-tokens and --chunk-records must be at least 1")
    shard_i, shards = parse_shard(cfg.shard)
    out = Path(cfg.out)
    fasta = Path(cfg.fasta)
    check_fasta_start(fasta, "--fasta")
    if cfg.command == "embed":
        output_suffix("embed", out, {})
    check_out(out, overwrite=cfg.overwrite, ours=made_by(cfg.command))
    # The input's content (empty, binary, no records, repeated ids) is checked before any model loads.
    index = records.index_input(fasta, cfg.dedupe_ids)
    rank, world = _distributed()
    if world > 1 and shards > 1:
        raise UserError(
            "--shard splits work between separate machines; under the deepspeed launcher the ranks "
            "already split it: use one or the other"
        )
    slot, slots = (shard_i, shards) if shards > 1 else (rank, world)
    device = models.pick_device(int(os.environ.get("LOCAL_RANK", "0")))
    precision = models.pick_precision(cfg.precision, device)
    dtype = models.dtype_of(precision)
    if cfg.max_tokens is None:
        cfg = replace(cfg, max_tokens=default_max_tokens(device.type))

    model_dir = models.check_model_folder(Path(cfg.model))
    if cfg.command == "embed":
        encoder = heads.load_encoder(model_dir, "--model", dtype=dtype).to(device)
        scorer: forward.Scorer = models.EmbedScorer(encoder, cfg.pooling, layers, cfg.per_residue)
        info: dict[str, Any] = {"per_residue": cfg.per_residue, "dim": scorer.dim}
        window, stride = model_window(cfg.window, cfg.stride, lambda: family_of_config(encoder.config, "--model"))
        aggregate = "mean"  # embeddings: every residue counts once
        finetune_run = None
    else:
        task_model, task_info = models.load_task(model_dir, dtype, device)
        scorer = models.TaskScorer(task_model, task_info.per_residue)
        output_suffix("predict", out, {"per_residue": task_info.per_residue, "task": task_info.task})
        threshold = cfg.threshold if cfg.threshold is not None else task_info.threshold
        info = {
            "task": task_info.task,
            "classes": task_info.classes,
            "per_residue": task_info.per_residue,
            "threshold": threshold,
            "threshold_source": _threshold_source(cfg.threshold, task_info),
            "finetune": {
                "source_model": task_info.source_model,
                "provenance": task_info.provenance,
                "mlflow_run_id": task_info.mlflow_run_id,
            },
        }
        window, stride = cfg.window or task_info.window, cfg.stride or task_info.stride
        aggregate = task_info.aggregate  # as the fine-tune scored its test set
        finetune_run = task_info.mlflow_run_id
    settings = forward.WindowSettings(window, stride, cfg.long, aggregate)
    settings.check(cfg.max_tokens)
    positions = (encoder if cfg.command == "embed" else task_model.encoder).config.max_position_embeddings
    check_positions(window, positions, f"--model {model_dir}")
    if cfg.chunk_records is None:
        cfg = replace(cfg, chunk_records=DEFAULT_CHUNK_PER_RESIDUE if info["per_residue"] else DEFAULT_CHUNK)

    chunks = max(1, -(-index.records // cfg.chunk_records))
    manifest = {
        "format": FORMAT,
        "command": cfg.command,
        "minprot_version": __version__,
        "model": {"path": str(model_dir), "sha256": models.model_fingerprint(model_dir)},
        "input": {"path": str(fasta), "sha256": index.fingerprint, "records": index.records},
        "settings": {
            "window": window,
            "stride": stride,
            "aggregate": aggregate,
            "long": cfg.long,
            "precision": precision,
            "chunk_records": cfg.chunk_records,
            "dedupe_ids": cfg.dedupe_ids,
            **(
                {"pool": cfg.pooling, "layers": list(layers), "per_residue": cfg.per_residue, "half": cfg.half}
                if cfg.command == "embed"
                else {}
            ),
        },
        "info": info,
        "chunks": chunks,
    }
    parts = Parts(parts_dir(out))
    done_before = parts.open(manifest)
    _barrier()  # every rank has counted what earlier runs left before any rank adds to it
    mine = [k for k in range(chunks) if k % slots == slot and not parts.has(k)]
    if rank == 0:
        dup = int((index.status == records.DUPLICATE).sum())
        say(
            f"{cfg.command}: {index.records} records ({index.residues:,} residues to compute, {dup} duplicate "
            f"sequences computed once, {sum(index.failures.values())} refused), {chunks} chunks"
            + (f", {done_before} already done (resuming)" if done_before else "")
            + (f"; shard {shard_i}/{shards}" if shards > 1 else "")
            + (f"; {world} ranks" if world > 1 else "")
        )

    tracker = _tracker(cfg, out, rank, finetune_run, manifest)
    started = time.perf_counter()
    with tracker:
        n_prot, n_res = _compute(cfg, scorer, settings, index, parts, set(mine), device, rank, world)
        seconds = time.perf_counter() - started
        _barrier()
        speed = {
            "proteins_per_s": n_prot / seconds if seconds else 0.0,
            "residues_per_s": n_res / seconds if seconds else 0.0,
            "seconds": seconds,
            "proteins_computed": n_prot,
            "residues_computed": n_res,
        }
        if rank != 0:
            return JobResult(None, {}, len(mine))
        if shards > 1:
            missing = [k for k in range(chunks) if not parts.has(k)]
            if missing:
                say(
                    f"shard {shard_i}/{shards} done ({len(mine)} chunks); {len(missing)} chunks belong to other "
                    f"shards: once all have run, `minprot merge --out {out} PARTS...` writes {out}"
                )
                return JobResult(None, {"speed": speed}, len(mine))
        summary = finalize(
            [parts.folder],
            out,
            echo=say,
            speed=speed,
            threshold=info.get("threshold"),
            threshold_source=info.get("threshold_source"),
        )
        tracker.log_metrics({f"perf/{k}": v for k, v in speed.items()} | _count_metrics(summary), 0)
        tracker.log_artifact(summary_path(out))
    return JobResult(out, summary, len(mine))


def start(opts: InferenceOptions, echo: Callable[..., None] = print) -> int:
    """The job from its options (what `minprot predict|embed` and launch/predict.py run)."""
    run(opts, echo=echo)
    return 0


def main(argv: list[str] | None = None) -> int:
    """launch/predict.py: every rank parses the same options; without a command, predict."""
    return launch(
        {"predict": (PredictOptions, start), "embed": (EmbedOptions, start)},
        argv=argv,
        default="predict",
        description="Predict or embed a whole FASTA; every rank computes its share of the chunks, rank 0 "
        "writes the output.",
    )


def _tracker(cfg: InferenceOptions, out: Path, rank: int, finetune_run: str | None, manifest: dict[str, Any]):

    tracker = Tracker.start(
        tracking_uri=cfg.tracking_uri,
        run_dir=Path(out).parent,
        experiment=cfg.experiment,
        run_name=f"{cfg.command}-{Path(out).stem}",
        resume_run_id=None,
        enabled=cfg.mlflow and rank == 0,
        system_metrics=False,
    )
    if tracker.enabled:
        tags = {"minprot.job": cfg.command, "minprot.model": str(cfg.model), "minprot.input": str(cfg.fasta)}
        if "task" in manifest["info"]:
            tags["minprot.task"] = manifest["info"]["task"]
        if finetune_run:
            tags |= {"minprot.finetune_run_id": finetune_run}
            tags |= {
                k: v
                for k, v in links.link_tags({"mlflow_run_id": finetune_run}, cfg.tracking_uri).items()
                if k == links.TAG_PARENT
            }
        tracker.set_tags(tags)
        tracker.log_params(
            {
                "model_sha256": manifest["model"]["sha256"],
                "input_sha256": manifest["input"]["sha256"],
                "records": manifest["input"]["records"],
                **mlflow_params(cfg),  # the command line; the settings it resolved to win below
                "out": str(out),
                **manifest["settings"],
                **environment_params(),
            }
        )
    return tracker


def _count_metrics(summary: dict[str, Any]) -> dict[str, float]:
    c = summary["counts"]
    return {
        "records": c["records"],
        "written": c["written"],
        "duplicates": c["duplicates"],
        "failures": sum(c["failures"].values()),
        "truncated": c["truncated"],
        "windowed": c["windowed"],
    }


def _compute(
    cfg: InferenceOptions,
    scorer: forward.Scorer,
    settings: forward.WindowSettings,
    index: records.InputIndex,
    parts: Parts,
    mine: set[int],
    device: torch.device,
    rank: int,
    world: int,
) -> tuple[int, int]:
    """Compute and write this rank's missing chunks; returns (proteins, residues) computed."""
    todo = np.zeros(index.records, dtype=bool)
    for k in mine:
        todo[k * cfg.chunk_records : (k + 1) * cfg.chunk_records] = True
    ok = todo & (index.status == records.OK)
    total_prot, total_res = int(ok.sum()), int(index.lengths[ok].sum())
    if not mine:
        return 0, 0
    done = [0, 0]
    with InferenceProgress(total_prot, total_res, enabled=cfg.progress and rank == 0, label=cfg.command) as bar:

        def on_batch(proteins: int, residues: int) -> None:
            done[0] += proteins
            done[1] += residues
            bar.update(proteins, residues)

        current: list[records.Record] = []
        current_k = -1
        with torch.inference_mode():
            for rec in records.iter_records(index):
                k = rec.index // cfg.chunk_records
                if k != current_k:
                    if current_k in mine:
                        _write_chunk(current_k, current, scorer, settings, cfg, index, parts, device, on_batch)
                    current, current_k = [], k
                if k in mine:
                    current.append(rec)
            if current_k in mine:
                _write_chunk(current_k, current, scorer, settings, cfg, index, parts, device, on_batch)
    return done[0], done[1]


def _write_chunk(
    k: int,
    recs: list[records.Record],
    scorer: forward.Scorer,
    settings: forward.WindowSettings,
    cfg: InferenceOptions,
    index: records.InputIndex,
    parts: Parts,
    device: torch.device,
    on_batch,
) -> None:
    proteins = {r.index: r.sequence for r in recs if index.status[r.index] == records.OK}
    scored = forward.score(scorer, proteins, settings, cfg.max_tokens, device, on_batch)
    status = index.status[[r.index for r in recs]].copy()
    failures, values, windows, truncated = [], [], [], []
    for j, r in enumerate(recs):
        reason = r.failure or scored.failures.get(r.index, "")
        if reason:
            status[j] = records.FAILED
        value = scored.outputs.get(r.index)
        values.append(None if value is None else models.as_float(value, cfg.command == "embed" and cfg.half))
        failures.append(reason)
        windows.append(scored.windows.get(r.index, 0))
        truncated.append(r.index in scored.truncated)
    parts.write(
        k,
        Chunk(
            index=np.asarray([r.index for r in recs], dtype=np.int64),
            ids=[r.id for r in recs],
            descriptions=[r.description for r in recs],
            sequences=[r.sequence for r in recs],
            status=status,
            canonical=index.canonical[[r.index for r in recs]],
            failures=failures,
            windows=np.asarray(windows, dtype=np.int32),
            truncated=np.asarray(truncated, dtype=bool),
            values=values,
        ),
    )


def _threshold_source(flag: float | None, task_info: heads.TaskModelInfo) -> str | None:
    """What the summary says of the threshold used: --threshold, or the model's and where the fine-tune took it."""
    if flag is not None:
        return "--threshold"
    if task_info.threshold is None:
        return None
    return f"model ({task_info.threshold_source or 'source not recorded'})"


# --- assembling the output --------------------------------------------------------------------------------


def finalize(
    folders: list[Path],
    out: Path,
    *,
    echo: Callable[[str], None] | None = None,
    speed: dict[str, Any] | None = None,
    threshold: float | None = None,
    threshold_source: str | None = None,
) -> dict[str, Any]:
    """Write OUT (atomically), OUT.failures.tsv and the summary from the chunk files in `folders` (a threshold
    given here relabels: its source is `threshold_source`, by default --threshold)."""
    say = echo or log.info
    all_parts = [Parts(f) for f in folders]
    manifests = []
    for p in all_parts:
        m = p.read_manifest()
        if m is None:
            raise UserError(
                f"{p.folder} holds no manifest.json: it is not the parts folder of a predict/embed run "
                "(they are named OUT.parts)"
            )
        manifests.append(m)
    manifest = manifests[0]
    for p, m in zip(all_parts[1:], manifests[1:]):
        check_same(manifest, m, p.folder)
    where: dict[int, Parts] = {}
    for p in all_parts:
        for k in range(manifest["chunks"]):
            if k not in where and p.has(k):
                where[k] = p
    missing = [k for k in range(manifest["chunks"]) if k not in where]
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise UserError(
            f"{len(missing)} of {manifest['chunks']} chunks are missing ({shown}) from "
            f"{', '.join(str(p.folder) for p in all_parts)}; run the missing shards (or rerun the "
            "command to resume), then merge again"
        )
    info = dict(manifest["info"])
    if threshold is not None:
        info["threshold"] = threshold
        info["threshold_source"] = threshold_source or "--threshold"

    needed: set[int] = set()
    for k in range(manifest["chunks"]):
        ch = where[k].read(k)
        needed.update(ch.canonical[ch.status == records.DUPLICATE].tolist())
    out = Path(out)
    output_suffix(manifest["command"], out, info)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.partial{out.suffix}")
    meta = {
        "minprot_version": manifest["minprot_version"],
        "command": manifest["command"],
        "model": manifest["model"],
        "input": manifest["input"],
        "settings": manifest["settings"],
        "info": info,
    }
    writer = open_writer(manifest["command"], tmp, meta, info)
    cache: dict[int, tuple[np.ndarray, int]] = {}
    counts = Counter()
    failure_reasons: Counter = Counter()
    fail_lines = ["index\tid\treason"]
    try:
        for k in range(manifest["chunks"]):
            ch = where[k].read(k)
            for j, idx in enumerate(ch.index.tolist()):
                st = int(ch.status[j])
                counts["records"] += 1
                failed = ""
                if st == records.FAILED:
                    failed = ch.failures[j]
                    failure_reasons[failed.split(":")[0].split(" (")[0]] += 1
                elif st == records.DUPLICATE and int(ch.canonical[j]) not in cache:
                    # its first occurrence failed (out of memory, --long skip)
                    failed = f"same sequence as record {int(ch.canonical[j])}, which failed"
                    failure_reasons["same sequence as a failed record"] += 1
                if failed:
                    fail_lines.append(f"{idx}\t{tsv_field(ch.ids[j])}\t{tsv_field(failed)}")
                    writer.add(Row(ch.ids[j], ch.descriptions[j], ch.sequences[j], None, 0, False, failed))
                    continue
                if st == records.DUPLICATE:
                    c = int(ch.canonical[j])
                    value, windows = cache[c]
                    counts["duplicates"] += 1
                else:
                    value, windows = ch.values[j], int(ch.windows[j])
                    counts["computed"] += 1
                    counts["truncated"] += bool(ch.truncated[j])
                    counts["windowed"] += windows > 1
                    if idx in needed:
                        cache[idx] = (value, windows)
                writer.add(Row(ch.ids[j], ch.descriptions[j], ch.sequences[j], value, windows, bool(ch.truncated[j])))
                counts["written"] += 1
    finally:
        writer.close()
    os.replace(tmp, out)
    atomic_write(failures_path(out), "\n".join(fail_lines) + "\n")
    summary = {
        **meta,
        "output": str(out),
        "failures_file": str(failures_path(out)),
        "counts": {
            "records": counts["records"],
            "written": counts["written"],
            "computed": counts["computed"],
            "duplicates": counts["duplicates"],
            "truncated": counts["truncated"],
            "windowed": counts["windowed"],
            "failures": dict(failure_reasons),
        },
        **({"speed": speed} if speed else {}),
    }
    write_json(summary_path(out), summary)
    nfail = sum(failure_reasons.values())
    say(
        f"wrote {out}: {counts['written']} of {counts['records']} records ({counts['duplicates']} duplicates copied, "
        f"{counts['windowed']} by overlapping windows, {counts['truncated']} truncated); {nfail} failures"
        + (f" listed in {failures_path(out)}" if nfail else "")
    )
    return summary


def merge(
    folders: list[Path], out: Path, threshold: float | None = None, echo=None, overwrite: bool = False
) -> dict[str, Any]:
    """`minprot merge`: the parts folders checked and OUT checked writable (and not someone else's) first."""
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise UserError(f"--threshold {threshold} is outside [0, 1]; it is a probability")
    commands = set()
    for folder in map(Path, folders):
        manifest = Parts(folder).read_manifest()
        if manifest is None:
            raise UserError(
                f"{folder} does not exist; pass the OUT.parts folders of a predict/embed --shard run"
                if not folder.exists()
                else f"{folder} holds no manifest.json: it is not the parts folder of a predict/embed run "
                "(they are named OUT.parts)"
            )
        commands.add(manifest.get("command"))
    check_out(out, overwrite=overwrite, ours=lambda p: any(made_by(c)(p) for c in commands))
    return finalize(folders, out, echo=echo, threshold=threshold)
