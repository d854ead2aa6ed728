"""CPU-fast building blocks of the network, channels-last (batch, frames, channels).

On this project's CPUs MindSpore's own Conv1d with kernel > 1 runs a slow reference kernel and its BatchNorm on
(N, C) input took half a training step, so the layers here are written as matmuls:

- ``Conv1d``: a k-tap dilated convolution is k time-shifted copies of the input stacked on the channel axis followed
  by one matmul; weights are stored (out, in, k) as in PyTorch/SpeechBrain, so those weights map over directly.
- ``BatchNorm``: batch statistics as matmuls with a row of 1/N, and a written-out backward (``BatchNormTrain``).
- ``MatMulNT``: a matmul whose backward keeps MindSpore's fast transposed CPU layout (the largest layers).
- ``BiasAdd``: a bias add whose backward sums over rows with a matmul (the CPU BiasAddGrad kernel is slow).
- ``Shift``: the bias add an inference network keeps of a batch norm whose scale went into the convolution.
- ``frame_mask`` and ``reflect_frame_index``: per-utterance masks and padding, so that an utterance gets the same
  output in a padded batch as alone.

Example (the docstring examples run as doctests, tests/test_doctests.py):

>>> import numpy as np, mindspore as ms
>>> conv = Conv1d(80, 64, kernel_size=3, dilation=2)
>>> conv(ms.Tensor(np.zeros((2, 100, 80), np.float32))).shape
(2, 100, 64)
"""
import math

import numpy as np
import mindspore as ms
from mindspore import nn, ops, Parameter
from mindspore.common.initializer import initializer, Uniform

PADDING_MODES = ("reflect", "zeros")
# How pooled standard deviations are computed: "speechbrain" (biased variance floored at STD_EPS) or "wespeaker"
# (WeSpeaker's ASTP: weighted variance as E[x^2] - mean^2 floored at WESPEAKER_EPS; utterance variance unbiased,
# plus WESPEAKER_EPS).
POOLING_STATS = ("speechbrain", "wespeaker")
BN_EPS = 1e-5
STD_EPS = 1e-12        # floor of the variance before the square root in pooled statistics
WESPEAKER_EPS = 1e-7   # WeSpeaker's ASTP: var.clamp(min=1e-7) and sqrt(torch.var(x) + 1e-7)
BN_MOMENTUM = 0.9      # MindSpore convention: moving = 0.9 * moving + 0.1 * batch (PyTorch momentum 0.1)
_matmul_nt = ops.MatMul(transpose_b=True)      # (N, in) x (out, in) -> (N, out), no explicit weight transpose
# The 2-D MatMul primitive: ops.matmul (MatMulExt) took 10x as long for a (1, 3200) x (3200, 512) row sum on CPU.
_matmul = ops.MatMul()
_bias_add = ops.BiasAdd()       # a primitive: ops.bias_add's cached primitive fails to compile inside a bprop


def sum_frames(x):
    """(B, T, C) -> (B, 1, C) sum over frames, as a batched matmul with a row of ones (a reduction over the middle
    axis is several times slower on CPU)."""
    return ops.bmm(ops.ones((x.shape[0], 1, x.shape[1]), x.dtype), x)


def tanh(x):
    """tanh as 2 sigmoid(2x) - 1: MindSpore's CPU tanh kernel is off by up to 3e-5 (its sigmoid by 8e-7), which
    showed in the attention's gradients as 10-30x the error of PyTorch float32."""
    return 2.0 * ops.sigmoid(2.0 * x) - 1.0


def dense(x, weight, bias=None):
    """x (N, in) @ weight (out, in)^T + bias (out,) -> (N, out). BiasAdd, not ``+``: on CPU a broadcast add of a
    (out,) row takes twice as long as BiasAdd (which, unlike ``+``, needs both in one dtype)."""
    y = _matmul_nt(x, weight)
    return y if bias is None else ops.bias_add(y, ops.cast(bias, y.dtype))


class MatMulNT(nn.Cell):
    """x (N, in) @ weight (out, in)^T -> (N, out), whose backward also runs MindSpore's fast CPU matmul layout.

    MindSpore's CPU MatMul is fast with a transposed second operand (3200 x 3072 x 3072: 200 ms, 300 GFLOP/s) but
    3.5x slower without (730 ms). The stock backward of ``x @ w^T`` takes that slow layout twice: dx = dout @ w
    and dw = dout^T @ x. This one computes dx = dout @ (w^T)^T and dw = dout^T @ (x^T)^T, paying for transposed
    copies of w and x. Worth it when both in and out are >= LARGE_MATMUL (measured, 3200 rows: 3072 x 3072 forward +
    backward 1.5 s -> 0.8 s, 1536 x 1536 240 -> 200 ms; 1024 x 1024 got slower, 108 -> 141 ms).
    """

    def __init__(self):
        super().__init__()
        self.matmul_nt = ops.MatMul(transpose_b=True)
        self.matmul_tt = ops.MatMul(transpose_a=True, transpose_b=True)

    def construct(self, x, weight):
        return self.matmul_nt(x, weight)

    def bprop(self, x, weight, out, dout):
        return self.matmul_nt(dout, weight.transpose(1, 0)), self.matmul_tt(dout, x.transpose(1, 0))


LARGE_MATMUL = 1536       # Conv1d with k * in and out both at least this large uses MatMulNT


class BiasAdd(nn.Cell):
    """x (N, C) + bias (C,) (``ops.bias_add``), whose backward sums the gradient over rows as a matmul with a row of
    ones: MindSpore's CPU BiasAddGrad took 2 ms a call, 14 % of a C=512 train step."""

    def construct(self, x, bias):
        return ops.bias_add(x, bias)

    def bprop(self, x, bias, out, dout):
        dbias = _matmul(ops.ones((1, dout.shape[0]), dout.dtype), dout).reshape(-1)
        return dout, ops.cast(dbias, ms.float32)      # float32 as the parameters, also under mixed precision


def frame_mask(lengths, num_frames, dtype=ms.float32):
    """(B,) int32 valid frame counts -> (B, T, 1) mask, 1 on valid frames, 0 on padding.

    >>> frame_mask(ms.Tensor(np.array([3, 1], np.int32)), 4).squeeze(-1)
    Tensor(shape=[2, 4], dtype=Float32, value=
    [[ 1.00000000e+00,  1.00000000e+00,  1.00000000e+00,  0.00000000e+00],
     [ 1.00000000e+00,  0.00000000e+00,  0.00000000e+00,  0.00000000e+00]])
    """
    positions = ops.arange(num_frames, dtype=ms.int32).reshape(1, -1)
    return ops.cast(positions < lengths.reshape(-1, 1), dtype).expand_dims(-1)


def frame_weights(mask):
    """(B, T, 1) mask -> (B, 1, T) row of 1 / (valid frames) on the valid frames, 0 on padding: ``bmm(row, x)`` is
    the mean over valid frames. A reshape, not a transpose (the same memory order): MindSpore's CPU Transpose took
    1.5 ms on it."""
    batch, num_frames, _ = mask.shape
    return (mask / mask.sum(axis=1, keepdims=True)).reshape(batch, 1, num_frames)


def frame_mean_std(x, mask=None, stats="speechbrain"):
    """Mean and standard deviation over the valid frames: x (B, T, C), mask (B, T, 1) or None -> (B, C), (B, C).

    Computed as batched matmuls with a (B, 1, T) row of frame weights (half the time of a broadcast multiply on
    CPU). ``stats`` (POOLING_STATS): "speechbrain" floors the biased variance at STD_EPS before the square root;
    "wespeaker" takes the unbiased variance (n - 1, as torch.var) plus WESPEAKER_EPS.

    >>> x = ms.Tensor(np.array([[[1.0], [3.0], [100.0]]], np.float32))       # 3 frames, the last one padding
    >>> mean, std = frame_mean_std(x, frame_mask(ms.Tensor(np.array([2], np.int32)), 3))
    >>> mean.asnumpy(), std.asnumpy()
    (array([[2.]], dtype=float32), array([[1.]], dtype=float32))
    """
    if mask is None:
        count = x.shape[1]
        row = ops.ones((x.shape[0], 1, x.shape[1]), x.dtype) / count
    else:
        count = mask.sum(axis=1, keepdims=True)                                # (B, 1, 1)
        row = frame_weights(mask)
    mean = ops.bmm(row, x)                                                   # (B, 1, C)
    var = ops.bmm(row, ops.square(x - mean))
    return mean.squeeze(1), pooled_std(var, count, stats).squeeze(1)


def channel_mean_std(xt, weights, count, stats="speechbrain"):
    """As :func:`frame_mean_std` on channel-major input: xt (B, C, T), frame weights (B, T, 1) (1 / count on valid
    frames, 0 on padding), count (B, 1, 1) valid frames -> mean, std (B, C, 1), each a batched matmul with the
    weight column.

    >>> xt = ms.Tensor(np.array([[[1.0, 3.0, 100.0]]], np.float32))         # 1 channel, 3 frames, the last padding
    >>> weights = ms.Tensor(np.array([[[0.5], [0.5], [0.0]]], np.float32))
    >>> count = ms.Tensor(np.full((1, 1, 1), 2.0, np.float32))
    >>> [v.asnumpy().ravel() for v in channel_mean_std(xt, weights, count)]
    [array([2.], dtype=float32), array([1.], dtype=float32)]
    """
    mean = ops.bmm(xt, weights)                                              # (B, C, 1)
    var = ops.bmm(ops.square(xt - mean), weights)
    return mean, pooled_std(var, count, stats)


def pooled_std(var, count, stats):
    """Biased variance over count frames -> standard deviation, as ``stats`` (POOLING_STATS) says: "speechbrain"
    floors the variance at STD_EPS, "wespeaker" takes it unbiased (n - 1, as torch.var) plus WESPEAKER_EPS."""
    if stats == "wespeaker":
        return ops.sqrt(var * (count / (count - 1)) + WESPEAKER_EPS)
    return ops.sqrt(ops.maximum(var, STD_EPS))     # not ops.clamp(min=): no ONNX translation


def reflect_frame_index(lengths, num_frames, kernel_size, dilation):
    """Source frames of a k-tap dilated convolution with per-utterance reflect padding.

    Returns (B * T * k,) int32 row indices into x reshaped to (B * T, C): row b*T + t*k + j holds the frame tap j
    of output frame t of utterance b reads (t + (j - (k-1)/2) * dilation, reflected at 0 and at lengths[b] - 1).
    Rows of padded output frames point at valid frames of the same utterance (their outputs are ignored).
    """
    half = (kernel_size - 1) // 2
    offsets = ops.arange(kernel_size, dtype=ms.int32).reshape(1, 1, -1) * dilation - half * dilation
    source = ops.arange(num_frames, dtype=ms.int32).reshape(1, -1, 1) + offsets       # (1, T, k)
    last = lengths.reshape(-1, 1, 1) - 1                                                  # (B, 1, 1)
    source = ops.abs(source)                                                              # reflect at frame 0
    source = ops.select(source > last, 2 * last - source, source)                         # reflect at the end
    source = ops.clip_by_value(source, 0, num_frames - 1)
    batch = ops.arange(lengths.shape[0], dtype=ms.int32).reshape(-1, 1, 1) * num_frames
    return (source + batch).reshape(-1)


class Conv1d(nn.Cell):
    """Dilated 'same' 1-D convolution over time, channels-last, as shifted copies + one matmul.

    weight (out, in, k), bias (out,). ``construct(x, frame_index=None)``: x (B, T, in) -> (B, T, out).
    ``frame_index`` (from :func:`reflect_frame_index`) makes each utterance reflect-padded at its own end; without
    it the whole batch is padded at frame 0 and frame T-1. Zero padding per utterance needs no index: the caller
    zeroes the padded frames of x. Initialisation as PyTorch: weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

    >>> conv = Conv1d(4, 6, kernel_size=3, dilation=2)
    >>> conv.weight.shape, conv(ms.Tensor(np.ones((2, 10, 4), np.float32))).shape
    ((6, 4, 3), (2, 10, 6))
    """

    def __init__(self, in_channels, out_channels, kernel_size=1, dilation=1, padding="reflect"):
        super().__init__()
        if padding not in PADDING_MODES:
            raise ValueError(f"padding: expected one of {PADDING_MODES}, got '{padding}'")
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size: expected an odd number, got {kernel_size}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.pad = (kernel_size - 1) // 2 * dilation
        self.padding = padding
        bound = 1.0 / math.sqrt(in_channels * kernel_size)
        self.weight = Parameter(initializer(Uniform(bound), (out_channels, in_channels, kernel_size), ms.float32))
        self.bias = Parameter(initializer(Uniform(bound), (out_channels,), ms.float32))
        large = min(in_channels * kernel_size, out_channels) >= LARGE_MATMUL
        self.large_matmul = MatMulNT() if large else None
        self.add_bias = BiasAdd()
        self.packed_weight = None

    def pack(self):
        """Inference only: also keep the weight in matmul layout, so that no call rearranges it (a transpose of
        blocks.0's weight took 1.5 ms of each 90 ms forward pass). Call it after the last change to ``weight``;
        training and checkpoints use ``weight`` (out, in, k)."""
        weight = self.weight.asnumpy().transpose(0, 2, 1).reshape(self.out_channels, -1)
        self.packed_weight = Parameter(ms.Tensor(np.ascontiguousarray(weight)), name="packed_weight",
                                       requires_grad=False)

    def matmul_weight(self, dtype):
        """(out, in, k) -> (out, k * in), tap-major to match the stacked shifted copies."""
        if self.packed_weight is not None:
            return ops.cast(self.packed_weight, dtype)
        weight = ops.cast(self.weight, dtype)
        if self.kernel_size == 1:
            return weight.reshape(self.out_channels, self.in_channels)
        return weight.transpose(0, 2, 1).reshape(self.out_channels, self.kernel_size * self.in_channels)

    def pad_batch(self, x):
        """(B, T, C) -> (B, T + 2 * pad, C), padded at the batch's frame 0 and frame T-1. Reflection is built from
        frame slices, not ops.pad (its PadV3 has no ONNX translation)."""
        if self.padding == "zeros":
            zeros = ops.zeros((x.shape[0], self.pad, x.shape[2]), x.dtype)
            return ops.concat((zeros, x, zeros), axis=1)
        num_frames = x.shape[1]
        left = [x[:, j:j + 1] for j in range(self.pad, 0, -1)]
        right = [x[:, num_frames - 1 - j:num_frames - j] for j in range(1, self.pad + 1)]
        return ops.concat(left + [x] + right, axis=1)

    def stack_taps(self, x, frame_index):
        """(B, T, C) -> (B, T, k * C): the k dilated time shifts of x stacked on the channel axis."""
        batch, num_frames, channels = x.shape
        if frame_index is not None and self.padding == "reflect":
            taps = ops.gather(x.reshape(batch * num_frames, channels), frame_index, 0)
            return taps.reshape(batch, num_frames, self.kernel_size * channels)
        padded = self.pad_batch(x)
        shifts = [padded[:, j * self.dilation:j * self.dilation + num_frames] for j in range(self.kernel_size)]
        return ops.concat(shifts, axis=-1)

    def construct(self, x, frame_index=None):
        batch, num_frames, _ = x.shape
        if self.kernel_size > 1:
            x = self.stack_taps(x, frame_index)
        rows = x.reshape(batch * num_frames, -1)
        weight = self.matmul_weight(x.dtype)
        bias = ops.cast(self.bias, x.dtype)
        y = _matmul_nt(rows, weight) if self.large_matmul is None else self.large_matmul(rows, weight)
        y = self.add_bias(y, bias)
        return y.reshape(batch, num_frames, self.out_channels)


class BatchNormTrain(nn.Cell):
    """Training-mode batch normalisation of rows, with the backward written out.

    ``construct(rows, gamma, beta)``: rows (N, C), gamma, beta (C,) float32 -> ``(y, mean, var, centered,
    inv_std)``: y (N, C) normalised with the batch statistics, mean and biased var (C,) for the moving averages (no
    gradient flows through them), and what the backward reuses. The batch sums are matmuls with a row of ones. The
    backward is the closed form (x^ = centered * inv_std, k = gamma * inv_std)::

        dbeta = sum(dy)    dgamma = sum(dy * x^)    dx = k * dy - x^ * (k * dgamma / N) - k * dbeta / N

    MindSpore's automatic backward of the same forward took about 20 ms more per C=512 train step
    (benchmarks/profile_train_step.py).
    """

    def __init__(self, eps=BN_EPS):
        super().__init__()
        self.eps = eps

    def construct(self, rows, gamma, beta):
        n = rows.shape[0]
        average = ops.fill(ms.float32, (1, n), 1.0 / n)
        mean = _matmul(average, rows)                                            # (1, C)
        centered = rows - mean
        var = _matmul(average, centered * centered).reshape(-1)
        inv_std = 1.0 / ops.sqrt(var + self.eps)
        y = ops.bias_add(centered * (gamma * inv_std).reshape(1, -1), beta)
        return y, mean.reshape(-1), var, centered, inv_std

    def bprop(self, rows, gamma, beta, out, dout):
        dy, centered, inv_std = dout[0], out[3], out[4]
        n = rows.shape[0]
        ones = ops.ones((1, n), dy.dtype)
        dbeta = _matmul(ones, dy).reshape(-1)
        dgamma = _matmul(ones, dy * centered).reshape(-1) * inv_std
        k = gamma * inv_std
        dx = dy * k.reshape(1, -1) - centered * (k * inv_std * dgamma / n).reshape(1, -1)
        return _bias_add(dx, -k * dbeta / n), dgamma, dbeta


def keep_batch_norm_float32(network):
    """Undo, for every ``BatchNormTrain`` in ``network``, the float16 input casts of ``auto_mixed_precision(network,
    "O2")`` (which casts the inputs of every Cell it does not know, gamma and beta included); returns ``network``."""
    for _, cell in network.cells_and_names():
        if isinstance(cell, BatchNormTrain):
            cell.to_float(ms.float32)
    return network


class BatchNorm(nn.Cell):
    """Batch normalisation over the last axis: (..., C) -> (..., C), statistics over all other axes.

    Parameters gamma, beta (trainable) and moving_mean, moving_variance (C,), as nn.BatchNorm1d. Written out because
    MindSpore's CPU BatchNorm kernels on (N, C) input took half of a training step; training mode is
    ``BatchNormTrain``. Training updates the moving statistics (momentum 0.9, unbiased variance, as PyTorch).
    Computed in float32 whatever the input dtype (mixed precision keeps batch norm in float32).

    >>> norm = BatchNorm(2).set_train()                     # training mode: normalised with the batch statistics
    >>> np.round(norm(ms.Tensor(np.array([[1.0, 10.0], [3.0, 30.0]], np.float32))).asnumpy(), 3)
    array([[-1., -1.],
           [ 1.,  1.]], dtype=float32)
    >>> norm.moving_mean.asnumpy()                          # moved 10 % of the way to the batch mean
    array([0.2, 2. ], dtype=float32)
    """

    def __init__(self, channels, eps=BN_EPS, momentum=BN_MOMENTUM):
        super().__init__()
        self.eps = eps
        self.momentum = momentum
        self.gamma = Parameter(initializer("ones", (channels,), ms.float32))
        self.beta = Parameter(initializer("zeros", (channels,), ms.float32))
        self.moving_mean = Parameter(initializer("zeros", (channels,), ms.float32), requires_grad=False)
        self.moving_variance = Parameter(initializer("ones", (channels,), ms.float32), requires_grad=False)
        self.normalize = BatchNormTrain(eps)

    def construct(self, x):
        shape = x.shape
        rows = ops.cast(x, ms.float32).reshape(-1, shape[-1])
        if self.training:
            n = rows.shape[0]
            y, mean, var, _, _ = self.normalize(rows, self.gamma, self.beta)
            m = self.momentum
            batch_mean = ops.stop_gradient(mean)
            batch_var = ops.stop_gradient(var) * (n / max(n - 1, 1))
            y = ops.depend(y, ops.assign(self.moving_mean, m * self.moving_mean + (1 - m) * batch_mean))
            y = ops.depend(y, ops.assign(self.moving_variance, m * self.moving_variance + (1 - m) * batch_var))
        else:
            scale, shift = self.scale_shift()
            y = ops.bias_add(rows * scale, ops.cast(shift, ms.float32))
        return ops.cast(y.reshape(shape), x.dtype)

    def scale_shift(self):
        """The eval-mode map y = scale * x + shift -> scale, shift (C,) float32."""
        scale = self.gamma / ops.sqrt(self.moving_variance + self.eps)   # not rsqrt: no ONNX translation
        return scale, self.beta - self.moving_mean * scale


class Shift(nn.Cell):
    """(..., C) -> (..., C) + shift (C,). Inference only: what is left of an eval-mode batch norm after a ReLU once
    its positive scale is folded into the convolution before the ReLU (src/model/ecapa_tdnn.py inference_network)."""

    def __init__(self, shift):
        super().__init__()
        self.shift = Parameter(ms.Tensor(np.asarray(shift, np.float32)), name="shift", requires_grad=False)

    def construct(self, x):
        shape = x.shape
        return ops.bias_add(x.reshape(-1, shape[-1]), ops.cast(self.shift, x.dtype)).reshape(shape)
