"""The fine-tune options are defined once (FinetuneConfig): both front doors accept the same flags and build the
same config."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer
from typer.testing import CliRunner

from minprot_ds.finetune.options import FinetuneConfig
from minprot_ds.options import argument_parser, cli_fields, from_namespace, mlflow_params, typer_command


def via_launch(argv: list[str]) -> FinetuneConfig:
    """What launch/finetune.py's parser builds (minprot_ds.finetune.train.main parses with it)."""
    namespace = argument_parser(FinetuneConfig).parse_args(argv)
    return from_namespace(FinetuneConfig, namespace)


def via_typer(argv: list[str]) -> FinetuneConfig:
    seen: list[FinetuneConfig] = []
    app = typer.Typer()
    app.command()(typer_command(FinetuneConfig, seen.append, "test", "finetune"))
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, result.output
    return seen[0]


def test_both_front_doors_build_the_same_config(tmp_path: Path) -> None:
    required = ["--task", "q3", "--model", "m", "--train", "a", "--test", "b", "--out", str(tmp_path)]
    for extra in (
        [],
        [
            "--epochs",
            "2",
            "--batch-size",
            "4",
            "--pooling",
            "mean",
            "--valid",
            "v",
            "--strict",
            "--max-train-samples",
            "10",
            "--deepspeed_config",
            "ds.json",
            "--grad-clip",
            "0.5",
        ],
    ):
        assert via_launch(required + extra + ["--local_rank=1"]) == via_typer(required + extra)
    # Every field the command line may set is a flag of both, with the field's default.
    defaults = via_typer(required)
    names = {c.name for c in cli_fields(FinetuneConfig)}
    assert set(vars(argument_parser(FinetuneConfig).parse_args(required))) - {"local_rank"} == names
    assert {f.name for f in dataclasses.fields(FinetuneConfig) if f.metadata["cli"]} == names
    for c in cli_fields(FinetuneConfig):
        if not c.required:
            assert getattr(defaults, c.name) == c.default, c.flag


def test_mlflow_params_are_the_command_line_options(tmp_path: Path) -> None:
    cfg = via_typer(["--task", "q3", "--model", "m", "--train", "a", "--test", "b", "--out", str(tmp_path)])
    params = mlflow_params(cfg)
    # not tracking / system_metrics, nor --overwrite (it changes no result; a rerun compares these params)
    assert set(params) == {c.name for c in cli_fields(FinetuneConfig)} - {"overwrite"}
    assert params["out"] == str(tmp_path) and params["valid"] == "" and params["pooling"] == "cls"
