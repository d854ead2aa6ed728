"""Data-parallel set-up: which rank this process is, how many there are, and gradient averaging across them.

Launch scripts start one process per device (``run_distribute_train_ascend.sh`` from an HCCL rank table,
``run_distribute_train_gpu.sh`` / ``run_distribute_train_cpu.sh`` with ``msrun``) and pass ``--distributed true``.
Each process then calls ``init_data_parallel``: MindSpore's collective communication (HCCL on Ascend, NCCL on GPU,
MCCL over TCP on CPU) is initialised and every gradient is averaged over the ranks before the optimizer step, so all
ranks keep identical parameters. Each rank reads its own shard of every epoch (see ``src/data``).

``python -m src.train.distributed freeze_config OUT [--config PATH] [--key value ...]`` writes the resolved recipe with
relative paths made absolute, so processes started in per-rank working folders all read the same files, and with the
model keys of the checkpoint the run starts from (resume or ``init_checkpoint``: a contradicting ``--key`` is refused
here, before any rank starts);
``python -m src.train.distributed output_dir [--key value ...]`` prints the recipe's output folder as an absolute path.
"""
import os
import sys
from dataclasses import dataclass

import numpy as np
import mindspore as ms
from mindspore import nn, ops
from mindspore.context import ParallelMode

from src.cli import run_command
from src.config import UsageError, parse_recipe_args, recipe_parser, resume_flag_to_value, save_config


@dataclass(frozen=True)
class RankInfo:
    """This process's rank (0-based) among ``size`` data-parallel processes."""
    rank: int = 0
    size: int = 1

    @property
    def is_main(self):
        """True on the rank that writes checkpoints, logs and summaries."""
        return self.rank == 0


def init_data_parallel(enabled):
    """Start collective communication and data-parallel gradient averaging when ``enabled``; -> RankInfo.

    Call after ``src.device.setup_device`` and before building the training network.
    """
    if not enabled:
        return RankInfo()
    from mindspore.communication import get_group_size, get_rank, init
    init()
    info = RankInfo(rank=get_rank(), size=get_group_size())
    ms.reset_auto_parallel_context()
    ms.set_auto_parallel_context(parallel_mode=ParallelMode.DATA_PARALLEL, gradients_mean=True,
                                 device_num=info.size)
    return info


class _Barrier(nn.Cell):
    """Sum of one number over all ranks; returns only when every rank has called it."""

    def __init__(self):
        super().__init__()
        self.all_reduce = ops.AllReduce()

    def construct(self, x):
        return self.all_reduce(x)


def barrier(info):
    """Wait until every rank reaches this point (no-op in a single process)."""
    if info.size > 1:
        _rank_sum(1.0)


_SUM = []


def _rank_sum(value):
    """Sum of one float over all ranks (one compiled AllReduce, made on first use)."""
    if not _SUM:
        _SUM.append(_Barrier())
    return float(_SUM[0](ms.Tensor(np.full(1, value, np.float32))).asnumpy()[0])


def any_rank(flag):
    """True when ``flag`` is True on any rank."""
    return _rank_sum(float(flag)) > 0


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
    from src.train.loop import starting_point     # loop.py imports this module
    cfg, _, _ = starting_point(cfg)
    cfg = absolute_paths(cfg, os.getcwd())
    save_config(cfg, args.out)
    print(cfg["output_dir"])
    return 0


if __name__ == "__main__":
    run_command(main)
