"""ECAPA-TDNN speaker embedding network (Desplanques et al., 2020, arXiv 2005.07143) in MindSpore.

Layout: every tensor is channels-last, (batch, frames, channels). A 1x1 convolution is then one matmul, and a
k-tap dilated convolution is k time-shifted copies of the input stacked on the channel axis followed by one
matmul (nn.Conv1d with kernel > 1 runs a slow reference kernel on CPU). Convolution weights are stored as
(out, in, k), like PyTorch/SpeechBrain, so their weights and the older MindSpore zoo's map over directly.

Network (channels C, MFA channels M, embedding E):

    feats (B, T, 80)
      -> blocks.0  TDNNBlock k=5 d=1                 (B, T, C)
      -> blocks.1  SERes2NetBlock k=3 d=2            (B, T, C)
      -> blocks.2  SERes2NetBlock k=3 d=3            (B, T, C)
      -> blocks.3  SERes2NetBlock k=3 d=4            (B, T, C)
      -> mfa       1x1 TDNNBlock on concat(blocks 1..3)  (B, T, M)
      -> asp       attentive statistics pooling      (B, 2M)
      -> asp_bn    batch norm                        (B, 2M)
      -> fc        dense                             (B, E)

Variable lengths: ``lengths`` (B,) int32 gives each utterance's number of valid frames. Padded frames are then
left out of the SE means, the attention softmax and the pooled statistics, and every convolution pads each
utterance at its own end (zeros or reflection), so an utterance gets the same embedding in a padded batch as
alone. Utterances need at least 5 frames (the largest one-sided padding is 4 frames).

Example::

    import numpy as np, mindspore as ms
    from src.ecapa_tdnn import ECAPA_TDNN
    net = ECAPA_TDNN(channels=64, mfa_channels=192)
    net.set_train(False)
    feats = ms.Tensor(np.random.randn(2, 300, 80).astype(np.float32))
    lengths = ms.Tensor(np.array([300, 180], np.int32))
    emb = net(feats, lengths)        # (2, 192)
"""
import math

import mindspore as ms
from mindspore import nn, ops, Parameter
from mindspore.common.initializer import initializer, Uniform

PADDING_MODES = ("reflect", "zeros")
BN_EPS = 1e-5
BN_MOMENTUM = 0.9      # MindSpore convention: moving = 0.9 * moving + 0.1 * batch (PyTorch momentum 0.1)
STD_EPS = 1e-12        # floor of the variance before the square root in the pooled statistics
_matmul_nt = ops.MatMul(transpose_b=True)      # (N, in) x (out, in) -> (N, out), no explicit weight transpose


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


def frame_mask(lengths, num_frames, dtype=ms.float32):
    """(B,) int32 valid frame counts -> (B, T, 1) mask, 1 on valid frames, 0 on padding."""
    positions = ops.arange(num_frames, dtype=ms.int32).reshape(1, -1)
    return ops.cast(positions < lengths.reshape(-1, 1), dtype).expand_dims(-1)


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

    def matmul_weight(self, dtype):
        """(out, in, k) -> (out, k * in), tap-major to match the stacked shifted copies."""
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
        if self.large_matmul is None:
            y = dense(rows, weight, bias)
        else:
            y = ops.bias_add(self.large_matmul(rows, weight), bias)
        return y.reshape(batch, num_frames, self.out_channels)


class BatchNorm(nn.Cell):
    """Batch normalisation over the last axis: (..., C) -> (..., C), statistics over all other axes.

    Parameters gamma, beta (trainable) and moving_mean, moving_variance (C,), as nn.BatchNorm1d. Written out because
    MindSpore's CPU BatchNorm kernels on (N, C) input took half of a training step; the batch mean and variance are
    matmuls with a row of 1/N. Training updates the moving statistics (momentum 0.9, unbiased variance, as
    PyTorch). Computed in float32 whatever the input dtype (mixed precision keeps batch norm in float32).
    """

    def __init__(self, channels, eps=BN_EPS, momentum=BN_MOMENTUM):
        super().__init__()
        self.eps = eps
        self.momentum = momentum
        self.gamma = Parameter(initializer("ones", (channels,), ms.float32))
        self.beta = Parameter(initializer("zeros", (channels,), ms.float32))
        self.moving_mean = Parameter(initializer("zeros", (channels,), ms.float32), requires_grad=False)
        self.moving_variance = Parameter(initializer("ones", (channels,), ms.float32), requires_grad=False)

    def construct(self, x):
        shape = x.shape
        rows = ops.cast(x, ms.float32).reshape(-1, shape[-1])
        if self.training:
            n = rows.shape[0]
            average = ops.fill(ms.float32, (1, n), 1.0 / n)
            mean = ops.matmul(average, rows)                                     # (1, C)
            centered = rows - mean
            var = ops.matmul(average, centered * centered).reshape(-1)
            scale = (self.gamma / ops.sqrt(var + self.eps)).reshape(1, -1)
            y = ops.bias_add(centered * scale, ops.cast(self.beta, ms.float32))     # float32 under mixed precision
            m = self.momentum
            batch_mean = ops.stop_gradient(mean.reshape(-1))
            batch_var = ops.stop_gradient(var) * (n / max(n - 1, 1))
            y = ops.depend(y, ops.assign(self.moving_mean, m * self.moving_mean + (1 - m) * batch_mean))
            y = ops.depend(y, ops.assign(self.moving_variance, m * self.moving_variance + (1 - m) * batch_var))
        else:
            scale = self.gamma / ops.sqrt(self.moving_variance + self.eps)   # not rsqrt: no ONNX translation
            y = ops.bias_add(rows * scale, ops.cast(self.beta - self.moving_mean * scale, ms.float32))
        return ops.cast(y.reshape(shape), x.dtype)


class TDNNBlock(nn.Cell):
    """conv -> ReLU -> batch norm. (B, T, in) -> (B, T, out)."""

    def __init__(self, in_channels, out_channels, kernel_size=1, dilation=1, padding="reflect"):
        super().__init__()
        self.conv = Conv1d(in_channels, out_channels, kernel_size, dilation, padding)
        self.norm = BatchNorm(out_channels)

    def construct(self, x, frame_index=None):
        return self.norm(ops.relu(self.conv(x, frame_index)))


class Res2NetBlock(nn.Cell):
    """Res2Net: split channels into ``scale`` groups; group 0 passes through, group i>0 goes through a k-tap
    TDNNBlock after adding the previous group's output. (B, T, C) -> (B, T, C); ``scale - 1`` sub-blocks."""

    def __init__(self, channels, scale=8, kernel_size=3, dilation=1, padding="reflect"):
        super().__init__()
        if channels % scale != 0:
            raise ValueError(f"channels ({channels}) must be divisible by res2net_scale ({scale})")
        self.scale = scale
        self.width = channels // scale
        self.blocks = nn.CellList([TDNNBlock(self.width, self.width, kernel_size, dilation, padding)
                                   for _ in range(scale - 1)])

    def construct(self, x, frame_index=None, mask=None):
        """``mask`` (B, T, 1) zeroes padded frames before each sub-convolution (zero padding per utterance)."""
        groups = ops.split(x, self.width, axis=-1)
        outputs = [groups[0]]
        y = groups[0]
        for i in range(1, self.scale):
            z = groups[i] if i == 1 else groups[i] + y
            if mask is not None:
                z = z * mask
            y = self.blocks[i - 1](z, frame_index)
            outputs.append(y)
        return ops.concat(outputs, axis=-1)


class SEBlock(nn.Cell):
    """Squeeze-and-excitation: scale each channel by sigmoid(W2 relu(W1 mean_t(x))). (B, T, C) -> (B, T, C).
    With ``mask`` (B, T, 1) the mean runs over valid frames only."""

    def __init__(self, channels, se_channels=128):
        super().__init__()
        self.conv1 = Conv1d(channels, se_channels, 1)
        self.conv2 = Conv1d(se_channels, channels, 1)

    def construct(self, x, mask=None):
        if mask is None:
            s = sum_frames(x) / x.shape[1]
        else:
            s = sum_frames(x * mask) / mask.sum(axis=1, keepdims=True)
        s = ops.sigmoid(self.conv2(ops.relu(self.conv1(s))))
        return x * s


class SERes2NetBlock(nn.Cell):
    """1x1 TDNNBlock -> Res2NetBlock (k, dilation) -> 1x1 TDNNBlock -> SEBlock, plus the input (residual).
    (B, T, C) -> (B, T, C)."""

    def __init__(self, channels, res2net_scale=8, se_channels=128, kernel_size=3, dilation=1, padding="reflect"):
        super().__init__()
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.padding = padding
        self.tdnn1 = TDNNBlock(channels, channels, 1)
        self.res2net_block = Res2NetBlock(channels, res2net_scale, kernel_size, dilation, padding)
        self.tdnn2 = TDNNBlock(channels, channels, 1)
        self.se_block = SEBlock(channels, se_channels)

    def construct(self, x, lengths=None, mask=None):
        """``lengths`` (B,) int32 and the matching ``mask`` (B, T, 1), or both None (all frames valid)."""
        frame_index = None
        conv_mask = None
        if lengths is not None:
            if self.padding == "reflect":
                frame_index = reflect_frame_index(lengths, x.shape[1], self.kernel_size, self.dilation)
            else:
                conv_mask = mask
        y = self.tdnn1(x)
        y = self.res2net_block(y, frame_index, conv_mask)
        y = self.tdnn2(y)
        y = self.se_block(y, mask)
        return y + x


class AttentiveStatisticsPooling(nn.Cell):
    """Attention-weighted mean and standard deviation over time, one attention distribution per channel.

    (B, T, M) -> (B, 2M) = concat(mean, std). Attention logits: conv(tanh(tdnn(h))), h = x, or with
    ``global_context`` h = concat(x, utterance mean, utterance std) on the channel axis. The tdnn's matmul on that
    concat is computed as x @ W_x + (mean @ W_mean + std @ W_std), which never builds the (B, T, 3M) tensor.
    """

    def __init__(self, channels, attention_channels=128, global_context=True):
        super().__init__()
        self.channels = channels
        self.global_context = global_context
        in_channels = 3 * channels if global_context else channels
        self.tdnn = TDNNBlock(in_channels, attention_channels, 1)
        self.conv = Conv1d(attention_channels, channels, 1)

    @staticmethod
    def statistics(x, weights):
        """x (B, T, M), weights (B, T, M or 1) summing to 1 over T -> mean, std (B, M) each."""
        mean = sum_frames(x * weights)                                        # (B, 1, M)
        var = sum_frames(weights * ops.square(x - mean)).squeeze(1)
        mean = mean.squeeze(1)
        return mean, ops.sqrt(ops.maximum(var, STD_EPS))   # not ops.clamp(min=): no ONNX translation

    @staticmethod
    def frame_statistics(x, row):
        """x (B, T, M), row (B, 1, T) frame weights summing to 1 -> mean, std (B, M) each, as batched matmuls
        with the row (half the time of :meth:`statistics` with (B, T, 1) weights, whose broadcast multiply is slow
        on CPU)."""
        mean = ops.bmm(row, x)                                               # (B, 1, M)
        var = ops.bmm(row, ops.square(x - mean)).squeeze(1)
        return mean.squeeze(1), ops.sqrt(ops.maximum(var, STD_EPS))

    def attention_hidden(self, x, mask):
        """First attention layer (1x1 conv -> ReLU -> BN): (B, T, M) -> (B, T, attention_channels)."""
        tdnn = self.tdnn
        if not self.global_context:
            return tdnn(x)
        if mask is None:
            row = ops.ones((x.shape[0], 1, x.shape[1]), x.dtype) / x.shape[1]
        else:
            row = mask.transpose(0, 2, 1) / mask.sum(axis=1, keepdims=True)
        mean, std = self.frame_statistics(x, row)                            # (B, M) each
        weight = ops.cast(tdnn.conv.weight, x.dtype)                         # (A, 3M, 1)
        m = self.channels
        w_frame = weight[:, :m, 0]
        w_utt = weight[:, m:, 0]                                             # (A, 2M)
        batch, num_frames, _ = x.shape
        frame_part = dense(x.reshape(batch * num_frames, m), w_frame).reshape(batch, num_frames, -1)
        utt_part = dense(ops.concat((mean, std), axis=-1), w_utt, ops.cast(tdnn.conv.bias, x.dtype))
        return tdnn.norm(ops.relu(frame_part + utt_part.expand_dims(1)))

    def construct(self, x, mask=None):
        logits = self.conv(tanh(self.attention_hidden(x, mask)))          # (B, T, M)
        if mask is not None:
            logits = ops.masked_fill(logits, mask < 0.5, float("-inf"))
        # softmax over frames on the last axis: on CPU, (B, M, T) softmax plus two transposes takes 60 ms where
        # softmax over the middle axis of (B, T, M) takes 140 ms (16 x 200 x 3072)
        attention = ops.softmax(logits.transpose(0, 2, 1), axis=-1).transpose(0, 2, 1)
        mean, std = self.statistics(x, attention)
        return ops.concat((mean, std), axis=-1)


class ECAPA_TDNN(nn.Cell):
    """ECAPA-TDNN embedding network. ``construct(feats, lengths=None)``: feats (B, T, n_mels) float32, lengths
    (B,) int32 valid frames or None -> embeddings (B, embedding_size).

    Parameter names follow SpeechBrain's ECAPA_TDNN and the older MindSpore zoo (``blocks.0.conv.weight``,
    ``blocks.1.res2net_block.blocks.0.norm.gamma``, ``mfa.*``, ``asp.*``, ``asp_bn.*``, ``fc.*``).
    """

    def __init__(self, n_mels=80, channels=512, mfa_channels=1536, embedding_size=192, attention_channels=128,
                 se_channels=128, res2net_scale=8, global_context=True, padding="reflect"):
        super().__init__()
        if padding not in PADDING_MODES:
            raise ValueError(f"padding: expected one of {PADDING_MODES}, got '{padding}'")
        self.padding = padding
        self.blocks = nn.CellList([
            TDNNBlock(n_mels, channels, kernel_size=5, dilation=1, padding=padding),
            SERes2NetBlock(channels, res2net_scale, se_channels, kernel_size=3, dilation=2, padding=padding),
            SERes2NetBlock(channels, res2net_scale, se_channels, kernel_size=3, dilation=3, padding=padding),
            SERes2NetBlock(channels, res2net_scale, se_channels, kernel_size=3, dilation=4, padding=padding),
        ])
        self.mfa = TDNNBlock(3 * channels, mfa_channels, 1)
        self.asp = AttentiveStatisticsPooling(mfa_channels, attention_channels, global_context)
        self.asp_bn = BatchNorm(2 * mfa_channels)
        self.fc = Conv1d(2 * mfa_channels, embedding_size, 1)

    def first_block(self, feats, lengths, mask):
        """blocks.0 (5-tap TDNN) with per-utterance padding when lengths are given: (B, T, n_mels) -> (B, T, C)."""
        block = self.blocks[0]
        if lengths is None:
            return block(feats)
        if self.padding == "zeros":
            return block(feats * mask)
        return block(feats, reflect_frame_index(lengths, feats.shape[1], 5, 1))

    def forward_features(self, feats, lengths=None):
        """-> (block_outputs, pooled, embedding): the 4 block outputs (B, T, C) each, the attentive statistics
        (B, 2M) before asp_bn, and the embedding (B, embedding_size)."""
        mask = None if lengths is None else frame_mask(lengths, feats.shape[1], feats.dtype)
        x0 = self.first_block(feats, lengths, mask)
        x1 = self.blocks[1](x0, lengths, mask)
        x2 = self.blocks[2](x1, lengths, mask)
        x3 = self.blocks[3](x2, lengths, mask)
        h = self.mfa(ops.concat((x1, x2, x3), axis=-1))
        pooled = self.asp(h, mask)
        batch = pooled.shape[0]
        embedding = self.fc(self.asp_bn(pooled).reshape(batch, 1, -1)).reshape(batch, -1)
        return (x0, x1, x2, x3), pooled, embedding

    def construct(self, feats, lengths=None):
        _, _, embedding = self.forward_features(feats, lengths)
        return embedding


def ecapa_from_config(cfg):
    """Build ECAPA_TDNN from a config with keys n_mels, channels, mfa_channels, embedding_size, attention_channels,
    se_channels, res2net_scale, global_context, padding."""
    return ECAPA_TDNN(n_mels=int(cfg.n_mels), channels=int(cfg.channels), mfa_channels=int(cfg.mfa_channels),
                      embedding_size=int(cfg.embedding_size), attention_channels=int(cfg.attention_channels),
                      se_channels=int(cfg.se_channels), res2net_scale=int(cfg.res2net_scale),
                      global_context=bool(cfg.global_context), padding=str(cfg.padding))
