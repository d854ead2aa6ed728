"""src/model/loss.py: AAM-softmax against a float64 NumPy reference, the cos = +-1 edge cases, gradients, margin warm-up."""
import math

import numpy as np
import pytest
import mindspore as ms
from mindspore import nn

from src.model.loss import AAMSoftmax, margin_at_step

EMB, CLASSES = 16, 10


def reference_aam(embeddings, weight, labels, margin, scale):
    """Plain float64 AAM-softmax: returns (mean loss, (B, classes) logits with the margin on the target)."""
    e = embeddings.astype(np.float64)
    w = weight.astype(np.float64)
    cos = (e / np.linalg.norm(e, axis=1, keepdims=True)) @ (w / np.linalg.norm(w, axis=1, keepdims=True)).T
    cos = np.clip(cos, -1.0, 1.0)
    theta = np.arccos(cos)
    # cos(theta + m) while theta + m <= pi, else cos(theta) - m * sin(m) (keeps the logit falling with theta)
    phi = np.where(theta + margin <= math.pi, np.cos(theta + margin), cos - margin * math.sin(margin))
    target = np.eye(weight.shape[0])[labels]
    logits = scale * np.where(target > 0, phi, cos)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_prob = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return -(log_prob * target).sum(axis=1).mean(), logits


def make_batch(seed=0, batch=6):
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((batch, EMB)).astype(np.float32)
    labels = rng.integers(0, CLASSES, batch).astype(np.int32)
    return emb, labels


class LossAndGrads(nn.Cell):
    """GRAPH-mode (embeddings, labels) -> (loss, (d loss / d embeddings, (d loss / d weight,)))."""

    def __init__(self, loss_cell):
        super().__init__()
        self.grad_fn = ms.value_and_grad(loss_cell, grad_position=0, weights=loss_cell.trainable_params())

    def construct(self, embeddings, labels):
        return self.grad_fn(embeddings, labels)


def loss_and_grads(loss_cell, embeddings, labels):
    return LossAndGrads(loss_cell)(embeddings, labels)


@pytest.mark.parametrize("margin,scale", [(0.2, 30.0), (0.0, 30.0), (0.5, 10.0)])
def test_loss_matches_numpy(margin, scale):
    emb, labels = make_batch()
    cell = AAMSoftmax(EMB, CLASSES, margin=margin, scale=scale)
    weight = cell.weight.asnumpy()
    # rows 0 and 1 point almost opposite to their class weight: theta + m > pi takes the fallback branch
    emb[0] = -weight[labels[0]] + 0.01 * emb[0]
    emb[1] = -weight[labels[1]] + 0.05 * emb[1]
    ref_loss, ref_logits = reference_aam(emb, weight, labels, margin, scale)
    loss = cell(ms.Tensor(emb), ms.Tensor(labels)).asnumpy()
    logits = cell.margin_logits(ms.Tensor(emb), ms.Tensor(labels)).asnumpy()
    assert loss.shape == ()
    np.testing.assert_allclose(loss, ref_loss, rtol=0, atol=1e-5)
    np.testing.assert_allclose(logits, ref_logits, rtol=0, atol=1e-5)


def test_fallback_branch_is_exercised():
    """The rows built to be nearly opposite their class really fall past pi with margin 0.2 (theta > pi - 0.2)."""
    emb, labels = make_batch()
    cell = AAMSoftmax(EMB, CLASSES)
    weight = cell.weight.asnumpy()
    emb[0] = -weight[labels[0]] + 0.01 * emb[0]
    cos = cell.cosine_logits(ms.Tensor(emb)).asnumpy()
    assert cos[0, labels[0]] < math.cos(math.pi - 0.2)


def test_cosine_logits_have_no_margin():
    emb, _ = make_batch(1)
    cell = AAMSoftmax(EMB, CLASSES)
    w = cell.weight.asnumpy().astype(np.float64)
    e = emb.astype(np.float64)
    ref = (e / np.linalg.norm(e, axis=1, keepdims=True)) @ (w / np.linalg.norm(w, axis=1, keepdims=True)).T
    np.testing.assert_allclose(cell.cosine_logits(ms.Tensor(emb)).asnumpy(), ref, rtol=0, atol=1e-6)


def test_cosine_plus_minus_one_gives_finite_value_and_gradients():
    """An embedding equal to its class weight (cos = 1) and one equal to the negative (cos = -1)."""
    emb, labels = make_batch(2, batch=4)
    cell = AAMSoftmax(EMB, CLASSES)
    weight = cell.weight.asnumpy()
    emb[0] = weight[labels[0]]
    emb[1] = -weight[labels[1]]
    emb[2] = 3.0 * weight[labels[2]]
    # the target cosines really reach +-1 (to within a few float32 rounding steps of 6e-8)
    cos = cell.cosine_logits(ms.Tensor(emb)).asnumpy()[np.arange(3), labels[:3]]
    np.testing.assert_allclose(cos, [1.0, -1.0, 1.0], rtol=0, atol=3e-7)
    loss, (grad_emb, (grad_weight,)) = loss_and_grads(cell, ms.Tensor(emb), ms.Tensor(labels))
    assert np.isfinite(loss.asnumpy())
    assert np.all(np.isfinite(grad_emb.asnumpy())) and np.all(np.isfinite(grad_weight.asnumpy()))
    # At cos = -1 the fallback cos - m sin(m) involves no sine, so it is exact. Near cos = +1 a float32 cosine
    # rounded to 1 - 6e-8 (or 1 - 1.2e-7) gives sin(theta) = 3.5e-4 (4.9e-4) instead of ~0, moving the target logit
    # by up to scale * sin(m) * 4.9e-4 = 3e-3; the loss moves by (1 - p_target) times that, and p_target ~ 1 for an
    # embedding on its class weight, so the loss still matches to 1e-5 (measured 1.3e-6).
    ref_loss, _ = reference_aam(emb, weight, labels, 0.2, 30.0)
    np.testing.assert_allclose(loss.asnumpy(), ref_loss, rtol=0, atol=1e-5)


def numerical_gradient(loss_of, x, step=1e-6):
    """Central differences of the scalar function ``loss_of`` at float64 array ``x``."""
    grad = np.zeros(x.shape)
    for idx in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[idx] += step
        minus[idx] -= step
        grad[idx] = (loss_of(plus) - loss_of(minus)) / (2 * step)
    return grad


def test_gradients_match_numerical_gradients():
    """d loss / d embeddings and d loss / d weight from GRAPH-mode autodiff equal central differences of the
    float64 reference."""
    emb, labels = make_batch(3, batch=3)
    cell = AAMSoftmax(EMB, CLASSES)
    weight = cell.weight.asnumpy()
    _, (grad_emb, (grad_weight,)) = loss_and_grads(cell, ms.Tensor(emb), ms.Tensor(labels))
    numerical_emb = numerical_gradient(lambda e: reference_aam(e, weight, labels, 0.2, 30.0)[0],
                                       emb.astype(np.float64))
    numerical_weight = numerical_gradient(lambda w: reference_aam(emb, w, labels, 0.2, 30.0)[0],
                                          weight.astype(np.float64))
    np.testing.assert_allclose(grad_emb.asnumpy(), numerical_emb, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(grad_weight.asnumpy(), numerical_weight, rtol=1e-3, atol=1e-5)


def test_set_margin_reaches_compiled_train_step():
    """set_margin changes the loss computed by an already compiled train step (the margin is a Parameter, not a
    constant folded into the graph)."""
    emb, labels = make_batch(4)
    cell = AAMSoftmax(EMB, CLASSES, margin=0.2)
    weight = cell.weight.asnumpy()
    train_step = nn.TrainOneStepCell(cell, nn.SGD(cell.trainable_params(), learning_rate=0.0))
    for margin in (0.2, 0.0, 0.1):
        cell.set_margin(margin)
        loss = train_step(ms.Tensor(emb), ms.Tensor(labels)).asnumpy()
        np.testing.assert_allclose(loss, reference_aam(emb, weight, labels, margin, 30.0)[0], rtol=0, atol=1e-5)
    assert [p.name for p in cell.trainable_params()] == ["weight"]


def test_margin_at_step_warms_up_linearly():
    assert margin_at_step(0, 0.2, 100) == 0.0
    assert margin_at_step(50, 0.2, 100) == pytest.approx(0.1)
    assert margin_at_step(100, 0.2, 100) == pytest.approx(0.2)
    assert margin_at_step(10_000, 0.2, 100) == pytest.approx(0.2)
    assert margin_at_step(0, 0.2, 0) == pytest.approx(0.2)


def test_weight_shape_and_xavier_uniform_init():
    cell = AAMSoftmax(192, 7205)
    weight = cell.weight.asnumpy()
    assert weight.shape == (7205, 192) and weight.dtype == np.float32
    bound = math.sqrt(6.0 / (192 + 7205))
    assert np.abs(weight).max() <= bound
    assert weight.std() == pytest.approx(bound / math.sqrt(3.0), rel=0.02)   # uniform(-b, b) has std b / sqrt(3)


def test_training_separates_classes():
    """A few SGD steps on the class weights raise the training accuracy of fixed embeddings to 100 %."""
    rng = np.random.default_rng(5)
    centres = rng.standard_normal((CLASSES, EMB))
    labels = np.repeat(np.arange(CLASSES), 4).astype(np.int32)
    emb = (centres[labels] + 0.3 * rng.standard_normal((labels.size, EMB))).astype(np.float32)
    cell = AAMSoftmax(EMB, CLASSES)
    step = nn.TrainOneStepCell(cell, nn.SGD(cell.trainable_params(), learning_rate=0.5))
    losses = [float(step(ms.Tensor(emb), ms.Tensor(labels)).asnumpy()) for _ in range(30)]
    predicted = cell.cosine_logits(ms.Tensor(emb)).asnumpy().argmax(axis=1)
    assert losses[-1] < 0.5 * losses[0]
    assert np.all(predicted == labels)
