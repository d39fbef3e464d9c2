"""Downstream task datasets: Swiss-Prot DNA-binding sets, MMseqs2 SUB / random CUT subsets, readers for
the public benchmark formats, and label-conflict reports. Every builder and reader yields the same
columns: `id`, `sequence` and `label` (int; dna-binding, membrane) or `labels` (per residue, -100 =
ignore; q3), and task folders are `datasets` folders (`save_to_disk`) plus `minprot_task.json`.

The fine-tune jobs call `load_task_data(path, task)`. The standard DNA-binding benchmark is

    minprot finetune --task dna-binding --train ../shared/data/dna_binding/pdb14189 --test PDB2272_DIR ...

where PDB2272_DIR holds PDB2272_P.txt and PDB2272_N.txt from github.com/diaodiao1/DNA-binding-proteins
(data/); label from the `_P`/`_N` file name (or the `|1`/`|2` header), as for PDB14189. PDB1075 -> PDB186:
`--train .../Training_dataset_PDB1075.txt --test .../independent_test_dataset_PDB186.txt`.
"""

from data_prep.tasks.formats import FORMATS, TASKS, ReadReport, detect_format, read_inputs
from data_prep.tasks.load import load_task_data
from minprot_ds.data.task_records import Q3_CLASSES
from minprot_ds.vocab import IGNORE_INDEX

__all__ = [
    "FORMATS",
    "IGNORE_INDEX",
    "Q3_CLASSES",
    "TASKS",
    "ReadReport",
    "detect_format",
    "load_task_data",
    "read_inputs",
]
