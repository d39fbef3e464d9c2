"""Swiss-Prot flat files -> the DNA-binding task: reviewed, complete (no `DE Flags: Fragment`) entries of one
organism group, 20-512 residues, label 1 iff the entry carries the keyword "DNA-binding" (KW-0238).

The 85 / 7.5 / 7.5 train / valid / test split is leak-free by construction (data_prep/tasks/split.py):
connected components of a sensitive all-vs-all MMseqs2 search (`--identity`, default 30%, over 80% of the
shorter protein) go whole to one split, drawn per label so every split keeps the label balance, and the
leakage measure then checks that no test or valid protein has a homolog in train. SUB and CUT made from the
set keep this test split unchanged.
"""

from __future__ import annotations

import collections
import gzip
from collections.abc import Sequence
from pathlib import Path

import datasets
from Bio import SwissProt

from data_prep.tasks.split import DEFAULT_SENSITIVITY, SplitSettings, removals, split_and_check
from minprot_ds.data.task_records import SEQUENCE_FEATURES, clean_sequence
from minprot_ds.errors import UserError
from minprot_ds.vocab import MAX_RESIDUES

DNA_BINDING = "DNA-binding"  # KW-0238
MIN_RESIDUES = 20
SPLIT_FRACTIONS = {"train": 0.85, "valid": 0.075, "test": 0.075}
ORGANISMS = {"human": "9606", "c-elegans": "6239", "bacteria-archaea": None}  # None: by superkingdom


def organism_filter(organism: str):
    """A predicate on a SwissProt.Record for `human`, `c-elegans`, `bacteria-archaea` or a numeric taxid."""
    if organism == "bacteria-archaea":
        return lambda rec: (
            bool(rec.organism_classification) and rec.organism_classification[0] in ("Bacteria", "Archaea")
        )
    taxid = ORGANISMS.get(organism, organism)
    if not str(taxid).isdigit():
        raise UserError(
            f"unknown --organism {organism!r}; use human, c-elegans, bacteria-archaea or an NCBI taxid such as 10090"
        )
    return lambda rec: str(taxid) in rec.taxonomy_id


FRAGMENT = "fragment (DE Flags: Fragment)"


def is_fragment(description: str) -> bool:
    """UniProt marks incomplete sequences with `Fragment` (or `Fragments`) among the DE line's Flags."""
    return "Flags:" in description and "Fragment" in description.split("Flags:", 1)[1]


def _open(path: Path):
    if not path.is_file():
        raise UserError(f"{path} does not exist; pass a UniProt flat file such as uniprot_sprot.dat.gz")
    return gzip.open(path, "rt") if path.suffix == ".gz" else open(path)


def _has_keyword(keywords: list[str], keyword: str) -> bool:
    # TrEMBL-style lines carry evidence tags ("DNA-binding {ECO:...}"); compare the bare keyword.
    return any(k.split("{")[0].strip() == keyword for k in keywords)


def read_swissprot(paths: Sequence[str | Path], organism: str) -> tuple[dict[str, list], collections.Counter]:
    """Columns id/sequence/label of the kept entries, and the excluded entries counted by reason."""
    keep = organism_filter(organism)
    columns: dict[str, list] = {"id": [], "sequence": [], "label": []}
    excluded: collections.Counter = collections.Counter()
    for path in map(Path, paths):
        with _open(path) as handle:
            try:
                for rec in SwissProt.parse(handle):
                    if rec.data_class != "Reviewed":
                        excluded["unreviewed (TrEMBL) entry"] += 1
                    elif not keep(rec):
                        excluded["other organism"] += 1
                    elif is_fragment(rec.description):
                        excluded[FRAGMENT] += 1
                    elif not MIN_RESIDUES <= len(rec.sequence) <= MAX_RESIDUES:
                        excluded[f"outside {MIN_RESIDUES}-{MAX_RESIDUES} residues"] += 1
                    else:
                        seq, problem = clean_sequence(rec.sequence)
                        if problem:
                            excluded[problem] += 1
                            continue
                        columns["id"].append(rec.accessions[0])
                        columns["sequence"].append(seq)
                        columns["label"].append(int(_has_keyword(rec.keywords, DNA_BINDING)))
            except (ValueError, SwissProt.SwissProtParserError) as err:
                raise UserError(
                    f"{path} is not a readable UniProt flat file ({err}); pass uniprot_sprot.dat[.gz]"
                ) from None
    return columns, excluded


def build_swissprot(
    paths: Sequence[str | Path],
    organism: str,
    seed: int = 0,
    *,
    identity: float = 0.3,
    coverage: float = 0.8,
    sensitivity: float = DEFAULT_SENSITIVITY,
    threads: int | None = None,
) -> tuple[datasets.DatasetDict, dict[str, int], dict, dict]:
    """The task set, the excluded entries counted by reason, split.json's and leakage.json's contents (see the
    module's docstring)."""

    columns, excluded = read_swissprot(paths, organism)
    if not columns["id"]:
        raise UserError(
            f"no reviewed {organism} entries of {MIN_RESIDUES}-{MAX_RESIDUES} residues in {', '.join(map(str, paths))}"
        )
    full = datasets.Dataset.from_dict(columns, features=SEQUENCE_FEATURES)
    how = SplitSettings(
        SPLIT_FRACTIONS, identity=identity, coverage=coverage, sensitivity=sensitivity, seed=seed, threads=threads
    )
    split, report, leakage = split_and_check(full, "sequence", how)
    excluded.update(removals(report))
    return split, dict(excluded), report, leakage
