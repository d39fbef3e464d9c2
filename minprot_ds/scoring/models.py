"""The models `embed` and `predict` run, as Scorers: an encoder's hidden states, or a fine-tuned task model's
class probabilities; plus device and precision choice and the model's fingerprint for the resume manifest."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from minprot_ds.ds_config import PRECISIONS as DTYPES
from minprot_ds.ds_config import auto_precision
from minprot_ds.errors import UserError
from minprot_ds.fileio import sha256_file
from minprot_ds.models.family import family_of_config
from minprot_ds.scoring.forward import Scorer
from minprot_ds.scoring.heads import load_task_model

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
POOLS = ("mean", "cls")


def pick_device(local_rank: int = 0) -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def pick_precision(precision: str, device: torch.device) -> str:
    """auto: bf16 on GPUs that have it, fp16 on older GPUs (V100), fp32 on CPU."""
    if precision not in PRECISIONS:
        raise UserError(f"unknown --precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    if precision != "auto":
        if precision == "fp16" and device.type == "cpu":
            raise UserError(
                "--precision fp16 needs a GPU (CPUs compute fp16 matrix products slowly or not at all); "
                "use fp32 or bf16 on CPU"
            )
        return precision
    return auto_precision(device.type)


def model_fingerprint(folder: Path) -> str:
    """sha256 over the folder's config and weight files (names and bytes): what the resume check compares."""
    folder = Path(folder)
    digest = hashlib.sha256()
    files = sorted(
        p for p in folder.iterdir() if p.is_file() and (p.suffix in (".json", ".safetensors", ".bin", ".pt"))
    )
    for path in files:
        digest.update(path.name.encode() + b"\0")
        sha256_file(path, digest)
    return digest.hexdigest()


def check_model_folder(folder: Path, flag: str = "--model") -> Path:
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise UserError(f"{flag} {folder} is not a folder; pass a Hugging Face model folder (config.json and weights)")
    if not (folder / "config.json").is_file():
        raise UserError(
            f"{flag} {folder} has no config.json; pass a Hugging Face model folder "
            "(a teacher, an exported student or a fine-tune's model/ folder)"
        )
    return folder


class EmbedScorer(Scorer):
    """Hidden states of an encoder: per residue, or pooled per protein (mean over residues, or [CLS]).

    `layers` index the hidden states as transformers numbers them (0 = embeddings, -1 = last layer); several
    layers are concatenated along the features, in the order given.
    """

    def __init__(
        self, encoder: torch.nn.Module, pool: str = "mean", layers: Sequence[int] = (-1,), per_residue: bool = False
    ):
        if pool not in POOLS:
            raise UserError(f"unknown --pool {pool!r}; choose one of: {', '.join(POOLS)}")
        n = encoder.config.num_hidden_layers
        for layer in layers:
            if not -(n + 1) <= layer <= n:
                raise UserError(
                    f"--layers {layer} is out of range: the model has hidden states 0..{n} (or -1..-{n + 1})"
                )
        self.encoder, self.layers, self.pool = encoder, list(layers), pool
        self.vocab = family_of_config(encoder.config, "--model").vocab
        self.per_residue = per_residue
        self.mean_over_residues = pool == "mean"
        self.dim = encoder.config.hidden_size * len(self.layers)

    def run(self, input_ids, attention_mask, lengths):
        want_all = self.layers != [-1]
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=want_all)
        states = torch.cat([out.hidden_states[k] for k in self.layers], dim=-1) if want_all else out.last_hidden_state
        states = states.float().cpu().numpy()
        if not self.per_residue and self.pool == "cls":
            return [states[j, 0] for j in range(len(lengths))]
        return [states[j, 1 : n + 1] for j, n in enumerate(lengths)]


class TaskScorer(Scorer):
    """Class probabilities of a fine-tuned model (heads.TaskModel): [C] per window, or [n, C] per residue."""

    probabilities = True

    def __init__(self, model: torch.nn.Module, per_residue: bool):
        self.model = model
        self.per_residue = per_residue
        self.vocab = family_of_config(model.encoder.config, "--model").vocab

    def run(self, input_ids, attention_mask, lengths):
        probs = torch.softmax(self.model(input_ids, attention_mask).float(), dim=-1).cpu().numpy()
        if self.per_residue:
            return [probs[j, 1 : n + 1] for j, n in enumerate(lengths)]
        return [probs[j] for j in range(len(lengths))]


def load_task(folder: Path, dtype: torch.dtype, device: torch.device):
    """A fine-tune's model/ folder (`scoring.heads`' format) as (TaskModel in eval mode, its TaskModelInfo)."""

    model = load_task_model(check_model_folder(folder))
    return model.to(device=device, dtype=dtype), model.info


def dtype_of(precision: str) -> torch.dtype:
    return DTYPES[precision]


def as_float(arr: np.ndarray, half: bool) -> np.ndarray:
    return arr.astype(np.float16 if half else np.float32, copy=False)
