"""Teacher and student models: the frozen teacher, the student built from its layers, and the forward that
returns exactly what the distillation loss needs.

Models go in and out as Hugging Face folders (or hub ids) of their family's class, `BertForMaskedLM` (ProtBert)
or `EsmForMaskedLM` (ESM-2), see `models.family`; the student records which teacher layers it was made from in
its config (`minprot_teacher_layers`, `minprot_layer_strategy`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from torch import nn
from transformers.utils import logging as hf_logging

from minprot_ds.errors import UserError
from minprot_ds.fileio import read_json
from minprot_ds.models.family import (
    BERT,
    ESM,
    EXPECTED,
    ModelFamily,
    family_of,
    family_of_config,
    load_failure,
    looks_like_path,
)
from minprot_ds.vocab import ESM2, IGNORE_INDEX


@dataclass(frozen=True)
class ModelPreset:
    """Sizes of a teacher and its student (the student shares everything but the layer count)."""

    teacher_layers: int
    student_layers: int
    hidden_size: int
    num_heads: int
    intermediate_size: int
    family: str = "bert"  # models.family: "bert" (ProtBert's format) or "esm" (ESM-2's)


MODEL_PRESETS = {
    "tiny": ModelPreset(teacher_layers=4, student_layers=2, hidden_size=32, num_heads=4, intermediate_size=64),
    "cpu-small": ModelPreset(teacher_layers=6, student_layers=3, hidden_size=256, num_heads=4, intermediate_size=1024),
    "protbert": ModelPreset(
        teacher_layers=30, student_layers=15, hidden_size=1024, num_heads=16, intermediate_size=4096
    ),
    # facebook/esm2_t33_650M_UR50D and esm2_t30_150M_UR50D's shapes; the students of launch/configs/esm2-*.toml
    "esm2-650m": ModelPreset(
        teacher_layers=33, student_layers=17, hidden_size=1280, num_heads=20, intermediate_size=5120, family="esm"
    ),
    "esm2-150m": ModelPreset(
        teacher_layers=30, student_layers=15, hidden_size=640, num_heads=20, intermediate_size=2560, family="esm"
    ),
    # tiny's shape in ESM-2's format: tests and CPU dry runs of the ESM-2 paths
    "esm2-tiny": ModelPreset(
        teacher_layers=4, student_layers=2, hidden_size=32, num_heads=4, intermediate_size=64, family="esm"
    ),
}


def save_random_preset(folder: str | Path, name: str, seed: int = 0, num_layers: int | None = None) -> Path:
    """A random model in a preset's shape and family (ProtBert's or ESM-2's format): its teacher, or its width at
    `num_layers` layers."""
    p = MODEL_PRESETS[name]
    shape = dict(
        num_layers=p.teacher_layers if num_layers is None else num_layers,
        hidden_size=p.hidden_size,
        num_heads=p.num_heads,
        intermediate_size=p.intermediate_size,
    )
    save = save_random_esm2 if p.family == "esm" else save_random_protbert
    return save(folder, **shape, seed=seed)


# --- loading -------------------------------------------------------------------------------------------


def load_pretrained(kind: str, name_or_path: str, what: str, **kwargs) -> tuple[nn.Module, dict, ModelFamily]:
    """The masked LM (`kind` "masked_lm") or bare encoder ("encoder") of a model folder or hub id, in the class
    its family names -> (model, loading info, family).

    The one loader of every model (teacher, student, fine-tune encoder): a local folder is checked first
    (check_local_folder), the family is read from its config (BERT or ESM-2; anything else is refused), and every
    failure is one sentence naming `what` (e.g. "teacher model folder", "--model") and, for a local folder, what
    is wrong with it.
    """
    name = str(name_or_path)
    local = looks_like_path(name)
    if local:
        folder = Path(name).expanduser()
        check_local_folder(folder, what)
        name = str(folder)
    verbosity = hf_logging.get_verbosity()
    # transformers' load report (unused MLM weights, which are expected; missing ones, which the callers refuse
    # by name; a table of size mismatches before it raises) says nothing a one-sentence error does not.
    hf_logging.set_verbosity_error()
    try:
        family = family_of(name, what)
        cls = family.masked_lm_class if kind == "masked_lm" else family.encoder_class
        if kind == "encoder":
            kwargs["add_pooling_layer"] = False
        model, info = cls.from_pretrained(name, output_loading_info=True, **kwargs)
    except (OSError, ValueError, RuntimeError, SafetensorError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if local and "mismatch" in str(err):
            raise UserError(
                f"cannot load {what} {name}: its config.json does not match its weights (tensor sizes differ: a "
                "config.json of another model?); restore the folder's config.json or export the model again"
            ) from None
        if local:
            raise UserError(f"cannot load {what} {name}: {first_line}; {EXPECTED}") from None
        if isinstance(err, RuntimeError):
            raise
        raise load_failure(what, name, err) from err
    finally:
        hf_logging.set_verbosity(verbosity)
    return model, info, family


WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def check_local_folder(folder: Path, what: str) -> None:
    """A local model folder is whole before transformers reads it: config.json is a JSON object of a known
    family (BERT or ESM-2), some weights file is there, and every safetensors file is complete (its header read,
    its size checked: a truncated copy or download is named here, not a SafetensorError inside from_pretrained)."""
    if not folder.is_dir():
        raise UserError(f"{what} {folder} does not exist; {EXPECTED}")
    if not (folder / "config.json").is_file():
        raise UserError(f"{what} {folder} has no config.json; {EXPECTED}")
    config = read_json(folder / "config.json", f"the config of {what}")
    if not isinstance(config, dict):
        raise UserError(f"{what} {folder}: config.json is not a JSON object; restore it or re-export the model")
    family_of_config(config, f"{what} {str(folder)!r}")  # a model of neither family is refused before its weights
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise UserError(f"{what} {folder} has config.json but no weights ({', '.join(WEIGHT_FILES[::2])}); {EXPECTED}")
    for file in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(file), framework="pt"):
                pass
        except (SafetensorError, OSError) as err:
            raise UserError(
                f"{what}: {file} is not a complete safetensors file ({str(err).strip().splitlines()[0]}); it is "
                "truncated or corrupt (an interrupted copy or download?): copy or export it again"
            ) from None


def _from_pretrained(name_or_path: str, role: str, dtype: torch.dtype) -> nn.Module:
    model, info, family = load_pretrained(
        "masked_lm",
        name_or_path,
        f"{role} model folder" if looks_like_path(str(name_or_path)) else f"{role} model",
        attn_implementation="sdpa",
        dtype=dtype,
    )
    # A checkpoint without the MLM head (e.g. a bare BertModel / EsmModel) would load with a random head: refuse.
    missing = [k for k in info.get("missing_keys", []) if k not in family.tied_head_keys]
    if missing:
        raise UserError(
            f"{role} model {str(name_or_path)!r} lacks weights for {', '.join(sorted(missing)[:4])}"
            f"{' …' if len(missing) > 4 else ''}; it must be a {family.masked_lm_class.__name__} checkpoint "
            f"({family.title}'s layout)"
        )
    return model


def load_teacher(name_or_path: str, dtype: torch.dtype = torch.float32, device=None) -> nn.Module:
    """The frozen teacher (BertForMaskedLM or EsmForMaskedLM): SDPA attention, no gradients, eval mode with
    dropout off, in `dtype`."""
    model = _from_pretrained(name_or_path, "teacher", dtype)
    model.requires_grad_(False)
    # eval() alone turns dropout off until someone calls .train(); p = 0 keeps it off regardless.
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    model.eval()
    return model.to(device) if device is not None else model


def load_student(path: str) -> nn.Module:
    """An existing student folder (e.g. a DistilProtBert checkpoint), fp32 and trainable."""
    model = _from_pretrained(path, "student", torch.float32)
    model.requires_grad_(True)
    model.train()
    return model


# --- student from teacher layers -----------------------------------------------------------------------


def select_layers(
    num_teacher_layers: int, num_layers: int, strategy: str | list[int] = "alternate", seed: int = 0
) -> list[int]:
    """Indices of the teacher layers the student copies, ascending.

    alternate: evenly spaced from the first to the last layer, rounding halves up, i.e. every other
      layer keeping both ends. For 12 → 6 this is [0, 2, 4, 7, 9, 11], exactly what DistilBERT's
      extraction script copies; for 30 → 15 it is [0, 2, …, 12, 15, 17, …, 29]. Keeping the last layer
      starts the student's output close to the teacher's, which the cosine loss compares.
    random: `num_layers` distinct layers drawn with numpy's default_rng(seed) (MinProtBert's choice).
    a list: those indices, validated.
    """
    if not 1 <= num_layers <= num_teacher_layers:
        raise UserError(
            f"student layer count must be between 1 and the teacher's {num_teacher_layers} (got {num_layers})"
        )
    if isinstance(strategy, str):
        if strategy == "alternate":
            if num_layers == 1:
                return [num_teacher_layers - 1]
            step = (num_teacher_layers - 1) / (num_layers - 1)
            return [int(np.floor(i * step + 0.5)) for i in range(num_layers)]
        if strategy == "random":
            rng = np.random.default_rng(seed)
            return sorted(int(i) for i in rng.choice(num_teacher_layers, size=num_layers, replace=False))
        raise UserError(
            f"unknown layer strategy {strategy!r}; use 'alternate', 'random' or an explicit list of teacher layer "
            "indices"
        )
    layers = [int(i) for i in strategy]
    if len(layers) != num_layers:
        raise UserError(
            f"explicit student layers {layers} name {len(layers)} layers but the student has {num_layers}; list "
            f"exactly {num_layers}"
        )
    bad = [i for i in layers if not 0 <= i < num_teacher_layers]
    if bad:
        raise UserError(
            f"explicit student layers {bad} are out of range; the teacher has layers 0..{num_teacher_layers - 1}"
        )
    if len(set(layers)) != len(layers):
        raise UserError(f"explicit student layers {layers} repeat an index; each teacher layer may be copied once")
    return sorted(layers)


def build_student(
    teacher: nn.Module, num_layers: int = 15, strategy: str | list[int] = "alternate", seed: int = 0
) -> nn.Module:
    """A new fp32 trainable student in the teacher's class: the teacher's config with `num_layers` layers;
    everything but the encoder layers copied from the teacher (embeddings, MLM head, ESM-2's final layer norm
    and rotary buffer), and the chosen encoder layers in ascending teacher order. Weights with a column block
    per (layer, head), ESM-2's contact head, keep the chosen layers' blocks."""
    family = family_of_config(teacher.config, "teacher")
    layers = select_layers(teacher.config.num_hidden_layers, num_layers, strategy, seed)
    config = family.config_class.from_dict(teacher.config.to_dict())
    config.num_hidden_layers = num_layers
    config.minprot_teacher_layers = layers
    config.minprot_layer_strategy = strategy if isinstance(strategy, str) else "explicit"
    config.minprot_layer_seed = seed
    config.dtype = "float32"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        student = family.masked_lm_class._from_config(config, attn_implementation="sdpa", dtype=torch.float32)

    prefix = family.layer_prefix
    heads = teacher.config.num_attention_heads
    state = {}
    for key, value in teacher.state_dict().items():
        if key.startswith(prefix):
            index, rest = key[len(prefix) :].split(".", 1)
            if int(index) not in layers:
                continue
            key = f"{prefix}{layers.index(int(index))}.{rest}"
        elif key in family.per_layer_head_columns:
            value = value[:, [i * heads + h for i in layers for h in range(heads)]]
        state[key] = value.detach().to(device="cpu", dtype=torch.float32)
    student.load_state_dict(state, strict=True)
    student.requires_grad_(True)
    student.train()
    return student


# --- torch.compile ---------------------------------------------------------------------------------------


def compile_encoders(teacher: nn.Module, student: nn.Module, mode: str, *, zero_stage: int = 0) -> None:
    """torch.compile the encoders in place (`Module.compile`: state-dict keys and checkpoints unchanged).

    mode "teacher": the teacher's encoder, for inference with its weights frozen into the graph (inductor
    may pre-pack them for its matmuls); it is only ever called under inference mode, and never trained.
    mode "all": the student's encoder too, forward and backward. Micro-batch shapes vary, so graphs are
    compiled with dynamic shapes; the first steps of a run are slow while inductor compiles (about a
    minute per graph on a small CPU), and a few more graphs may follow when a new shape class appears.
    The MLM heads and the loss stay eager: they index masked positions, a data-dependent shape.
    """
    if mode == "none":
        return
    if mode == "all" and zero_stage == 3:
        raise UserError(
            'model.compile = "all" is not supported with ZeRO stage 3 (its parameter gathering runs in '
            'hooks inside the student\'s forward); use "teacher", or ZeRO stage 1 or 2.'
        )
    family = family_of_config(teacher.config, "teacher")
    family.encoder(teacher).compile(dynamic=True, options={"freezing": True})
    if mode == "all":
        family.encoder(student).compile(dynamic=True)


# --- forward for the loss ------------------------------------------------------------------------------


@dataclass
class ForLossOutputs:
    """hidden [N, H] at non-pad positions; logits [M, V] and labels [M] at the head's positions."""

    hidden: torch.Tensor
    logits: torch.Tensor
    labels: torch.Tensor


def forward_for_loss(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor,
    *,
    all_positions: bool = False,
) -> ForLossOutputs:
    """Encoder forward, then the MLM head only where the loss needs it.

    By default the head runs at masked positions (labels != IGNORE_INDEX): M rows. With all_positions it runs at
    every non-pad position (DistilBERT's "KD everywhere"), labels IGNORE_INDEX where unmasked, so M = N. Call it
    for the teacher under torch.inference_mode(); distill_loss accepts such outputs.
    """
    family = family_of_config(model.config)
    head = family.mlm_head(model)
    # The attention mask also sets ESM-2's token-dropout rescaling (masked fraction of each row's real tokens).
    sequence = family.encoder(model)(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    non_pad = attention_mask.bool()
    hidden = sequence[non_pad]
    if all_positions:
        return ForLossOutputs(hidden=hidden, logits=head(hidden), labels=labels[non_pad])
    masked = labels != IGNORE_INDEX
    return ForLossOutputs(hidden=hidden, logits=head(sequence[masked]), labels=labels[masked])


# --- random models in a family's format -----------------------------------------------------------------


def save_random_protbert(
    folder: str | Path,
    *,
    num_layers: int,
    hidden_size: int,
    num_heads: int,
    intermediate_size: int,
    seed: int = 0,
    max_position_embeddings: int = 1024,
) -> Path:
    """Write a randomly initialised BertForMaskedLM with ProtBert's config keys and tokenizer files.

    ProtBert's position table has 40,000 entries; the default here (1024) covers 514-token inputs
    without the 40k × H table dominating a tiny model.
    """
    return _save_random(
        folder,
        BERT,
        seed,
        num_hidden_layers=num_layers,
        hidden_size=hidden_size,
        num_attention_heads=num_heads,
        intermediate_size=intermediate_size,
        hidden_act="gelu",
        hidden_dropout_prob=0.0,
        max_position_embeddings=max_position_embeddings,
        type_vocab_size=2,
    )


def save_random_esm2(
    folder: str | Path,
    *,
    num_layers: int,
    hidden_size: int,
    num_heads: int,
    intermediate_size: int,
    seed: int = 0,
    hidden_dropout_prob: float = 0.0,
) -> Path:
    """Write a randomly initialised EsmForMaskedLM with ESM-2's config keys (rotary positions, token dropout,
    final layer norm, 1,026 positions, 33 tokens) and its tokenizer files."""
    return _save_random(
        folder,
        ESM,
        seed,
        num_hidden_layers=num_layers,
        hidden_size=hidden_size,
        num_attention_heads=num_heads,
        intermediate_size=intermediate_size,
        mask_token_id=ESM2.mask_id,
        pad_token_id=ESM2.pad_id,
        hidden_dropout_prob=hidden_dropout_prob,
        max_position_embeddings=1026,
        position_embedding_type="rotary",
        emb_layer_norm_before=False,
        token_dropout=True,
        layer_norm_eps=1e-5,
    )


def _save_random(folder: str | Path, family: ModelFamily, seed: int, **config: object) -> Path:
    """A `family` masked LM with `config` (and the family's vocabulary size, no attention dropout, the 0.02
    initialiser range) initialised from `seed`, saved with its family's tokenizer files into `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = family.config_class(
        vocab_size=family.vocab.size,
        attention_probs_dropout_prob=0.0,
        initializer_range=0.02,
        architectures=[family.masked_lm_class.__name__],
        **config,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = family.masked_lm_class(config)
    model.save_pretrained(folder)
    family.vocab.write_tokenizer_files(folder)
    return folder
