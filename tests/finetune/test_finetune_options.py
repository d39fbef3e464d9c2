"""The fine-tune options are defined once (FinetuneConfig): both front doors accept the same flags and build the
same config."""
from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import typer
from typer.testing import CliRunner

from minprot_ds.finetune.options import FinetuneConfig, cli_fields, flag, typer_command

REPO = Path(__file__).resolve().parents[2]


def launch_parser():
    spec = importlib.util.spec_from_file_location("launch_finetune", REPO / "launch/finetune.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.parse_args


def via_typer(argv: list[str]) -> FinetuneConfig:
    seen: list[FinetuneConfig] = []
    app = typer.Typer()
    app.command()(typer_command(seen.append, "test"))
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, result.output
    return seen[0]


def test_both_front_doors_build_the_same_config(tmp_path: Path) -> None:
    required = ["--task", "q3", "--model", "m", "--train", "a", "--test", "b", "--out", str(tmp_path)]
    parse = launch_parser()
    for extra in ([], ["--epochs", "2", "--batch-size", "4", "--pooling", "mean", "--valid", "v", "--strict",
                       "--max-train-samples", "10", "--deepspeed_config", "ds.json", "--grad-clip", "0.5"]):
        args = vars(parse(required + extra))
        assert args.pop("local_rank") == -1
        assert FinetuneConfig(**args) == via_typer(required + extra)
    # Every field the command line may set is a flag of both, with the field's default.
    defaults = via_typer(required)
    names = {f.name for f, _, _ in cli_fields()}
    assert set(vars(parse(required))) - {"local_rank"} == names
    assert {f.name for f in dataclasses.fields(FinetuneConfig) if f.metadata["cli"]} == names
    for f, _, _ in cli_fields():
        if f.default is not dataclasses.MISSING:
            assert getattr(defaults, f.name) == f.default, flag(f.name)
