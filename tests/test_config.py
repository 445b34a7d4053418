import re

import pytest

from pointseg.config import (
    SECTIONS,
    default_config,
    flatten,
    help_texts,
    load_config,
    load_settings,
    parse_set,
    upgrade,
    validate,
)


def test_set_overrides_are_typed():
    cfg = load_config(None, ["train.steps=7", "model.encoder_weights=null", "data.domains=[Rural]", "optim.lr=3e-4"])
    assert cfg["train"]["steps"] == 7 and cfg["model"]["encoder_weights"] is None
    assert cfg["data"]["domains"] == ["Rural"] and cfg["optim"]["lr"] == pytest.approx(3e-4)


def test_unknown_key_is_an_error_with_suggestion():
    with pytest.raises(KeyError, match="did you mean 'train.steps'"):
        load_config(None, ["train.step=5"])
    with pytest.raises(KeyError, match="unknown config key 'nope'"):
        load_config(None, ["nope=1"])


def test_file_then_set(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  steps: 3\n  batch_size: 2\n")
    cfg = load_config(path, ["train.steps=5"])
    assert cfg["train"]["steps"] == 5 and cfg["train"]["batch_size"] == 2
    path.write_text("trian:\n  steps: 3\n")
    with pytest.raises(KeyError, match="trian"):
        load_config(path)


def test_section_cannot_be_replaced_by_a_value():
    with pytest.raises(ValueError, match="section"):
        load_config(None, ["train=3"])
    with pytest.raises(ValueError, match="key=value"):
        parse_set("train.steps")


def test_wrong_type_is_an_error():
    with pytest.raises(ValueError, match="'train.steps' expects int"):
        load_config(None, ["train.steps=many"])


def test_settings_keep_only_the_keys_given():
    assert load_settings(None, ["train.steps=7", "train.steps=9", "model.name=unet-small"]) == {
        "train": {"steps": 9}, "model": {"name": "unet-small"}}
    with pytest.raises(KeyError, match="did you mean 'train.steps'"):
        load_settings(None, ["train.stepz=1"])


def test_every_key_has_help_and_the_defaults_pass():
    flat = flatten(default_config())
    assert set(flat) == {"seed", *help_texts()}, "every key but the seed comes from an options class"
    assert all(help_texts().values())
    assert validate(default_config()) == default_config()
    assert "method.fixmatch" in SECTIONS and "method.pseudoseg" in SECTIONS and "method.supervised" not in SECTIONS


def test_flat_method_keys_of_older_configs_move_to_their_method_section(caplog):
    old = {"method": {"name": "fixmatch", "threshold": 0.8, "gamma": 0.3, "unlabeled_weight": 2.0},
           "loss": {"gamma": 1}}
    assert upgrade(old) == {"method": {"name": "fixmatch", "unlabeled_weight": 2.0, "fixmatch": {"threshold": 0.8},
                                       "pseudoseg": {"gamma": 0.3}}, "loss": {"gamma": 1}}
    cfg = load_config(None, ["method.threshold=0.8", "method.gamma=0.3"])
    assert cfg["method"]["fixmatch"]["threshold"] == 0.8 and cfg["method"]["pseudoseg"]["gamma"] == 0.3
    assert cfg["loss"]["gamma"] == 2.0, "loss.gamma is another option"
    assert "method.threshold is now method.fixmatch.threshold" in caplog.text


@pytest.mark.parametrize("item, message", [
    ("seed=-1", "'seed' must be >= 0"),
    ("method.fixmatch.threshold=1.5", "'method.fixmatch.threshold' must be >= 0 and <= 1"),
    ("method.fixmatch.ema_decay=1", "'method.fixmatch.ema_decay' must be >= 0 and < 1"),
    ("train.batch_size=0", "'train.batch_size' must be >= 1"),
    ("method.pseudoseg.temperature=0", "'method.pseudoseg.temperature' must be > 0"),
])
def test_out_of_range_values_are_errors(item, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        load_config(None, [item])


def test_malformed_yaml_in_set_is_an_error_naming_the_item():
    with pytest.raises(ValueError, match=re.escape("--set 'data.rescale=[1,': the value is not valid YAML")):
        parse_set("data.rescale=[1,")


def test_pointseg_config_prints_the_resolved_config_with_each_keys_help(capsys):
    import yaml

    from pointseg.cli import main

    assert main(["config", "--set", "method.name=fixmatch", "--set", "method.fixmatch.threshold=0.8"]) == 0
    text = capsys.readouterr().out
    assert yaml.safe_load(text) == load_config(None, ["method.name=fixmatch", "method.fixmatch.threshold=0.8"])
    assert "  threshold: 0.8  # confidence threshold of pseudo labels" in text
    assert "datasets: {}  # more datasets trained at once" in text
