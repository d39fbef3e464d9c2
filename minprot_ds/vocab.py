"""ProtBert's vocabulary: token ids identical to Rostlab/prot_bert, byte-table encoding, the rare residues read
as X, and ProtBert's tokenizer files written into model folders; ESM-2's vocabulary and the fixed table from
ProtBert ids to it (the corpus stores ProtBert ids for every model family).

Encoding is a 256-entry lookup table applied to the raw ASCII bytes of a sequence with numpy, so no
Python work happens per residue.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
RESIDUE_TOKENS = tuple("LAGVESIKRDTPNQFYMHCWXUBZO")
TOKENS = SPECIAL_TOKENS + RESIDUE_TOKENS  # index == token id, as in ProtBert's vocab.txt

PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = range(5)
VOCAB_SIZE = len(TOKENS)  # 30
IGNORE_INDEX = -100  # label of positions a loss skips (PyTorch's cross-entropy default)
MAX_RESIDUES = 512  # ProtBert's inputs: 512 residues + [CLS] + [SEP] = 514 tokens
FIRST_RESIDUE_ID = len(SPECIAL_TOKENS)

# The rare residues (selenocysteine U, pyrrolysine O, ambiguous B and Z) are read as X everywhere (corpus,
# task datasets, predict/embed input, the overlap search), as ProtBert's pretraining did.
RARE_RESIDUES = "UZOB"
_RARE_TO_X = str.maketrans(RARE_RESIDUES, "X" * len(RARE_RESIDUES))

# The 20 standard residues plus X: what masking's "random residue" draws from (never a special token,
# never the rare U/B/Z/O, which the corpus maps to X anyway).
STANDARD_RESIDUES = "LAGVESIKRDTPNQFYMHCWX"
STANDARD_RESIDUE_IDS = np.array([TOKENS.index(c) for c in STANDARD_RESIDUES], dtype=np.uint8)

INVALID = 255
_LUT = np.full(256, INVALID, dtype=np.uint8)
for _id, _tok in enumerate(RESIDUE_TOKENS, start=FIRST_RESIDUE_ID):
    _LUT[ord(_tok)] = _id
    _LUT[ord(_tok.lower())] = _id
_DECODE = np.array([t if len(t) == 1 else "?" for t in TOKENS])
_RARE_IDS_TO_X = np.arange(256, dtype=np.uint8)  # token ids -> the same ids with U/Z/O/B's replaced by X's
for _tok in RARE_RESIDUES:
    _RARE_IDS_TO_X[TOKENS.index(_tok)] = TOKENS.index("X")


def encode(sequence: str | bytes) -> np.ndarray:
    """Residue token ids (uint8, no [CLS]/[SEP]) of a sequence; letters outside the vocabulary give 255."""
    raw = sequence.encode("ascii", "replace") if isinstance(sequence, str) else sequence
    return _LUT[np.frombuffer(raw, dtype=np.uint8)]


def rare_to_x(sequence: str) -> str:
    """The sequence with U, Z, O and B read as X (upper-case letters; others pass unchanged)."""
    return sequence.translate(_RARE_TO_X)


def rare_ids_to_x(ids: np.ndarray) -> np.ndarray:
    """`rare_to_x` on token ids (uint8, as `encode` returns; INVALID stays INVALID)."""
    return _RARE_IDS_TO_X[ids]


def decode(ids: np.ndarray) -> str:
    """The residue string of token ids (specials other than residues print as '?')."""
    return "".join(_DECODE[np.asarray(ids, dtype=np.int64)])


def write_vocab(folder: str | Path) -> Path:
    """Write ProtBert's vocab.txt (one token a line) into folder, for tokenizers and exported models."""
    path = Path(folder) / "vocab.txt"
    path.write_text("\n".join(TOKENS) + "\n")
    return path


# ProtBert's tokenizer files as Rostlab/prot_bert has them (byte for byte). Without a tokenizer_class,
# AutoTokenizer picks BertTokenizer from config.json's model_type ("bert"), as it does for ProtBert itself.
TOKENIZER_CONFIG = {"do_lower_case": False, "special_tokens_map_file": None, "full_tokenizer_file": None}
SPECIAL_TOKENS_MAP = {
    "unk_token": "[UNK]",
    "sep_token": "[SEP]",
    "pad_token": "[PAD]",
    "cls_token": "[CLS]",
    "mask_token": "[MASK]",
}


def write_tokenizer_files(folder: str | Path) -> None:
    """ProtBert's tokenizer files (vocab.txt, tokenizer_config.json, special_tokens_map.json) into a model
    folder, so it loads with AutoTokenizer and works in `pipeline("fill-mask")` on space-separated residues."""
    PROTBERT.write_tokenizer_files(folder)


# --- one corpus, two vocabularies ------------------------------------------------------------------------
# The corpus stores ProtBert ids (above). A model family whose vocabulary differs reads it through a fixed
# 256-entry table from ProtBert ids to its own, applied to whole uint8 batches when they are built: every
# residue, [CLS], [SEP], [PAD] and [MASK] has its counterpart, so masking and batching stay family-blind.

# ESM-2's 33 tokens, index == id, as fair-esm's Alphabet and facebook/esm2_*'s vocab.txt list them.
ESM_TOKENS = (
    "<cls>", "<pad>", "<eos>", "<unk>",
    *"LAGVSERTIDPKQNFYMHWCXBUZO.-",
    "<null_1>", "<mask>",
)  # fmt: skip


@dataclass(frozen=True)
class Vocabulary:
    """A model family's token ids and tokenizer files, and the table from the corpus's ProtBert ids to its ids."""

    name: str
    tokens: tuple[str, ...]
    pad: str
    unk: str
    bos: str  # ProtBert's [CLS], ESM's <cls>
    eos: str  # ProtBert's [SEP], ESM's <eos>
    mask: str
    tokenizer_config: dict
    special_tokens_map: dict

    def id(self, token: str) -> int:
        return self.tokens.index(token)

    @property
    def size(self) -> int:
        return len(self.tokens)

    @property
    def pad_id(self) -> int:
        return self.id(self.pad)

    @property
    def bos_id(self) -> int:
        return self.id(self.bos)

    @property
    def eos_id(self) -> int:
        return self.id(self.eos)

    @property
    def mask_id(self) -> int:
        return self.id(self.mask)

    @property
    def unk_id(self) -> int:
        return self.id(self.unk)

    @property
    def from_protbert(self) -> np.ndarray:
        """uint8 [256]: ProtBert id -> this vocabulary's id (INVALID stays INVALID)."""
        table = np.full(256, INVALID, dtype=np.uint8)
        specials = {"[PAD]": self.pad, "[UNK]": self.unk, "[CLS]": self.bos, "[SEP]": self.eos, "[MASK]": self.mask}
        for protbert_id, token in enumerate(TOKENS):
            table[protbert_id] = self.id(specials.get(token, token))
        return table

    def remap(self, protbert_ids: np.ndarray) -> np.ndarray:
        """ProtBert ids (uint8, as the corpus and `encode` hold them) as this vocabulary's ids."""
        return protbert_ids if self.name == "protbert" else _TABLES[self.name][protbert_ids]

    @property
    def standard_residue_ids(self) -> np.ndarray:
        return self.remap(STANDARD_RESIDUE_IDS)

    @property
    def residue_ids(self) -> np.ndarray:
        """Ids of every single-letter residue token (never a special token, nor ESM's '.' and '-')."""
        return self.remap(np.arange(FIRST_RESIDUE_ID, VOCAB_SIZE, dtype=np.uint8))

    def spaced(self, residues: str, mask_at: int | None = None) -> str:
        """A sequence as this family's tokenizer reads it (ProtBert: space-separated residues), with the mask
        token at `mask_at` if given (the fill-mask pipeline's input)."""
        chars = list(residues)
        if mask_at is not None:
            chars[mask_at] = self.mask
        return " ".join(chars) if self.name == "protbert" else "".join(chars)

    def write_tokenizer_files(self, folder: str | Path) -> None:
        """vocab.txt, tokenizer_config.json and special_tokens_map.json, so the folder loads with AutoTokenizer
        and works in `pipeline("fill-mask")`."""
        import json

        folder = Path(folder)
        (folder / "vocab.txt").write_text("\n".join(self.tokens) + "\n")
        (folder / "tokenizer_config.json").write_text(json.dumps(self.tokenizer_config))
        (folder / "special_tokens_map.json").write_text(json.dumps(self.special_tokens_map))


PROTBERT = Vocabulary(
    name="protbert",
    tokens=TOKENS,
    pad="[PAD]",
    unk="[UNK]",
    bos="[CLS]",
    eos="[SEP]",
    mask="[MASK]",
    tokenizer_config=TOKENIZER_CONFIG,
    special_tokens_map=SPECIAL_TOKENS_MAP,
)
# facebook/esm2_*'s tokenizer files (tokenizer_class named, so AutoTokenizer needs no config.json lookup).
ESM2 = Vocabulary(
    name="esm2",
    tokens=ESM_TOKENS,
    pad="<pad>",
    unk="<unk>",
    bos="<cls>",
    eos="<eos>",
    mask="<mask>",
    tokenizer_config={"tokenizer_class": "EsmTokenizer", "model_max_length": 1026},
    special_tokens_map={
        "cls_token": "<cls>",
        "eos_token": "<eos>",
        "mask_token": "<mask>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
    },
)
_TABLES = {v.name: v.from_protbert for v in (PROTBERT, ESM2)}
