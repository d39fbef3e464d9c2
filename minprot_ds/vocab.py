"""ProtBert's vocabulary: token ids identical to Rostlab/prot_bert, byte-table encoding, the rare residues read
as X, and ProtBert's tokenizer files written into model folders.

Encoding is a 256-entry lookup table applied to the raw ASCII bytes of a sequence with numpy, so no
Python work happens per residue.
"""

from __future__ import annotations

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
    import json

    folder = Path(folder)
    write_vocab(folder)
    (folder / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG))
    (folder / "special_tokens_map.json").write_text(json.dumps(SPECIAL_TOKENS_MAP))
