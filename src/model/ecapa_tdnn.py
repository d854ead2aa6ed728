"""ECAPA-TDNN speaker embedding network (Desplanques et al., 2020, arXiv 2005.07143) in MindSpore.

Layout: every tensor is channels-last, (batch, frames, channels). A 1x1 convolution is then one matmul, and a
k-tap dilated convolution is k time-shifted copies of the input stacked on the channel axis followed by one
matmul (nn.Conv1d with kernel > 1 runs a slow reference kernel on CPU). Convolution weights are stored as
(out, in, k), like PyTorch/SpeechBrain, so their weights and the older MindSpore zoo's map over directly.

Network (channels C, MFA channels M, embedding E), at the default depth and kernels:

    feats (B, T, 80)
      -> blocks.0  TDNNBlock k=5 d=1                 (B, T, C)
      -> blocks.1  SERes2NetBlock k=3 d=2            (B, T, C)
      -> blocks.2  SERes2NetBlock k=3 d=3            (B, T, C)
      -> blocks.3  SERes2NetBlock k=3 d=4            (B, T, C)
      -> mfa       1x1 TDNNBlock on concat(blocks 1..3)  (B, T, M)
      -> asp       attentive statistics pooling      (B, 2M)
      -> asp_bn    batch norm                        (B, 2M)
      -> fc        dense                             (B, E)
      -> fc_bn     batch norm, only with embedding_norm  (B, E)

Depth (recipe keys ``kernel_sizes`` and ``dilations``, SpeechBrain's ``ECAPA_TDNN`` arguments of the same names):
one entry per layer, the first TDNN, each SE-Res2Block, then the MFA layer, so a list of n entries makes n - 2
SE-Res2Blocks and an MFA layer on (n - 2) C channels. The defaults [5, 3, 3, 3, 1] and [1, 2, 3, 4, 1] are the
network above; ``kernel_sizes=[5, 3, 3], dilations=[1, 2, 3]`` is one SE-Res2Block and a 3-tap MFA layer.

Architecture variants (recipe keys; the defaults are SpeechBrain's network):

- ``padding``: "reflect" (SpeechBrain) or "zeros" (the older zoo, WeSpeaker, 3D-Speaker) at each convolution.
- ``mfa_norm``: batch norm after the MFA layer's ReLU (SpeechBrain) or none (WeSpeaker: conv -> ReLU).
- ``attention_norm``: the attention's hidden layer is conv -> ReLU -> batch norm (SpeechBrain), or the conv alone
  (WeSpeaker's ASTP); tanh follows either way.
- ``pooling_stats``: "speechbrain" or "wespeaker" (WeSpeaker's ASTP: pooled variance E[x^2] - mean^2 clamped at
  1e-7, global-context variance unbiased plus 1e-7), see src/model/layers.py POOLING_STATS.
- ``embedding_norm``: a batch norm after fc (WeSpeaker's ``emb_bn``), off by default.

Res2Net split order is not a variant of the graph: SpeechBrain passes the first split through and feeds the others
through sub-blocks 0..s-2, WeSpeaker passes the last one. The two differ only by a rotation of the split order,
which src/import_weights.py folds into the neighbouring 1x1 convolutions' weights (exactly: a permutation).

Variable lengths: ``lengths`` (B,) int32 gives each utterance's number of valid frames. Padded frames are then
left out of the SE means, the attention softmax and the pooled statistics, and every convolution pads each
utterance at its own end (zeros or reflection), so an utterance gets the same embedding in a padded batch as
alone. Utterances need one frame more than the largest one-sided padding (:func:`min_frames`: 5 frames at the
default kernels and dilations).

Inference (evaluation, src.verify, every export) runs ``inference_network(network)``: a copy with the batch norms
that only feed a linear layer folded into it (asp_bn and fc_bn into fc, each Res2Net block's last sub-block norm into
tdnn2), the positive scales of the others folded into the convolution before their ReLU, and weights kept in matmul
layout; equal within float32 rounding. Checkpoints and training keep the unfolded network.

Example (tiny sizes; the recipe's are channels 512 or 1024, mfa_channels 1536 or 3072):

>>> import numpy as np, mindspore as ms
>>> net = ECAPA_TDNN(channels=16, mfa_channels=48, embedding_size=8, attention_channels=8, se_channels=8,
...                  res2net_scale=2)
>>> net = net.set_train(False)
>>> feats = ms.Tensor(np.random.default_rng(0).standard_normal((2, 30, 80)).astype(np.float32))
>>> lengths = ms.Tensor(np.array([30, 18], np.int32))         # the second utterance's last 12 frames are padding
>>> emb = net(feats, lengths)
>>> emb.shape
(2, 8)
>>> alone = net(feats[1:, :18])                                # the same utterance without the padding
>>> bool(np.allclose(emb.asnumpy()[1], alone.asnumpy()[0], atol=1e-5))
True
>>> folded = inference_network(net)                           # what evaluation and export run
>>> bool(np.allclose(folded(feats, lengths).asnumpy(), emb.asnumpy(), atol=1e-5))
True
"""
import numpy as np
import mindspore as ms
from mindspore import nn, ops

from src.model.layers import (PADDING_MODES, POOLING_STATS, STD_EPS, WESPEAKER_EPS, BatchNorm, Conv1d, Shift,
                              channel_mean_std, dense, frame_mask, frame_weights, reflect_frame_index, sum_frames,
                              tanh)


# Kernel size and dilation of each layer: the first TDNN, each SE-Res2Block, the MFA layer (SpeechBrain's defaults).
KERNEL_SIZES = (5, 3, 3, 3, 1)
DILATIONS = (1, 2, 3, 4, 1)
MASKED_LOGIT = 30000.0      # subtracted from the attention logits of padded frames (a float16 number too)


def check_depth(kernel_sizes, dilations):
    """Refuse per-layer kernel sizes and dilations that make no network: ValueError naming the key."""
    if len(kernel_sizes) < 3:
        raise ValueError(f"kernel_sizes: expected at least 3 entries (first TDNN, SE-Res2Blocks, MFA), got "
                         f"{list(kernel_sizes)}")
    if len(dilations) != len(kernel_sizes):
        raise ValueError(f"dilations: expected one per layer, as kernel_sizes ({len(kernel_sizes)}), got "
                         f"{list(dilations)}")
    if any(int(k) < 1 or int(k) % 2 == 0 for k in kernel_sizes):
        raise ValueError(f"kernel_sizes: expected odd numbers >= 1, got {list(kernel_sizes)}")
    if any(int(d) < 1 for d in dilations):
        raise ValueError(f"dilations: expected numbers >= 1, got {list(dilations)}")


def min_frames(kernel_sizes=KERNEL_SIZES, dilations=DILATIONS):
    """The fewest frames a network of these layers takes: one more than its largest one-sided padding (reflection
    needs a frame to mirror). 5 at the defaults."""
    return 1 + max((int(k) - 1) // 2 * int(d) for k, d in zip(kernel_sizes, dilations))


class TDNNBlock(nn.Cell):
    """conv -> ReLU (if ``relu``) -> batch norm (if ``norm``). (B, T, in) -> (B, T, out).

    >>> TDNNBlock(80, 16, kernel_size=5)(ms.Tensor(np.ones((2, 30, 80), np.float32))).shape
    (2, 30, 16)
    """

    def __init__(self, in_channels, out_channels, kernel_size=1, dilation=1, padding="reflect", relu=True,
                 norm=True):
        super().__init__()
        self.conv = Conv1d(in_channels, out_channels, kernel_size, dilation, padding)
        self.relu = relu
        self.norm = BatchNorm(out_channels) if norm else None

    def activate(self, y):
        """What follows the conv: (B, T, out) -> (B, T, out)."""
        if self.relu:
            y = ops.relu(y)
        if self.norm is not None:
            y = self.norm(y)
        return y

    def construct(self, x, frame_index=None):
        return self.activate(self.conv(x, frame_index))


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
            s = ops.bmm(frame_weights(mask), x)
        s = ops.sigmoid(self.conv2(ops.relu(self.conv1(s))))
        return x * s


class SERes2NetBlock(nn.Cell):
    """1x1 TDNNBlock -> Res2NetBlock (k, dilation) -> 1x1 TDNNBlock -> SEBlock, plus the input (residual).
    (B, T, C) -> (B, T, C).

    >>> block = SERes2NetBlock(16, res2net_scale=4, se_channels=8, kernel_size=3, dilation=2)
    >>> block(ms.Tensor(np.ones((2, 30, 16), np.float32))).shape
    (2, 30, 16)
    """

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
    ``attention_norm`` False drops the tdnn's ReLU and batch norm (WeSpeaker's ASTP); ``pooling_stats``
    (POOLING_STATS) chooses how the standard deviations are computed. The pooling runs channel-major (B, M, T) after
    one transpose of x: logits come out of one batched matmul in that layout, the softmax runs over the last axis
    and every sum over frames is a batched matmul with a column (no transposes of the attention, no masked fill, no
    reductions over a middle axis: about half the time of the frames-major form on CPU).

    >>> pool = AttentiveStatisticsPooling(48, attention_channels=8)
    >>> pool(ms.Tensor(np.ones((2, 30, 48), np.float32))).shape
    (2, 96)
    """

    def __init__(self, channels, attention_channels=128, global_context=True, attention_norm=True,
                 pooling_stats="speechbrain"):
        super().__init__()
        self.channels = channels
        self.global_context = global_context
        self.pooling_stats = pooling_stats
        in_channels = 3 * channels if global_context else channels
        self.tdnn = TDNNBlock(in_channels, attention_channels, 1, relu=attention_norm, norm=attention_norm)
        self.conv = Conv1d(attention_channels, channels, 1)
        self._bmm_nt = ops.BatchMatMul(transpose_b=True)
        self.mean_shift = None      # inference_network: a Shift added to the pooled means (see there)

    def attention_hidden(self, x, mask=None, xt=None):
        """First attention layer (1x1 conv, then ReLU -> BN unless attention_norm is off): x (B, T, M), mask
        (B, T, 1) or None, xt: x channel-major (B, M, T) if the caller has it -> (B, T, attention_channels)."""
        tdnn = self.tdnn
        if not self.global_context:
            return tdnn(x)
        batch, num_frames, m = x.shape
        if mask is None:
            count = ops.fill(x.dtype, (batch, 1, 1), float(num_frames))
            weights = ops.fill(x.dtype, (batch, num_frames, 1), 1.0 / num_frames)
        else:
            count = mask.sum(axis=1, keepdims=True)                              # (B, 1, 1)
            weights = mask / count                                               # (B, T, 1)
        xt = x.transpose(0, 2, 1) if xt is None else xt
        mean, std = channel_mean_std(xt, weights, count, self.pooling_stats)   # (B, M, 1) each
        weight = tdnn.conv.matmul_weight(x.dtype)                            # (A, 3M)
        # a split, not weight[:, :m]: MindSpore's CPU StridedSlice took 17 ms of a 90 ms forward pass here
        w_frame, w_utt = ops.split(weight, (m, 2 * m), axis=1)               # (A, M), (A, 2M)
        frame_part = dense(x.reshape(batch * num_frames, m), w_frame).reshape(batch, num_frames, -1)
        utterance = ops.concat((mean, std), axis=1).reshape(batch, 2 * m)
        utt_part = dense(utterance, w_utt, ops.cast(tdnn.conv.bias, x.dtype))
        return tdnn.activate(frame_part + utt_part.expand_dims(1))

    def attention_logits(self, hidden, mask):
        """hidden (B, T, A), mask (B, T, 1) or None -> logits (B, M, T), channel-major, -MASKED_LOGIT on padded
        frames. One batched matmul: the conv's bias and the mask enter as extra columns of hidden (ones, and 0 or
        -MASKED_LOGIT) against extra weight columns (the bias, ones), which replaces a bias add and a masked fill
        over (B, M, T) (14 ms at 16 x 200 x 1536 on CPU); exp(-MASKED_LOGIT) is 0 in float32 and float16, so
        padded frames get an attention weight of exactly 0."""
        batch, num_frames, _ = hidden.shape
        weight = self.conv.matmul_weight(hidden.dtype)                                  # (M, A)
        ones = ops.ones((batch, num_frames, 1), hidden.dtype)
        columns, weight_columns = [hidden, ones], [weight, ops.cast(self.conv.bias, hidden.dtype).reshape(-1, 1)]
        if mask is not None:
            columns.append((mask - 1.0) * MASKED_LOGIT)
            weight_columns.append(ops.ones((self.channels, 1), hidden.dtype))
        weight = ops.concat(weight_columns, axis=1)
        weight = ops.broadcast_to(weight.expand_dims(0), (batch,) + weight.shape)       # (B, M, A + 2 or 3)
        return self._bmm_nt(weight, ops.concat(columns, axis=-1))

    def statistics(self, xt, weights):
        """xt (B, M, T), weights (B, M, T) summing to 1 over T -> mean, std (B, M) each, every sum over frames a
        batched matmul with a column of ones. "speechbrain": variance of x - mean floored at STD_EPS;
        "wespeaker": E[x^2] - mean^2 floored at WESPEAKER_EPS."""
        batch, m, num_frames = xt.shape
        frames = ops.ones((batch, num_frames, 1), xt.dtype)
        mean = ops.bmm(weights * xt, frames)                                          # (B, M, 1)
        if self.pooling_stats == "wespeaker":
            var = ops.bmm(weights * ops.square(xt), frames) - ops.square(mean)
            floor = WESPEAKER_EPS
        else:
            var = ops.bmm(weights * ops.square(xt - mean), frames)
            floor = STD_EPS
        std = ops.sqrt(ops.maximum(var, floor))       # not ops.clamp(min=): no ONNX translation
        return mean.reshape(batch, m), std.reshape(batch, m)

    def construct(self, x, mask=None):
        # channel-major: the softmax over frames runs on the last axis (over the middle one it is 2.3x slower on
        # CPU) and every sum over frames is a batched matmul with a (B, T, 1) column
        xt = x.transpose(0, 2, 1)                                                   # (B, M, T)
        hidden = self.attention_hidden(x, mask, xt)
        attention = ops.softmax(self.attention_logits(tanh(hidden), mask), axis=-1)   # (B, M, T)
        mean, std = self.statistics(xt, attention)
        if self.mean_shift is not None:
            mean = self.mean_shift(mean)
        return ops.concat((mean, std), axis=-1)


class ECAPA_TDNN(nn.Cell):
    """ECAPA-TDNN embedding network. ``construct(feats, lengths=None)``: feats (B, T, n_mels) float32, lengths
    (B,) int32 valid frames or None -> embeddings (B, embedding_size).

    Parameter names follow SpeechBrain's ECAPA_TDNN and the older MindSpore zoo (``blocks.0.conv.weight``,
    ``blocks.1.res2net_block.blocks.0.norm.gamma``, ``mfa.*``, ``asp.*``, ``asp_bn.*``, ``fc.*``), plus
    ``fc_bn.*`` with ``embedding_norm``. The variant switches are described in the module docstring.
    """

    def __init__(self, n_mels=80, channels=512, mfa_channels=1536, embedding_size=192, attention_channels=128,
                 se_channels=128, res2net_scale=8, global_context=True, padding="reflect", mfa_norm=True,
                 attention_norm=True, pooling_stats="speechbrain", embedding_norm=False,
                 kernel_sizes=KERNEL_SIZES, dilations=DILATIONS):
        super().__init__()
        if padding not in PADDING_MODES:
            raise ValueError(f"padding: expected one of {PADDING_MODES}, got '{padding}'")
        if pooling_stats not in POOLING_STATS:
            raise ValueError(f"pooling_stats: expected one of {POOLING_STATS}, got '{pooling_stats}'")
        check_depth(kernel_sizes, dilations)
        self.n_mels, self.channels, self.mfa_channels = n_mels, channels, mfa_channels
        self.embedding_size, self.attention_channels, self.se_channels = embedding_size, attention_channels, se_channels
        self.res2net_scale, self.global_context, self.padding = res2net_scale, global_context, padding
        self.mfa_norm, self.attention_norm = mfa_norm, attention_norm
        self.pooling_stats, self.embedding_norm = pooling_stats, embedding_norm
        self.kernel_sizes, self.dilations = [int(k) for k in kernel_sizes], [int(d) for d in dilations]
        num_se_blocks = len(kernel_sizes) - 2
        self.blocks = nn.CellList(
            [TDNNBlock(n_mels, channels, kernel_sizes[0], dilations[0], padding)]
            + [SERes2NetBlock(channels, res2net_scale, se_channels, kernel_sizes[i], dilations[i], padding)
               for i in range(1, num_se_blocks + 1)])
        self.mfa = TDNNBlock(num_se_blocks * channels, mfa_channels, kernel_sizes[-1], dilations[-1], padding,
                             norm=mfa_norm)
        self.asp = AttentiveStatisticsPooling(mfa_channels, attention_channels, global_context, attention_norm,
                                              pooling_stats)
        self.asp_bn = BatchNorm(2 * mfa_channels)
        self.fc = Conv1d(2 * mfa_channels, embedding_size, 1)
        self.fc_bn = BatchNorm(embedding_size) if embedding_norm else None

    def padded_tdnn(self, block, x, lengths, mask):
        """A TDNNBlock (blocks.0, mfa) with per-utterance padding when lengths are given: (B, T, in) -> (B, T, out)."""
        conv = block.conv
        if lengths is None or conv.kernel_size == 1:
            return block(x)
        if self.padding == "zeros":
            return block(x * mask)
        return block(x, reflect_frame_index(lengths, x.shape[1], conv.kernel_size, conv.dilation))

    def forward_features(self, feats, lengths=None):
        """-> (block_outputs, pooled, embedding): the outputs (B, T, C) of blocks.0 and of every SE-Res2Block, the
        attentive statistics (B, 2M) before asp_bn, and the embedding (B, embedding_size)."""
        mask = None if lengths is None else frame_mask(lengths, feats.shape[1], feats.dtype)
        x = self.padded_tdnn(self.blocks[0], feats, lengths, mask)
        outputs = (x,)
        for i in range(1, len(self.blocks)):
            x = self.blocks[i](x, lengths, mask)
            outputs = outputs + (x,)
        aggregated = outputs[1] if len(outputs) == 2 else ops.concat(outputs[1:], axis=-1)
        h = self.padded_tdnn(self.mfa, aggregated, lengths, mask)
        pooled = self.asp(h, mask)
        batch = pooled.shape[0]
        normed = pooled if self.asp_bn is None else self.asp_bn(pooled)          # None: folded into fc
        embedding = self.fc(normed.reshape(batch, 1, -1)).reshape(batch, -1)
        if self.fc_bn is not None:
            embedding = self.fc_bn(embedding)
        return outputs, pooled, embedding

    def construct(self, feats, lengths=None):
        _, _, embedding = self.forward_features(feats, lengths)
        return embedding


# The recipe keys that define the network: the one list every part of the project reads (building, checkpoints,
# export contracts, the embedding cache). ECAPA_TDNN takes exactly these arguments.
MODEL_KEYS = ("n_mels", "channels", "mfa_channels", "embedding_size", "attention_channels", "se_channels",
              "res2net_scale", "global_context", "padding", "mfa_norm", "attention_norm", "pooling_stats",
              "embedding_norm", "kernel_sizes", "dilations")


def model_settings(cfg):
    """The network's settings of a recipe -> dict of the MODEL_KEYS (``ECAPA_TDNN(**model_settings(cfg))``)."""
    return {key: cfg[key] for key in MODEL_KEYS}


def network_settings(network):
    """The MODEL_KEYS settings an ECAPA_TDNN was built with -> dict."""
    return {key: getattr(network, key) for key in MODEL_KEYS}


def build_ecapa(cfg):
    """ECAPA_TDNN built from the MODEL_KEYS of a recipe (any mapping holding them)."""
    return ECAPA_TDNN(**model_settings(cfg))


def _affine(norm):
    """An eval-mode BatchNorm as NumPy (scale, shift), each (C,)."""
    scale, shift = norm.scale_shift()
    return scale.asnumpy(), shift.asnumpy()


def _set_conv(conv, weight, bias):
    """Give a Conv1d the weight (out, in, k) and bias (out,) NumPy arrays."""
    conv.weight.set_data(ms.Tensor(weight.astype(np.float32)))
    conv.bias.set_data(ms.Tensor(bias.astype(np.float32)))


def _take_shift(block):
    """The Shift a TDNNBlock ends with as a NumPy (C,) array, zeros if it ends otherwise; and remove it."""
    if not isinstance(block.norm, Shift):
        return np.zeros(block.conv.out_channels, np.float32)
    shift = block.norm.shift.asnumpy()
    block.norm = None
    return shift


def _add_input_offset(conv, offset):
    """A constant offset (in,) on every input frame of a Conv1d -> into its bias: W applied to the offset, summed
    over taps (reflection of a constant is the constant, so each tap reads it)."""
    weight = conv.weight.asnumpy()
    _set_conv(conv, weight, conv.bias.asnumpy() + weight.sum(axis=2) @ offset)


def _fold_res2net_shifts(block):
    """Move the Shifts of an SE-Res2Block's tdnn1 and Res2Net sub-blocks into the convolutions that read them.

    A Shift adds a constant per channel. tdnn1's output splits into groups; group 0 and every sub-block's output
    reach the 1x1 tdnn2 (through the concat), group i > 0 plus the previous sub-block's output is the input of
    sub-block i. So every offset ends in a convolution's input, where it is W applied to the offset, summed over
    taps: exact for a 1x1 convolution and for reflect padding (every tap reads a frame of the utterance); with zero
    padding the edge frames read zeros, not the offset, so then the Shifts stay unless the sub-blocks are 1x1."""
    res2net = block.res2net_block
    if block.padding != "reflect" and block.kernel_size > 1:
        return
    groups = np.split(_take_shift(block.tdnn1), res2net.scale)
    offsets = [groups[0]]
    previous = groups[0]
    for i in range(1, res2net.scale):
        sub_block = res2net.blocks[i - 1]
        _add_input_offset(sub_block.conv, groups[i] if i == 1 else groups[i] + previous)
        previous = _take_shift(sub_block)
        offsets.append(previous)
    _add_input_offset(block.tdnn2.conv, np.concatenate(offsets))


def _fold_shift_into_pooling(asp, shift):
    """Move a per-channel shift s (M,) of the pooling's input into the pooling: the attention's first layer sees
    x + s at every frame and, with global context, the utterance mean + s (its std is unchanged), so its bias gains
    W_frame s (+ W_mean s); the attention logits, the weights and the pooled std do not depend on s, and the pooled
    mean gains s (``asp.mean_shift``, on (B, M) instead of (B, T, M))."""
    conv = asp.tdnn.conv
    weight = conv.weight.asnumpy()[:, :, 0]                                    # (A, M) or (A, 3M)
    m = asp.channels
    reads = weight[:, :m] + weight[:, m:2 * m] if asp.global_context else weight
    _set_conv(conv, conv.weight.asnumpy(), conv.bias.asnumpy() + reads @ shift)
    asp.mean_shift = Shift(shift)


def inference_network(network):
    """An eval-mode copy of ``network`` (ECAPA_TDNN) with the batch norms that only feed a linear layer folded into
    that layer's weights: the same embeddings (within float32 rounding), fewer operations. ``network`` is unchanged,
    so checkpoints and training never see the folded form.

    In eval mode a batch norm is the per-channel map x -> a * x + b, and a linear layer W x + c applied to it is
    (W diag(a)) x + (W b + c): exact whenever the linear layer sees the batch norm's output at every input position
    it reads. Folded here:

    - ``asp_bn`` into ``fc``, and ``fc_bn`` (embedding_norm) into ``fc`` as diag(a) W x + (a c + b): fc acts on one
      pooled vector per utterance, with no padding or frames to mix in.
    - The batch norm of each Res2Net block's last sub-block into the next 1x1 ``tdnn2``: that output goes only into
      the concat tdnn2 reads, and a 1x1 convolution reads no padded frame.

    The other batch norms follow a ReLU whose output is used by more than a linear layer (blocks.0 and every
    ``tdnn2``: residual sum, SE scaling; ``tdnn1`` and the other Res2Net sub-blocks: added to the next split;
    ``mfa``: pooled means and floored standard deviations; ``asp.tdnn``: tanh). Where every channel's scale a is
    positive, a relu(z) + b = relu(a z) + b, so a goes into the convolution before the ReLU and only the shift b is
    left (a ``Shift``); a batch norm with a scale <= 0 stays as it is. Last, every convolution keeps its weight in
    matmul layout too (``Conv1d.pack``), so no call rearranges a weight.
    """
    folded = ECAPA_TDNN(**network_settings(network))
    source = dict(network.parameters_and_names())     # names relative to the network, even inside an Embedder
    for name, p in folded.parameters_and_names():
        p.set_data(source[name].value())
    folded.set_train(False)
    for i in range(1, len(folded.blocks)):          # not blocks[1:]: slicing a CellList renames its parameters
        block = folded.blocks[i]
        last = block.res2net_block.blocks[-1]
        scale, shift = _affine(last.norm)
        conv = block.tdnn2.conv
        weight, bias = conv.weight.asnumpy().copy(), conv.bias.asnumpy()
        columns = slice(weight.shape[1] - scale.shape[0], weight.shape[1])        # the last split's channels
        bias = bias + weight[:, columns, 0] @ shift
        weight[:, columns, :] *= scale.reshape(1, -1, 1)
        _set_conv(conv, weight, bias)
        last.norm = None
    weight, bias = folded.fc.weight.asnumpy(), folded.fc.bias.asnumpy()            # (E, 2M, 1), (E,)
    scale, shift = _affine(folded.asp_bn)
    weight, bias = weight * scale.reshape(1, -1, 1), bias + weight[:, :, 0] @ shift
    if folded.fc_bn is not None:
        scale, shift = _affine(folded.fc_bn)
        weight, bias = weight * scale.reshape(-1, 1, 1), bias * scale + shift
    _set_conv(folded.fc, weight, bias)
    folded.asp_bn = None
    folded.fc_bn = None
    cells = [cell for _, cell in folded.cells_and_names()]
    for block in cells:
        if isinstance(block, TDNNBlock) and block.relu and isinstance(block.norm, BatchNorm):
            scale, shift = _affine(block.norm)
            if np.all(scale > 0):
                conv = block.conv
                _set_conv(conv, conv.weight.asnumpy() * scale.reshape(-1, 1, 1), conv.bias.asnumpy() * scale)
                block.norm = Shift(shift)
    for i in range(1, len(folded.blocks)):
        _fold_res2net_shifts(folded.blocks[i])
    if isinstance(folded.mfa.norm, Shift):
        _fold_shift_into_pooling(folded.asp, folded.mfa.norm.shift.asnumpy())
        folded.mfa.norm = None
    for conv in cells:
        if isinstance(conv, Conv1d):
            conv.pack()
    for name, parameter in folded.parameters_and_names():     # the new ones are named after their attribute only;
        parameter.name = name                                 # an export keys parameters by name
    return folded
