"""Export of the student as a Hugging Face folder, in one process (no launcher): from a model in memory,
and from a real DeepSpeed checkpoint written in process on a gloo group of one rank."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForMaskedLM

from minprot_ds.distill.export import STUDENT_CONFIG, export_checkpoint, export_student, student_provenance
from minprot_ds.errors import UserError
from minprot_ds.models.folders import METADATA, read_metadata
from minprot_ds.models.masked_lm import build_student, load_teacher, save_random_protbert

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory) -> Path:
    return save_random_protbert(
        tmp_path_factory.mktemp("export") / "teacher",
        num_layers=4,
        hidden_size=32,
        num_heads=4,
        intermediate_size=64,
        seed=3,
    )


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].float(), sb[k].float()) for k in sa)


def test_export_student_writes_a_folder_transformers_loads_with_its_provenance(teacher_dir, tmp_path):
    student = build_student(load_teacher(teacher_dir), num_layers=2, strategy="random", seed=5)
    out = export_student(student, tmp_path / "student", {"mlflow_run_id": "abc", **student_provenance(student.config)})
    loaded = AutoModelForMaskedLM.from_pretrained(out)
    assert same_weights(loaded, student)
    assert {"config.json", "model.safetensors", "vocab.txt", METADATA} <= {p.name for p in out.iterdir()}
    meta = read_metadata(out)
    assert meta["mlflow_run_id"] == "abc" and meta["layer_strategy"] == "random" and meta["layer_seed"] == 5
    assert meta["teacher_layers"] == student.config.minprot_teacher_layers and "minprot_version" in meta
    assert read_metadata(tmp_path) == {}  # a folder minprot did not export


def test_export_checkpoint_gives_the_trained_student(teacher_dir, tmp_path, cli_error, capsys):
    from minprot_ds.data.synthetic import write_synthetic_corpus
    from minprot_ds.distill.build import build_engine, build_stream
    from minprot_ds.distill.checkpoint import Checkpointer, TrainState
    from minprot_ds.distill.config import load_config
    from minprot_ds.distributed import init_distributed
    from minprot_ds.ds_config import read_ds_config

    corpus = write_synthetic_corpus(tmp_path / "corpus", torch.randint(20, 80, (60,)).numpy())
    config = load_config(
        None,
        [
            f'model.teacher="{teacher_dir}"',
            "model.student_layers=2",
            f'data.corpus="{corpus}"',
            "data.max_tokens=1024",
            "data.max_rows=8",
            "data.num_workers=0",
            "loss.impl=eager",
        ],
    )
    init_distributed()
    ds = read_ds_config(REPO / "ds_configs" / "cpu_zero2.json", flag="test", owner="test", micro_batch=8)
    engine, student_config = build_engine(config, ds, planned_steps=10, dtype=torch.float32)
    stream = build_stream(config, "train", rank=0, world_size=1, grad_accum=1)
    engine.step(next(iter(stream)))
    run_dir = tmp_path / "run"
    (run_dir / "ckpt").mkdir(parents=True)
    with pytest.raises(UserError, match="no complete checkpoint"):
        export_checkpoint(run_dir, tmp_path / "nothing")
    state = TrainState(step=1, consumed_samples=8, mlflow_run_id="r1")
    checkpointer = Checkpointer(
        run_dir / "ckpt",
        config.checkpoint,
        engine=engine.student,
        stream=stream,
        seed=0,
        model_affecting=config.model_affecting(),
        grad_accum=1,
    )
    folder = checkpointer.save(state, force=True)
    with pytest.raises(UserError, match=STUDENT_CONFIG):
        export_checkpoint(folder, tmp_path / "nothing")
    student_config.to_json_file(str(run_dir / STUDENT_CONFIG))

    out = export_checkpoint(run_dir, tmp_path / "student")
    assert same_weights(AutoModelForMaskedLM.from_pretrained(out), engine.student.module.mlm)
    meta = read_metadata(out)
    assert (meta["step"], meta["mlflow_run_id"], meta["checkpoint"]) == (1, "r1", str(folder))
    assert meta["teacher_layers"] == student_config.minprot_teacher_layers

    # The same export again is ours to replace; an unrelated folder at --out is refused, naming --overwrite.
    export_checkpoint(run_dir, out)
    capsys.readouterr()  # what the steps above printed is not the commands' below
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "notes.txt").write_text("keep")
    msg = cli_error("export", str(run_dir), "--out", str(tmp_path / "theirs"))
    assert "already exists" in msg and "pass --overwrite to replace it" in msg
    assert [p.name for p in (tmp_path / "theirs").iterdir()] == ["notes.txt"]

    # A truncated checkpoint (an interrupted copy): one line naming it, no traceback, nothing written.
    broken = Path(shutil.copytree(run_dir, tmp_path / "broken"))
    for state_file in (broken / "ckpt" / folder.name).glob("*.pt"):
        data = state_file.read_bytes()
        state_file.write_bytes(data[: len(data) // 2])
    msg = cli_error("export", str(broken), "--out", str(tmp_path / "from_broken"))
    assert f"checkpoint {broken / 'ckpt' / folder.name} cannot be read" in msg and "truncated or corrupt" in msg
    assert not (tmp_path / "from_broken").exists()
