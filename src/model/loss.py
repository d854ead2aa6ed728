"""Additive angular margin softmax (AAM-softmax, ArcFace) for speaker classification during training.

logits = scale * cos(theta_j + margin * [j == label]), where theta_j is the angle between the embedding and class
weight j; the loss is the cross-entropy of these logits. When theta + margin would pass pi, the target logit falls
back to ``cos(theta) - margin * sin(margin)`` so it keeps decreasing with theta (the threshold form used by
SpeechBrain and WeSpeaker).
"""
import math

import mindspore as ms
from mindspore import nn, ops, Parameter, Tensor
from mindspore.common.initializer import initializer, XavierUniform

NORM_EPS = 1e-12      # added to the squared norm before the square root
SINE_EPS = 1e-12      # floor for 1 - cos^2 under the square root: finite value and gradient at cos = +-1


def l2_normalize(x, axis=-1):
    """x / sqrt(sum(x * x) + eps) along ``axis`` (written out: ops.L2Normalize's backward is slow on CPU)."""
    return x / ops.sqrt((x * x).sum(axis=axis, keepdims=True) + NORM_EPS)


def margin_at_step(step, margin, warmup_steps, start=0.0):
    """Margin for training step ``step`` (0-based): linear from ``start`` to ``margin`` over ``warmup_steps`` steps,
    then ``margin``; ``warmup_steps`` 0 means a fixed margin from the start."""
    if warmup_steps <= 0:
        return float(margin)
    return float(start) + (float(margin) - float(start)) * min(1.0, max(0, step) / float(warmup_steps))


class AAMSoftmax(nn.Cell):
    """Class weights and the AAM-softmax loss.

    ``construct(embeddings, labels)``: embeddings (B, embedding_size) float32, labels (B,) int32 class indices ->
    scalar mean cross-entropy. Parameter ``weight`` (num_classes, embedding_size) holds one row per class (the older
    zoo's ``classifier.weight``). The margin lives in a non-trainable Parameter, so ``set_margin`` changes it without
    recompiling the graph.
    """

    def __init__(self, embedding_size, num_classes, margin=0.2, scale=30.0):
        super().__init__()
        self.num_classes = num_classes
        self.scale = float(scale)
        self.weight = Parameter(initializer(XavierUniform(), (num_classes, embedding_size), ms.float32),
                                name="weight")
        self.margin = Parameter(Tensor(float(margin), ms.float32), name="margin", requires_grad=False)

    def set_margin(self, value):
        """Use margin ``value`` (radians) from the next call on, also in graphs already compiled.

        Compiled graphs see the new value when they hold this Cell as a Cell (e.g. nn.TrainOneStepCell, or a Cell
        whose construct calls it) or take it as an argument; a ``ms.jit`` function that merely closes over the Cell
        keeps the Parameter values of its compile time in MindSpore 2.10.
        """
        self.margin.set_data(Tensor(float(value), ms.float32))

    def cosine_logits(self, embeddings):
        """(B, embedding_size) -> (B, num_classes) cosine between each embedding and each class weight (no margin,
        no scale), e.g. for training accuracy."""
        return ops.matmul(l2_normalize(embeddings), l2_normalize(self.weight).T)

    def margin_logits(self, embeddings, labels):
        """(B, embedding_size), (B,) int32 -> (B, num_classes) scaled logits with the margin on the target class."""
        cosine = self.cosine_logits(embeddings)
        sine = ops.sqrt(ops.maximum(1.0 - cosine * cosine, SINE_EPS))
        cos_m = ops.cos(self.margin)
        sin_m = ops.sin(self.margin)
        phi = cosine * cos_m - sine * sin_m                                 # cos(theta + m)
        threshold = ops.cos(math.pi - self.margin)                          # theta + m > pi  <=>  cos < threshold
        phi = ops.select(cosine > threshold, phi, cosine - self.margin * sin_m)
        target = self.one_hot(labels)
        return self.scale * (target * phi + (1.0 - target) * cosine)

    def one_hot(self, labels):
        """(B,) int32 -> (B, num_classes) float32 one-hot rows."""
        return ops.one_hot(labels, self.num_classes, Tensor(1.0, ms.float32), Tensor(0.0, ms.float32))

    def construct(self, embeddings, labels):
        logits = self.margin_logits(embeddings, labels)
        target = self.one_hot(labels)
        return -(target * ops.log_softmax(logits, axis=-1)).sum(axis=-1).mean()
