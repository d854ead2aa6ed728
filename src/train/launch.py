"""What the data-parallel launch scripts ask before any rank starts (scripts/run_distribute_train_*.sh).

``python -m src.train.launch freeze_config OUT [--config PATH] [--key value ...]`` writes the resolved recipe with
relative paths made absolute, so processes started in per-rank working folders all read the same files, and with the
model keys of the checkpoint the run starts from (resume or ``init_checkpoint``: a contradicting ``--key`` is refused
here, before any rank starts);
``python -m src.train.launch output_dir [--key value ...]`` prints the recipe's output folder as an absolute path.
"""
from src.mindspore_log import route_mindspore_log

if __name__ == "__main__":
    route_mindspore_log()       # first: MindSpore's C++ logger reads its settings when the imports below load it

import os
import sys

from src.cli import run_command
from src.config import UsageError, parse_recipe_args, recipe_parser, resume_flag_to_value, save_config
from src.train.loop import starting_point

# Folders and files a run writes, which may not exist yet when the recipe is frozen: made absolute whenever set.
PATH_KEYS_WHEN_MISSING = ("output_dir", "train_list_dir", "eval_output_dir", "export_file", "infer_dir")


def _absolute(key, value, base_dir):
    if not isinstance(value, str) or not value or os.path.isabs(value):
        return value
    candidate = os.path.join(base_dir, value)
    if key in PATH_KEYS_WHEN_MISSING or os.path.exists(candidate):
        return os.path.normpath(candidate)
    return value


def absolute_paths(cfg, base_dir):
    """Copy of ``cfg`` with relative paths made absolute against ``base_dir``: string values (and the strings of
    list values, e.g. ``exclude_trials``, ``trials``) naming an existing file or folder there, and the output paths
    of ``PATH_KEYS_WHEN_MISSING`` (``train_list_dir``, ...) even before they exist. ``resume: latest`` stays."""
    out = {}
    for key, value in cfg.items():
        if isinstance(value, list):
            out[key] = [_absolute(key, v, base_dir) for v in value]
        else:
            out[key] = _absolute(key, value, base_dir)
    return type(cfg)(out)


def main(argv=None):
    parser = recipe_parser("Launch-script helper: print the recipe's output folder, or freeze the recipe with "
                           "absolute paths for per-rank working folders.")
    parser.add_argument("command", choices=("output_dir", "freeze_config"))
    parser.add_argument("out", nargs="?", help="freeze_config: the YAML file to write")
    cfg, args = parse_recipe_args(parser, resume_flag_to_value(sys.argv[1:] if argv is None else argv))
    if args.command == "output_dir":
        print(os.path.abspath(cfg.output_dir))
        return 0
    if not args.out:
        raise UsageError("freeze_config needs the YAML file to write: freeze_config OUT.yaml [--key value ...]")
    cfg, _, _ = starting_point(cfg)
    cfg = absolute_paths(cfg, os.getcwd())
    save_config(cfg, args.out)
    print(cfg["output_dir"])
    return 0


if __name__ == "__main__":
    run_command(main)
