"""The model families minprot distils and scores: BERT (ProtBert, ProtBert-BFD) and ESM-2, each described once.

A model's family is read from its config (`model_type` "bert" or "esm"); everything family-specific that the
jobs need (Hugging Face classes, where the encoder layers, the head and the final layer norm sit, the vocabulary
and its special tokens, the residues per window) is asked of its `ModelFamily`, never hard-coded elsewhere.

What differs, and why it needs no code of its own:
- positions: BERT learns a position table (copied to a student with the embeddings); ESM-2 uses rotary
  positions, which have no weights (only the shared `inv_freq` buffer, copied like any other).
- final layer norm: ESM-2's last hidden state passes `esm.encoder.emb_layer_norm_after`; it is not an encoder
  layer, so a student copies it with the embeddings, and the hidden states the cosine term compares are those
  the model actually outputs.
- token dropout: ESM-2 zeroes the embeddings of <mask> tokens and rescales the rest by 0.88 / (1 - observed
  mask fraction) inside its embeddings (`config.token_dropout`); the student inherits the config and the
  attention mask is always passed, so teacher and student see the same rescaling.
- masking: ESM-2 was trained as BERT was (15% of residues, 80% <mask>, 10% a random residue, 10% unchanged),
  so both use `data.masking`; the random residue is drawn from the standard residues, never a special token.
- the contact head: ESM-2's `esm.contact_head.regression` reads every layer's attention heads (layers x heads
  inputs); a student keeps the columns of the layers it copied.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn
from transformers import (
    BertForMaskedLM,
    BertModel,
    EsmForMaskedLM,
    EsmModel,
    PretrainedConfig,
    PreTrainedModel,
)

from minprot_ds.errors import UserError
from minprot_ds.vocab import ESM2, MAX_RESIDUES, PROTBERT, Vocabulary


@dataclass(frozen=True)
class ModelFamily:
    """What minprot needs to know of one family of masked protein LMs."""

    title: str  # for messages
    example: str  # a hub id of the family
    masked_lm_class: type[PreTrainedModel]  # names the config class, the model_type and the encoder's attribute
    encoder_class: type[PreTrainedModel]  # the base model without head (no pooler is ever built)
    head: str  # attribute of the masked LM holding the MLM head
    tied_head_keys: tuple[str, ...]  # head weights tied to the word embeddings (absent from some checkpoints)
    final_norm: str | None  # module (under `base`) applied after the last layer, copied to a student
    per_layer_head_columns: tuple[str, ...]  # weights with one column block per (layer, head): sliced by layer
    vocab: Vocabulary
    max_residues: int  # residues per window: what it was trained on

    # What transformers' classes already say is read from them, not written again per family.
    @property
    def config_class(self) -> type[PretrainedConfig]:
        return self.masked_lm_class.config_class

    @property
    def name(self) -> str:
        """The config's model_type: "bert" or "esm"."""
        return self.config_class.model_type

    @property
    def base(self) -> str:
        """Attribute of the masked LM holding the encoder (model.bert / model.esm)."""
        return self.masked_lm_class.base_model_prefix

    @property
    def layer_prefix(self) -> str:
        """State-dict prefix of the encoder layers in the masked LM (`bert.encoder.layer.`)."""
        return f"{self.base}.encoder.layer."

    def encoder(self, model: nn.Module) -> nn.Module:
        """The encoder of a masked LM (its last hidden state includes the final layer norm, if any)."""
        return getattr(model, self.base)

    def mlm_head(self, model: nn.Module) -> nn.Module:
        return getattr(model, self.head)

    def layers(self, model: nn.Module) -> nn.ModuleList:
        """The encoder layers of a masked LM or of a bare encoder."""
        encoder = getattr(model, self.base, model)
        return encoder.encoder.layer


BERT = ModelFamily(
    title="BERT (ProtBert)",
    example="Rostlab/prot_bert",
    masked_lm_class=BertForMaskedLM,
    encoder_class=BertModel,
    head="cls",
    tied_head_keys=("cls.predictions.decoder.weight", "cls.predictions.decoder.bias"),
    final_norm=None,
    per_layer_head_columns=(),
    vocab=PROTBERT,
    max_residues=MAX_RESIDUES,
)
ESM = ModelFamily(
    title="ESM-2",
    example="facebook/esm2_t33_650M_UR50D",
    masked_lm_class=EsmForMaskedLM,
    encoder_class=EsmModel,
    head="lm_head",
    tied_head_keys=("lm_head.decoder.weight",),
    final_norm="encoder.emb_layer_norm_after",
    per_layer_head_columns=("esm.contact_head.regression.weight",),
    vocab=ESM2,
    max_residues=1022,  # 1,024 tokens with <cls> and <eos>, as ESM-2 was trained
)
FAMILIES = {f.name: f for f in (BERT, ESM)}

_KINDS = (
    "minprot distils and scores masked protein LMs of the BERT family (model_type 'bert', e.g. Rostlab/prot_bert) "
    "or the ESM-2 family (model_type 'esm', e.g. facebook/esm2_t33_650M_UR50D)"
)


def family_of_config(config: Any, what: str = "model") -> ModelFamily:
    """The family of a loaded config (a PretrainedConfig or config.json's dict); anything else refused in one
    sentence naming what was found."""
    keys = (
        "model_type",
        "architectures",
        "is_folding_model",
        "esmfold_config",
        "position_embedding_type",
        "vocab_size",
    )
    data = config if isinstance(config, dict) else {k: getattr(config, k, None) for k in keys}
    model_type = data.get("model_type")
    family = FAMILIES.get(model_type)
    if family is None:
        found = f"model_type {model_type!r}" if model_type else "no model_type"
        archs = data.get("architectures") or []
        raise UserError(f"{what} has {found}{f' ({archs[0]})' if archs else ''} in its config.json; {_KINDS}.")
    if family is ESM and (data.get("is_folding_model") or data.get("esmfold_config")):
        raise UserError(f"{what} is an ESMFold model (is_folding_model in its config.json); {_KINDS}.")
    if family is ESM and (data.get("position_embedding_type") or "absolute") != "rotary":
        raise UserError(
            f"{what} is an ESM-1 model (position_embedding_type {data.get('position_embedding_type')!r}, not "
            f"'rotary'); {_KINDS}."
        )
    vocab_size = data.get("vocab_size")
    if vocab_size is None:
        raise UserError(
            f"{what} names no vocab_size in its config.json ({family.title} has {family.vocab.size} tokens); "
            "restore the folder's config.json or export the model again."
        )
    if vocab_size != family.vocab.size:
        raise UserError(
            f"{what} has a vocabulary of {vocab_size} tokens, not the {family.vocab.size} of {family.title}'s; pass "
            f"a model in {family.title}'s format ({family.example} or a minprot student of it)."
        )
    return family


def looks_like_path(name: str) -> bool:
    """Hub ids are "name" or "org/name"; anything else with a separator, a dot prefix or ~ is a path."""
    return os.path.isabs(name) or name.startswith((".", "~")) or name.count("/") > 1 or Path(name).exists()


def read_config(name_or_path: str | Path, what: str) -> dict[str, Any]:
    """config.json of a local folder, or of a hub id (through the Hugging Face cache or hub)."""
    folder = Path(str(name_or_path)).expanduser()
    if looks_like_path(str(name_or_path)):
        if not folder.is_dir():
            raise UserError(f"{what} {folder} does not exist; {EXPECTED}")
        if not (folder / "config.json").is_file():
            raise UserError(f"{what} {folder} has no config.json; {EXPECTED}")
        try:
            return json.loads((folder / "config.json").read_text())
        except json.JSONDecodeError as err:
            raise UserError(f"{what} {folder}/config.json is not valid JSON ({err}); re-save the model.") from None
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(name_or_path)).to_dict()
    except (OSError, ValueError) as err:
        raise load_failure(what, str(name_or_path), err) from err


EXPECTED = (
    "pass a folder holding config.json and weights (model.safetensors or pytorch_model.bin, as "
    "save_pretrained writes) or a Hugging Face hub id such as Rostlab/prot_bert or facebook/esm2_t33_650M_UR50D"
)


def load_failure(what: str, name: str, err: Exception) -> UserError:
    """One sentence for a model that neither a local folder nor the hub (or its cache) could give."""
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    if offline and not Path(name).is_dir():
        return UserError(
            f"cannot load {what} {name!r}: HF_HUB_OFFLINE is set and it is neither a local folder nor "
            f"in the Hugging Face cache; download it once with network access or {EXPECTED}"
        )
    first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return UserError(
        f"cannot load {what} {name!r}: no such local folder and the hub lookup failed ({first_line}); {EXPECTED}"
    )


def family_of(name_or_path: str | Path, what: str = "model") -> ModelFamily:
    """The family of a model folder or hub id, from its config alone (no weights are read)."""
    return family_of_config(read_config(name_or_path, what), f"{what} {str(name_or_path)!r}")
