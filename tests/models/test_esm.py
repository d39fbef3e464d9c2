"""ESM-2 as a teacher: family recognition, the one corpus read in ESM-2's ids (as EsmTokenizer gives them), the
student made of its layers, and the loss against a hand computation from transformers' own EsmForMaskedLM."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from minprot_ds.data.batching import BatchingOptions
from minprot_ds.data.masking import MaskingOptions
from minprot_ds.data.stream import build_micro_batch
from minprot_ds.distill.losses import distill_loss
from minprot_ds.errors import UserError
from minprot_ds.models.family import BERT, ESM, family_of
from minprot_ds.models.masked_lm import build_student, forward_for_loss, load_teacher
from minprot_ds.vocab import ESM2, PROTBERT, STANDARD_RESIDUES, encode, rare_to_x

# ESM-2's vocabulary as facebook/esm2_*'s vocab.txt lists it (fair-esm's Alphabet: prepend <cls> <pad> <eos> <unk>,
# the residues and gap characters, append <mask>); written here independently of minprot_ds.vocab.
ESM2_VOCAB_TXT = "<cls> <pad> <eos> <unk> L A G V S E R T I D P K Q N F Y M H W C X B U Z O . - <null_1> <mask>"


@pytest.fixture(scope="module")
def esm_tokenizer(tmp_path_factory):
    from transformers import EsmTokenizer

    vocab = tmp_path_factory.mktemp("esm_vocab") / "vocab.txt"
    vocab.write_text("\n".join(ESM2_VOCAB_TXT.split()) + "\n")
    return EsmTokenizer(vocab_file=str(vocab))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from tests.data.conftest import write_corpus

    return write_corpus(tmp_path_factory.mktemp("corpus"), {"train": [5, 9, 17, 30, 31, 44, 60, 8]})


def test_family_is_read_from_the_config(tiny_esm_teacher_dir, tiny_teacher_dir):
    assert family_of(tiny_esm_teacher_dir) is ESM and family_of(tiny_teacher_dir) is BERT
    assert ESM.vocab.tokens == tuple(ESM2_VOCAB_TXT.split()) and ESM.max_residues == 1022


@pytest.mark.parametrize(
    ("config", "found"),
    [
        ({"model_type": "roberta", "architectures": ["RobertaForMaskedLM"], "vocab_size": 50265}, "'roberta'"),
        ({"architectures": ["Mystery"]}, "no model_type"),
        ({"model_type": "esm", "is_folding_model": True, "vocab_size": 33}, "ESMFold"),
        ({"model_type": "esm", "position_embedding_type": "absolute", "vocab_size": 33}, "ESM-1"),
        ({"model_type": "esm", "position_embedding_type": "rotary", "vocab_size": 35}, "35 tokens"),
    ],
)
def test_a_model_of_neither_family_is_refused_in_one_sentence(tmp_path, config, found):
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError) as err:
        load_teacher(str(tmp_path))
    message = str(err.value)
    assert found in message and str(tmp_path) in message and "\n" not in message, message
    assert message.replace("e.g. ", "").count(". ") == 0 and message.endswith(".")  # one sentence


def test_esm_ids_of_the_corpus_equal_esm_tokenizer(esm_tokenizer):
    """The fixed table from the corpus's ProtBert ids gives exactly EsmTokenizer's ids ([CLS]/[SEP] as <cls>/<eos>);
    rare residues are read as X in the corpus, for every family."""
    rng = np.random.default_rng(0)
    sequences = ["".join(rng.choice(list(STANDARD_RESIDUES), n)) for n in (1, 7, 50, 300)]
    sequences += ["MKTAYIAKQRQISFVKSHFSRQ", "LAGVESIKRDTPNQFYMHCWX", rare_to_x("MUZOBK")]
    for seq in sequences:
        ours = [ESM2.bos_id, *ESM2.remap(encode(seq)).tolist(), ESM2.eos_id]
        assert ours == esm_tokenizer(seq)["input_ids"], seq
    special = {t: esm_tokenizer.convert_tokens_to_ids(t) for t in ("<cls>", "<pad>", "<eos>", "<unk>", "<mask>")}
    assert special == {"<cls>": ESM2.bos_id, "<pad>": ESM2.pad_id, "<eos>": ESM2.eos_id, "<unk>": ESM2.unk_id,
                       "<mask>": ESM2.mask_id}  # fmt: skip


def test_an_esm_batch_is_the_protbert_batch_in_esm_ids(corpus, esm_tokenizer):
    """Built from the same corpus rows: the same masked positions, and every id (residues, specials, <mask>,
    padding, labels) is EsmTokenizer's id of the ProtBert batch's token."""
    from minprot_ds.data.shards import ShardedCorpus

    shards = ShardedCorpus(corpus.path, "train")
    options = dict(epoch=0, seed=3, batching=BatchingOptions(max_tokens=4096), masking=MaskingOptions())
    bert = build_micro_batch(shards, np.arange(8), **options)
    esm = build_micro_batch(shards, np.arange(8), **options, vocab=ESM2)
    assert torch.equal(bert["attention_mask"], esm["attention_mask"])
    labelled = bert["labels"] != -100
    assert torch.equal(labelled, esm["labels"] != -100) and int(labelled.sum()) > 0
    esm_id = {_esm_token(t): esm_tokenizer.convert_tokens_to_ids(_esm_token(t)) for t in PROTBERT.tokens}
    as_esm = [[esm_id[_esm_token(PROTBERT.tokens[i])] for i in row] for row in bert["input_ids"].tolist()]
    assert as_esm == esm["input_ids"].tolist()
    assert (esm["input_ids"] == ESM2.mask_id).any() and (esm["input_ids"] == ESM2.pad_id).any()
    assert [esm_id[_esm_token(PROTBERT.tokens[i])] for i in bert["labels"][labelled].tolist()] == (
        esm["labels"][labelled].tolist()
    )


def _esm_token(protbert_token: str) -> str:
    return {"[PAD]": "<pad>", "[UNK]": "<unk>", "[CLS]": "<cls>", "[SEP]": "<eos>", "[MASK]": "<mask>"}.get(
        protbert_token, protbert_token
    )


def test_student_is_an_esm_of_the_chosen_teacher_layers(tiny_esm_teacher_dir):
    """Same class, chosen layers copied, and everything else (embeddings, rotary buffer, emb_layer_norm_after,
    the MLM head) copied; the contact head keeps the chosen layers' columns. A student of every layer is the
    teacher, contact maps included."""
    from transformers import EsmForMaskedLM

    teacher = load_teacher(str(tiny_esm_teacher_dir))
    student = build_student(teacher, num_layers=2, strategy=[1, 3])
    assert type(student) is EsmForMaskedLM and student.config.num_hidden_layers == 2
    assert student.config.token_dropout and student.config.position_embedding_type == "rotary"
    for s_layer, t_index in zip(student.esm.encoder.layer, [1, 3]):
        for (name, s), (_, t) in zip(
            s_layer.state_dict().items(), teacher.esm.encoder.layer[t_index].state_dict().items()
        ):
            assert torch.equal(s, t), name
    t_state, s_state = teacher.state_dict(), student.state_dict()
    for key in ("esm.encoder.emb_layer_norm_after.weight", "esm.encoder.emb_layer_norm_after.bias",
                "esm.embeddings.word_embeddings.weight", "esm.rotary_embeddings.inv_freq", "lm_head.dense.weight",
                "lm_head.layer_norm.weight", "lm_head.bias"):  # fmt: skip
        assert torch.equal(s_state[key], t_state[key]), key
    heads = teacher.config.num_attention_heads
    columns = t_state["esm.contact_head.regression.weight"].view(1, 4, heads)[:, [1, 3]].reshape(1, -1)
    assert torch.equal(s_state["esm.contact_head.regression.weight"], columns)

    whole = build_student(teacher, num_layers=4)
    ids = torch.tensor([[ESM2.bos_id, 20, 15, ESM2.mask_id, 5, 19, ESM2.eos_id]])
    with torch.inference_mode():
        whole.eval()
        torch.testing.assert_close(whole(input_ids=ids).logits, teacher(input_ids=ids).logits, rtol=0, atol=0)
        mask = torch.ones_like(ids)
        for model in (whole, teacher):
            model.set_attn_implementation("eager")  # contact maps read attention weights, which SDPA does not return
        torch.testing.assert_close(whole.predict_contacts(ids, mask), teacher.predict_contacts(ids, mask))


def test_loss_equals_a_hand_computation_from_esm_outputs(tiny_esm_teacher_dir, corpus):
    """L_mlm, L_kd and L_cos of a real ESM-2 batch from minprot's forward equal the same terms computed by hand
    from transformers' EsmForMaskedLM logits and hidden states (token dropout on, <cls>/<eos>/<pad> never
    labelled), on the masked positions and with KD on every non-pad position."""
    from minprot_ds.data.shards import ShardedCorpus

    teacher = load_teacher(str(tiny_esm_teacher_dir))
    student = build_student(teacher, num_layers=2).eval()
    with torch.no_grad():  # a student that differs from the teacher's layers
        for p in student.esm.encoder.layer[0].parameters():
            p.add_(torch.randn_like(p) * 0.05)
    batch = build_micro_batch(
        ShardedCorpus(corpus.path, "train"), np.arange(8), epoch=0, seed=1,
        batching=BatchingOptions(max_tokens=4096), masking=MaskingOptions(), vocab=ESM2,
    )  # fmt: skip
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    specials = (ids == ESM2.bos_id) | (ids == ESM2.eos_id) | (ids == ESM2.pad_id)
    assert (labels[specials] == -100).all() and (ids == ESM2.mask_id).any()
    tau = 2.0
    with torch.no_grad():
        t_hf = teacher(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        s_hf = student(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        t_last = teacher.esm(input_ids=ids, attention_mask=mask).last_hidden_state
        s_last = student.esm(input_ids=ids, attention_mask=mask).last_hidden_state
        # The cosine term compares what the model outputs: after emb_layer_norm_after (its own head reads that).
        torch.testing.assert_close(student.lm_head(s_last), s_hf.logits)
    # ... which is transformers' last hidden state, normalised (the random init's layer norm is the identity map
    # after standardising: each position's features have mean 0 and variance 1).
    torch.testing.assert_close(s_last, s_hf.hidden_states[-1])
    torch.testing.assert_close(s_last.mean(-1), torch.zeros(s_last.shape[:2]), atol=1e-5, rtol=0)
    torch.testing.assert_close(s_last.var(-1, unbiased=False), torch.ones(s_last.shape[:2]), atol=1e-2, rtol=0)
    non_pad = mask.bool()
    for kd_all in (False, True):
        rows = non_pad if kd_all else labels != -100
        s_logits, t_logits = s_hf.logits[rows].double(), t_hf.logits[rows].double()
        picked = labels[labels != -100]
        mlm = F.cross_entropy(s_hf.logits[labels != -100].double(), picked)
        kd = -(F.softmax(t_logits / tau, -1) * F.log_softmax(s_logits / tau, -1)).sum(-1).mean() * tau**2
        cos = (1 - F.cosine_similarity(s_last[non_pad].double(), t_last[non_pad].double(), dim=-1)).mean()
        with torch.no_grad():
            t_out = forward_for_loss(teacher, ids, mask, labels, all_positions=kd_all)
            s_out = forward_for_loss(student, ids, mask, labels, all_positions=kd_all)
            got = distill_loss(
                s_out.logits, t_out.logits, s_out.labels, s_out.hidden, t_out.hidden, temperature=tau,
                weights=(1.0, 1.0, 1.0),
            )  # fmt: skip
        for name, value, want in (("mlm", got.mlm, mlm), ("kd", got.kd, kd), ("cos", got.cos, cos)):
            assert abs(float(value) - float(want)) <= 1e-5 * max(1.0, abs(float(want))), (kd_all, name, value, want)
        assert float(got.kd) > 0 and float(got.cos) > 0
