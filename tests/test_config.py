import pytest
import yaml

from src.config import DEFAULT_CONFIG, UsageError, load_config


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
    with pytest.raises(UsageError, match="--seed: expected one argument"):
        load_config(["--seed"])


def test_recipe_files_are_plain_yaml_and_a_base_recipe_supplies_the_rest(tmp_path):
    import glob
    import os
    files = sorted(glob.glob(os.path.join(os.path.dirname(DEFAULT_CONFIG), "*.yaml")))
    with open(DEFAULT_CONFIG) as f:
        reference = set(yaml.safe_load(f))
    for path in files:
        with open(path) as f:
            own = yaml.safe_load(f)                    # plain YAML, readable without this project
        keys = set(own) - {"base"}
        assert keys <= reference, f"{path}: keys not in {DEFAULT_CONFIG}: {sorted(keys - reference)}"
        assert set(load_config(["--config", path])) == reference | {"config"}
    demo = load_config(["--config", os.path.join(os.path.dirname(DEFAULT_CONFIG), "demo_config.yaml")])
    full = load_config([])
    assert demo.channels == 128 and demo.aam_margin == full.aam_margin and demo.n_mels == full.n_mels
    # a key the base does not have, and a base loop, are refused naming the file
    child = tmp_path / "child.yaml"
    child.write_text(f"base: {DEFAULT_CONFIG}\nchanels: 3\n")
    with pytest.raises(ValueError, match="child.yaml: keys not in its base recipe.*chanels"):
        load_config(["--config", str(child)])
    loop = tmp_path / "loop.yaml"
    loop.write_text("base: loop.yaml\nseed: 1\n")
    with pytest.raises(ValueError, match="loop"):
        load_config(["--config", str(loop)])


def test_a_loaded_recipe_is_read_only():
    cfg = load_config([])
    with pytest.raises(TypeError, match="read-only"):
        cfg.channels = 3
    with pytest.raises(TypeError, match="read-only"):
        cfg["channels"] = 3
    changed = cfg.with_values(channels=3)
    assert changed.channels == 3 and cfg.channels != 3


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(["--config", str(tmp_path / "nope.yaml")])
    with pytest.raises(UsageError, match="unexpected argument 'a'"):
        load_config(["a", "2"])


def test_exponent_without_a_dot_in_a_recipe_file_is_a_number(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"base: {DEFAULT_CONFIG}\nmax_lr: 1e-4\nlr_step_size: 65000\noutput_dir: 1e3x\n")
    cfg = load_config(["--config", str(recipe)])
    assert cfg.max_lr == 1e-4 and isinstance(cfg.max_lr, float) and cfg.output_dir == "1e3x"
    assert yaml.safe_load(recipe.read_text())["max_lr"] == "1e-4"      # what plain PyYAML would have given


def test_every_key_with_a_range_refuses_a_bad_value_naming_key_value_and_rule():
    from src.recipe_keys import RULES
    tried = 0
    for key, rule in RULES.items():
        bad = rule.bad_example()
        if bad is None:
            continue
        text = str(bad).lower() if isinstance(bad, bool) else str(bad)
        with pytest.raises(ValueError, match=f"^(--)?{key}: ") as err:
            load_config([f"--{key}", text])
        assert "expected" in str(err.value), str(err.value)
        tried += 1
    assert tried >= 50
    with pytest.raises(ValueError, match=r"channels: got -5; expected an integer >= 1"):
        load_config(["--channels", "-5"])
    with pytest.raises(ValueError, match=r"crop_seconds: got 0.0; expected a number >= 0.1"):
        load_config(["--crop_seconds", "0"])
    with pytest.raises(ValueError, match="channels: got 100; expected a multiple of res2net_scale"):
        load_config(["--channels", "100"])


def test_recipe_files_are_checked_like_the_command_line(tmp_path):
    bad_value = tmp_path / "bad_value.yaml"
    bad_value.write_text(f"base: {DEFAULT_CONFIG}\nscore_norm: znorm\n")
    with pytest.raises(ValueError, match="score_norm: got 'znorm'; expected one of none, snorm, asnorm"):
        load_config(["--config", str(bad_value)])
    full = yaml.safe_load(open(DEFAULT_CONFIG))
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(yaml.safe_dump(dict(full, chanels=3)))
    with pytest.raises(ValueError, match="unknown.yaml: unknown keys chanels"):
        load_config(["--config", str(unknown)])
    partial = tmp_path / "partial.yaml"
    partial.write_text("seed: 3\n")
    with pytest.raises(ValueError, match="partial.yaml: a recipe without 'base: <recipe file>' must hold every key"):
        load_config(["--config", str(partial)])
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n")
    with pytest.raises(ValueError, match="empty.yaml: the recipe file is empty"):
        load_config(["--config", str(empty)])
    listed = tmp_path / "list.yaml"
    listed.write_text("- seed\n- 3\n")
    with pytest.raises(ValueError, match="list.yaml: expected a mapping of key: value at the top level, got list"):
        load_config(["--config", str(listed)])
