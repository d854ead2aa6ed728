import pytest
import yaml

from src.config import DEFAULT_CONFIG, apply_overrides, load_config


def test_overrides_keep_the_yaml_types():
    cfg = load_config(["--channels", "256", "--global_context", "false", "--aam_scale", "32"])
    assert cfg.channels == 256 and cfg.global_context is False
    assert isinstance(cfg.aam_scale, float) and cfg.aam_scale == 32.0
    # exponent notation without a dot is a string to YAML 1.1, but a number is meant
    cfg = load_config(["--max_lr", "1e-4", "--base_lr", "1E-6", "--lr_step_size", "6.5e4", "--output_dir", "1e3"])
    assert cfg.max_lr == 1e-4 and cfg.base_lr == 1e-6 and cfg.output_dir == "1e3"
    assert cfg.lr_step_size == 65000 and isinstance(cfg.lr_step_size, int)
    assert cfg.config == DEFAULT_CONFIG


def test_equals_form_and_string_values():
    cfg = load_config(["--output_dir=123", "--padding", "zeros"])
    assert cfg.output_dir == "123" and cfg.padding == "zeros"


def test_unknown_key_and_bad_type_are_named():
    with pytest.raises(ValueError, match="--chanels: unknown config key"):
        load_config(["--chanels", "3"])
    with pytest.raises(ValueError, match="--channels: expected a number"):
        load_config(["--channels", "wide"])
    with pytest.raises(ValueError, match="--seed: missing value"):
        load_config(["--seed"])


def test_recipe_files_are_plain_yaml_with_the_same_keys():
    import glob
    import os
    files = sorted(glob.glob(os.path.join(os.path.dirname(DEFAULT_CONFIG), "*.yaml")))
    keys = {}
    for path in files:
        with open(path) as f:
            keys[path] = set(yaml.safe_load(f))
    reference = keys[DEFAULT_CONFIG]
    for path, k in keys.items():
        assert k == reference, f"{path} differs from {DEFAULT_CONFIG}: {sorted(k ^ reference)}"


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(["--config", str(tmp_path / "nope.yaml")])
    cfg = {"a": 1}
    with pytest.raises(ValueError, match="overrides are written --key value"):
        apply_overrides(cfg, ["a", "2"])


def test_exponent_without_a_dot_in_a_recipe_file_is_a_number(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("max_lr: 1e-4\nlr_step_size: 65000\nname: 1e3x\n")
    cfg = load_config(["--config", str(recipe)])
    assert cfg.max_lr == 1e-4 and isinstance(cfg.max_lr, float) and cfg.name == "1e3x"
    assert yaml.safe_load(recipe.read_text())["max_lr"] == "1e-4"      # what plain PyYAML would have given
