"""The real MMseqs2 as the data tasks run it (the binary, `easy-search`, `easy-cluster`), and redundancy reduction
with it ("SUB": one representative per cluster) and its random control of equal size per split and label ("CUT"),
as in the MinProtBert report's SUB vs CUT experiment.

Both leave a set's `test` split unchanged, so Full, SUB and CUT are scored on one common test set and the
comparison measures the training set alone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import datasets
import numpy as np

from minprot_ds.errors import UserError

INSTALL_HINT = (
    "install MMseqs2 (Debian/Ubuntu: `apt-get install mmseqs2`; conda: `conda install -c bioconda mmseqs2`; "
    "or a static build from https://mmseqs.com) or put its folder on PATH"
)


def mmseqs_binary() -> str:
    path = shutil.which(os.environ.get("MINPROT_MMSEQS", "mmseqs"))
    if path is None:
        raise UserError(f"the mmseqs binary was not found on PATH; {INSTALL_HINT}")
    return path


def run_mmseqs(args: Sequence[str], workdir: Path) -> None:
    """Run `mmseqs ARGS`; a failure becomes a UserError carrying the end of mmseqs's own output."""
    cmd = [mmseqs_binary(), *args]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise UserError(f"`{' '.join(cmd[:2])}` failed with exit status {proc.returncode}: {' | '.join(tail)}")


def easy_search(
    queries: Sequence[str],
    targets: Sequence[str] | None,
    columns: Sequence[str],
    options: Sequence[str] = (),
    *,
    threads: int | None = None,
) -> Iterator[list[str]]:
    """Every hit of `mmseqs easy-search OPTIONS` of `queries` against `targets` (all against all when None), one at
    a time, as the `columns` (MMseqs2 --format-output names) in their text form; query and target are row indices.
    The hits are read from disk as they are consumed, so an all-vs-all search of a large set needs little memory;
    its temporary folder goes when the iteration ends."""
    with tempfile.TemporaryDirectory(prefix="minprot-search-") as tmp:
        work = Path(tmp)
        write_fasta(queries, work / "query.fasta")
        if targets is not None:
            write_fasta(targets, work / "target.fasta")
        args = [
            "easy-search",
            "query.fasta",
            "query.fasta" if targets is None else "target.fasta",
            "hits.m8",
            "tmp",
            *options,
            "--format-output",
            ",".join(columns),
            "-v",
            "1",
        ]
        if threads:
            args += ["--threads", str(threads)]
        run_mmseqs(args, work)
        with open(work / "hits.m8") as handle:
            for line in handle:
                if line.strip():
                    yield line.rstrip("\n").split("\t")


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 < value <= 1.0:
        raise UserError(f"{name} must be a fraction in (0, 1], got {value}")


def write_fasta(sequences: Sequence[str], path: Path) -> None:
    """Records are named by row number, so ids with spaces or duplicates cannot confuse the mapping back."""
    with open(path, "w") as handle:
        for i, seq in enumerate(sequences):
            handle.write(f">{i}\n{seq}\n")


def flatten(data: datasets.DatasetDict) -> tuple[list[str], list[str], list[int]]:
    """Sequences of all splits in one list, with each row's split name and its row index in that split."""
    seqs, split_of, row_of = [], [], []
    for name, ds in data.items():
        seqs.extend(ds["sequence"])
        split_of.extend([name] * ds.num_rows)
        row_of.extend(range(ds.num_rows))
    return seqs, split_of, row_of


def cluster_members(
    sequences: Sequence[str], identity: float, coverage: float = 0.8, threads: int | None = None
) -> list[int]:
    """For each sequence, the index of its cluster's representative (`mmseqs easy-cluster` at this identity
    and coverage); a representative is its own."""
    _check_fraction("--identity", identity)
    _check_fraction("--coverage", coverage)
    with tempfile.TemporaryDirectory(prefix="minprot-mmseqs-") as tmp:
        work = Path(tmp)
        write_fasta(sequences, work / "in.fasta")
        args = ["easy-cluster", "in.fasta", "clu", "tmp", "--min-seq-id", str(identity), "-c", str(coverage), "-v", "1"]
        if threads:
            args += ["--threads", str(threads)]
        run_mmseqs(args, work)
        rep_of = list(range(len(sequences)))
        for line in (work / "clu_cluster.tsv").read_text().splitlines():
            if line:
                rep, member = line.split("\t")[:2]
                rep_of[int(member)] = int(rep)
    return rep_of


def cluster_representatives(
    sequences: Sequence[str], identity: float, coverage: float = 0.8, threads: int | None = None
) -> list[int]:
    """Indices of the cluster representatives `mmseqs easy-cluster` picks at this identity and coverage."""
    return sorted(set(cluster_members(sequences, identity, coverage, threads)))


KEPT_SPLIT = "test"  # SUB and CUT keep it as it is


def reduce(
    data: datasets.Dataset | datasets.DatasetDict,
    identity: float = 0.85,
    *,
    coverage: float = 0.8,
    threads: int | None = None,
) -> datasets.Dataset | datasets.DatasetDict:
    """SUB: the splits other than `test` clustered together; each cluster keeps only its representative, in
    its own split. The test split is kept unchanged."""
    whole = data if isinstance(data, datasets.DatasetDict) else datasets.DatasetDict({"all": data})
    reduced = datasets.DatasetDict({k: v for k, v in whole.items() if k != KEPT_SPLIT})
    seqs, split_of, row_of = flatten(reduced)
    keep: dict[str, list[int]] = {name: [] for name in reduced}
    for i in cluster_representatives(seqs, identity, coverage, threads):
        keep[split_of[i]].append(row_of[i])
    out = datasets.DatasetDict(
        {name: (whole[name] if name == KEPT_SPLIT else whole[name].select(sorted(keep[name]))) for name in whole}
    )
    return out if isinstance(data, datasets.DatasetDict) else out["all"]


def random_subset(
    data: datasets.Dataset | datasets.DatasetDict, like: datasets.Dataset | datasets.DatasetDict, seed: int = 0
) -> datasets.Dataset | datasets.DatasetDict:
    """CUT: per split, a seeded random sample with as many rows of each label as `like`'s split (usually SUB);
    the test split is kept unchanged. Per-residue sets (no `label` column) match the row count."""
    if isinstance(data, datasets.DatasetDict) != isinstance(like, datasets.DatasetDict):
        raise UserError(
            "--like must have the same splits as the dataset (both split or both single); pass the SUB folder made "
            "from it"
        )
    whole = data if isinstance(data, datasets.DatasetDict) else datasets.DatasetDict({"all": data})
    model = like if isinstance(like, datasets.DatasetDict) else datasets.DatasetDict({"all": like})
    if set(whole) != set(model):
        raise UserError(
            f"--like has splits {', '.join(model)} but the dataset has {', '.join(whole)}; pass the SUB folder made "
            "from it"
        )
    rng = np.random.default_rng(seed)
    out = {}
    for name in whole:  # fixed split order keeps the draw a pure function of the seed
        if name == KEPT_SPLIT:
            out[name] = whole[name]
            continue
        has_label = "label" in whole[name].column_names
        mine = np.asarray(whole[name]["label"]) if has_label else np.zeros(whole[name].num_rows, dtype=np.int64)
        theirs = np.asarray(model[name]["label"]) if has_label else np.zeros(model[name].num_rows, dtype=np.int64)
        picked: list[int] = []
        for y in sorted(set(theirs.tolist())):
            pool = np.nonzero(mine == y)[0]
            size = int((theirs == y).sum())
            if size > len(pool):
                raise UserError(
                    f"--like's {name} split has {size} rows of label {y}, more than the dataset's {len(pool)}"
                )
            picked.extend(rng.choice(pool, size=size, replace=False).tolist())
        out[name] = whole[name].select(sorted(picked))
    result = datasets.DatasetDict(out)
    return result if isinstance(data, datasets.DatasetDict) else result["all"]
