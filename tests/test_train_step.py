"""src/train/step.py: float32 on CPU by default; with float16 loss scaling an overflowed step changes nothing."""
import numpy as np
import pytest
import mindspore as ms

from src.config import load_config
from src.train.step import build_train_step, use_mixed_precision

TINY = ["--channels", "16", "--mfa_channels", "48", "--embedding_size", "8", "--attention_channels", "8",
        "--se_channels", "8", "--res2net_scale", "2", "--specaugment", "false", "--grad_clip_norm", "5.0"]


def test_precision_follows_the_device():
    cfg = load_config(TINY)
    assert [use_mixed_precision(cfg, t) for t in ("Ascend", "GPU", "CPU")] == [True, True, False]
    assert use_mixed_precision(load_config(TINY + ["--mixed_precision", "true"]), "CPU")
    with pytest.raises(ValueError, match="mixed_precision"):
        use_mixed_precision(load_config(TINY + ["--mixed_precision", "fp16"]), "CPU")
    step, _ = build_train_step(cfg, 4, "CPU")
    assert not step.loss_scaling
    assert all(p.dtype == ms.float32 for p in step.weights)


def test_overflowed_step_is_skipped_and_the_scale_lowered():
    # float16 network with dynamic loss scaling (what Ascend/GPU run; forced here on the CPU). A scale of 1e30
    # makes the float16 gradients overflow.
    cfg = load_config(TINY + ["--mixed_precision", "true", "--loss_scale_init", "1e30"])
    step, _ = build_train_step(cfg, 4, "CPU")
    step.set_train()
    assert step.loss_scaling
    rng = np.random.default_rng(0)
    wav = ms.Tensor(rng.standard_normal((4, 8000)).astype(np.float32) * 0.1)
    labels = ms.Tensor(np.array([0, 1, 2, 3], np.int32))

    def weights():
        return {p.name: p.asnumpy().copy() for p in step.weights}

    before = weights()
    loss, _, overflow, scale = step(wav, labels)
    assert bool(overflow.asnumpy())
    assert float(step.scale_sense.asnumpy()) == pytest.approx(5e29, rel=1e-6)     # halved for the next step
    assert int(step.optimizer.global_step.asnumpy()[0]) == 0                       # no update: LR stays put
    for name, value in weights().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)

    step.scale_sense.set_data(ms.Tensor(1.0, ms.float32))
    loss, _, overflow, _ = step(wav, labels)
    assert not bool(overflow.asnumpy()) and np.isfinite(float(loss.asnumpy()))
    assert int(step.optimizer.global_step.asnumpy()[0]) == 1
    after = weights()
    assert sum(not np.array_equal(after[n], before[n]) for n in before) > len(before) // 2
