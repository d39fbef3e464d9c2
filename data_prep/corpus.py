"""`minprot data prepare`: UniRef50 FASTA(.gz) → Arrow shards + manifest.json, atomically and idempotently.

The main process reads record-aligned blocks (data_prep.fasta) and hands them to workers for parsing and
encoding, at most a few in flight; results come back in input order, so deduplication, the train/valid
split and shard boundaries — and therefore every output byte — do not depend on --workers. Everything
is built in a hidden sibling folder and renamed into place once manifest.json is written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import multiprocessing
import os
import shutil
import socket
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

import minprot_ds
from data_prep.fasta import DEFAULT_BLOCK_BYTES, DROP_REASONS, EncodedBlock, encode_block, read_blocks
from minprot_ds.data.manifest import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST_NAME,
    SPLITS,
    Manifest,
    ShardInfo,
    SplitInfo,
    load_manifest,
    write_manifest,
    write_shard,
)
from minprot_ds.errors import UserError
from minprot_ds.fileio import sha256_file
from minprot_ds.outputs import check_out

DEFAULT_SHARD_BYTES = 64 << 20  # ~64 MiB of Arrow data per shard: few files, cheap to checksum one
ROW_OVERHEAD_BYTES = 12  # per row in a shard: token and accession list offsets (int32) + length (int32)
HISTOGRAM_BINS = 512  # at most; with the default 20–512 range every length has its own bin
DUPLICATE = "duplicate"
ALL_DROP_REASONS = (*DROP_REASONS, DUPLICATE)


@dataclasses.dataclass(frozen=True)
class PrepareOptions:
    """The options that shape the output (recorded in the manifest and fingerprinted)."""

    min_len: int = 20
    max_len: int = 512
    valid_fraction: float = 0.005
    shard_rows: int | None = None
    shard_bytes: int | None = None  # None with shard_rows None means DEFAULT_SHARD_BYTES
    seed: int = 0
    dedup: bool = True
    strict: bool = False

    def validate(self) -> None:
        if self.min_len < 1:
            raise UserError(f"--min-len must be at least 1, got {self.min_len}.")
        if self.max_len < self.min_len:
            raise UserError(f"--max-len ({self.max_len}) must be at least --min-len ({self.min_len}).")
        if not 0.0 <= self.valid_fraction < 1.0:
            raise UserError(f"--valid-fraction must be in [0, 1), got {self.valid_fraction}.")
        if self.shard_rows is not None and self.shard_bytes is not None:
            raise UserError("pass either --shard-rows or --shard-bytes, not both.")
        if self.shard_rows is not None and self.shard_rows < 1:
            raise UserError(f"--shard-rows must be at least 1, got {self.shard_rows}.")
        if self.shard_bytes is not None and self.shard_bytes < 1:
            raise UserError(f"--shard-bytes must be at least 1, got {self.shard_bytes}.")

    def resolved(self) -> PrepareOptions:
        if self.shard_rows is None and self.shard_bytes is None:
            return dataclasses.replace(self, shard_bytes=DEFAULT_SHARD_BYTES)
        return self


def describe_inputs(inputs: Sequence[str | Path]) -> list[dict[str, Any]]:
    """name (absolute path), size and mtime of each input: what the fingerprint sees of the files."""
    described = []
    for item in inputs:
        path = Path(item)
        if not path.exists():
            raise UserError(f"input file {path} does not exist; check the path.")
        if not path.is_file():
            raise UserError(f"input {path} is not a file; pass FASTA files (plain or .gz).")
        stat = path.stat()
        described.append({"name": str(path.resolve()), "size": stat.st_size, "mtime": stat.st_mtime})
    return described


def fingerprint(inputs: list[dict[str, Any]], options: dict[str, Any]) -> str:
    """sha256 over the format version, inputs (name, size, mtime) and options, not --workers."""
    blob = json.dumps({"format_version": FORMAT_VERSION, "inputs": inputs, "options": options}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def histogram_edges(min_len: int, max_len: int) -> np.ndarray:
    """Bin edges over [min_len, max_len]: width 1 when the range has ≤ HISTOGRAM_BINS lengths."""
    width = max(1, math.ceil((max_len + 1 - min_len) / HISTOGRAM_BINS))
    edges = np.arange(min_len, max_len + 1, width, dtype=np.int64)
    return np.append(edges, max_len + 1)


class DedupIndex:
    """Set of 64-bit sequence keys, stored as sorted numpy runs (an LSM tree), not Python objects.

    Memory: 8 bytes per distinct kept sequence (about 0.35 GB for UniRef50's ~43M) plus, briefly, one
    more copy of the largest run while two runs merge. Runs merge like a binary counter, so each key is
    copied O(log n) times in total. Two distinct sequences share a key with probability ~n²/2⁶⁵
    (about 5e-5 for 43M): the cost would be one sequence wrongly dropped as a duplicate.
    """

    def __init__(self) -> None:
        self._runs: list[np.ndarray] = []

    def __len__(self) -> int:
        return sum(len(run) for run in self._runs)

    def add(self, keys: np.ndarray) -> np.ndarray:
        """Insert keys in order; return a mask of those not seen before (first occurrence wins)."""
        keys = np.asarray(keys, dtype=np.uint64)
        _, first = np.unique(keys, return_index=True)
        fresh = np.zeros(len(keys), dtype=bool)
        fresh[first] = True
        for run in self._runs:
            at = np.searchsorted(run, keys).clip(max=len(run) - 1)
            fresh &= run[at] != keys
        new = np.sort(keys[fresh])
        if len(new):
            self._runs.append(new)
            while len(self._runs) > 1 and len(self._runs[-2]) <= 2 * len(self._runs[-1]):
                top = self._runs.pop()
                below = self._runs.pop()
                self._runs.append(np.sort(np.concatenate([below, top]), kind="stable"))
        return fresh


def _write_shard_task(
    path: str, accessions: list[str], tokens: np.ndarray, lengths: np.ndarray, root: str
) -> ShardInfo:
    """Write one shard and fsync it (runs in a worker when --workers > 1)."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    bounds = offsets.tolist()
    info = write_shard(path, accessions, [tokens[a:b] for a, b in zip(bounds[:-1], bounds[1:])], root)
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())
    return info


class _SplitWriter:
    """Collects one split's kept rows and cuts them into shards of --shard-rows rows or --shard-bytes."""

    def __init__(
        self, name: str, root: Path, options: PrepareOptions, submit: Callable[..., Future], edges: np.ndarray
    ):
        self.name = name
        self.root = root
        self.folder = root / name
        self.folder.mkdir()
        self.shard_rows = options.shard_rows
        self.shard_bytes = options.shard_bytes
        self.submit = submit
        self.edges = edges
        self.counts = np.zeros(len(edges) - 1, dtype=np.int64)
        self.shards: list[Future] = []
        self._reset()

    def _reset(self) -> None:
        self.acc: list[str] = []
        self.tok: list[np.ndarray] = []
        self.len: list[np.ndarray] = []
        self.rows = 0
        self.bytes = 0

    def add(self, accessions: list[str], tokens: np.ndarray, lengths: np.ndarray) -> None:
        if not len(lengths):
            return
        self.counts += np.bincount(np.searchsorted(self.edges, lengths, side="right") - 1, minlength=len(self.counts))
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        row_bytes = (
            lengths.astype(np.int64) + np.fromiter(map(len, accessions), np.int64, len(accessions)) + ROW_OVERHEAD_BYTES
        )
        start, n = 0, len(lengths)
        while start < n:
            take = self._room(row_bytes[start:])
            if take == 0:
                self.flush()
                continue
            stop = start + take
            self.acc.extend(accessions[start:stop])
            self.tok.append(tokens[offsets[start] : offsets[stop]])
            self.len.append(lengths[start:stop])
            self.rows += take
            self.bytes += int(row_bytes[start:stop].sum())
            start = stop
            if start < n:  # the next row did not fit
                self.flush()

    def _room(self, row_bytes: np.ndarray) -> int:
        if self.shard_rows is not None:
            return min(self.shard_rows - self.rows, len(row_bytes))
        fit = int(np.searchsorted(np.cumsum(row_bytes), self.shard_bytes - self.bytes, side="right"))
        return max(fit, 1) if self.rows == 0 else fit  # a row bigger than a shard gets a shard of its own

    def flush(self) -> None:
        if not self.rows:
            return
        path = self.folder / f"shard-{len(self.shards):05d}.arrow"
        tokens = np.concatenate(self.tok)
        lengths = np.concatenate(self.len)
        self.shards.append(self.submit(_write_shard_task, str(path), self.acc, tokens, lengths, str(self.root)))
        self._reset()

    def info(self) -> SplitInfo:
        shards = [future.result() for future in self.shards]
        return SplitInfo(
            rows=sum(s.rows for s in shards),
            residues=sum(s.residues for s in shards),
            shards=shards,
            length_histogram={"edges": self.edges.tolist(), "counts": self.counts.tolist()},
        )


class _InlineExecutor:
    """--workers 1: run tasks in this process, behind the same Future interface as the pool."""

    def submit(self, fn: Callable, *args: Any) -> Future:
        future: Future = Future()
        future.set_result(fn(*args))
        return future

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


def _make_executor(workers: int) -> Any:
    if workers <= 1:
        return _InlineExecutor()
    # fork: workers inherit the imported modules (spawn would re-import pyarrow/datasets in each). They
    # are started now, before any progress-bar thread exists, by a warm-up task.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    executor = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method))
    executor.submit(int).result()
    return executor


def _partial_name(out: Path) -> str:
    return f".{out.name}.partial-{socket.gethostname()}-"


def _remove_stale_partials(out: Path) -> None:
    """Remove build folders left by runs on this host that were killed (their process is gone)."""
    prefix = _partial_name(out)
    for entry in out.parent.glob(prefix + "*"):
        pid = entry.name[len(prefix) :]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(entry, ignore_errors=True)
        except PermissionError:
            pass


def _describe_difference(old: Manifest, inputs: list[dict[str, Any]], options: dict[str, Any]) -> str:
    changed = [key for key in sorted(set(old.options) | set(options)) if old.options.get(key) != options.get(key)]
    if changed:
        return "options " + ", ".join(f"{k} {old.options.get(k)!r} → {options.get(k)!r}" for k in changed)
    return "input files (name, size or modification time)"


def _check_output(
    out: Path, fp: str, inputs: list[dict[str, Any]], options: dict[str, Any], overwrite: bool
) -> Manifest | None:
    """Decide what to do with --out: None means build; a Manifest means it is already up to date.

    Where it is goes by the one rule for outputs (outputs.check_out: a folder, not a file, that can be written);
    whether a corpus already there may be replaced is decided here, from its manifest, saying what differs. A
    folder of other files is refused even with --overwrite: publishing replaces only a prepared corpus."""
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST_NAME).is_file():
        example = sorted(p.name for p in out.iterdir())[0]
        raise UserError(
            f"--out {out} already holds files that are not a minprot corpus (e.g. {example!r}); "
            "choose a new or empty folder (--overwrite only replaces a prepared corpus)."
        )
    check_out(out, folder=True, ours=lambda folder: (folder / MANIFEST_NAME).is_file())
    if not out.is_dir() or not any(out.iterdir()):
        return None
    try:
        old = load_manifest(out)
    except UserError as err:
        raise UserError(
            f"--out {out} holds a {MANIFEST_NAME} that is not a valid minprot manifest; "
            "choose a new or empty folder, or remove it yourself."
        ) from err
    if old.fingerprint == fp:
        for split in old.splits.values():
            for shard in split.shards:
                path = out / shard.path
                if not path.is_file() or path.stat().st_size != shard.bytes:
                    raise UserError(
                        f"{out} is prepared from these inputs and options, but shard {shard.path} is missing "
                        "or changed; rerun with --overwrite to rebuild it."
                    )
        return old
    if not overwrite:
        raise UserError(
            f"--out {out} holds a corpus prepared from different {_describe_difference(old, inputs, options)}; "
            "pass --overwrite to replace it, or choose another folder."
        )
    return None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(tmp: Path, out: Path) -> None:
    """Move the finished build into place: a rename, so readers see all of it or none of it."""
    if out.is_dir() and (out / MANIFEST_NAME).exists():  # --overwrite of a prepared corpus
        old = out.parent / (_partial_name(out) + f"{os.getpid()}-old")
        os.rename(out, old)
        os.rename(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        try:
            os.rename(tmp, out)  # replaces an empty folder atomically on POSIX
        except OSError as err:
            raise UserError(
                f"could not move the finished corpus into {out} ({err.strerror}); is it still empty?"
            ) from err
    _fsync_dir(out.parent)


def _no_log(message: str) -> None:
    pass


def prepare_corpus(
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    min_len: int = 20,
    max_len: int = 512,
    valid_fraction: float = 0.005,
    shard_rows: int | None = None,
    shard_bytes: int | None = None,
    workers: int = 1,
    seed: int = 0,
    dedup: bool = True,
    strict: bool = False,
    overwrite: bool = False,
    progress: bool = False,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    log: Callable[[str], None] = _no_log,
) -> Manifest:
    """Prepare FASTA(.gz) inputs into a sharded corpus at `out` and return its manifest.

    A rerun with the same inputs (name, size, mtime) and options returns the existing manifest and logs
    that nothing was done. `workers` and `block_bytes` change speed only, never the output bytes.
    Raises UserError for bad input, with nothing published.
    """
    if not inputs:
        raise UserError("no input files given; pass one or more FASTA files (plain or .gz).")
    if workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}.")
    opts = PrepareOptions(min_len, max_len, valid_fraction, shard_rows, shard_bytes, seed, dedup, strict)
    opts.validate()
    opts = opts.resolved()
    options = dataclasses.asdict(opts)
    described = describe_inputs(inputs)
    fp = fingerprint(described, options)
    out = Path(out)
    existing = _check_output(out, fp, described, options, overwrite)
    if existing is not None:
        log(f"{out} is already prepared from these inputs and options (fingerprint {fp[:12]}); nothing to do.")
        return existing

    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(out)
    tmp = out.parent / (_partial_name(out) + str(os.getpid()))
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    executor = None
    try:
        executor = _make_executor(workers)
        manifest = _build(
            tmp, [Path(p) for p in inputs], described, opts, options, fp, executor, workers, progress, block_bytes
        )
        write_manifest(tmp, manifest)  # last: its presence is what "complete" means
        _fsync_dir(tmp)
        _publish(tmp, out)
    finally:
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(tmp, ignore_errors=True)
    kept = sum(s.rows for s in manifest.splits.values())
    log(f"prepared {out}: {kept:,} sequences kept, {sum(manifest.drops.values()):,} dropped.")
    return manifest


def _progress_bar(enabled: bool) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    bar = Progress(
        TextColumn("[bold]preparing"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled,
    )
    return bar


def _build(
    tmp: Path,
    paths: list[Path],
    described: list[dict[str, Any]],
    opts: PrepareOptions,
    options: dict[str, Any],
    fp: str,
    executor: Any,
    workers: int,
    progress: bool,
    block_bytes: int,
) -> Manifest:
    edges = histogram_edges(opts.min_len, opts.max_len)
    writes: deque[Future] = deque()

    def submit_write(fn: Callable, *args: Any) -> Future:
        # Bounded like the blocks: a shard waits in memory only while at most `workers` others are written.
        future = executor.submit(fn, *args)
        writes.append(future)
        while len(writes) > workers:
            writes.popleft().result()
        return future

    writers = {name: _SplitWriter(name, tmp, opts, submit_write, edges) for name in SPLITS}
    index = DedupIndex() if opts.dedup else None
    drops = dict.fromkeys(ALL_DROP_REASONS, 0)
    records = dict.fromkeys((str(p) for p in paths), 0)
    threshold = np.uint64(min(int(opts.valid_fraction * 2.0**64), 2**64 - 1))
    max_in_flight = 2 * workers  # bounds memory: at most this many blocks decoded or encoding at once

    def consume(enc: EncodedBlock) -> None:
        records[enc.source] += enc.records
        if opts.strict and enc.first_bad is not None:
            raise UserError(enc.first_bad.message())
        for reason, count in enc.drops.items():
            drops[reason] += count
        keep = index.add(enc.dedup_keys) if index is not None else np.ones(len(enc.lengths), dtype=bool)
        drops[DUPLICATE] += int((~keep).sum())
        valid = enc.split_keys < threshold
        offsets = np.zeros(len(enc.lengths) + 1, dtype=np.int64)
        np.cumsum(enc.lengths, out=offsets[1:])
        for name, mask in (("train", keep & ~valid), ("valid", keep & valid)):
            rows = np.flatnonzero(mask)
            if len(rows):
                writers[name].add(
                    [enc.accessions[i] for i in rows.tolist()],
                    enc.tokens[np.repeat(mask, enc.lengths)],
                    enc.lengths[rows],
                )

    total = sum(d["size"] for d in described)
    done = 0
    window: deque[Future] = deque()
    with _progress_bar(progress) as bar:
        task = bar.add_task("prepare", total=total)
        for path, item in zip(paths, described):

            def on_progress(position: int, base: int = done) -> None:
                bar.update(task, completed=base + position)

            for block in read_blocks(path, block_bytes, on_progress):
                window.append(executor.submit(encode_block, block, opts.min_len, opts.max_len, opts.seed))
                if len(window) >= max_in_flight:
                    consume(window.popleft().result())
            done += item["size"]
        while window:
            consume(window.popleft().result())
        for writer in writers.values():
            writer.flush()
        splits = {name: writer.info() for name, writer in writers.items()}

    for source, count in records.items():
        if count == 0:
            raise UserError(f"{source} holds no FASTA records; check the file.")
    if splits["train"].rows + splits["valid"].rows == 0:
        reasons = ", ".join(f"{k} {v:,}" for k, v in drops.items() if v)
        raise UserError(
            f"no sequence was kept from {sum(records.values()):,} records ({reasons}); "
            "check the inputs and --min-len/--max-len."
        )
    return Manifest(
        format=FORMAT,
        format_version=FORMAT_VERSION,
        minprot_version=minprot_ds.__version__,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        splits=splits,
        drops=drops,
        inputs=described,
        options=options,
        fingerprint=fp,
    )


# --- inspection -------------------------------------------------------------------------------------


def length_percentiles(
    histogram: dict[str, list[int]], percents: Sequence[float] = (0, 5, 25, 50, 75, 95, 100)
) -> dict[float, int]:
    """Nearest-rank percentiles of the row lengths from a manifest histogram (exact with width-1 bins).

    With wider bins, each percentile is reported as its bin's lower edge.
    """
    edges = np.asarray(histogram["edges"], dtype=np.int64)
    counts = np.asarray(histogram["counts"], dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        return {}
    cumulative = np.cumsum(counts)
    result = {}
    for p in percents:
        rank = max(1, math.ceil(p / 100 * total))
        result[p] = int(edges[int(np.searchsorted(cumulative, rank))])
    return result


def verify_corpus(folder: str | Path) -> Manifest:
    """Check every shard's size and sha256 against the manifest; a UserError names each bad shard."""
    folder = Path(folder)
    manifest = load_manifest(folder)
    problems = []
    total = 0
    for split in manifest.splits.values():
        for shard in split.shards:
            total += 1
            path = folder / shard.path
            if not path.is_file():
                problems.append(f"{shard.path} (missing)")
            elif path.stat().st_size != shard.bytes or sha256_file(path) != shard.sha256:
                problems.append(f"{shard.path} (checksum mismatch)")
    if problems:
        raise UserError(
            f"{len(problems)} of {total} shards in {folder} failed verification: {', '.join(problems)}; "
            "prepare the corpus again with --overwrite."
        )
    return manifest
