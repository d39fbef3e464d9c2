"""Teacher loading, student construction and the loss-shaped forward, on tiny random BERTs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minprot_ds.distill.losses import distill_loss
from minprot_ds.errors import UserError
from minprot_ds.models.masked_lm import build_student, forward_for_loss, load_student, load_teacher, select_layers
from minprot_ds.vocab import CLS_ID, PAD_ID, SEP_ID, TOKENS


def make_batch(seed: int = 0, batch: int = 3, length: int = 12):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 30, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.long)
    for row, n in enumerate([length, length - 4, 5][:batch]):
        ids[row, 0], ids[row, n - 1] = CLS_ID, SEP_ID
        ids[row, n:], mask[row, n:] = PAD_ID, 0
    labels = torch.full_like(ids, -100)
    pick = (torch.rand(batch, length, generator=g) < 0.3) & mask.bool()
    pick[:, 0] = False
    pick[0, 2] = True  # at least one masked position
    labels[pick] = ids[pick]
    return ids, mask, labels


def test_saved_folder_has_protbert_files(tiny_teacher_dir, shared_reference):
    ref = shared_reference / "prot_bert"
    for name in ("config.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        assert (tiny_teacher_dir / name).is_file()
    assert (tiny_teacher_dir / "vocab.txt").read_text().split() == (ref / "vocab.txt").read_text().split()
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        assert json.loads((tiny_teacher_dir / name).read_text()) == json.loads((ref / name).read_text())
    config, ref_config = (
        json.loads((tiny_teacher_dir / "config.json").read_text()),
        json.loads((ref / "config.json").read_text()),
    )
    for key in ("architectures", "hidden_act", "vocab_size", "type_vocab_size", "hidden_dropout_prob"):
        assert config[key] == ref_config[key], key
    assert len(TOKENS) == config["vocab_size"]


def test_saved_folder_tokenizes_as_protbert_through_autotokenizer(tiny_teacher_dir, shared_reference, tmp_path):
    """Our one tokenizer writer (vocab.write_tokenizer_files) writes ProtBert's files byte for byte, and
    AutoTokenizer on a saved model gives ProtBert's ids (the same as our byte table)."""
    from transformers import AutoTokenizer

    from minprot_ds.vocab import encode, write_tokenizer_files

    write_tokenizer_files(tmp_path)
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        assert (tmp_path / name).read_bytes() == (shared_reference / "prot_bert" / name).read_bytes()
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_teacher_dir))
    seq = "MKUBZOXLAGVW"
    assert tokenizer(" ".join(seq))["input_ids"] == [CLS_ID, *encode(seq).tolist(), SEP_ID]
    assert tokenizer.mask_token_id == TOKENS.index("[MASK]") and tokenizer.pad_token_id == PAD_ID


def test_teacher_is_frozen_sdpa_in_requested_dtype(tiny_teacher_dir):
    teacher = load_teacher(str(tiny_teacher_dir), dtype=torch.float16)
    assert not teacher.training
    assert all(not p.requires_grad for p in teacher.parameters())
    assert {p.dtype for p in teacher.parameters()} == {torch.float16}
    assert teacher.config._attn_implementation == "sdpa"
    assert all(m.p == 0.0 for m in teacher.modules() if isinstance(m, torch.nn.Dropout))


@pytest.mark.parametrize("strategy", ["alternate", "random", [5, 1, 3]])
def test_student_copies_chosen_layers_embeddings_and_head(tiny_teacher_dir, tmp_path, strategy):
    teacher = load_teacher(str(tiny_teacher_dir))
    student = build_student(teacher, num_layers=3, strategy=strategy, seed=7)
    chosen = student.config.minprot_teacher_layers
    assert chosen == select_layers(6, 3, strategy, seed=7) and chosen == sorted(chosen)
    assert all(p.requires_grad and p.dtype == torch.float32 for p in student.parameters())
    for s_idx, t_idx in enumerate(chosen):
        s_layer, t_layer = (
            student.bert.encoder.layer[s_idx].state_dict(),
            teacher.bert.encoder.layer[t_idx].state_dict(),
        )
        assert s_layer.keys() == t_layer.keys()
        assert all(torch.equal(s_layer[k], t_layer[k]) for k in s_layer)
    for s_mod, t_mod in ((student.bert.embeddings, teacher.bert.embeddings), (student.cls, teacher.cls)):
        s_sd, t_sd = s_mod.state_dict(), t_mod.state_dict()
        assert all(torch.equal(s_sd[k], t_sd[k]) for k in t_sd)

    # The record survives the Hugging Face round trip.
    student.save_pretrained(tmp_path / "student")
    reloaded = load_student(str(tmp_path / "student"))
    assert reloaded.config.minprot_teacher_layers == chosen
    assert reloaded.config.minprot_layer_strategy == (strategy if isinstance(strategy, str) else "explicit")
    assert reloaded.training and all(p.requires_grad for p in reloaded.parameters())


def test_layer_selection_recipes():
    # DistilBERT's extraction script copies [0, 2, 4, 7, 9, 11] of BERT-base's 12 layers.
    assert select_layers(12, 6, "alternate") == [0, 2, 4, 7, 9, 11]
    alt = select_layers(30, 15, "alternate")
    assert len(alt) == 15 and alt[0] == 0 and alt[-1] == 29 and all(1 < b - a <= 3 for a, b in zip(alt, alt[1:]))
    assert select_layers(30, 15, "random", seed=3) == select_layers(30, 15, "random", seed=3)
    assert select_layers(30, 15, "random", seed=3) != select_layers(30, 15, "random", seed=4)
    assert select_layers(30, 30, "random") == list(range(30))


@pytest.mark.parametrize(
    ("num_layers", "strategy", "message"),
    [
        (3, [0, 1], "name 2 layers but the student has 3"),
        (2, [0, 6], r"\[6\] are out of range; the teacher has layers 0..5"),
        (2, [2, 2], "repeat an index"),
        (2, "every-other", "unknown layer strategy 'every-other'"),
        (7, "alternate", "between 1 and the teacher's 6"),
        (0, "random", "between 1 and the teacher's 6"),
    ],
)
def test_layer_strategy_validation(num_layers, strategy, message):
    with pytest.raises(UserError, match=message):
        select_layers(6, num_layers, strategy)


def test_missing_paths_are_named(tmp_path):
    with pytest.raises(
        UserError, match=rf"teacher model folder {tmp_path / 'nope'} does not exist; pass a folder holding config.json"
    ):
        load_teacher(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="has no config.json"):
        load_student(str(tmp_path / "empty"))


def broken_copy(model: Path, folder: Path, file: str, text: str | None = None) -> Path:
    """A copy of a model folder with `file` cut in half (text None) or holding `text` instead."""
    copy = Path(shutil.copytree(model, folder))
    if text is None:
        data = (copy / file).read_bytes()
        (copy / file).write_bytes(data[: len(data) // 2])
    else:
        (copy / file).write_text(text)
    return copy


def test_a_broken_local_folder_says_what_is_wrong_with_it(tiny_teacher_dir, tmp_path):
    cases = {
        "truncated": ("model.safetensors", None, r"model\.safetensors is not a complete safetensors file.*truncated"),
        "bad_json": (
            "config.json",
            "{not json",
            r"config\.json \(the config of teacher model folder\) is not valid JSON",
        ),
        "not_object": ("config.json", "[1, 2]", r"config\.json is not a JSON object"),
        "bad_config": (
            "config.json",
            '{"model_type": "bert", "vocab_size": 30, "hidden_size": 30, "num_attention_heads": 4}',
            r"hidden size \(30\) is not a multiple",
        ),
        "no_family": ("config.json", "{}", "has no model_type in its config.json"),
        "no_vocab": ("config.json", '{"model_type": "bert"}', "names no vocab_size in its config.json"),
        "other_config": (
            "config.json",
            '{"model_type": "bert", "vocab_size": 30, "hidden_size": 64, "num_attention_heads": 4}',
            "its config.json does not match its weights",
        ),
    }
    for name, (file, text, message) in cases.items():
        folder = broken_copy(tiny_teacher_dir, tmp_path / name, file, text)
        with pytest.raises(UserError, match=message) as err:
            load_teacher(str(folder))
        assert "hub lookup" not in str(err.value), name
    no_weights = broken_copy(
        tiny_teacher_dir, tmp_path / "no_weights", "config.json", (tiny_teacher_dir / "config.json").read_text()
    )
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(UserError, match="has config.json but no weights"):
        load_student(str(no_weights))


def test_hub_id_offline_message():
    # A fresh process, as users set HF_HUB_OFFLINE before starting a job.
    code = "from minprot_ds.models.masked_lm import load_teacher; load_teacher('Rostlab/prot_bert_not_cached')"
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=os.environ.get("HF_HOME", "/nonexistent-hf-home"))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "HF_HUB_OFFLINE is set" in proc.stderr and "Rostlab/prot_bert_not_cached" in proc.stderr, proc.stderr[-2000:]


def test_checkpoint_without_mlm_head_is_refused(tmp_path):
    from transformers import BertConfig, BertModel

    BertModel(
        BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    ).save_pretrained(tmp_path)
    with pytest.raises(UserError, match="must be a BertForMaskedLM checkpoint"):
        load_teacher(str(tmp_path))


def test_masked_only_head_equals_full_head(tiny_teacher_dir):
    teacher = load_teacher(str(tiny_teacher_dir))
    ids, mask, labels = make_batch()
    with torch.inference_mode():
        out = forward_for_loss(teacher, ids, mask, labels)
        full = teacher(input_ids=ids, attention_mask=mask).logits
        every = forward_for_loss(teacher, ids, mask, labels, all_positions=True)
    masked = labels != -100
    assert out.logits.shape == (int(masked.sum()), 30)
    torch.testing.assert_close(out.logits, full[masked], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(every.logits, full[mask.bool()], rtol=1e-5, atol=1e-5)
    assert torch.equal(out.labels, labels[masked]) and torch.equal(every.labels, labels[mask.bool()])
    assert out.hidden.shape == (int(mask.sum()), 32)


def test_student_step_leaves_teacher_bitwise_unchanged(tiny_teacher_dir):
    teacher = load_teacher(str(tiny_teacher_dir))
    student = build_student(teacher, num_layers=3)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student_before = {k: v.clone() for k, v in student.state_dict().items()}
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-3)
    ids, mask, labels = make_batch(seed=1)
    with torch.inference_mode():
        t_out = forward_for_loss(teacher, ids, mask, labels)
    s_out = forward_for_loss(student, ids, mask, labels)
    loss = distill_loss(s_out.logits, t_out.logits, s_out.labels, s_out.hidden, t_out.hidden)
    loss.total.backward()
    optimizer.step()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())
    changed = [k for k, v in student.state_dict().items() if not torch.equal(v, student_before[k])]
    assert any("encoder.layer" in k for k in changed) and any("embeddings" in k for k in changed)
