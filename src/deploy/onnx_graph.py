"""ECAPA_TDNN with fbank input written directly as an ONNX graph whose batch and time axes are dynamic.

MindSpore 2.10's ONNX exporter cannot write a dynamic axis: it refuses inputs with a dynamic dimension
(``mindspore/train/serialization.py`` ``_check_dynamic_input``), and with that check bypassed its C++ converter has
no translation for the Shape operator. So ``export_model`` writes a dynamic ONNX file from here: the folded inference
network (src/model/ecapa_tdnn.py ``inference_network``) op by op with the onnx package, channels-first (B, C, T) as
ONNX's Conv wants. Reflect padding is ONNX's own ``Pad(mode="reflect")``, which takes any length. Every frame is
valid (no lengths input), as in every export; the written file is verified with onnxruntime against the network.

Example::

    import onnx
    from src.model.ecapa_tdnn import ECAPA_TDNN
    from src.deploy.onnx_graph import ecapa_onnx
    onnx.save(ecapa_onnx(ECAPA_TDNN(channels=64, mfa_channels=192)), "ecapa.onnx")   # feats (B, T, 80) -> (B, 192)
"""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from src.model.ecapa_tdnn import inference_network
from src.model.layers import STD_EPS, WESPEAKER_EPS

OPSET = 17
IR_VERSION = 8        # ONNX IR of opset 17; the onnx package's newer default (IR 14) is refused by the onnxruntime
                      # builds inside clients such as sherpa-onnx ("max supported IR version: 13")


class Graph:
    """Nodes and constants of an ONNX graph under construction; each op returns its output name(s)."""

    def __init__(self):
        self.nodes, self.constants, self.count = [], [], 0

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
        self.nodes.append(helper.make_node(kind, inputs, names, **attrs))
        return names[0] if outputs == 1 else names


def column(values):
    """(C,) -> (C, 1) float32, to broadcast over (B, C, T)."""
    return np.asarray(values, np.float32).reshape(-1, 1)


def conv(g, cell, x, weight=None):
    """Conv1d (weight (out, in, k), 'same' zero or reflect padding at the ends): (B, in, T) -> (B, out, T)."""
    weight = cell.weight.asnumpy() if weight is None else weight
    pads = [cell.pad, cell.pad]
    if cell.pad and cell.padding == "reflect":
        x = g.op("Pad", [x, g.const(np.array([0, 0, cell.pad, 0, 0, cell.pad], np.int64))], mode="reflect")
        pads = [0, 0]
    return g.op("Conv", [x, g.const(weight), g.const(cell.bias.asnumpy())], dilations=[cell.dilation], pads=pads,
                kernel_shape=[weight.shape[2]])


def activate(g, block, y):
    """TDNNBlock after its conv: ReLU, then the eval-mode batch norm as scale and shift."""
    if block.relu:
        y = g.op("Relu", [y])
    if block.norm is not None:
        scale, shift = block.norm.scale_shift()
        y = g.op("Add", [g.op("Mul", [y, g.const(column(scale.asnumpy()))]), g.const(column(shift.asnumpy()))])
    return y


def tdnn(g, block, x):
    """TDNNBlock: (B, in, T) -> (B, out, T)."""
    return activate(g, block, conv(g, block.conv, x))


def se_res2net(g, block, x):
    """SERes2NetBlock: (B, C, T) -> (B, C, T)."""
    y = tdnn(g, block.tdnn1, x)
    res2net = block.res2net_block
    groups = g.op("Split", [y, g.const(np.full(res2net.scale, res2net.width, np.int64))], outputs=res2net.scale,
                  axis=1)
    outputs = [groups[0]]
    y = groups[0]
    for i in range(1, res2net.scale):
        z = groups[i] if i == 1 else g.op("Add", [groups[i], y])
        y = tdnn(g, res2net.blocks[i - 1], z)
        outputs.append(y)
    y = tdnn(g, block.tdnn2, g.op("Concat", outputs, axis=1))
    se = block.se_block
    s = g.op("ReduceMean", [y], axes=[2], keepdims=1)
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
    return g.op("Concat", [mean, std], axis=1)


def ecapa_onnx(network):
    """ECAPA_TDNN -> onnx.ModelProto: feats (batch, frames, n_mels) -> embedding (batch, E), both axes dynamic."""
    net = inference_network(network)
    g = Graph()
    x = g.op("Transpose", ["feats"], perm=[0, 2, 1])
    x0 = tdnn(g, net.blocks[0], x)
    x1 = se_res2net(g, net.blocks[1], x0)
    x2 = se_res2net(g, net.blocks[2], x1)
    x3 = se_res2net(g, net.blocks[3], x2)
    h = tdnn(g, net.mfa, g.op("Concat", [x1, x2, x3], axis=1))
    pooled = attentive_pooling(g, net.asp, h)
    embedding = conv(g, net.fc, pooled)
    g.nodes.append(helper.make_node("Squeeze", [embedding, g.const(np.array([2], np.int64))], ["embedding"]))
    graph = helper.make_graph(
        g.nodes, "ecapa_tdnn",
        [helper.make_tensor_value_info("feats", TensorProto.FLOAT, ["batch", "frames", net.n_mels])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", net.embedding_size])],
        g.constants)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    onnx.checker.check_model(model)
    return model
