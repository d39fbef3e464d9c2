"""The fine-tune model: a BERT encoder without its pooler and one linear head, and its folder on disk.

Sequence tasks: the head reads the [CLS] hidden state (`pooling="cls"`) or the mean of the residues' hidden
states (`pooling="mean"`; [CLS], [SEP] and padding excluded). Per-residue tasks: the head reads every token.
No pooler: ProtBert's is an untrained MLM leftover and an exported student has none, so teacher and student
would start from different heads. The head's initial weights are drawn from the seed alone (normal, std 0.02
as BERT initialises, bias 0), so for one seed and hidden size teacher and student start bitwise alike.

`FT_OUT/model/` (what `predict` and `embed` read):
- the encoder as a Hugging Face BERT folder (config.json, model.safetensors, ProtBert's vocab files):
  `AutoModel.from_pretrained` loads it;
- `head.safetensors`: the head's `weight` [C, H] and `bias` [C];
- `minprot_task.json`: `TaskModelInfo` (task, classes, pooling, threshold and where it came from, window,
  stride, where the encoder came from, the fine-tune's MLflow run id).
- `minprot_task.json`: `TaskModelInfo` (task, classes, pooling, threshold, window, stride, aggregate, where the encoder
  came from, the fine-tune's MLflow run id).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from minprot_ds.errors import UserError
from minprot_ds.fileio import read_json
from minprot_ds.models.folders import save_gathered, save_hf_folder
from minprot_ds.models.masked_lm import load_pretrained
from minprot_ds.scoring.windows import DEFAULT_STRIDE, DEFAULT_WINDOW

TASK_FILE = "minprot_task.json"
HEAD_FILE = "head.safetensors"
POOLINGS = ("cls", "mean")
HEAD_INIT_STD = 0.02  # BERT's initializer_range


@dataclasses.dataclass
class TaskModelInfo:
    """minprot_task.json of a fine-tuned model folder."""

    task: str
    classes: list[str]
    per_residue: bool
    pooling: str  # "cls" | "mean"; per-residue heads read every token and ignore it
    threshold: float | None  # binary tasks: predicted positive when P(class 1) > threshold; else None (argmax)
    window: int  # residues per window when scoring long proteins (minprot_ds.scoring.windows)
    stride: int
    hidden_size: int
    seed: int  # drew the head's initial weights
    source_model: str  # what --model named
    provenance: dict[str, Any]  # the source's minprot.json (a student's distillation run), {} for a teacher
    mlflow_run_id: str | None = None  # the fine-tune run
    threshold_source: str | None = None  # "valid" (chosen there, finetune.calibration) | "default" (0.5); older: None
    aggregate: str = "mean"  # protein-level tasks: how window probabilities combine (scoring.windows.AGGREGATES)
    minprot_version: str = ""

    @classmethod
    def read(cls, folder: Path) -> TaskModelInfo:
        path = Path(folder) / TASK_FILE
        if not path.is_file():
            raise UserError(f"{folder} has no {TASK_FILE}; pass the model/ folder of a `minprot finetune` output")
        raw = read_json(path, "the fine-tuned model's task; rerun `minprot finetune` to rewrite it")
        known = {f.name for f in dataclasses.fields(cls)}
        missing = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING and f.name not in raw]
        if missing:
            raise UserError(f"{path} lacks {', '.join(missing)}; it was not written by `minprot finetune`")
        return cls(**{k: v for k, v in raw.items() if k in known})


def init_head(hidden_size: int, num_labels: int, seed: int) -> nn.Linear:
    """A linear head whose weights depend only on (seed, hidden size, classes), never on the global RNG."""
    generator = torch.Generator().manual_seed(seed)
    head = nn.Linear(hidden_size, num_labels)
    with torch.no_grad():
        head.weight.copy_(torch.randn(num_labels, hidden_size, generator=generator) * HEAD_INIT_STD)
        head.bias.zero_()
    return head


def residue_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """1 at residue tokens: inside the attention mask, past [CLS] (position 0) and before [SEP] (the last real
    token)."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    last = attention_mask.sum(dim=1, keepdim=True) - 1
    return (positions >= 1) & (positions < last) & attention_mask.bool()


class TaskModel(nn.Module):
    """`forward(input_ids, attention_mask)` -> logits: [B, C] per protein, [B, T, C] per token (incl. specials)."""

    def __init__(self, encoder: nn.Module, head: nn.Linear, info: TaskModelInfo):
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.info = info

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.info.per_residue:
            return self.head(hidden)
        if self.info.pooling == "cls":
            return self.head(hidden[:, 0])
        mask = residue_mask(attention_mask).unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        return self.head(pooled)


def task_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over proteins ([B, C] vs [B]) or labelled tokens ([B, T, C] vs [B, T], -100 skipped)."""
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1))


def load_encoder(name_or_path: str | Path, what: str = "--model", *, dtype: torch.dtype = torch.float32) -> nn.Module:
    """The BERT encoder (no pooler) of a ProtBert-format folder or hub id, SDPA attention, in `dtype`, eval mode.

    The one encoder loader: a fine-tune's `--model`, a fine-tuned model folder, and `embed`'s `--model`. Heads in
    the folder (MLM, task) are ignored; missing encoder weights are refused in one sentence naming `what`.
    """
    # (an MLM checkpoint's unused `cls.*` weights are expected: load_pretrained keeps transformers' report quiet)
    encoder, loading, family = load_pretrained(
        "encoder", str(name_or_path), what, attn_implementation="sdpa", dtype=dtype
    )
    missing = sorted(loading.get("missing_keys", []))
    if missing:
        raise UserError(
            f"{what} {str(name_or_path)!r} lacks encoder weights "
            f"({', '.join(missing[:3])}{' …' if len(missing) > 3 else ''}); "
            f"it must be a {family.title} checkpoint in {family.example}'s layout"
        )
    return encoder.eval()


def build_task_model(
    name_or_path: str,
    *,
    task: str,
    classes: tuple[str, ...],
    per_residue: bool,
    seed: int,
    pooling: str = "cls",
    window: int = DEFAULT_WINDOW,
    stride: int = DEFAULT_STRIDE,
    aggregate: str = "mean",
    provenance: dict[str, Any] | None = None,
) -> TaskModel:
    """A ProtBert-format encoder (teacher or student folder, or a hub id) + a fresh head, fp32, all trainable."""
    if pooling not in POOLINGS:
        raise UserError(f"unknown --pooling {pooling!r}; choose one of: {', '.join(POOLINGS)}")
    encoder = load_encoder(name_or_path, "--model")
    hidden = encoder.config.hidden_size
    info = TaskModelInfo(
        task=task,
        classes=list(classes),
        per_residue=per_residue,
        pooling=pooling,
        threshold=0.5 if len(classes) == 2 and not per_residue else None,  # the fine-tune sets it from valid
        window=window,
        stride=stride,
        hidden_size=hidden,
        seed=seed,
        source_model=str(name_or_path),
        provenance=dict(provenance or {}),
        threshold_source="default" if len(classes) == 2 and not per_residue else None,
        aggregate=aggregate,
    )
    model = TaskModel(encoder, init_head(hidden, len(classes), seed), info)
    model.requires_grad_(True)
    return model


def save_task_model(model: TaskModel, folder: Path, rank: int) -> Path | None:
    """Write FT_OUT/model/ (every rank calls it: under ZeRO-3 the weights are gathered first; rank 0 writes)."""
    from safetensors.torch import save_file

    def write() -> Path:
        info = dataclasses.asdict(model.info)
        info.pop("minprot_version")  # save_hf_folder stamps the version
        save_hf_folder(model.encoder, folder, TASK_FILE, info)
        save_file(
            {k: v.detach().float().cpu().contiguous() for k, v in model.head.state_dict().items()},
            str(Path(folder) / HEAD_FILE),
        )
        return Path(folder)

    return save_gathered(model, rank, write)


def load_task_model(folder: str | Path) -> TaskModel:
    """A fine-tuned model folder (FT_OUT/model/) back as a TaskModel in eval mode, fp32, on the CPU."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    info = TaskModelInfo.read(folder)
    if not (folder / HEAD_FILE).is_file():
        raise UserError(f"{folder} has no {HEAD_FILE}; pass the model/ folder of a `minprot finetune` output")
    encoder = load_encoder(folder, "fine-tuned model folder")
    head = nn.Linear(info.hidden_size, len(info.classes))
    try:
        weights = load_file(str(folder / HEAD_FILE))
    except SafetensorError as err:
        raise UserError(
            f"{folder / HEAD_FILE} is not a complete safetensors file ({str(err).strip().splitlines()[0]}); it is "
            "truncated or corrupt: copy the model folder again or rerun `minprot finetune`"
        ) from None
    head.load_state_dict(weights)
    model = TaskModel(encoder, head, info)
    return model.eval()
