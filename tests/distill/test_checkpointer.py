"""The checkpointer without a launcher: a one-process gloo group and a tiny real DeepSpeed engine.

Cadence (every_steps, every_minutes, forced saves), pruning, which checkpoint `load` takes, what it
refuses, and that it restores weights, optimizer, data cursor and the training RNG exactly (or seeds
the RNG from the data seed and the rank on a fresh start)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from minprot_ds.distill import checkpoint as ckpt_module
from minprot_ds.distill.checkpoint import Checkpointer, TrainState, latest_checkpoint
from minprot_ds.distill.config import CheckpointConfig
from minprot_ds.errors import UserError


@pytest.fixture(scope="module")
def group():
    """A gloo group of one in this process, as `python launch/distill.py` makes (the in-process engine and
    export suites join the same way; DeepSpeed caches its groups, so it stays for the session)."""
    from minprot_ds.distributed import init_distributed

    init_distributed()


class Cursor:
    """The data stream's checkpoint interface (state_dict / load_state_dict), nothing else."""

    def __init__(self):
        self.consumed = 0

    def state_dict(self) -> dict[str, int]:
        return {"consumed_samples": self.consumed, "epoch": 0}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.consumed = state["consumed_samples"]


def make_engine(seed: int = 0):
    import deepspeed

    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Dropout(0.1), torch.nn.Linear(8, 1))
    config = {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1, "zero_optimization": {"stage": 1}}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)  # as build_engine does: no JIT-built op
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
    return engine


def train_step(engine, cursor: Cursor) -> float:
    loss = engine(torch.ones(1, 8)).pow(2).sum()  # dropout: depends on the training RNG
    engine.backward(loss)
    engine.step()
    cursor.consumed += 1
    return float(loss)


def checkpointer(tmp_path: Path, engine, cursor, **options) -> Checkpointer:
    opts = CheckpointConfig(**{"every_steps": 0, "every_minutes": 0.0, "keep_last": 3, **options})
    return Checkpointer(
        tmp_path / "ckpt", opts, engine=engine, stream=cursor, seed=0, model_affecting={"data.seed": 0}, grad_accum=1
    )


def test_save_decides_by_cadence(group, tmp_path):
    engine, cursor = make_engine(), Cursor()
    cp = checkpointer(tmp_path, engine, cursor, every_steps=3)
    state = cp.load("auto")
    saved = []
    for step in range(1, 8):
        train_step(engine, cursor)
        state.step = step
        if cp.save(state, force=step == 7) is not None:
            saved.append(step)
    assert saved == [3, 6, 7]
    assert latest_checkpoint(tmp_path / "ckpt").name == "global_step7"
    assert (tmp_path / "ckpt" / "latest").read_text() == "global_step7"


def test_every_minutes_follows_the_clock(group, tmp_path, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(ckpt_module.time, "monotonic", lambda: now[0])
    engine, cursor = make_engine(), Cursor()
    cp = checkpointer(tmp_path, engine, cursor, every_minutes=1.0)
    state = cp.load("auto")
    state.step = 1
    assert cp.save(state) is None
    now[0] += 61
    state.step = 2
    assert cp.save(state).name == "global_step2"
    state.step = 3
    assert cp.save(state) is None  # the clock restarts at each save


def test_prune_keeps_the_last_and_every_kth(group, tmp_path):
    engine, cursor = make_engine(), Cursor()
    cp = checkpointer(tmp_path, engine, cursor, every_steps=1, keep_last=2, keep_every=3)
    state = cp.load("auto")
    for step in range(1, 8):
        state.step = step
        cp.save(state)
    assert sorted(p.name for p in (tmp_path / "ckpt").glob("global_step*")) == [
        "global_step3",
        "global_step6",
        "global_step7",
    ]


def test_load_restores_weights_optimizer_cursor_and_rng(group, tmp_path):
    engine, cursor = make_engine(), Cursor()
    cp = checkpointer(tmp_path, engine, cursor)
    state = cp.load("auto")
    for step in range(1, 4):
        train_step(engine, cursor)
        state.step = step
    cp.save(state, force=True)
    expected = [train_step(engine, cursor) for _ in range(3)]  # dropout masks and Adam moments both matter
    weights = {k: v.clone() for k, v in engine.module.state_dict().items()}

    engine2, cursor2 = make_engine(seed=1), Cursor()  # other initial weights
    torch.rand(100)  # whatever ran before in the process must not matter
    resumed = checkpointer(tmp_path, engine2, cursor2).load("auto")
    assert resumed.step == 3 and cursor2.consumed == 3
    assert [train_step(engine2, cursor2) for _ in range(3)] == expected
    for name, value in engine2.module.state_dict().items():
        assert torch.equal(value, weights[name]), name


def test_fresh_start_seeds_the_rng_from_seed_and_rank(group, tmp_path):
    engine = make_engine()
    torch.rand(7)
    checkpointer(tmp_path / "a", engine, Cursor()).load("auto")
    a = torch.rand(4)
    torch.rand(3)
    checkpointer(tmp_path / "b", engine, Cursor()).load("auto")
    assert torch.equal(torch.rand(4), a)
    ckpt_module.seed_rng(0, 1)  # another rank: another dropout stream
    assert not torch.equal(torch.rand(4), a)


def test_load_refuses(group, tmp_path):
    engine, cursor = make_engine(), Cursor()
    cp = checkpointer(tmp_path, engine, cursor)
    state = cp.load("auto")
    state.step = 2
    cp.save(state, force=True)
    with pytest.raises(UserError, match="already has checkpoints"):
        cp.load("none")
    with pytest.raises(UserError, match="not a complete checkpoint folder"):
        cp.load(str(tmp_path / "nowhere"))
    changed = Checkpointer(
        tmp_path / "ckpt",
        cp.options,
        engine=engine,
        stream=cursor,
        seed=0,
        model_affecting={"data.seed": 7},
        grad_accum=1,
    )
    with pytest.raises(UserError, match="data.seed was 0 and is now 7"):
        changed.load("auto")
    with pytest.raises(UserError, match="Keep ranks x gradient_accumulation_steps equal"):
        Checkpointer(
            tmp_path / "ckpt",
            cp.options,
            engine=engine,
            stream=cursor,
            seed=0,
            model_affecting={"data.seed": 0},
            grad_accum=2,
        ).load("auto")


def test_a_changed_loss_normalization_is_refused_and_older_checkpoints_count_as_micro_batch(tmp_path):
    """loss.normalize changes the gradients: a resume must keep it. A checkpoint written before the key existed
    ran with the per-micro-batch mean."""
    now = {"data.seed": 0, "loss.normalize": "global-tokens"}
    ckpt_module.check_compatible(TrainState(model_affecting=dict(now)), now, tmp_path)
    with pytest.raises(UserError, match="loss.normalize was 'global-tokens' and is now 'micro-batch'"):
        ckpt_module.check_compatible(
            TrainState(model_affecting=dict(now)), {**now, "loss.normalize": "micro-batch"}, tmp_path
        )
    older = TrainState(model_affecting={"data.seed": 0})
    with pytest.raises(UserError, match="loss.normalize was 'micro-batch' and is now 'global-tokens'"):
        ckpt_module.check_compatible(older, now, tmp_path)
    ckpt_module.check_compatible(older, {**now, "loss.normalize": "micro-batch"}, tmp_path)


def test_incomplete_checkpoint_is_skipped(group, tmp_path):
    engine, cursor = make_engine(), Cursor()
    cp = checkpointer(tmp_path, engine, cursor)
    state = cp.load("auto")
    for step in (2, 4):
        state.step = step
        cp.save(state, force=True)
    (tmp_path / "ckpt" / "global_step4" / "COMPLETE").unlink()  # as if a rank died before the marker
    with pytest.warns(UserWarning, match="skipping incomplete checkpoint"):
        assert checkpointer(tmp_path, make_engine(), Cursor()).load("auto").step == 2
    assert isinstance(state, TrainState)
