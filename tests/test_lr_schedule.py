"""Cyclic learning rate against the schedule written out independently (position inside the cycle)."""
import numpy as np
import pytest
import mindspore as ms
from mindspore import nn

from src.train.schedule import CyclicLR


def reference_lr(step, base_lr, max_lr, step_size, mode, warmup_steps=0):
    """Smith's triangle by cases: up for step_size steps, down for step_size steps, peak halved each cycle."""
    cycle_index, position = divmod(step, 2 * step_size)
    rise = position / step_size if position < step_size else 2.0 - position / step_size
    peak = max_lr - base_lr
    if mode == "triangular2":
        peak = peak / (2 ** cycle_index)
    lr = base_lr + peak * rise
    if warmup_steps and step < warmup_steps:
        lr *= (step + 1) / warmup_steps
    return lr


CASES = [("triangular", 7, 0), ("triangular2", 7, 0), ("triangular2", 5, 12), ("triangular", 1, 3)]


def test_known_points_of_the_older_zoo_schedule():
    # base 1e-6, max 1e-4: start at base, peak after step_size, back to base after a cycle, half peak in cycle 2.
    schedule = CyclicLR(1e-6, 1e-4, 100, "triangular2")
    lr = [float(schedule(ms.Tensor(step, ms.int32)).asnumpy()) for step in (0, 100, 200, 300)]
    np.testing.assert_allclose(lr, [1e-6, 1e-4, 1e-6, 1e-6 + (1e-4 - 1e-6) / 2], rtol=2e-6)


@pytest.mark.parametrize("mode,step_size,warmup", CASES)
def test_graph_schedule_matches_reference(mode, step_size, warmup):
    schedule = CyclicLR(1e-6, 1e-4, step_size, mode, warmup)
    for step in range(0, 6 * step_size + 3):
        got = float(schedule(ms.Tensor(step, ms.int32)).asnumpy())
        np.testing.assert_allclose(got, reference_lr(step, 1e-6, 1e-4, step_size, mode, warmup), rtol=2e-6)


def test_adam_reads_the_rate_at_its_global_step():
    weight = ms.Parameter(ms.Tensor(np.ones(3, np.float32)), name="w")
    adam = nn.Adam([weight], learning_rate=CyclicLR(1e-6, 1e-4, 4, "triangular2"))
    grads = (ms.Tensor(np.ones(3, np.float32)),)
    for _ in range(6):
        adam(grads)
    assert int(adam.global_step.asnumpy()[0]) == 6
    np.testing.assert_allclose(float(adam.get_lr().asnumpy()), reference_lr(6, 1e-6, 1e-4, 4, "triangular2"),
                               rtol=2e-6)


def test_bad_settings_name_the_field():
    with pytest.raises(ValueError, match="lr_mode"):
        CyclicLR(mode="cosine")
    with pytest.raises(ValueError, match="lr_step_size"):
        CyclicLR(step_size=0)
    with pytest.raises(ValueError, match="base_lr"):
        CyclicLR(base_lr=1e-3, max_lr=1e-4)
