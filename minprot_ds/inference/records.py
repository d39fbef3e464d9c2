"""Proteome input: a FASTA(.gz) read as a stream, cleaned, checked, its duplicates found.

`index_input` reads the file once (ids, lengths, a digest per sequence, the file's fingerprint; never the
sequences themselves) so a run knows its size, refuses duplicate ids up front and computes each distinct
sequence once; `iter_records` then streams the records again, chunk by chunk. Cleaning: upper case, a
trailing '*' stripped, U/Z/O/B read as X (as ProtBert's pretraining did); a record with any other letter,
or none, is a failure with its reason, counted and listed, never dropped silently.
"""

from __future__ import annotations

import hashlib
import io
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from Bio.SeqIO.FastaIO import SimpleFastaParser

from data_prep.fasta import read_blocks
from data_prep.tasks.readers import dna_header_id
from minprot_ds import vocab
from minprot_ds.errors import UserError

OK, DUPLICATE, FAILED = 0, 1, 2  # a record's status: computed, same sequence as an earlier record, failure


@dataclass
class Record:
    index: int  # 0-based position in the input
    id: str  # first word of the header (made unique by --dedupe-ids)
    description: str  # the rest of the header
    sequence: str  # cleaned; "" for a failure
    failure: str = ""  # why it cannot be computed ("" when it can)


def clean(raw: str) -> tuple[str, str]:
    """(cleaned sequence, "" or the reason it is refused)."""
    seq = vocab.rare_to_x(raw.strip().upper().rstrip("*"))
    if not seq:
        return "", "no residues"
    ids = vocab.encode(seq.encode("ascii", "replace"))
    bad = np.flatnonzero(ids == vocab.INVALID)
    if len(bad):
        letters = sorted(set(seq[i] for i in bad))
        return "", f"letters outside ProtBert's residues: {''.join(letters)} (first at residue {bad[0] + 1})"
    return seq, ""


def _split_header(title: str) -> tuple[str, str]:
    """(id, description): the first word, without a DNA benchmark's `|1`/`|2` label tag so that ids join with
    finetune's predictions.tsv, and the rest."""
    parts = title.strip().split(None, 1)
    return (dna_header_id(parts[0]) if parts else ""), (parts[1] if len(parts) > 1 else "")


def _raw_records(path: Path) -> Iterator[tuple[str, str, bytes]]:
    """(title, raw sequence, the block's bytes or b"" after its first record) for every record, streamed."""
    for block in read_blocks(Path(path)):
        first = True
        for title, seq in SimpleFastaParser(io.StringIO(block.data.decode("utf-8", "replace"))):
            yield title, seq, block.data if first else b""
            first = False


@dataclass
class InputIndex:
    """What a run needs to know about its input before computing (a few bytes per record)."""

    path: Path
    fingerprint: str  # sha256 of the decompressed FASTA text
    records: int
    residues: int  # of the records that will be computed
    lengths: np.ndarray  # cleaned length per record (0 for failures)
    status: np.ndarray  # OK / DUPLICATE / FAILED per record
    canonical: np.ndarray  # for a duplicate, the index of the first record with its sequence; else its own
    renamed: dict[int, str] = field(default_factory=dict)  # --dedupe-ids: record index -> unique id
    failures: Counter = field(default_factory=Counter)  # reason -> count


def index_input(path: Path, dedupe_ids: bool = False) -> InputIndex:
    """Read the file once; duplicate ids are refused (listed) unless `dedupe_ids` renames them id_2, id_3..."""
    path = Path(path)
    digest = hashlib.sha256()
    ids: list[str] = []
    lengths, status, canonical = [], [], []
    first_of: dict[bytes, int] = {}
    failures: Counter = Counter()
    for i, (title, raw, block) in enumerate(_raw_records(path)):
        if block:
            digest.update(block)
        rid, _ = _split_header(title)
        ids.append(rid)
        seq, why = clean(raw)
        if why:
            lengths.append(0), status.append(FAILED), canonical.append(i)
            failures[why.split(":")[0]] += 1
            continue
        key = hashlib.blake2b(seq.encode(), digest_size=16).digest()
        first = first_of.setdefault(key, i)
        lengths.append(len(seq)), status.append(OK if first == i else DUPLICATE), canonical.append(first)
    counts = Counter(ids)
    repeated = [rid for rid, n in counts.items() if n > 1]
    renamed: dict[int, str] = {}
    if repeated and not dedupe_ids:
        shown = ", ".join(repr(r) for r in repeated[:10]) + (
            f" and {len(repeated) - 10} more" if len(repeated) > 10 else ""
        )
        raise UserError(
            f"{path} has {len(repeated)} ids that occur more than once ({shown}); make the ids unique "
            "or pass --dedupe-ids to rename the later ones id_2, id_3, ..."
        )
    if repeated:
        taken, seen = set(counts), Counter()
        for i, rid in enumerate(ids):
            seen[rid] += 1
            if counts[rid] > 1 and seen[rid] > 1:
                n = seen[rid]
                while f"{rid}_{n}" in taken:
                    n += 1
                renamed[i] = f"{rid}_{n}"
                taken.add(renamed[i])
    lengths_a = np.asarray(lengths, dtype=np.int64)
    status_a = np.asarray(status, dtype=np.int8)
    return InputIndex(
        path,
        digest.hexdigest(),
        len(ids),
        int(lengths_a[status_a == OK].sum()),
        lengths_a,
        status_a,
        np.asarray(canonical, dtype=np.int64),
        renamed,
        failures,
    )


def iter_records(index: InputIndex) -> Iterator[Record]:
    """The records again, in input order, cleaned, with --dedupe-ids' renames applied."""
    for i, (title, raw, _) in enumerate(_raw_records(index.path)):
        rid, description = _split_header(title)
        seq, why = clean(raw)
        yield Record(i, index.renamed.get(i, rid), description, seq, why)
