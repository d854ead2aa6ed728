"""Recipe configuration: one YAML file per recipe, every key overridable as ``--key value``.

A recipe file is a flat mapping of keys to values. It may start with ``base: other.yaml`` (a path relative to the
file): it then holds only what differs from that recipe, and a key the base does not have is refused. A file
without a base is a full recipe: it holds every key of src/recipe_keys.py and no other. Every value, from files
and the command line alike, is checked against its rule there when the recipe is loaded.

Example::

    cfg = load_config(["--config", "configs/demo_config.yaml", "--channels", "256"])
    cfg.channels          # 256 (typed like the YAML value it replaces)

Values given on the command line are parsed like the YAML file (``RecipeLoader``), so ``--global_context false``,
``--lr 1e-4`` and ``--crop_seconds [2, 3]`` become a bool, a float and a list. A loaded recipe is read-only: library
code takes the values it needs as arguments, and a changed copy is made with ``cfg.with_values(key=value)``.
"""
import argparse
import difflib
import os
import re

import yaml

from src.recipe_keys import RULES, check_recipe

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              "configs", "ecapa-tdnn_config.yaml")
BASE_KEY = "base"


class UsageError(ValueError):
    """A command line that cannot be parsed (unknown option, missing value): exit status 2."""


class RecipeLoader(yaml.SafeLoader):
    """``yaml.safe_load`` that also reads exponents without a dot (``1e-4``, ``6.5E4``) as floats, as YAML 1.2 does;
    PyYAML follows YAML 1.1 and leaves them strings. Used for recipe files and command-line values alike."""


RecipeLoader.add_implicit_resolver("tag:yaml.org,2002:float",
                                   re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$"),
                                   list("-+0123456789."))


class Config(dict):
    """A read-only dict whose keys can also be read as attributes (``cfg.channels``). ``given`` holds the keys
    set on the command line (they win over what a checkpoint carries, src/checkpoint.py recipe_for_checkpoint)."""

    def __init__(self, values=(), given=()):
        super().__init__(values)
        object.__setattr__(self, "given", frozenset(given))

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"config has no key '{name}'") from None

    def _read_only(self, *args, **kwargs):
        raise TypeError("a loaded recipe is read-only; make a changed copy with cfg.with_values(key=value)")

    __setattr__ = __setitem__ = __delitem__ = _read_only
    update = pop = popitem = clear = setdefault = _read_only

    def __reduce__(self):          # pickling (dataset worker processes) must not go through __setitem__
        return Config, (dict(self), self.given)

    def with_values(self, **changes):
        """A copy with some values changed (keys must exist)."""
        unknown = sorted(set(changes) - set(self))
        if unknown:
            raise KeyError(f"with_values: unknown config keys {unknown}")
        return Config({**self, **changes}, self.given)


def _load_yaml_file(path):
    """One recipe file -> dict; errors name the file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file not found: {path}")
    with open(path, encoding="utf-8") as f:
        try:
            data = yaml.load(f, Loader=RecipeLoader)
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: not valid YAML: {err}") from None
    if data is None:
        raise ValueError(f"{path}: the recipe file is empty; expected a mapping of key: value")
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of key: value at the top level, got {type(data).__name__}")
    return data


def read_yaml(path, _seen=()):
    """Read a recipe file, with its ``base`` recipe resolved, into a Config; errors name the file and key."""
    path = os.path.abspath(path)
    if path in _seen:
        raise ValueError(f"{path}: base recipes form a loop: {' -> '.join(_seen + (path,))}")
    data = _load_yaml_file(path)
    base = data.pop(BASE_KEY, None)
    if base is None:
        unknown, missing = sorted(set(data) - set(RULES)), sorted(set(RULES) - set(data))
        if unknown:
            raise ValueError(f"{path}: unknown keys {', '.join(unknown)} (known keys: see src/recipe_keys.py)")
        if missing:
            raise ValueError(f"{path}: a recipe without 'base: <recipe file>' must hold every key; missing "
                             f"{', '.join(missing)}")
        return Config(data)
    merged = dict(read_yaml(os.path.join(os.path.dirname(path), str(base)), _seen + (path,)))
    unknown = sorted(set(data) - set(merged))
    if unknown:
        raise ValueError(f"{path}: keys not in its base recipe {base}: {', '.join(unknown)}")
    merged.update(data)
    return Config(merged)


def _parse_value(key, text, default):
    """Parse a command-line string into the type of the YAML default it overrides."""
    if isinstance(default, str):
        return text
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
    if isinstance(default, (int, float)) and not isinstance(value, (int, float)):
        raise ValueError(f"--{key}: expected a number, got '{text}'")
    if isinstance(default, list) and not isinstance(value, list):
        return [value]
    return value


class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of exiting, so every command ends on a bad command line alike, and
    takes no abbreviated options (``--chan 3`` is not ``--channels 3``)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def error(self, message):
        raise UsageError(message)


RECIPE_DEST = "recipe:"     # argparse destination prefix of the recipe keys' options


def recipe_parser(description=None, default_path=DEFAULT_CONFIG):
    """The argument parser every recipe command starts from: ``--config PATH`` plus ``--key value`` for every key
    of the recipe. A command adds its own options and positionals to it before calling ``parse_recipe_args``."""
    parser = ArgumentParser(description=description,
                            epilog="Any key of the recipe file can be overridden as --key value.")
    parser.add_argument("--config", default=default_path, help="recipe YAML file (default: %(default)s)")
    return parser


def parse_recipe_args(parser, argv=None):
    """-> (recipe Config with the ``--key value`` overrides applied, the command's own options as a Namespace).

    The recipe file is read first (``--config``); each of its keys then becomes an option of ``parser``, so a key's
    value is never mistaken for a positional argument and an unknown option is refused by name."""
    first = ArgumentParser(add_help=False)
    first.add_argument("--config", default=parser.get_default("config"))
    known, _ = first.parse_known_args(argv)
    recipe = read_yaml(known.config)
    keys = parser.add_argument_group("recipe keys", "override any key of the recipe file")
    for key in recipe:
        keys.add_argument(f"--{key}", dest=RECIPE_DEST + key, metavar="VALUE", default=argparse.SUPPRESS)
    args, rest = parser.parse_known_args(argv)
    if rest:
        unknown = next((a for a in rest if a.startswith("--")), rest[0])
        if unknown.startswith("--"):
            name = unknown.split("=")[0]
            close = difflib.get_close_matches(name[2:], recipe, n=3)
            hint = f"did you mean {', '.join('--' + k for k in close)}? " if close else ""
            raise UsageError(f"{name}: unknown config key; {hint}(--help lists every key)")
        raise UsageError(f"unexpected argument '{unknown}'")
    values, given = dict(recipe), []
    for dest in [d for d in vars(args) if d.startswith(RECIPE_DEST)]:
        key = dest[len(RECIPE_DEST):]
        values[key] = _parse_value(key, getattr(args, dest), recipe[key])
        given.append(key)
        delattr(args, dest)
    check_recipe(values, f"recipe {known.config} with the command line's overrides")
    return Config(dict(values, config=known.config), given), args


def load_config(argv=None, default_path=DEFAULT_CONFIG, description=None):
    """Read ``--config PATH`` (default ``default_path``) and apply every other ``--key value`` -> Config."""
    cfg, _ = parse_recipe_args(recipe_parser(description, default_path), argv)
    return cfg


def resume_flag_to_value(argv):
    """Command-line arguments with a bare ``--resume`` (last, or followed by another option) made ``--resume
    latest``; the launch scripts and train.py both read their arguments through this."""
    argv = list(argv)
    for i, arg in enumerate(argv):
        if arg == "--resume" and (i + 1 == len(argv) or argv[i + 1].startswith("--")):
            argv.insert(i + 1, "latest")
            break
    return argv


def save_config(cfg, path):
    """Write the resolved configuration (after overrides) as a full recipe, so ``--config path`` reproduces the run
    (the ``config`` entry, the file it was read from, is not a recipe key and stays out)."""
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump({key: value for key, value in cfg.items() if key != "config"}, f, sort_keys=False)
