"""model.compile: the compiled encoders compute what the eager ones do (forward, and the student's
gradients), keep their state-dict keys (checkpoints and exports unchanged), and refuse ZeRO-3 for the
student with a message naming the way out."""

from __future__ import annotations

import copy

import pytest
import torch

from minprot_ds.errors import UserError
from minprot_ds.models.masked_lm import build_student, compile_encoders, forward_for_loss, load_teacher


def _batch(seed: int, rows: int, length: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 25, (rows, length), generator=g)
    att = torch.ones(rows, length, dtype=torch.long)
    for r in range(1, rows):  # ragged rows, padded like the stream pads them
        cut = int(torch.randint(length // 2, length, (1,), generator=g))
        ids[r, cut:], att[r, cut:] = 0, 0
    labels = torch.full_like(ids, -100)
    pick = (torch.rand(ids.shape, generator=g) < 0.3) & att.bool()
    labels[pick] = ids[pick]
    return ids, att, labels


def test_zero3_with_a_compiled_student_is_refused(tiny_teacher_dir):
    teacher = load_teacher(str(tiny_teacher_dir), dtype=torch.float32)
    student = build_student(teacher, num_layers=2)
    with pytest.raises(UserError, match=r'model.compile = "all" is not supported with ZeRO stage 3.*use "teacher"'):
        compile_encoders(teacher, student, "all", zero_stage=3)
    compile_encoders(teacher, student, "none", zero_stage=3)  # nothing to refuse


@pytest.mark.slow
def test_compiled_encoders_match_eager_across_shapes(tiny_teacher_dir):
    torch.manual_seed(0)
    teacher = load_teacher(str(tiny_teacher_dir), dtype=torch.float32)
    student = build_student(teacher, num_layers=2)
    eager_teacher, eager_student = copy.deepcopy(teacher), copy.deepcopy(student)
    keys = (list(teacher.state_dict()), list(student.state_dict()))
    compile_encoders(teacher, student, "all", zero_stage=2)
    assert (list(teacher.state_dict()), list(student.state_dict())) == keys

    for seed, (rows, length) in enumerate(
        [(4, 24), (3, 40), (6, 16)]
    ):  # new shapes: dynamic graphs, no recompiles needed
        ids, att, labels = _batch(seed, rows, length)
        with torch.inference_mode():
            t, t_ref = (forward_for_loss(m, ids, att, labels) for m in (teacher, eager_teacher))
        torch.testing.assert_close(t.hidden, t_ref.hidden, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(t.logits, t_ref.logits, rtol=1e-4, atol=1e-5)
        grads = []
        for model in (student, eager_student):
            model.zero_grad(set_to_none=True)
            out = forward_for_loss(model, ids, att, labels)
            (out.hidden.square().mean() + out.logits.logsumexp(-1).mean()).backward()
            grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
        assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
        for name in grads[0]:
            torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-5, msg=name)
