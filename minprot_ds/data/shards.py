"""Random access by global row index over a prepared corpus split, memory-mapped and zero-copy.

Every shard of the split is mapped with pyarrow (`memory_map` + `ipc.open_stream(...).read_all()`), so
opening 43M rows reads only the small `length` column and the list offsets; residues are paged in by
the OS as batches touch them, and DataLoader workers forked from the process share the same pages.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from minprot_ds.data.manifest import load_manifest
from minprot_ds.errors import UserError


class ShardedCorpus:
    """One split of a prepared corpus: `lengths` over global row ids (shards concatenated in manifest
    order) and `tokens(rows)`, numpy views of the residue ids of those rows."""

    def __init__(self, folder: str | Path, split: str = "train") -> None:
        self.folder = Path(folder)
        self.split = split
        manifest = load_manifest(self.folder)
        if split not in manifest.splits:
            raise UserError(
                f"{self.folder}/manifest.json has no split {split!r} (it has {sorted(manifest.splits)}); "
                "pick one of those or prepare the corpus again."
            )
        info = manifest.splits[split]
        if info.rows == 0:
            raise UserError(f"split {split!r} of {self.folder} has no rows; prepare it from more sequences.")

        # Per record batch ("chunk"; `datasets` writes many per shard): offsets and values as numpy views.
        self._offsets: list[np.ndarray] = []
        self._values: list[np.ndarray] = []
        chunk_rows: list[int] = []
        lengths: list[np.ndarray] = []
        self._tables: list[pa.Table] = []  # keeps the memory maps alive as long as the views
        for shard in info.shards:
            table = _open_shard(self.folder, shard.path)
            if table.num_rows != shard.rows:
                raise UserError(
                    f"shard {self.folder / shard.path} has {table.num_rows} rows but the manifest says "
                    f"{shard.rows}; the corpus was modified after preparing: prepare it again."
                )
            self._tables.append(table)
            shard_lengths = table.column("length").to_numpy().astype(np.int32, copy=False)
            lengths.append(shard_lengths)
            start = 0
            for chunk in table.column("tokens").chunks:
                offsets = np.asarray(chunk.offsets)
                if chunk.null_count or not np.array_equal(np.diff(offsets), shard_lengths[start : start + len(chunk)]):
                    raise UserError(
                        f"shard {self.folder / shard.path} has token lists that disagree with its length "
                        "column; the file is corrupt: prepare the corpus again."
                    )
                start += len(chunk)
                self._offsets.append(offsets)
                self._values.append(chunk.values.to_numpy(zero_copy_only=True))
                chunk_rows.append(len(chunk))
        self.lengths: np.ndarray = np.concatenate(lengths) if lengths else np.zeros(0, np.int32)
        if len(self.lengths) != info.rows:
            raise UserError(
                f"split {split!r} of {self.folder} has {len(self.lengths)} rows in its shards but the "
                f"manifest says {info.rows}; prepare the corpus again."
            )
        self._chunk_start = np.zeros(len(chunk_rows) + 1, dtype=np.int64)
        np.cumsum(chunk_rows, out=self._chunk_start[1:])

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def max_length(self) -> int:
        return int(self.lengths.max())

    def tokens(self, rows: np.ndarray | list[int]) -> list[np.ndarray]:
        """Residue ids (uint8 views into the mapped shards, no [CLS]/[SEP]) of the given global rows."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self.lengths)):
            raise IndexError(f"row ids must lie in [0, {len(self.lengths)}), got {rows.min()}..{rows.max()}")
        chunk = np.searchsorted(self._chunk_start, rows, side="right") - 1
        local = rows - self._chunk_start[chunk]
        out = []
        for c, i in zip(chunk.tolist(), local.tolist()):
            offsets = self._offsets[c]
            out.append(self._values[c][offsets[i] : offsets[i + 1]])
        return out


def _open_shard(folder: Path, relative: str) -> pa.Table:
    path = folder / relative
    if not path.is_file():
        raise UserError(
            f"shard {path} listed in {folder}/manifest.json is missing; restore it or prepare the corpus again."
        )
    try:
        source = pa.memory_map(str(path), "r")
        table = pa.ipc.open_stream(source).read_all()
    except (pa.ArrowInvalid, OSError) as err:
        raise UserError(f"shard {path} is not a readable Arrow stream ({err}); prepare the corpus again.") from err
    missing = {"tokens", "length"} - set(table.column_names)
    if missing:
        raise UserError(f"shard {path} lacks the column(s) {sorted(missing)}; prepare the corpus again.")
    return table
