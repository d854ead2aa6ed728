"""Recipe configuration: one flat YAML file per recipe, every key overridable as ``--key value``.

Example::

    cfg = load_config(["--config", "configs/demo_config.yaml", "--channels", "256"])
    cfg.channels          # 256 (typed like the YAML value it replaces)

Values given on the command line are parsed like the YAML file (``RecipeLoader``), so ``--global_context false``,
``--lr 1e-4`` and ``--crop_seconds [2, 3]`` become a bool, a float and a list.
"""
import argparse
import os
import re

import yaml

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              "configs", "ecapa-tdnn_config.yaml")


class RecipeLoader(yaml.SafeLoader):
    """``yaml.safe_load`` that also reads exponents without a dot (``1e-4``, ``6.5E4``) as floats, as YAML 1.2 does;
    PyYAML follows YAML 1.1 and leaves them strings. Used for recipe files and command-line values alike."""


RecipeLoader.add_implicit_resolver("tag:yaml.org,2002:float",
                                   re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$"),
                                   list("-+0123456789."))


class Config(dict):
    """A dict whose keys can also be read as attributes (``cfg.channels``)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"config has no key '{name}'") from None

    def __setattr__(self, name, value):
        self[name] = value


def read_yaml(path):
    """Read a recipe file into a Config; errors name the file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file not found: {path}")
    with open(path, encoding="utf-8") as f:
        try:
            data = yaml.load(f, Loader=RecipeLoader) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of key: value at the top level")
    return Config(data)


def _parse_value(key, text, default):
    """Parse a command-line string into the type of the YAML default it overrides."""
    try:
        value = yaml.load(text, Loader=RecipeLoader)
    except yaml.YAMLError:
        value = text
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"--{key}: expected true or false, got '{text}'")
        return value
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if type(default) is int and isinstance(value, float) and value.is_integer():
        return int(value)                                   # --lr_step_size 6.5e4
    if isinstance(default, str):
        return text
    if isinstance(default, (int, float)) and not isinstance(value, (int, float)):
        raise ValueError(f"--{key}: expected a number, got '{text}'")
    if isinstance(default, list) and not isinstance(value, list):
        return [value]
    return value


def apply_overrides(cfg, args):
    """Apply ``["--key", "value", "--other=value", ...]`` to ``cfg``; unknown keys are an error."""
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise ValueError(f"unexpected argument '{arg}': overrides are written --key value")
        if "=" in arg:
            key, text = arg[2:].split("=", 1)
            i += 1
        else:
            key = arg[2:]
            if i + 1 >= len(args):
                raise ValueError(f"--{key}: missing value")
            text = args[i + 1]
            i += 2
        if key not in cfg:
            raise ValueError(f"--{key}: unknown config key; known keys: {', '.join(sorted(cfg))}")
        cfg[key] = _parse_value(key, text, cfg[key])
    return cfg


def load_config(argv=None, default_path=DEFAULT_CONFIG, description=None):
    """Read ``--config PATH`` (default ``default_path``) and apply every other ``--key value``."""
    parser = argparse.ArgumentParser(description=description, add_help=True,
                                     epilog="Any key of the YAML file can be overridden as --key value.")
    parser.add_argument("--config", default=default_path, help="recipe YAML file")
    known, rest = parser.parse_known_args(argv)
    cfg = read_yaml(known.config)
    apply_overrides(cfg, rest)
    cfg["config"] = known.config
    return cfg


def save_config(cfg, path):
    """Write the resolved configuration (after overrides) so a run can be reproduced."""
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(dict(cfg), f, sort_keys=False)
