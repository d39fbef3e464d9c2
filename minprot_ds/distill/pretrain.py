"""Brief MLM pre-training of a (tiny) teacher on a prepared corpus, for demos and tests: a random
teacher would leave nothing to distil. One process, plain PyTorch; the real teacher is ProtBert."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from minprot_ds.data.stream import BatchingOptions, DistillStream, MaskingOptions, eval_batches
from minprot_ds.errors import UserError
from minprot_ds.models.family import family_of
from minprot_ds.models.masked_lm import forward_for_loss


def mlm_accuracy(model, batches) -> float:
    correct = total = 0
    model.eval()
    with torch.no_grad():
        for batch in batches:
            out = forward_for_loss(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
            correct += int((out.logits.argmax(-1) == out.labels).sum())
            total += out.labels.numel()
    return correct / max(total, 1)


def pretrain_teacher(
    folder: str | Path,
    corpus: str | Path,
    *,
    steps: int = 300,
    lr: float = 2e-3,
    seed: int = 0,
    max_tokens: int = 4096,
    log: Callable[[str], None] = print,
    on_step: Callable[[int, float, torch.nn.Module], None] | None = None,
) -> float:
    """Train the masked LM in `folder` (BERT or ESM-2) by MLM for `steps` steps, save it back; returns valid
    accuracy.

    `on_step(step, train_loss, model)` runs after each optimizer step (e.g. a held-out evaluation every N steps,
    to see how far from converged the teacher is); it must leave the model as it found it."""
    if steps < 1:
        raise UserError(f"--steps {steps}: the teacher's pre-training needs at least 1 step")
    torch.manual_seed(seed)
    family = family_of(folder, "teacher model folder")
    model = family.masked_lm_class.from_pretrained(folder)
    batching, masking = BatchingOptions(max_tokens=max_tokens, max_rows=64), MaskingOptions()
    stream = DistillStream(corpus, "train", seed=seed, batching=batching, masking=masking, vocab=family.vocab)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    # OneCycleLR's warm-up must last more than one step (10% of 10 steps divides by zero): short runs warm up
    # over 2 steps, and a run of fewer than 4 steps keeps the peak rate.
    if steps >= 4:
        pct = max(0.1, 2.5 / steps)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=pct)
    else:
        schedule = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    model.train()
    for step, (batch,) in zip(range(1, steps + 1), stream):
        out = forward_for_loss(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
        loss = F.cross_entropy(out.logits, out.labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if on_step is not None:
            on_step(step, loss.item(), model)
        if step % 50 == 0 or step == steps:
            log(f"teacher pre-training step {step}/{steps}: MLM loss {loss.item():.3f}")
    model.save_pretrained(folder, safe_serialization=True)
    return mlm_accuracy(
        model,
        eval_batches(
            corpus, "valid", seed=seed, batching=batching, masking=masking, rank=0, world_size=1, vocab=family.vocab
        ),
    )
