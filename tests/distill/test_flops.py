"""The FLOP model against a count by hand, and parameter counts against real transformers models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM

from minprot_ds.distill.flops import PEAK_TFLOPS, bert_params, device_key, distill_step_flops, mfu, peak_tflops


def test_step_flops_match_a_hand_count() -> None:
    # Teacher 2 layers, student 1, H=4, I=8, V=5; batch of 2 padded to T=6, real lengths 6 and 4; 3 masked.
    flops = distill_step_flops(
        teacher_layers=2,
        student_layers=1,
        hidden=4,
        intermediate=8,
        vocab=5,
        seq_len=6,
        batch=2,
        masked_tokens=3,
        lengths=[6, 4],
    )
    # Matmul weights per layer: Q,K,V,O 4·4·4 = 64, FFN 2·4·8 = 64 → 128. Head: H·H + H·V = 16 + 20 = 36.
    # Padded: 12 tokens, Σ T² = 36 + 36 = 72.   Real: 10 tokens, Σ T² = 36 + 16 = 52.
    # Teacher forward, padded: 2 layers · (2·128·12 = 3072 matmul + 4·4·72 = 1152 attention) = 8448.
    assert flops.padded.teacher_forward == 8448
    # Teacher forward, real: 2 · (2·128·10 = 2560 + 4·4·52 = 832) = 6784.
    assert flops.real.teacher_forward == 6784
    # Student forward+backward = 3 × one forward layer: padded 3 · 4224 = 12672, real 3 · 3392 = 10176.
    assert flops.padded.student_forward_backward == 12672
    assert flops.real.student_forward_backward == 10176
    # Heads only on the 3 masked tokens, the same padded or not: teacher 2·36·3 = 216, student 6·36·3 = 648.
    assert flops.padded.teacher_head == flops.real.teacher_head == 216
    assert flops.padded.student_head == flops.real.student_head == 648
    # Executed = 8448 + 216 + 12672 + 648; useful = 6784 + 216 + 10176 + 648.
    assert flops.executed == 21984
    assert flops.useful == 17824


def test_no_padding_means_executed_equals_useful() -> None:
    flops = distill_step_flops(
        teacher_layers=30,
        student_layers=15,
        hidden=1024,
        intermediate=4096,
        vocab=30,
        seq_len=514,
        batch=16,
        masked_tokens=1200,
    )
    assert flops.executed == flops.useful
    # Sanity against the 2·N / 6·N rule alone: attention adds, never removes.
    n_t, n_s = bert_params(30, 1024, 4096, 30).encoder_matmul, bert_params(15, 1024, 4096, 30).encoder_matmul
    assert flops.useful > (2 * n_t + 6 * n_s) * 16 * 514


def test_bad_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="lengths must be 2 values in \\[0, 6\\]"):
        distill_step_flops(
            teacher_layers=2,
            student_layers=1,
            hidden=4,
            intermediate=8,
            vocab=5,
            seq_len=6,
            batch=2,
            masked_tokens=0,
            lengths=[7, 1],
        )


def count_real(config: BertConfig) -> tuple[int, int]:
    """Parameters of a real BertForMaskedLM (on the meta device: no memory), and its encoder's matmul weights."""
    with torch.device("meta"):
        model = BertForMaskedLM(config)
    linear = sum(m.weight.numel() for m in model.bert.encoder.modules() if isinstance(m, torch.nn.Linear))
    return model.num_parameters(), linear


def test_bert_params_match_a_tiny_transformers_model() -> None:
    config = BertConfig(
        vocab_size=30,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    model = BertForMaskedLM(config)  # a real, allocated model for the small one
    counted = bert_params(2, 16, 32, 30, max_positions=64)
    assert counted.total == sum(p.numel() for p in model.parameters())
    assert counted.encoder_matmul == count_real(config)[1]


def test_esm_params_match_transformers_esm_for_masked_lm() -> None:
    """A tiny allocated ESM-2 and ESM-2 150M on the meta device (layers, tied decoder, contact head, final norm)."""
    from transformers import EsmConfig, EsmForMaskedLM

    from minprot_ds.distill.flops import esm_params

    for layers, hidden, inter, heads in ((2, 16, 32, 2), (30, 640, 2560, 20)):
        config = EsmConfig(
            vocab_size=33, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
            intermediate_size=inter, position_embedding_type="rotary", emb_layer_norm_before=False, pad_token_id=1,
            mask_token_id=32,
        )  # fmt: skip
        with torch.device("meta" if layers > 2 else "cpu"):
            model = EsmForMaskedLM(config)
        counted = esm_params(layers, hidden, inter, 33, heads)
        assert counted.total == model.num_parameters()
        linear = sum(m.weight.numel() for m in model.esm.encoder.layer.modules() if isinstance(m, torch.nn.Linear))
        assert counted.encoder_matmul == linear


def test_bert_params_match_protbert(shared_reference: Path) -> None:
    raw = json.loads((shared_reference / "prot_bert" / "config.json").read_text())
    config = BertConfig(**{k: v for k, v in raw.items() if k != "architectures"})
    total, matmul = count_real(config)
    counted = bert_params(
        config.num_hidden_layers,
        config.hidden_size,
        config.intermediate_size,
        config.vocab_size,
        max_positions=config.max_position_embeddings,
    )
    assert counted.total == total
    assert counted.encoder_matmul == matmul
    assert 415e6 < total < 425e6  # "~420M" in the ProtBert paper


@pytest.mark.parametrize(
    ("name", "precision", "peak"),
    [
        ("Tesla V100-SXM2-32GB", "fp16", 125.0),
        ("Tesla V100-SXM2-16GB", "float32", 15.7),
        ("Tesla V100-PCIE-32GB", "fp16", 112.0),
        ("Tesla V100S-PCIE-32GB", "fp16", 130.0),
        ("NVIDIA A100-SXM4-80GB", "bfloat16", 312.0),
        ("NVIDIA A100-PCIE-40GB", "tf32", 156.0),
        ("NVIDIA A100 80GB PCIe", "fp32", 19.5),
        ("NVIDIA H100 80GB HBM3", "bf16", 989.0),
        ("NVIDIA H100 80GB HBM3", "torch.float16", 989.0),
        ("NVIDIA H100 PCIe", "bf16", 756.0),
        ("NVIDIA H100 NVL", "bf16", 835.0),
        ("NVIDIA H200", "bf16", 989.0),
        ("NVIDIA L40S", "fp16", 362.05),
        ("NVIDIA L4", "bf16", 121.0),
        ("Tesla T4", "fp16", 65.0),
        ("Tesla V100-SXM2-32GB", "bf16", None),  # V100 has no bf16
        ("cpu", "fp32", None),
        ("Some Future GPU", "bf16", None),
    ],
)
def test_peak_tflops_from_device_names(name: str, precision: str, peak: float | None) -> None:
    assert peak_tflops(name, precision) == peak


def test_every_table_row_is_reachable_by_name() -> None:
    names = {
        "H100 SXM": "NVIDIA H100 80GB HBM3",
        "V100 SXM2": "Tesla V100-SXM2-32GB",
        "V100 PCIe": "Tesla V100-PCIE-16GB",
        "V100S PCIe": "Tesla V100S-PCIE-32GB",
        "H200 NVL": "NVIDIA H200 NVL",
        "H100 PCIe": "NVIDIA H100 PCIe",
    }
    for key in PEAK_TFLOPS:
        assert device_key(names.get(key, f"NVIDIA {key}")) == key


def test_mfu_is_useful_flops_over_peak() -> None:
    assert mfu(494.5e12, 989.0) == pytest.approx(0.5)
