"""A forgiving FASTA record reader for benchmark files: CRLF, a UTF-8 BOM, wrapped or one-line
sequences, a missing final newline and empty records (a trailing bare `>`) all occur in public sets."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

from minprot_ds.errors import UserError


@dataclasses.dataclass
class FastaRecord:
    header: str  # the header line without ">", stripped
    sequence: str  # sequence lines joined, whitespace removed (may be empty)
    line: int  # 1-based line number of the header

    @property
    def id(self) -> str:
        return self.header.split()[0] if self.header else ""


def read_fasta(path: Path) -> Iterator[FastaRecord]:
    header: str | None = None
    start = 0
    chunks: list[str] = []
    with open(path, encoding="utf-8-sig", errors="replace", newline=None) as handle:
        for number, line in enumerate(handle, start=1):
            line = line.strip()
            if line.startswith(">"):
                if header is not None:
                    yield FastaRecord(header, "".join(chunks), start)
                header, start, chunks = line[1:].strip(), number, []
            elif line:
                if header is None:
                    raise UserError(
                        f"{path} line {number}: sequence text before the first '>' header; is this a FASTA file?"
                    )
                chunks.append("".join(line.split()))
    if header is not None:
        yield FastaRecord(header, "".join(chunks), start)
