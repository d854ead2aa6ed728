"""Data-parallel set-up: which rank this process is, how many there are, and gradient averaging across them.

Launch scripts start one process per device (``run_distribute_train_ascend.sh`` from an HCCL rank table,
``run_distribute_train_gpu.sh`` / ``run_distribute_train_cpu.sh`` with ``msrun``) and pass ``--distributed true``.
Each process then calls ``init_data_parallel``: MindSpore's collective communication (HCCL on Ascend, NCCL on GPU,
MCCL over TCP on CPU) is initialised and every gradient is averaged over the ranks before the optimizer step, so all
ranks keep identical parameters. Each rank reads its own shard of every epoch (see ``src/data``). What the launch
scripts ask before any rank starts (the output folder, the frozen recipe) is src/train/launch.py.
"""
from dataclasses import dataclass

import numpy as np
import mindspore as ms
from mindspore import nn, ops
from mindspore.context import ParallelMode


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
