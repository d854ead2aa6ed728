"""ECAPA_TDNN, with fbank input or with its front end, written directly as an ONNX graph whose batch and time axes
are dynamic.

MindSpore 2.10's ONNX exporter cannot write a dynamic axis: it refuses inputs with a dynamic dimension
(``mindspore/train/serialization.py`` ``_check_dynamic_input``), and with that check bypassed its C++ converter has
no translation for the Shape operator. So ``export_model`` writes a dynamic ONNX file from here: the folded inference
network (src/model/ecapa_tdnn.py ``inference_network``) op by op with the onnx package, channels-first (B, C, T) as
ONNX's Conv wants. Reflect padding is ONNX's own ``Pad(mode="reflect")``, which takes any length. Every frame is
valid (no lengths input), as in every export; the written file is verified with onnxruntime against the network.

With waveform input the front end comes first, also with a dynamic sample axis: SpeechBrain's fbank
(src/model/fbank.py ``Fbank``) or Kaldi's (src/model/kaldi_fbank.py ``KaldiFbank``), the same computation as the Cell
with the Cell's own DFT and mel matrices (its ``dft`` and ``mel_stacked``), so the two cannot drift. Framing is the
Cells' ``frames_every_hop`` in ONNX operators (``hop_frames``: Pad, Shape, Mod, Slice, Reshape, Concat), exact for any
number of samples; Kaldi's mirrored edges (``snip_edges`` false) add one Gather of computed indices. The front end's
node names contain ``FRONT_END_SCOPE`` ("/fbank-", as MindSpore's exporter names the Embedder's ``fbank`` cell), so
src/deploy/onnx_tools.py ``quantize_int8`` keeps it float32.

Example::

    import onnx
    from src.model.ecapa_tdnn import ECAPA_TDNN
    from src.model.kaldi_fbank import KaldiFbank
    from src.deploy.onnx_graph import ecapa_onnx
    net = ECAPA_TDNN(channels=64, mfa_channels=192)
    onnx.save(ecapa_onnx(net), "ecapa.onnx")                        # feats (B, T, 80) -> (B, 192)
    onnx.save(ecapa_onnx(net, KaldiFbank()), "ecapa_wav.onnx")      # wav (B, S) -> (B, 192)
"""
import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from src.model.ecapa_tdnn import inference_network
from src.model.fbank import AMIN, HOP_LENGTH, N_FFT, TOP_DB, WIN_LENGTH, Fbank
from src.model.kaldi_fbank import LOG_FLOOR, KaldiFbank
from src.model.layers import STD_EPS, WESPEAKER_EPS, Shift

OPSET = 17
IR_VERSION = 8        # ONNX IR of opset 17; the onnx package's newer default (IR 14) is refused by the onnxruntime
                      # builds inside clients such as sherpa-onnx ("max supported IR version: 13")
MIRROR_OFFSET = WIN_LENGTH // 2 - HOP_LENGTH // 2   # 120: without snip_edges Kaldi's frame t starts at 160 t - 120

FRONT_END_SCOPE = "/fbank-"    # in the name of every front-end node (as MindSpore's exporter names the Embedder's fbank cell)


class OnnxGraphError(ValueError):
    """The model cannot be written as a dynamic ONNX graph (e.g. a front-end setting with no translation here)."""


class Graph:
    """Nodes and constants of an ONNX graph under construction; each op returns its output name(s). Nodes are named
    ``scope + kind-opN`` (``scope`` e.g. "/fbank-Fbank/" while the front end is written, else "").

    ``channels_last``: how the network's activations are laid out, (B, T, C) or (B, C, T); the layer writers
    below read it (``channel_axis``, ``per_channel``)."""

    def __init__(self, channels_last=False):
        self.nodes, self.constants, self.count = [], [], 0
        self.scope = ""
        self.channels_last = channels_last

    @property
    def channel_axis(self):
        return 2 if self.channels_last else 1

    def per_channel(self, values):
        """(C,) values as a constant that broadcasts over the activations' channel axis."""
        values = np.asarray(values, np.float32)
        return self.const(values if self.channels_last else values.reshape(-1, 1))

    def name(self):
        """A new tensor name."""
        self.count += 1
        return f"t{self.count}"

    def const(self, array):
        """A constant (initializer) holding ``array`` -> its name."""
        name = self.name()
        self.constants.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def op(self, kind, inputs, outputs=1, **attrs):
        """A node of operator ``kind`` -> its output name (a list of names when ``outputs`` > 1)."""
        names = [self.name() for _ in range(outputs)]
        node_name = f"{self.scope}{kind}-op{self.count}"
        self.nodes.append(helper.make_node(kind, inputs, names, name=node_name, **attrs))
        return names[0] if outputs == 1 else names


def conv(g, cell, x, weight=None):
    """Conv1d (weight (out, in, k), 'same' zero or reflect padding at the ends): (B, in, T) -> (B, out, T), or
    channels-last (B, T, in) -> (B, T, out) as ``conv_matmul``."""
    weight = cell.weight.asnumpy() if weight is None else weight
    if g.channels_last:
        return conv_matmul(g, cell, x, weight)
    pads = [cell.pad, cell.pad]
    if cell.pad and cell.padding == "reflect":
        x = g.op("Pad", [x, g.const(np.array([0, 0, cell.pad, 0, 0, cell.pad], np.int64))], mode="reflect")
        pads = [0, 0]
    return g.op("Conv", [x, g.const(weight), g.const(cell.bias.asnumpy())], dilations=[cell.dilation], pads=pads,
                kernel_shape=[weight.shape[2]])


def conv_matmul(g, cell, x, weight):
    """Conv1d channels-last, as src/model/layers.py ``Conv1d``: (B, T, in) -> (B, T, out). A k-tap dilated
    convolution is the input padded at both ends, k time shifts of it (Slice) stacked on the channel axis, and one
    MatMul with the weight in tap-major rows (k * in, out); a 1x1 convolution is that MatMul alone. A MatMul with a
    constant weight is what onnxruntime's static int8 quantisation turns into its fast integer GEMM."""
    out_channels, in_channels, taps = weight.shape
    if taps > 1:
        mode = "reflect" if cell.padding == "reflect" else "constant"
        padded = g.op("Pad", [x, g.const(ints(0, cell.pad, 0, 0, cell.pad, 0))], mode=mode)
        shifts = []
        for j in range(taps):
            start, stop = j * cell.dilation, j * cell.dilation - 2 * cell.pad      # stop <= 0: from the end
            end = np.iinfo(np.int64).max if stop == 0 else stop
            shifts.append(g.op("Slice", [padded, g.const(ints(start)), g.const(ints(end)), g.const(ints(1))]))
        x = g.op("Concat", shifts, axis=2)
    rows = np.ascontiguousarray(weight.transpose(2, 1, 0).reshape(taps * in_channels, out_channels))
    return g.op("Add", [g.op("MatMul", [x, g.const(rows)]), g.const(cell.bias.asnumpy().astype(np.float32))])


def time_mean(g, x):
    """Mean over time, keeping the axis: (B, C, T) -> (B, C, 1), or channels-last (B, T, C) -> (B, 1, C) as a
    MatMul with a row of 1/T (onnxruntime's ReduceMean over a middle axis is about 100x slower than over the last)."""
    if not g.channels_last:
        return g.op("ReduceMean", [x], axes=[2], keepdims=1)
    frames = g.op("Shape", [x], start=1, end=2)                                       # (1,) int64: T
    ones = g.op("ConstantOfShape", [g.op("Concat", [g.const(ints(1)), frames], axis=0)],
                value=numpy_helper.from_array(np.ones(1, np.float32)))              # (1, T)
    row = g.op("Div", [ones, g.op("Cast", [frames], to=TensorProto.FLOAT)])
    return g.op("MatMul", [row, x])


def activate(g, block, y):
    """TDNNBlock after its conv: ReLU, then the eval-mode batch norm as scale and shift."""
    if block.relu:
        y = g.op("Relu", [y])
    if isinstance(block.norm, Shift):
        y = g.op("Add", [y, g.per_channel(block.norm.shift.asnumpy())])
    elif block.norm is not None:
        scale, shift = block.norm.scale_shift()
        y = g.op("Add", [g.op("Mul", [y, g.per_channel(scale.asnumpy())]), g.per_channel(shift.asnumpy())])
    return y


def tdnn(g, block, x):
    """TDNNBlock: (B, in, T) -> (B, out, T)."""
    return activate(g, block, conv(g, block.conv, x))


def se_res2net(g, block, x):
    """SERes2NetBlock: (B, C, T) -> (B, C, T), or channels-last."""
    y = tdnn(g, block.tdnn1, x)
    res2net = block.res2net_block
    groups = g.op("Split", [y, g.const(np.full(res2net.scale, res2net.width, np.int64))], outputs=res2net.scale,
                  axis=g.channel_axis)
    outputs = [groups[0]]
    y = groups[0]
    for i in range(1, res2net.scale):
        z = groups[i] if i == 1 else g.op("Add", [groups[i], y])
        y = tdnn(g, res2net.blocks[i - 1], z)
        outputs.append(y)
    y = tdnn(g, block.tdnn2, g.op("Concat", outputs, axis=g.channel_axis))
    se = block.se_block
    s = time_mean(g, y)
    s = g.op("Sigmoid", [conv(g, se.conv2, g.op("Relu", [conv(g, se.conv1, s)]))])
    return g.op("Add", [g.op("Mul", [y, s]), x])


def mean_std(g, x, pooling_stats):
    """Utterance mean and std over time (B, M, T) -> (B, M, 1) each, as src/model/layers.py frame_mean_std."""
    mean = g.op("ReduceMean", [x], axes=[2], keepdims=1)
    centered = g.op("Sub", [x, mean])
    var = g.op("ReduceMean", [g.op("Mul", [centered, centered])], axes=[2], keepdims=1)
    if pooling_stats == "wespeaker":
        frames = g.op("Cast", [g.op("Gather", [g.op("Shape", [x]), g.const(np.array(2, np.int64))])],
                      to=TensorProto.FLOAT)
        unbiased = g.op("Div", [g.op("Mul", [var, frames]), g.op("Sub", [frames, g.const(np.float32(1))])])
        return mean, g.op("Sqrt", [g.op("Add", [unbiased, g.const(np.float32(WESPEAKER_EPS))])])
    return mean, g.op("Sqrt", [g.op("Max", [var, g.const(np.float32(STD_EPS))])])


def attentive_pooling(g, asp, h):
    """(B, M, T) -> (B, 2M, 1): attention-weighted mean and std, as AttentiveStatisticsPooling."""
    if asp.global_context:
        weight = asp.tdnn.conv.weight.asnumpy()
        m = asp.channels
        mean, std = mean_std(g, h, asp.pooling_stats)
        frame_part = g.op("Conv", [h, g.const(weight[:, :m])], kernel_shape=[1])
        utt_part = g.op("Conv", [g.op("Concat", [mean, std], axis=1), g.const(weight[:, m:]),
                                 g.const(asp.tdnn.conv.bias.asnumpy())], kernel_shape=[1])
        hidden = activate(g, asp.tdnn, g.op("Add", [frame_part, utt_part]))
    else:
        hidden = tdnn(g, asp.tdnn, h)
    attention = g.op("Softmax", [conv(g, asp.conv, g.op("Tanh", [hidden]))], axis=2)
    mean = g.op("ReduceSum", [g.op("Mul", [h, attention]), g.const(np.array([2], np.int64))], keepdims=1)
    if asp.pooling_stats == "wespeaker":
        square = g.op("ReduceSum", [g.op("Mul", [g.op("Mul", [h, h]), attention]), g.const(np.array([2], np.int64))],
                      keepdims=1)
        var, floor = g.op("Sub", [square, g.op("Mul", [mean, mean])]), WESPEAKER_EPS
    else:
        centered = g.op("Sub", [h, mean])
        var = g.op("ReduceSum", [g.op("Mul", [g.op("Mul", [centered, centered]), attention]),
                                 g.const(np.array([2], np.int64))], keepdims=1)
        floor = STD_EPS
    std = g.op("Sqrt", [g.op("Max", [var, g.const(np.float32(floor))])])
    if asp.mean_shift is not None:      # the MFA layer's batch-norm shift, folded into the pooling
        mean = g.op("Add", [mean, g.per_channel(asp.mean_shift.shift.asnumpy())])
    return g.op("Concat", [mean, std], axis=1)


def ints(*values):
    """An int64 constant array (shapes, pads, axes, slice bounds)."""
    return np.array(values, np.int64)


def hop_frames(g, padded):
    """(B, L) samples -> (B, L // 160 - 2, 400) frames starting every 160 samples, as src/model/fbank.py
    ``frames_every_hop``: cut to whole 160-sample rows (B, L // 160, 160); rows t, t + 1 and the first 80 samples of
    row t + 2 make frame t. Shape, Mod, Slice, Reshape and Concat: exact for any L."""
    length = g.op("Shape", [padded], start=1, end=2)                              # (1,) int64: L
    whole = g.op("Sub", [length, g.op("Mod", [length, g.const(ints(HOP_LENGTH))])])
    rows = g.op("Reshape", [g.op("Slice", [padded, g.const(ints(0)), whole, g.const(ints(1))]),
                            g.const(ints(0, -1, HOP_LENGTH))])                   # (B, T + 2, 160)
    first = g.op("Slice", [rows, g.const(ints(0)), g.const(ints(-2)), g.const(ints(1))])
    second = g.op("Slice", [rows, g.const(ints(1)), g.const(ints(-1)), g.const(ints(1))])
    tail = WIN_LENGTH - 2 * HOP_LENGTH
    third = g.op("Slice", [rows, g.const(ints(2, 0)), g.const(ints(np.iinfo(np.int64).max, tail)), g.const(ints(1, 2))])
    return g.op("Concat", [first, second, third], axis=2)


def zero_pad(g, wav, left, right):
    """(B, S) -> (B, left + S + right) with zeros at both ends."""
    return g.op("Pad", [wav, g.const(ints(0, left, 0, right))])


def speechbrain_fbank(g, cell, wav):
    """src/model/fbank.py Fbank, every sample valid: wav (B, S) -> feats (B, T, n_mels), T = 1 + S // 160.

    Centred frames: 200 zeros before the waveform and 280 after give L = S + 480 samples, L // 160 = T + 2 rows
    (the Cell pads exactly to 160 (T + 2); the extra zeros here are cut off by ``hop_frames``). Then the windowed
    DFT (400, 402), the power ``re^2 + im^2`` times the mel matrix stacked twice (402, n_mels), 10 log10 of the power
    floored at 1e-10, the floor 80 dB below the utterance's maximum, and the utterance mean subtracted."""
    left = N_FFT // 2
    frames = hop_frames(g, zero_pad(g, wav, left, 3 * HOP_LENGTH - left))           # (B, T, 400)
    spec = g.op("MatMul", [frames, g.const(cell.dft.asnumpy())])                   # (B, T, 2 * bins): re | im
    mel_power = g.op("MatMul", [g.op("Mul", [spec, spec]), g.const(cell.mel_stacked.asnumpy())])
    db = g.op("Mul", [g.op("Log", [g.op("Max", [mel_power, g.const(np.float32(AMIN))])]),
                      g.const(np.float32(10.0 / math.log(10.0)))])
    utt_max = g.op("ReduceMax", [db], axes=[1, 2], keepdims=1)                     # (B, 1, 1)
    db = g.op("Max", [db, g.op("Sub", [utt_max, g.const(np.float32(TOP_DB))])])
    if cell.mean_norm:
        db = g.op("Sub", [db, g.op("ReduceMean", [db], axes=[1], keepdims=1)])
    return db


def mirrored_samples(g, wav):
    """(B, S) -> (B, 160 (T + 2)) samples from sample -120 on, T = (S + 80) // 160, every index s outside [0, S)
    mirrored as Kaldi does without snip_edges (s < 0 -> -s - 1, s >= S -> 2 S - 1 - s, two rounds, then clipped), as
    src/model/kaldi_fbank.py ``KaldiFbank.mirrored_frames`` with every sample valid: one Gather of computed indices."""
    length = g.op("Shape", [wav], start=1, end=2)                                 # (1,) int64: S
    rows = g.op("Add", [g.op("Div", [g.op("Add", [length, g.const(ints(HOP_LENGTH // 2))]), g.const(ints(HOP_LENGTH))]),
                        g.const(ints(2))])                                         # T + 2
    count = g.op("Squeeze", [g.op("Mul", [rows, g.const(ints(HOP_LENGTH))]), g.const(ints(0))])
    source = g.op("Sub", [g.op("Range", [g.const(np.int64(0)), count, g.const(np.int64(1))]),
                          g.const(ints(MIRROR_OFFSET))])
    last = g.op("Sub", [g.op("Add", [length, length]), g.const(ints(1))])         # 2 S - 1
    for _ in range(2):
        source = g.op("Where", [g.op("Less", [source, g.const(ints(0))]),
                                g.op("Sub", [g.const(ints(-1)), source]), source])
        source = g.op("Where", [g.op("Less", [source, length]), source, g.op("Sub", [last, source])])
    source = g.op("Min", [g.op("Max", [source, g.const(ints(0))]), g.op("Sub", [length, g.const(ints(1))])])
    return g.op("Gather", [wav, source], axis=1)


def kaldi_fbank(g, cell, wav):
    """src/model/kaldi_fbank.py KaldiFbank, every sample valid: wav (B, S) -> feats (B, T, n_mels), T = 1 + (S - 400)
    // 160 with ``snip_edges`` ((S + 80) // 160 without).

    With snip_edges, 80 zeros after the waveform (as the Cell's ``frames``) give L // 160 = (S + 80) // 160 = T + 2
    rows; they only reach the unused half of the last row. Without, ``mirrored_samples``. Then each frame's mean (DC
    offset) subtracted, the folded pre-emphasis, window and DFT matrix (400, 512), the power times the mel matrix
    stacked twice (512, n_mels; its top edge is the Cell's ``high_freq``), the log floored at float32 epsilon, and
    the utterance mean subtracted (``mean_norm``)."""
    if cell.snip_edges:
        frames = hop_frames(g, zero_pad(g, wav, 0, WIN_LENGTH - 2 * HOP_LENGTH))      # (B, T, 400)
    else:
        frames = hop_frames(g, mirrored_samples(g, wav))
    frames = g.op("Sub", [frames, g.op("ReduceMean", [frames], axes=[2], keepdims=1)])
    spec = g.op("MatMul", [frames, g.const(cell.dft.asnumpy())])                   # (B, T, 512): re | im
    mel_power = g.op("MatMul", [g.op("Mul", [spec, spec]), g.const(cell.mel_stacked.asnumpy())])
    feats = g.op("Log", [g.op("Max", [mel_power, g.const(np.float32(LOG_FLOOR))])])
    if cell.mean_norm:
        feats = g.op("Sub", [feats, g.op("ReduceMean", [feats], axes=[1], keepdims=1)])
    return feats


def front_end(g, cell, wav):
    """The in-graph front end ``cell`` (Fbank or KaldiFbank): wav (B, S) -> feats (B, T, n_mels), its nodes named
    ``FRONT_END_SCOPE + cell class + "/"``."""
    writers = {Fbank: speechbrain_fbank, KaldiFbank: kaldi_fbank}
    if type(cell) not in writers:
        raise OnnxGraphError(f"front end {type(cell).__name__}: no dynamic ONNX translation (known: "
                             f"{', '.join(c.__name__ for c in writers)})")
    g.scope = f"{FRONT_END_SCOPE}{type(cell).__name__}/"
    try:
        return writers[type(cell)](g, cell, wav)
    finally:
        g.scope = ""


def ecapa_onnx(network, front_end_cell=None, channels_last=False):
    """ECAPA_TDNN -> onnx.ModelProto: feats (batch, frames, n_mels) -> embedding (batch, E), both axes dynamic; with
    ``front_end_cell`` (src/model/embedder.py ``build_front_end``: Fbank or KaldiFbank) the graph is the Embedder's,
    wav (batch, samples) float32 -> embedding (batch, E), both axes dynamic.

    ``channels_last``: the convolutions up to the attentive pooling as MatMuls on (B, T, C) activations
    (``conv_matmul``), the pooling channels-first as before. Same results; the form src/deploy/onnx_tools.py
    ``quantize_int8`` quantises, because onnxruntime's int8 Conv (QLinearConv) turns the whole graph channels-last
    and then runs the pooling's reductions over time about 100x slower."""
    net = inference_network(network)
    g = Graph(channels_last)
    if front_end_cell is None:
        graph_input = helper.make_tensor_value_info("feats", TensorProto.FLOAT, ["batch", "frames", net.n_mels])
        feats = "feats"
    else:
        if front_end_cell.n_mels != net.n_mels:
            raise OnnxGraphError(f"n_mels: the front end gives {front_end_cell.n_mels}, the network takes {net.n_mels}")
        graph_input = helper.make_tensor_value_info("wav", TensorProto.FLOAT, ["batch", "samples"])
        feats = front_end(g, front_end_cell, "wav")
    x = feats if channels_last else g.op("Transpose", [feats], perm=[0, 2, 1])
    x = tdnn(g, net.blocks[0], x)
    block_outputs = []
    for i in range(1, len(net.blocks)):      # the SE-Res2Blocks (kernel_sizes, dilations)
        x = se_res2net(g, net.blocks[i], x)
        block_outputs.append(x)
    h = tdnn(g, net.mfa, g.op("Concat", block_outputs, axis=g.channel_axis))
    if channels_last:
        h = g.op("Transpose", [h], perm=[0, 2, 1])
        g.channels_last = False
    pooled = attentive_pooling(g, net.asp, h)
    embedding = conv(g, net.fc, pooled)
    g.nodes.append(helper.make_node("Squeeze", [embedding, g.const(np.array([2], np.int64))], ["embedding"]))
    graph = helper.make_graph(
        g.nodes, "ecapa_tdnn", [graph_input],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", net.embedding_size])],
        g.constants)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    onnx.checker.check_model(model)
    return model
