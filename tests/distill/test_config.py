"""The run config: presets load, overrides apply, bad keys/types/combinations name the key."""

from pathlib import Path

import pytest

from minprot_ds.distill.config import DistillConfig, load_config
from minprot_ds.errors import UserError

PRESETS = sorted((Path(__file__).resolve().parents[2] / "launch" / "configs").glob("*.toml"))


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_presets_load(preset):
    config = load_config(preset)
    assert isinstance(config, DistillConfig)


def test_defaults_follow_the_recipe():
    c = load_config(None)
    assert c.model.teacher == "Rostlab/prot_bert" and c.model.student_layers == 15
    assert c.optimizer.lr == 5e-5 and c.schedule.epochs == 3
    assert c.loss.weights == [1 / 3, 1 / 3, 1 / 3] and c.loss.kd_positions == "masked"


def test_overrides_parse_toml_values_and_bare_words():
    c = load_config(
        None,
        [
            "optimizer.lr=1e-4",
            "model.teacher=some/folder",
            "loss.weights=[1, 0.5, 0.1]",
            "model.activation_checkpointing=true",
        ],
    )
    assert c.optimizer.lr == 1e-4 and c.model.teacher == "some/folder"
    assert c.loss.weights == [1.0, 0.5, 0.1] and c.model.activation_checkpointing is True


@pytest.mark.parametrize(
    "override, message",
    [
        ("optimizer.lrr=1", "unknown key optimizer.lrr"),
        ("optim.lr=1", "unknown section [optim]"),
        ("optimizer.lr='fast'", "optimizer.lr must be a float"),
        ("data.max_rows=2.5", "data.max_rows must be an integer"),
        ("model.activation_checkpointing=1", "model.activation_checkpointing must be true or false"),
        ("loss.kd_positions=everywhere", "loss.kd_positions must be masked or all"),
        ("loss.weights=[1, 2]", "loss.weights must be three non-negative numbers"),
        ("model.layer_strategy='0,1,2'", "lists 3 layers but model.student_layers is 15"),
        ("model.layer_strategy=odd", "must be alternate, random or comma-separated"),
        (
            "data.mask_probability=1.5",
            "data.mask_probability is refused by the masking: masking probability must lie in (0, 1]",
        ),
        ("data.mask_probability=0", "data.mask_probability is refused"),
        ("loss.impl=fast", "loss.impl must be one of eager, compiled, triton, auto"),
        ("lr=1", "is not of the form section.key=value"),
    ],
)
def test_bad_values_name_the_key(override, message):
    with pytest.raises(UserError, match=None) as err:
        load_config(None, [override])
    assert message in str(err.value)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\nteacher = 1")
    with pytest.raises(UserError, match="is not valid TOML"):
        load_config(bad)


def test_config_accepts_what_the_components_accept():
    # The losses take "compiled" (the V100 path), the masking takes probability 1.
    c = load_config(
        None,
        [
            "loss.impl=compiled",
            "data.mask_probability=1.0",
            "loss.kd_positions=all",
            "loss.kd_temperature_squared=false",
        ],
    )
    assert (c.loss.impl, c.data.mask_probability, c.loss.kd_positions, c.loss.kd_temperature_squared) == (
        "compiled",
        1.0,
        "all",
        False,
    )
