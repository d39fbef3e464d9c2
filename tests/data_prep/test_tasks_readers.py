"""Every task reader on the real public files (counts from ../shared/data/README.md) and on the quirks."""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest

from data_prep.tasks import IGNORE_INDEX, detect_format, read_inputs
from data_prep.tasks.readers import EXCLUDED_U
from minprot_ds.errors import UserError

H, E, C = 0, 1, 2


def test_casp12_netsurfp_csv(shared_data: Path) -> None:
    report = read_inputs([shared_data / "secondary_structure/CASP12_HHblits.csv"])
    assert report.format == "netsurfp-csv" and report.rows == 20 and report.skipped == {}
    first = report.data[0]
    assert len(first["labels"]) == len(first["sequence"]) == 341
    assert set(first["sequence"]) <= set("LAGVESIKRDTPNQFYMHCWX")
    # disorder 0.0 marks unresolved residues -> ignored; CASP12's first 23 are unresolved, then C.
    assert first["labels"][:23] == [IGNORE_INDEX] * 23 and first["labels"][23] == C
    # Sequences far over 512 residues are kept (the fine-tune truncates) and counted.
    assert max(len(s) for s in report.data["sequence"]) == 1494 and report.long == 4


def test_cb513_mask_column_and_rare_letters(shared_data: Path) -> None:
    report = read_inputs([shared_data / "secondary_structure/CB513_HHblits.csv"], "netsurfp-csv")
    assert report.rows == 511 and report.skipped == {}
    flat = [x for row in report.data["labels"] for x in row]
    # 60,020 residues outside CB513 (cb513_mask 0) and 3,525 unresolved (disorder 0) overlap; both ignored.
    assert flat.count(IGNORE_INDEX) >= 60020
    assert {H, E, C} <= set(flat)
    joined = "".join(report.data["sequence"])
    assert "U" not in joined and "Z" not in joined and "X" in joined  # U/Z mapped to X as in the corpus


def test_flip_folder_splits(shared_data: Path) -> None:
    folder = shared_data / "secondary_structure/flip_sampled"
    assert detect_format(folder / "sampled.fasta") == "flip"
    report = read_inputs([folder])
    assert isinstance(report.data, datasets.DatasetDict)
    assert {k: v.num_rows for k, v in report.data.items()} == {"train": 9712, "valid": 1080, "test": 364}
    row = report.data["train"][0]
    assert row["id"] == "1es5-A"
    assert row["labels"][:2] == [IGNORE_INDEX, IGNORE_INDEX] and row["labels"][2] == C  # mask 0011...


def test_deeploc_fasta_excludes_unknown(shared_data: Path) -> None:
    report = read_inputs([shared_data / "deeploc/deeploc_test_set.fasta"], task="membrane")
    assert report.format == "deeploc-fasta" and report.rows == 743 + 1003
    assert sum(report.data["label"]) == 743 and report.excluded == {EXCLUDED_U: 1022} and report.skipped == {}
    assert report.data[0]["id"] == "Q9H400"


def test_deeploc_hard_set_has_no_q2_records(shared_data: Path) -> None:
    with pytest.raises(UserError, match=r"no usable records .*490 membrane label U"):
        read_inputs([shared_data / "deeploc/setHARD.fasta"])


def test_deeploc_csv_joins_fused_residues(shared_data: Path) -> None:
    report = read_inputs([shared_data / "deeploc/deeploc_per_protein_test.csv"])
    assert report.format == "deeploc-csv" and report.rows == 445 + 642
    assert sum(report.data["label"]) == 445 and report.excluded == {EXCLUDED_U: 755}
    assert all(" " not in s for s in report.data["sequence"])
    assert report.data[0]["sequence"].startswith("MGLPVSWAPPALWVLGCC")


def test_pdb14189_labels_from_file_names_and_crlf(shared_data: Path) -> None:
    report = read_inputs([shared_data / "dna_binding/pdb14189"], task="dna-binding")
    assert report.rows == 7129 + 7060 and sum(report.data["label"]) == 7129 and report.skipped == {}
    assert not any("\r" in s for s in report.data["sequence"])  # the files have CRLF line ends


def test_pdb1075_headers_nucleotides_and_digits(shared_data: Path) -> None:
    report = read_inputs([shared_data / "dna_binding/pdb1075_pdb186/Training_dataset_PDB1075.txt"])
    assert report.skipped == {"nucleotide sequence": 7, "invalid residue letters": 1}
    assert report.rows == 1075 - 8
    assert "1AOII" in report.first_skipped["nucleotide sequence"]
    assert "1AKHA" in report.data["id"]  # the id without its |1 label


def test_pdb186_is_balanced(shared_data: Path) -> None:
    report = read_inputs([shared_data / "dna_binding/pdb1075_pdb186/independent_test_dataset_PDB186.txt"])
    assert report.rows == 186 and sum(report.data["label"]) == 93


def test_pdb180_unlabelled_with_empty_trailing_record(shared_data: Path) -> None:
    with pytest.raises(UserError, match=r"180 missing label, 1 empty record"):
        read_inputs([shared_data / "dna_binding/pdb1075_pdb186/independent_test_dataset_PDB180.txt"])


def test_uniswiss_posi_nega(shared_data: Path) -> None:
    folder = shared_data / "dna_binding/uniswiss_train"
    report = read_inputs([folder / "UniSwiss-Tr-posi.fasta", folder / "UniSwiss-Tr-nega.fasta"])
    assert report.rows == 9000 and sum(report.data["label"]) == 4500


def test_strict_names_the_nucleotide_record(shared_data: Path) -> None:
    path = shared_data / "dna_binding/pdb1075_pdb186/Training_dataset_PDB1075.txt"
    with pytest.raises(UserError, match=r"Training_dataset_PDB1075.txt line 3 \(record 1AOII\): nucleotide sequence"):
        read_inputs([path], strict=True)


# --- constructed inputs: one per failure mode -------------------------------------------------


def _write(path: Path, text: str, bom: bool = False) -> Path:
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    return path


def test_labelled_csv_with_bom_and_any_case(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "deepwet_train.csv", "Identifier,SEQUENCE,Binding\nA1,mkvl aaa,1\nA2,GGGSSTWQ,0\n", bom=True
    )
    report = read_inputs([path], task="dna-binding")
    assert report.format == "labelled-csv"
    assert report.data.to_dict() == {"id": ["A1", "A2"], "sequence": ["MKVLAAA", "GGGSSTWQ"], "label": [1, 0]}


def test_labelled_tsv_without_id_counts_bad_rows(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "set.tsv",
        "seq\tlabel\nMKVLWPQ\t1\nMKVLWPQ\tmaybe\n\t0\nACGTACGTACGTAC\t1\nMKV1\t0\nMQWERTY\t\n",
    )
    report = read_inputs([path])
    assert report.rows == 1 and report.data[0]["id"] == "set-0"
    assert report.skipped == {
        "unknown label": 1,
        "empty record": 1,
        "nucleotide sequence": 1,
        "invalid residue letters": 1,
        "missing label": 1,
    }
    with pytest.raises(UserError, match=r"set.tsv line 3 \(record set-1\): unknown label \(label 'maybe'"):
        read_inputs([path], strict=True)


def test_netsurfp_length_mismatch_and_unknown_label(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "ts.csv",
        "input, dssp3, dssp8, disorder, cb513_mask\n"
        "M K V, H H, H H H, 1.0 1.0 1.0, 1.0 1.0 1.0\n"
        "M K V, H Q C, H H H, 1.0 1.0 1.0, 1.0 1.0 1.0\n"
        "M K V, H E C, H E C, 1.0 0.0 1.0, 1.0 1.0 1.0\n",
    )
    report = read_inputs([path])
    assert report.skipped == {"residue/label length mismatch": 1, "unknown label": 1}
    assert report.data[0]["labels"] == [H, IGNORE_INDEX, C]
    with pytest.raises(
        UserError, match=r"ts.csv line 2 \(record ts-0\): residue/label length mismatch \(3 residues, 2 labels\)"
    ):
        read_inputs([path], strict=True)


def test_dna_fasta_header_and_name_disagree(tmp_path: Path) -> None:
    path = _write(tmp_path / "bench_P.txt", ">A|1\nMKVLAAWQ\n>B|2\nMKVLAAWQ\n>C|7\nMKVLAAWQ\n>\n")
    report = read_inputs([path])
    assert report.data["id"] == ["A"]
    assert report.skipped == {"unknown label": 2, "empty record": 1}


def test_missing_columns_and_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"no sequence / seq column \(found: name, label\)"):
        read_inputs([_write(tmp_path / "a.csv", "name,label\nx,1\n")], "labelled-csv")
    with pytest.raises(UserError, match=r"cannot tell the format of .*b.csv.*pass --format"):
        read_inputs([_write(tmp_path / "b.csv", "foo,bar\n1,2\n")])
    with pytest.raises(UserError, match=r"unknown --format 'fasta'"):
        read_inputs([tmp_path / "a.csv"], "fasta")
    with pytest.raises(UserError, match=r"minprot data swissprot .*--organism"):
        read_inputs([_write(tmp_path / "sprot.dat", "ID   X\n")])


def test_format_and_task_must_agree(shared_data: Path) -> None:
    with pytest.raises(UserError, match=r"carries labels for q3, not for --task membrane"):
        read_inputs([shared_data / "secondary_structure/CASP12_HHblits.csv"], task="membrane")
