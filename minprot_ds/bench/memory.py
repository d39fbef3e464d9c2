"""Memory plan of a distillation: predicted peak memory per device, and the largest token budget that fits.

Per device, for a setting (ZeRO stage, precision, activation checkpointing, devices):
- student model states: DeepSpeed's own estimators where they exist (ZeRO-2 and ZeRO-3, mixed precision:
  `estimate_zero{2,3}_model_states_mem_needs`, no offload); for ZeRO-1 and for fp32 the same accounting
  written out (weights and gradients at the run's precision, fp32 master copy + AdamW moments partitioned);
- ZeRO-2/3 gradient buckets: DeepSpeed reduces gradients through a contiguous buffer of
  `reduce_bucket_size` elements (default 5e8), touched only as far as the gradients fill it;
- the frozen teacher: its full weights at the run's precision on every rank (never partitioned), and its
  working set under inference mode (one layer's intermediates plus the last hidden states kept for the loss;
  one layer's intermediates are BERT's 2·I + 4·H, ESM-2's 4·I + 4·H: its erf GELU holds four I-wide tensors at
  once, more than its rotary's fp32 copies of Q and K);
- the student's activations, linear in the padded tokens of a micro-batch (rows x longest row), per layer
  per token the values autograd keeps with SDPA's fused attention (no T x T matrix is stored), by family
  (`layer_widths`):
  BERT 8·H + 2·I: layer input, Q, K, V, attention output, its projection, LayerNorm output, FFN in and GELU
  out (nn.GELU keeps only its input);
  ESM-2 8·H + 4·I: layer input, pre-attention LayerNorm output, the rotated Q and K and V (the rotation and
  ESM's query scaling keep nothing of the projections: the rotated copies take their place, so rotary adds no
  term; in fp16/bf16 it rotates in fp32 copies that live only inside the layer's forward), attention output,
  the residual sum, pre-FFN LayerNorm output, and four FFN values: ESM's GELU is written out with erf
  (x * 0.5 * (1 + erf(x / sqrt 2))), so autograd keeps x / sqrt 2, 1 + erf(...), x * 0.5 and the output;
  with activation checkpointing only each layer's input is kept and one layer is recomputed at a time;
  plus one layer's worth of activation gradients during backward, hidden states for the cosine term, the
  input of the one LayerNorm outside the layers (BERT: the embeddings' LayerNorm; ESM-2: the final
  `emb_layer_norm_after`, as its embeddings have none; token_dropout's zeroing and rescaling of the embeddings
  keep nothing for backward, the scale being a constant per row), the MLM head at masked positions (ESM-2's
  head has the erf GELU too: 4·H kept per masked token against BERT's 2·H), and the dense gradient autograd
  makes for the embedding tables (40,000 x H for ProtBert's positions; ESM-2 has only its 33-token word
  table: rotary positions, no type table) before DeepSpeed's hook moves it into its bucket;
- the optimizer step: DeepSpeed flattens the rank's fp32 gradient partition and torch's AdamW makes two
  temporaries of that size (sqrt of the second moment, the denominator); the step's peak comes after backward has
  freed the activations, so the total takes the larger of the two.

What it predicts is the memory the job allocates: `torch.cuda.max_memory_allocated` on a GPU, peak RSS
above the bare process (Python, torch, DeepSpeed imported) on CPU, measured with glibc told to give every
block of 128 KiB or more back at once (`LIVE_ALLOCATIONS_ENV`). With glibc's default, freed tensors of up
to 32 MiB (one of ProtBert's weight matrices is 16 MiB) stay in the process's heap, and the peak RSS holds
memory nothing uses any more (1.0 GB of a 5.6 GB step peak at ProtBert's width, 8-layer teacher, 6-layer
student, ZeRO-3: benchmarks/memory_phases.py). A GPU's caching allocator holds such memory too; `fits`
leaves room for it (`RESERVE_GB` for the CUDA context and `MARGIN` of the device for fragmentation).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from minprot_ds.data.batching import DEFAULT_MAX_ROWS, DEFAULT_MAX_TOKENS
from minprot_ds.distill.flops import PROTBERT_MAX_POSITIONS, bert_params, esm_params
from minprot_ds.models.masked_lm import MODEL_PRESETS
from minprot_ds.vocab import ESM2, VOCAB_SIZE

GB = 2**30
BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}
RESERVE_GB = 1.0  # CUDA context + NCCL buffers, outside max_memory_allocated
MARGIN = 0.10  # of the device's memory, for the caching allocator's fragmentation
DEFAULT_BUCKET = 500_000_000  # DeepSpeed's default reduce_bucket_size (elements)
MMAP_THRESHOLD = 128 * 1024
# glibc: blocks from MMAP_THRESHOLD bytes up are mapped and unmapped on free (a fixed threshold also stops
# glibc from raising it as blocks are freed), so a process's RSS follows the memory it has allocated.
LIVE_ALLOCATIONS_ENV = {"MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD)}
GPUS: dict[str, float] = {  # usable memory per device, GiB (nvidia-smi's total)
    "v100-16gb": 16.0,
    "v100-32gb": 32.0,
    "a100-40gb": 40.0,
    "a100-80gb": 80.0,
    "h100-80gb": 80.0,
}


@dataclasses.dataclass(frozen=True)
class Plan:
    """One setting of the sweep."""

    stage: int
    precision: str  # fp32 | fp16 | bf16
    checkpointing: bool
    gpus: int = 1  # devices in the job (nodes x per node)
    nodes: int = 1
    reduce_bucket_size: int = DEFAULT_BUCKET


@dataclasses.dataclass(frozen=True)
class LayerWidths:
    """Values per token (elements, at the run's precision) that a model family's forward allocates."""

    saved: int  # per encoder layer, kept by autograd for backward (and one layer's gradients during backward)
    teacher: int  # one encoder layer's intermediates held at once under inference mode
    head: int  # per masked token, what the MLM head keeps before its logits (fp32 loss)


def layer_widths(config: Any) -> LayerWidths:
    """The per-token activation widths of a BertConfig's or an EsmConfig's model (the module docstring says what
    each counts)."""
    h, i = config.hidden_size, config.intermediate_size
    if config.model_type == "esm":
        return LayerWidths(saved=8 * h + 4 * i, teacher=4 * i + 4 * h, head=4 * h)
    return LayerWidths(saved=8 * h + 2 * i, teacher=2 * i + 4 * h, head=2 * h)


@dataclasses.dataclass(frozen=True)
class Estimate:
    """Predicted peak bytes per device, by part."""

    student_states: float
    grad_buckets: float
    teacher_weights: float
    teacher_working: float
    activations: float
    optimizer_step: float  # in the step: the flattened fp32 gradient partition + AdamW's two temporaries on it

    @property
    def total(self) -> float:
        """States and teacher weights all along; the peak of backward (buckets, activations) or of the step."""
        backward = self.grad_buckets + self.teacher_working + self.activations
        return self.student_states + self.teacher_weights + max(backward, self.optimizer_step)

    def as_gb(self) -> dict[str, float]:
        return {**{k: v / GB for k, v in dataclasses.asdict(self).items()}, "total": self.total / GB}


def preset_config(name: str) -> Any:
    """The config of a model preset's teacher: a BertConfig (protbert: ProtBert's own, 40,000 positions) or, for the
    esm2-* presets, ESM-2's EsmConfig (rotary positions, 33 tokens)."""
    from transformers import BertConfig, EsmConfig

    p = MODEL_PRESETS[name]
    if p.family == "esm":
        return EsmConfig(
            vocab_size=ESM2.size,
            mask_token_id=ESM2.mask_id,
            pad_token_id=ESM2.pad_id,
            hidden_size=p.hidden_size,
            num_hidden_layers=p.teacher_layers,
            num_attention_heads=p.num_heads,
            intermediate_size=p.intermediate_size,
            max_position_embeddings=1026,
            position_embedding_type="rotary",
            emb_layer_norm_before=False,
            token_dropout=True,
        )
    return BertConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=p.hidden_size,
        num_hidden_layers=p.teacher_layers,
        num_attention_heads=p.num_heads,
        intermediate_size=p.intermediate_size,
        type_vocab_size=2,
        max_position_embeddings=PROTBERT_MAX_POSITIONS if name == "protbert" else 1024,
    )


def model_params(config: Any, num_layers: int) -> int:
    """Parameters of a BertForMaskedLM or EsmForMaskedLM with this config's widths and `num_layers` layers (tied
    decoder)."""
    if config.model_type == "esm":
        return esm_params(
            num_layers, config.hidden_size, config.intermediate_size, config.vocab_size, config.num_attention_heads
        ).total
    return bert_params(
        num_layers,
        config.hidden_size,
        config.intermediate_size,
        config.vocab_size,
        config.max_position_embeddings,
        config.type_vocab_size,
    ).total


def student_states(params: int, largest_layer: int, plan: Plan) -> float:
    """Bytes of the student's weights, gradients, master weights and AdamW moments per device."""
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    n = plan.gpus
    per_node = n // plan.nodes
    if plan.precision != "fp32" and plan.stage == 2:
        return estimate_zero2_model_states_mem_needs(params, per_node, plan.nodes, cpu_offload=False)[1]
    if plan.precision != "fp32" and plan.stage == 3:
        return estimate_zero3_model_states_mem_needs(
            params, largest_layer, per_node, plan.nodes, cpu_offload=False, cpu_offload_params=False
        )[1]
    w = BYTES[plan.precision]
    master = 0 if plan.precision == "fp32" and plan.stage == 0 else 4  # ZeRO keeps an fp32 partition even in fp32
    optimizer = (master + 8) * params / (n if plan.stage >= 1 else 1)
    grads = w * params if plan.stage <= 1 else (4 + (w if plan.precision != "fp32" else 0)) * params / n
    weights = w * params if plan.stage <= 2 else w * params / n + 4 * largest_layer
    return weights + grads + optimizer


def estimate(config: Any, student_layers: int, plan: Plan, *, max_tokens: int, max_rows: int, longest: int) -> Estimate:
    """Predicted peak per device of a distillation step on micro-batches of at most `max_tokens` padded
    tokens (`max_rows` rows, rows padded to at most `longest` tokens)."""
    h, v = config.hidden_size, config.vocab_size
    widths = layer_widths(config)
    w = BYTES[plan.precision]
    tokens = min(max_tokens, max_rows * longest)
    params = model_params(config, student_layers)
    # The largest parameter: the embedding tables (ESM-2 has only the word embeddings: rotary positions, no types).
    tables = config.vocab_size + (
        0 if config.model_type == "esm" else config.max_position_embeddings + config.type_vocab_size
    )
    largest_layer = tables * h
    grads_w = 4 if plan.precision == "fp32" else w
    buckets = grads_w * min(plan.reduce_bucket_size, params) if plan.stage >= 2 else 0
    per_layer = widths.saved * tokens * w
    masked = math.ceil(0.15 * tokens)
    head = masked * (widths.head + 3 * v) * 4  # MLM transform + logits (teacher and student), fp32 loss
    if plan.checkpointing:
        acts = student_layers * tokens * h * w + per_layer
    else:
        acts = student_layers * per_layer
    acts += per_layer + 3 * tokens * h * w + head  # backward's working layer, outer LayerNorm's input, L_cos states
    acts += grads_w * largest_layer  # autograd's dense gradient of the embedding tables, before DeepSpeed takes it
    teacher_params = model_params(config, config.num_hidden_layers)
    teacher_working = widths.teacher * tokens * w + 2 * tokens * h * w
    step = 3 * 4 * params / (plan.gpus if plan.stage >= 1 else 1)
    return Estimate(
        student_states(params, largest_layer, plan), buckets, teacher_params * w, teacher_working, acts, step
    )


def fits(est: Estimate, device_gb: float) -> bool:
    """Whether a predicted peak fits a device of `device_gb` GiB with the reserve and the margin."""
    return est.total / GB <= device_gb * (1 - MARGIN) - RESERVE_GB


def largest_budget(
    config: Any, student_layers: int, plan: Plan, device_gb: float, *, longest: int = 514, step: int = 512
) -> int | None:
    """The largest token budget (a multiple of `step`, rows scaled as the run config's
    DEFAULT_MAX_TOKENS -> DEFAULT_MAX_ROWS) that fits."""
    best = None
    budget = step * math.ceil(520 / step)  # one 512-residue row
    while budget <= 262_144:
        rows = max(1, round(DEFAULT_MAX_ROWS * budget / DEFAULT_MAX_TOKENS))
        if not fits(
            estimate(config, student_layers, plan, max_tokens=budget, max_rows=rows, longest=longest), device_gb
        ):
            break
        best, budget = budget, budget + step
    return best


def memory_plan(
    config: Any,
    student_layers: int,
    *,
    gpu: str,
    gpus: int,
    nodes: int = 1,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> dict[str, Any]:
    """Every ZeRO stage x precision x checkpointing setting: predicted GB per device at `max_tokens`, whether it
    fits `gpu`, and the largest token budget that fits."""
    device_gb = GPUS[gpu]
    precisions = ["fp16", "fp32"] if gpu.startswith("v100") else ["bf16", "fp16", "fp32"]  # V100: no bf16
    rows = []
    for precision in precisions:
        for stage in (1, 2, 3):
            for ckpt in (False, True):
                plan = Plan(stage, precision, ckpt, gpus, nodes)
                est = estimate(config, student_layers, plan, max_tokens=max_tokens, max_rows=max_rows, longest=514)
                rows.append(
                    {
                        "stage": stage,
                        "precision": precision,
                        "checkpointing": ckpt,
                        "predicted_gb": est.as_gb(),
                        "fits": fits(est, device_gb),
                        "largest_max_tokens": largest_budget(config, student_layers, plan, device_gb),
                    }
                )
    return {
        "gpu": gpu,
        "device_gb": device_gb,
        "gpus": gpus,
        "nodes": nodes,
        "max_tokens": max_tokens,
        "max_rows": max_rows,
        "student_layers": student_layers,
        "reserve_gb": RESERVE_GB,
        "margin": MARGIN,
        "student_parameters": model_params(config, student_layers),
        "teacher_parameters": model_params(config, config.num_hidden_layers),
        "settings": rows,
    }


def skip_reason(setting: Any, inputs: Any, world: int) -> str | None:
    """Why a `minprot bench throughput` setting cannot fit its device, or None (unknown device size: None).

    The device is the GPU's total memory, or --memory-limit-gb when given; the teacher's config gives the shapes.
    """
    import torch
    from transformers import AutoConfig

    if inputs.memory_limit_gb is not None:
        device_gb = inputs.memory_limit_gb
    elif torch.cuda.is_available():
        device_gb = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory / GB
    else:
        return None
    zero = (inputs.ds_base or {}).get("zero_optimization", {})
    plan = Plan(
        setting.zero_stage,
        setting.precision,
        setting.activation_checkpointing,
        world,
        reduce_bucket_size=int(zero.get("reduce_bucket_size", DEFAULT_BUCKET)),
    )
    est = estimate(
        AutoConfig.from_pretrained(inputs.teacher),
        inputs.student_layers,
        plan,
        max_tokens=setting.max_tokens,
        max_rows=setting.max_rows,
        longest=514,
    )
    if fits(est, device_gb):
        return None
    return (
        f"predicted {est.total / GB:.1f} GB per device exceeds {device_gb:g} GB less the margin "
        f"({MARGIN:.0%} + {RESERVE_GB:g} GB; minprot bench memory); not run"
    )
