import pytest

from pointseg.config import load_config, parse_set


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
