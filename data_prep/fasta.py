"""FASTA(.gz) → record-aligned byte blocks → cleaned, encoded records: the per-record half of `prepare`.

The reader only decompresses and cuts the stream at record boundaries (C-speed byte searches); parsing
(biopython), cleaning and the numpy byte-table encoding happen per block in `encode_block`, a pure
function of the block, so any number of worker processes return the same records in the same order.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from Bio.SeqIO.FastaIO import SimpleFastaParser

from minprot_ds import vocab
from minprot_ds.errors import UserError

GZIP_MAGIC = b"\x1f\x8b"
UTF8_BOM = b"\xef\xbb\xbf"
DEFAULT_BLOCK_BYTES = 4 << 20  # decompressed bytes per block: big enough to amortise IPC, small in RAM

# Drop reasons, in the order they are checked (a record counts under the first that applies).
KEEP = 0
DROP_REASONS = ("empty", "too_short", "too_long", "invalid_letter")
EMPTY, TOO_SHORT, TOO_LONG, INVALID_LETTER = range(1, 5)


@dataclasses.dataclass
class Block:
    """A run of whole FASTA records from one file (the first block may open with blank lines)."""

    source: str  # the file as the user named it, for messages
    first_line: int  # 1-based line number of the block's first line in that file
    data: bytes


@dataclasses.dataclass
class BadRecord:
    """The first record of a block that `--strict` refuses, with what is wrong in words."""

    source: str
    line: int
    record_id: str
    reason: str
    detail: str

    def message(self) -> str:
        name = self.record_id or "(no id)"
        return (
            f"{self.source} line {self.line}: record {name} {self.detail} "
            "(run without --strict to drop such records and count them by reason)."
        )


@dataclasses.dataclass
class EncodedBlock:
    """The records of a block that pass the length and letter checks, plus counts of the others."""

    source: str
    records: int  # all records seen in the block
    accessions: list[str]  # kept records only, in input order
    tokens: np.ndarray  # uint8 corpus ids of the kept records, concatenated
    lengths: np.ndarray  # int32 residues per kept record
    dedup_keys: np.ndarray  # uint64 per kept record: equal sequences get equal keys
    split_keys: np.ndarray  # uint64 per kept record, uniform: the train/valid decision
    drops: dict[str, int]
    first_bad: BadRecord | None


def open_input(path: Path) -> tuple[io.BufferedIOBase, io.BufferedIOBase]:
    """(decompressed stream, raw file): gzip is recognised by its magic bytes, not the file name."""
    raw = open(path, "rb")
    if raw.peek(2)[:2] == GZIP_MAGIC:
        return gzip.GzipFile(fileobj=raw, mode="rb"), raw
    return raw, raw


def _check_start(path: Path, head: bytes) -> int:
    """Check a file's first bytes look like FASTA; return how many leading bytes (a BOM) to skip."""
    skip = len(UTF8_BOM) if head.startswith(UTF8_BOM) else 0
    head = head[skip:]
    if b"\x00" in head[:65536]:
        raise UserError(f"{path} looks binary (it holds NUL bytes), not FASTA text; check the file name.")
    try:
        head[:65536].decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start < min(len(head), 65536) - 3:  # a multi-byte character cut at the window edge is fine
            raise UserError(
                f"{path} looks binary (byte 0x{head[err.start]:02x} at offset {err.start + skip} is not "
                "UTF-8 text), not FASTA; check the file name."
            ) from None
    stripped = head.lstrip()
    if not stripped:
        raise UserError(f"{path} holds no FASTA records (only blank lines); check the file.")
    if not stripped.startswith(b">"):
        line = head[: len(head) - len(stripped)].count(b"\n") + 1
        raise UserError(
            f"{path} has sequence lines before the first '>' header (line {line}); "
            "a FASTA file must start with a '>' header line."
        )
    return skip


def _corrupt_gzip(path: Path, err: Exception) -> UserError:
    return UserError(f"{path} is a truncated or corrupt gzip file ({err}); download or compress it again.")


def _check_file(path: Path) -> None:
    if not path.exists():
        raise UserError(f"input file {path} does not exist; check the path.")
    if not path.is_file():
        raise UserError(f"input {path} is not a file; pass FASTA files (plain or .gz).")
    if path.stat().st_size == 0:
        raise UserError(f"input file {path} is empty; expected FASTA records starting with '>'.")


def check_fasta_start(path: Path, option: str) -> None:
    """The checks `read_blocks` makes before its first record (a file, not empty, text that starts with a '>'
    header, gzip or not), on the first 64 KiB only: cheap enough for a command to run before it imports torch
    or loads a model, so a wrong file is reported at once. `option` names the file in the messages."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{option} {path} is a folder; pass a FASTA file (plain or .gz)")
    if not path.is_file():
        raise UserError(f"{option} {path} does not exist; pass a FASTA file (plain or .gz)")
    _check_file(path)
    stream, raw = open_input(path)
    try:
        try:
            head = stream.read(1 << 16)
        except (EOFError, gzip.BadGzipFile, zlib.error) as err:
            raise _corrupt_gzip(path, err) from None
    finally:
        stream.close()
        raw.close()
    if not head:
        raise UserError(f"input file {path} is empty; expected FASTA records starting with '>'.")
    _check_start(path, head)


def read_blocks(
    path: Path,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    on_progress: Callable[[int], None] | None = None,
) -> Iterator[Block]:
    """Stream a FASTA(.gz) file as blocks of whole records; memory stays at about two blocks.

    `on_progress` gets the position in the file as stored (compressed for .gz), for progress bars.
    """
    source = str(path)
    _check_file(path)
    stream, raw = open_input(path)
    line = 1
    pending = b""
    first = True
    try:
        while True:
            try:
                data = stream.read(block_bytes)
            except (EOFError, gzip.BadGzipFile, zlib.error) as err:
                raise _corrupt_gzip(path, err) from None
            if on_progress is not None:
                on_progress(raw.tell())
            if first:
                if not data:
                    raise UserError(f"input file {path} is empty; expected FASTA records starting with '>'.")
                data = data[_check_start(path, data) :]
                first = False
            if not data:  # end of file: the rest is one block
                if pending:
                    yield Block(source, line, pending)
                return
            pending += data
            cut = pending.rfind(b"\n>")  # '\n' and '>' never occur inside multi-byte UTF-8 characters
            if cut < 0:
                continue  # a record longer than a block: keep reading until its end
            block, pending = pending[: cut + 1], pending[cut + 1 :]
            yield Block(source, line, block)
            line += block.count(b"\n")
    finally:
        stream.close()
        raw.close()


def _decode(block: Block) -> str:
    if b"\x00" in block.data:
        at = block.data.index(b"\x00")
        line = block.first_line + block.data.count(b"\n", 0, at)
        raise UserError(f"{block.source} line {line} holds NUL bytes: the file looks binary or corrupt, not FASTA.")
    try:
        return block.data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = block.first_line + block.data.count(b"\n", 0, err.start)
        raise UserError(
            f"{block.source} line {line} is not UTF-8 text (byte 0x{block.data[err.start]:02x}): "
            "the file looks binary or corrupt, not FASTA."
        ) from None


def _header_lines(data: bytes, first_line: int) -> np.ndarray:
    """1-based line number of every line that starts with '>' (vectorised: no Python work per line)."""
    raw = np.frombuffer(data, dtype=np.uint8)
    starts = np.flatnonzero(raw == ord("\n")) + 1
    starts = np.concatenate([[0], starts[starts < len(raw)]])
    return first_line + np.flatnonzero(raw[starts] == ord(">"))


def seed_key(seed: int) -> bytes:
    """The blake2b key that makes the train/valid split a function of --seed."""
    return int(seed).to_bytes(16, "little", signed=True)


def encode_block(block: Block, min_len: int, max_len: int, seed: int) -> EncodedBlock:
    """Parse, clean and encode one block; records failing a check are counted, not returned.

    Cleaning: a trailing '*' is stripped; lower case is read as upper case (the byte table maps both);
    U, Z, O, B become X. Then, in this order: no residues → empty; shorter than min_len → too_short;
    longer than max_len → too_long; any letter outside ProtBert's residues → invalid_letter.
    Each kept record gets a 128-bit blake2b of its token ids keyed by the seed: the first 64 bits are
    its dedup key, the last 64 decide its split, so equal sequences always land in the same split.
    """
    text = _decode(block)
    header_lines = _header_lines(block.data, block.first_line)
    titles: list[str] = []
    seqs: list[str] = []
    for title, seq in SimpleFastaParser(io.StringIO(text)):
        titles.append(title)
        seqs.append(seq.rstrip("*"))
    assert len(titles) == len(header_lines), "biopython and the header scan disagree on record count"
    n = len(seqs)
    lengths = np.fromiter(map(len, seqs), dtype=np.int64, count=n)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    # One table lookup for the whole block; non-ASCII characters become '?' (one byte each, so the
    # offsets above still hold) and are then invalid like any other unknown letter.
    ids = vocab.rare_ids_to_x(vocab.encode("".join(seqs).encode("ascii", "replace")))
    bad = ids == vocab.INVALID
    if bad.any():  # rare: only then is the per-record count worth a cumulative sum
        invalid_cum = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum(bad, out=invalid_cum[1:])
        invalid = invalid_cum[offsets[1:]] - invalid_cum[offsets[:-1]]
    else:
        invalid = np.zeros(n, dtype=np.int64)
    reason = np.select(
        [lengths == 0, lengths < min_len, lengths > max_len, invalid > 0],
        [EMPTY, TOO_SHORT, TOO_LONG, INVALID_LETTER],
        default=KEEP,
    )
    keep = reason == KEEP
    counts = np.bincount(reason, minlength=len(DROP_REASONS) + 1)
    drops = {name: int(counts[code]) for code, name in enumerate(DROP_REASONS, start=1)}

    first_bad = None
    if not keep.all():
        i = int(np.argmax(~keep))
        first_bad = _bad_record(
            block.source, int(header_lines[i]), titles[i], seqs[i], int(reason[i]), min_len, max_len
        )

    kept_idx = np.flatnonzero(keep)
    kept_tokens = ids[np.repeat(keep, lengths)]
    kept_lengths = lengths[kept_idx].astype(np.int32)
    key = seed_key(seed)
    digests = bytearray()
    view = memoryview(kept_tokens)
    start = 0
    for length in kept_lengths.tolist():
        digests += hashlib.blake2b(view[start : start + length], digest_size=16, key=key).digest()
        start += length
    keys = np.frombuffer(bytes(digests), dtype="<u8").reshape(-1, 2)
    return EncodedBlock(
        source=block.source,
        records=n,
        accessions=[_record_id(titles[i]) for i in kept_idx.tolist()],
        tokens=kept_tokens,
        lengths=kept_lengths,
        dedup_keys=keys[:, 0].copy(),
        split_keys=keys[:, 1].copy(),
        drops=drops,
        first_bad=first_bad,
    )


def _record_id(title: str) -> str:
    parts = title.split(None, 1)
    return parts[0] if parts else ""


def _bad_record(source: str, line: int, title: str, seq: str, code: int, min_len: int, max_len: int) -> BadRecord:
    if code == EMPTY:
        detail = "has no residues"
    elif code == TOO_SHORT:
        detail = f"has {len(seq)} residues, fewer than --min-len {min_len}"
    elif code == TOO_LONG:
        detail = f"has {len(seq)} residues, more than --max-len {max_len}"
    else:
        ids = vocab.encode(seq.encode("ascii", "replace"))
        pos = int(np.argmax(ids == vocab.INVALID))
        detail = f"has {seq[pos]!r} at residue {pos + 1}, which is not an amino-acid letter ProtBert knows"
    return BadRecord(source, line, _record_id(title), DROP_REASONS[code - 1], detail)
