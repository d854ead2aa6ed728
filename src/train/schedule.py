"""Cyclic learning rate (Smith 2017, "Cyclical Learning Rates for Training Neural Networks") with optional warm-up.

The rate moves linearly from ``base_lr`` up to ``max_lr`` over ``step_size`` steps and back down over the next
``step_size`` steps, so one cycle is ``2 * step_size`` steps::

    cycle = floor(1 + step / (2 * step_size))          # 1, 2, 3, ...
    x     = |step / step_size - 2 * cycle + 1|          # 1 -> 0 -> 1 within a cycle
    lr    = base_lr + (max_lr - base_lr) * max(0, 1 - x) * scale(cycle)

with ``scale = 1`` for "triangular" and ``scale = 1 / 2 ** (cycle - 1)`` for "triangular2" (the peak halves every
cycle). The older zoo recipe used base_lr 1e-6, max_lr 1e-4. An optional linear warm-up multiplies the rate by
``min(1, (step + 1) / warmup_steps)``.

``step`` is the GLOBAL step: the number of optimizer updates made so far (the optimizer's ``global_step``), the same
on every rank of a data-parallel run. Changing the world size changes the number of updates per epoch (each update
sees ``world_size * batch_size`` utterances); to keep the same number of cycles per epoch, scale ``step_size`` (and
``warmup_steps``) by ``old_world_size / new_world_size``.
"""
import mindspore as ms
from mindspore import nn, ops

MODES = ("triangular", "triangular2")


def _check(base_lr, max_lr, step_size, mode, warmup_steps):
    if mode not in MODES:
        raise ValueError(f"lr_mode: expected one of {', '.join(MODES)}, got '{mode}'")
    if int(step_size) <= 0:
        raise ValueError(f"lr_step_size: expected a positive number of steps, got {step_size}")
    if base_lr < 0 or max_lr < base_lr:
        raise ValueError(f"base_lr/max_lr: expected 0 <= base_lr <= max_lr, got {base_lr} and {max_lr}")
    if int(warmup_steps) < 0:
        raise ValueError(f"lr_warmup_steps: expected >= 0, got {warmup_steps}")


class CyclicLR(nn.learning_rate_schedule.LearningRateSchedule):
    """The schedule above as a graph Cell for ``nn.Adam(learning_rate=...)``: global_step (int32 scalar) -> float32
    lr.

    The optimizer passes its own ``global_step``, which is saved in checkpoints, so a resumed run continues the
    schedule exactly where it stopped.
    """

    def __init__(self, base_lr=1e-6, max_lr=1e-4, step_size=65000, mode="triangular2", warmup_steps=0):
        super().__init__()
        _check(base_lr, max_lr, step_size, mode, warmup_steps)
        self.base_lr = float(base_lr)
        self.amplitude = float(max_lr) - float(base_lr)
        self.step_size = float(step_size)
        self.halve_each_cycle = mode == "triangular2"
        self.warmup_steps = float(warmup_steps)

    def construct(self, global_step):
        step = global_step.astype(ms.float32)
        cycle = ops.floor(1.0 + step / (2.0 * self.step_size))
        x = ops.abs(step / self.step_size - 2.0 * cycle + 1.0)
        rise = ops.maximum(1.0 - x, 0.0)
        if self.halve_each_cycle:
            rise = rise * ops.pow(0.5, cycle - 1.0)
        lr = self.base_lr + self.amplitude * rise
        if self.warmup_steps > 0:
            lr = lr * ops.minimum((step + 1.0) / self.warmup_steps, 1.0)
        return lr


class FrozenFor(nn.learning_rate_schedule.LearningRateSchedule):
    """``schedule``'s rate from global step ``steps`` on, 0 before: the parameters it drives stay exactly as they are
    for the first ``steps`` updates (Adam scales its whole update, L2 weight decay included, by the rate)."""

    def __init__(self, schedule, steps):
        super().__init__()
        self.schedule = schedule
        self.steps = float(steps)

    def construct(self, global_step):
        thawed = (global_step.astype(ms.float32) >= self.steps).astype(ms.float32)
        return self.schedule(global_step) * thawed


def schedule_from_config(cfg):
    """The CyclicLR of a recipe (keys base_lr, max_lr, lr_step_size, lr_mode, lr_warmup_steps)."""
    return CyclicLR(cfg.base_lr, cfg.max_lr, cfg.lr_step_size, cfg.lr_mode, cfg.lr_warmup_steps)
