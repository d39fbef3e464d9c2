"""FLOP model of one distillation step, peak TFLOP/s per device, and MFU (nanoGPT-style plain maths).

Counting rules (matmuls only: a multiply-add is 2 FLOPs; biases, LayerNorm, softmax, GELU, the losses and
embedding lookups are ignored, as in nanoGPT / PaLM's MFU):
- a BERT layer's matmul weights are N_layer = 4·H² (Q, K, V, output) + 2·H·I (FFN in and out);
  a forward pass costs 2·N per token, forward + backward 6·N per token (backward = 2 × forward);
- attention scores QKᵀ and the weighted sum AV cost 2·T·H each per token per layer for a sequence of
  T tokens, i.e. 4·T²·H per sequence per layer forward (12·T²·H forward + backward);
- the MLM head (dense H×H transform, then the H×V decoder) runs only on masked tokens, as the engine
  does: 2·(H² + H·V) per masked token forward, 6·(H² + H·V) forward + backward;
- the teacher runs forward only (inference), the student forward and backward.

Padding is counted separately: `executed` counts every padded token (what the hardware runs, attention
over the padded length T), `useful` counts real tokens only ([CLS] and [SEP] included; attention over
each sequence's own length). MFU uses the useful count: MFU = useful FLOPs / step time / (devices ×
peak FLOP/s), so padding and recomputation (activation checkpointing) lower MFU rather than inflate it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass

PROTBERT_MAX_POSITIONS = 40_000
TYPE_VOCAB = 2


@dataclass(frozen=True)
class BertParams:
    """Parameter counts of a `BertForMaskedLM` (word embeddings tied to the decoder, no pooler)."""

    embeddings: int  # word, position and token-type tables + their LayerNorm
    encoder: int  # all layers: matmul weights, biases, LayerNorms
    encoder_matmul: int  # the layers' matmul weights only: the N of the 2·N / 6·N rule
    head: int  # MLM head's own params: transform dense + LayerNorm + decoder bias (decoder weight is tied)
    head_matmul: int  # H·H + H·V: the head's matmul weights (decoder weight counted, it is used)

    @property
    def total(self) -> int:
        """What `model.num_parameters()` reports (tied weights counted once)."""
        return self.embeddings + self.encoder + self.head


def bert_params(
    num_layers: int,
    hidden: int,
    intermediate: int,
    vocab: int,
    max_positions: int = PROTBERT_MAX_POSITIONS,
    type_vocab: int = TYPE_VOCAB,
) -> BertParams:
    """Exact parameter counts of a BertForMaskedLM of this shape (ProtBert: 30, 1024, 4096, 30 → ~420M)."""
    h, i = hidden, intermediate
    layer_matmul = 4 * h * h + 2 * h * i
    layer_other = (3 * h + h + i + h) + 2 * (2 * h)  # biases of QKV, out, FFN in, FFN out; two LayerNorms
    return BertParams(
        embeddings=(vocab + max_positions + type_vocab) * h + 2 * h,
        encoder=num_layers * (layer_matmul + layer_other),
        encoder_matmul=num_layers * layer_matmul,
        head=h * h + h + 2 * h + vocab,
        head_matmul=h * h + h * vocab,
    )


def esm_params(num_layers: int, hidden: int, intermediate: int, vocab: int, heads: int) -> BertParams:
    """Exact parameter counts of an EsmForMaskedLM of this shape (ESM-2 650M: 33, 1280, 5120, 33, 20 → ~651M).

    Its layers are BERT's (pre-LayerNorm instead of post: the same weights); no position table (rotary positions)
    and no token types; the final `emb_layer_norm_after` and the contact head (a logistic regression over every
    layer's attention heads) count with the embeddings, which a student copies with them.
    """
    h = hidden
    bert = bert_params(num_layers, hidden, intermediate, vocab, max_positions=0, type_vocab=0)
    return dataclasses.replace(bert, embeddings=vocab * h + 2 * h + num_layers * heads + 1)


@dataclass(frozen=True)
class StepFlops:
    """FLOPs of one distillation step, split by where they are spent."""

    teacher_forward: float  # encoder matmuls + attention, forward
    teacher_head: float  # MLM head on masked tokens, forward
    student_forward_backward: float  # encoder matmuls + attention, forward + backward
    student_head: float  # MLM head on masked tokens, forward + backward

    @property
    def total(self) -> float:
        return self.teacher_forward + self.teacher_head + self.student_forward_backward + self.student_head


@dataclass(frozen=True)
class FlopBreakdown:
    """One step counted over padded tokens (`padded`, what runs) and real tokens (`real`, useful work)."""

    padded: StepFlops
    real: StepFlops

    @property
    def executed(self) -> float:
        return self.padded.total

    @property
    def useful(self) -> float:
        """The numerator of MFU."""
        return self.real.total


def distill_step_flops(
    *,
    teacher_layers: int,
    student_layers: int,
    hidden: int,
    intermediate: int,
    vocab: int,
    seq_len: int,
    batch: int,
    masked_tokens: int,
    lengths: Sequence[int] | None = None,
) -> FlopBreakdown:
    """FLOPs of one step on a `batch × seq_len` padded batch (tokens incl. [CLS]/[SEP]).

    `lengths` are the sequences' real token counts; None means no padding (every sequence is seq_len
    long). `masked_tokens` is the number of positions the MLM head and the KD term run on.
    """
    if lengths is None:
        lengths = [seq_len] * batch
    if len(lengths) != batch or any(not 0 <= n <= seq_len for n in lengths):
        raise ValueError(f"lengths must be {batch} values in [0, {seq_len}], got {list(lengths)}")
    per_layer = bert_params(1, hidden, intermediate, vocab).encoder_matmul
    head = bert_params(0, hidden, intermediate, vocab).head_matmul * masked_tokens

    def count(tokens: int, attention_tokens_sq: int) -> StepFlops:
        # attention_tokens_sq = Σ T² over sequences: QKᵀ and AV cost 4·T²·H per sequence per layer.
        layer_fwd = 2 * per_layer * tokens + 4 * hidden * attention_tokens_sq
        return StepFlops(
            teacher_forward=float(teacher_layers * layer_fwd),
            teacher_head=float(2 * head),
            student_forward_backward=float(3 * student_layers * layer_fwd),
            student_head=float(6 * head),
        )

    return FlopBreakdown(
        padded=count(batch * seq_len, batch * seq_len * seq_len),
        real=count(sum(lengths), sum(n * n for n in lengths)),
    )


# Dense peak TFLOP/s (no structured sparsity) from NVIDIA's datasheets, by precision of the matmuls.
# "fp32" is plain FP32 (CUDA cores); "tf32" is FP32 inputs on tensor cores (torch's allow_tf32).
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "V100 SXM2": {"fp16": 125.0, "fp32": 15.7},
    "V100 PCIe": {"fp16": 112.0, "fp32": 14.0},
    "V100S PCIe": {"fp16": 130.0, "fp32": 16.4},
    "T4": {"fp16": 65.0, "fp32": 8.1},
    "A100": {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5},
    "A10": {"bf16": 125.0, "fp16": 125.0, "tf32": 62.5, "fp32": 31.2},
    "L4": {"bf16": 121.0, "fp16": 121.0, "tf32": 60.0, "fp32": 30.3},
    "L40S": {"bf16": 362.05, "fp16": 362.05, "tf32": 183.0, "fp32": 91.6},
    "H100 SXM": {"bf16": 989.0, "fp16": 989.0, "tf32": 494.5, "fp32": 67.0},
    "H100 PCIe": {"bf16": 756.0, "fp16": 756.0, "tf32": 378.0, "fp32": 51.0},
    "H100 NVL": {"bf16": 835.0, "fp16": 835.0, "tf32": 417.5, "fp32": 60.0},
    "H200": {"bf16": 989.0, "fp16": 989.0, "tf32": 494.5, "fp32": 67.0},
    "H200 NVL": {"bf16": 835.0, "fp16": 835.0, "tf32": 417.5, "fp32": 60.0},
}

# Words of torch.cuda.get_device_name() that identify a table row; the first match wins, so the
# more specific variants come first ("NVIDIA H100 PCIe" before any H100, "V100S" is its own word).
_DEVICE_WORDS: list[tuple[tuple[str, ...], str]] = [
    (("h200", "nvl"), "H200 NVL"),
    (("h200",), "H200"),
    (("h100", "pcie"), "H100 PCIe"),
    (("h100", "nvl"), "H100 NVL"),
    (("h100",), "H100 SXM"),
    (("a100",), "A100"),
    (("v100s",), "V100S PCIe"),
    (("v100", "pcie"), "V100 PCIe"),
    (("v100",), "V100 SXM2"),
    (("l40s",), "L40S"),
    (("l4",), "L4"),
    (("a10",), "A10"),
    (("t4",), "T4"),
]

_PRECISION_ALIASES = {
    "fp32": "fp32",
    "float32": "fp32",
    "float": "fp32",
    "tf32": "tf32",
    "fp16": "fp16",
    "float16": "fp16",
    "half": "fp16",
    "bf16": "bf16",
    "bfloat16": "bf16",
}


def device_key(device_name: str) -> str | None:
    """The PEAK_TFLOPS row for a torch.cuda.get_device_name() string, e.g. "Tesla V100-SXM2-32GB"."""
    words = set(re.split(r"[^a-z0-9]+", device_name.lower()))
    for required, key in _DEVICE_WORDS:
        if words.issuperset(required):
            return key
    return None


def peak_tflops(device_name: str, precision: str) -> float | None:
    """Peak dense TFLOP/s of one device at this precision; None for CPUs, unknown devices, or a
    precision the device has no tensor-core peak for (e.g. bf16 on V100): pass --peak-tflops then."""
    key = device_key(device_name)
    norm = _PRECISION_ALIASES.get(precision.lower().removeprefix("torch."))
    if key is None or norm is None:
        return None
    return PEAK_TFLOPS[key].get(norm)


def mfu(flops_per_second: float, peak_tflops: float) -> float:
    """Model FLOPs utilisation of one device: useful FLOP/s (see module doc) over its peak, in [0, 1]."""
    return flops_per_second / (peak_tflops * 1e12)
