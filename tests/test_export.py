"""Export round trips (src/deploy/verified_export.py, export.py): the written file reproduces the network within
1e-4."""
import json
import os

import numpy as np
import pytest
import mindspore as ms
from mindspore import nn

import export
from src.model.ecapa_tdnn import ECAPA_TDNN
from src.deploy.verified_export import ExportError, example_input, export_cell, export_model
from src.deploy.contract import contract_path, read_contract
from src.deploy.onnx_graph import FRONT_END_SCOPE
from src.deploy.onnx_tools import OnnxToolError, add_sherpa_metadata, quantize_int8
from tests.test_ecapa_tdnn import WESPEAKER_VARIANTS, randomize_our_batchnorm
from tests.modes import op_by_op

SMALL = dict(channels=16, mfa_channels=48, embedding_size=24, attention_channels=8, se_channels=8, res2net_scale=4)
SECONDS = 0.5                                  # 8000 samples, 51 frames: small graphs compile fast


def small_network(padding="reflect", seed=0):
    np.random.seed(seed)
    ms.set_seed(seed)
    net = ECAPA_TDNN(padding=padding, **SMALL)
    net.set_train(False)
    return net


@pytest.mark.parametrize("input_kind,dynamic", [("waveform", False), ("fbank", True)])
def test_mindir_round_trip(tmp_path, input_kind, dynamic):
    net = small_network()
    contract = export_model(net, str(tmp_path / "ecapa"), "MINDIR", input_kind, batch_size=2, seconds=SECONDS,
                            dynamic=dynamic)
    path = str(tmp_path / "ecapa.mindir")
    assert contract == read_contract(contract_path(path))
    ver = contract["verification"]
    print(f"\nMINDIR {input_kind} dynamic={dynamic}: max abs diff {ver['max_abs_diff']:.3g} over {ver['checked_shapes']}")
    assert ver["max_abs_diff"] <= 1e-4
    row = [8000] if input_kind == "waveform" else [51, 80]
    assert contract["input"]["shape"] == [2, -1] + row[1:] if dynamic else [2] + row
    assert contract["input"]["kind"] == input_kind and contract["input"]["dtype"] == "float32"
    assert contract["output"]["shape"] == [2, 24] and contract["embedding_size"] == 24
    assert (contract["window_samples"], contract["frames_per_window"], contract["sample_rate"]) == (8000, 51, 16000)
    assert len(ver["checked_shapes"]) == (3 if dynamic else 1)

    # Independent check: a fresh input (another seed; the longer length when dynamic) through the reloaded file.
    samples = 8000 * 5 // 3 if dynamic else 8000
    x = ms.Tensor(example_input(input_kind, 2, samples, seed=7))
    exported = nn.GraphCell(ms.load(path))(x).asnumpy()
    with op_by_op():      # the reference runs op by op: no graph of the whole network to compile
        expected = export_cell(net, input_kind)(x).asnumpy()
    np.testing.assert_allclose(exported, expected, atol=1e-4, rtol=0)


def test_onnx_round_trip_with_onnxruntime(tmp_path):
    """ONNX (fixed shape, reflect padding, fbank in the graph) reproduced by onnxruntime."""
    pytest.importorskip("onnxruntime")
    contract = export_model(small_network(), str(tmp_path / "ecapa"), "ONNX", "waveform", batch_size=2,
                            seconds=SECONDS)
    ver = contract["verification"]
    print(f"\nONNX: max abs diff {ver['max_abs_diff']:.3g}; onnxruntime {ver['exported_ms']:.1f} ms vs MindSpore "
          f"{ver['network_ms']:.1f} ms for {ver['timed_shape']}")
    assert ver["max_abs_diff"] <= 1e-4 and ver["loaded_with"].startswith("onnxruntime")
    assert contract["input"]["shape"] == [2, 8000] and contract["input"]["name"] == "wav"
    assert contract["output"]["shape"] == [2, 24]


@pytest.mark.parametrize("variants", [
    {}, WESPEAKER_VARIANTS,
    dict(kernel_sizes=[5, 3, 3], dilations=[1, 2, 3]),                            # one block, 3-tap MFA
    dict(WESPEAKER_VARIANTS, kernel_sizes=[3, 5, 1, 3, 3], dilations=[2, 1, 1, 3, 2]),
], ids=["reflect", "zeros-wespeaker", "reflect-1-block", "zeros-3-blocks-other-kernels"])
def test_onnx_with_dynamic_batch_and_time(tmp_path, variants, pynative):
    """One ONNX file (src/deploy/onnx_graph.py) embeds any number of frames and utterances: export_model's check
    runs it at three lengths, then a batch size and a length it never saw are compared with the unfolded network.
    PYNATIVE: no MindSpore export is involved, so nothing needs compiling."""
    pytest.importorskip("onnxruntime")
    import onnxruntime as ort
    net = randomize_our_batchnorm(ECAPA_TDNN(**SMALL, **variants), seed=3)
    net.set_train(False)
    contract = export_model(net, str(tmp_path / "ecapa"), "ONNX", "fbank", batch_size=2, seconds=SECONDS,
                            dynamic=True)
    ver = contract["verification"]
    print(f"\nONNX dynamic {variants or 'default'}: max abs diff {ver['max_abs_diff']:.3g} over {ver['checked_shapes']}")
    assert ver["checked_shapes"] == [[2, 51, 80], [2, 84, 80], [2, 34, 80]] and ver["max_abs_diff"] <= 1e-4
    assert contract["input"]["shape"] == [2, -1, 80] and contract["input"]["name"] == "feats"
    session = ort.InferenceSession(str(tmp_path / "ecapa.onnx"), providers=["CPUExecutionProvider"])
    feats = example_input("fbank", 3, 9876, seed=5)                                   # 62 frames, batch 3
    got = session.run(None, {"feats": feats})[0]
    expected = net(ms.Tensor(feats)).asnumpy()
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


KALDI = {"front_end": "kaldi", "kaldi_window": "hamming", "kaldi_scale_16bit": True, "kaldi_mean_norm": True}
SHERPA_KALDI = {"front_end": "kaldi", "kaldi_window": "povey", "kaldi_scale_16bit": False, "kaldi_mean_norm": True,
                "kaldi_snip_edges": False, "kaldi_high_freq": -400}


@pytest.mark.parametrize("settings", [{}, KALDI, SHERPA_KALDI], ids=["speechbrain", "kaldi", "kaldi-mirrored-7600hz"])
def test_onnx_with_waveform_input_and_dynamic_axes(tmp_path, settings, pynative):
    """The front end inside the dynamic ONNX graph (src/deploy/onnx_graph.py): export_model's check runs onnxruntime
    on 2 equal-length rows at 8000, 13333 and 5410 samples (the last two not whole hops) against the MindSpore
    Embedder; then a batch size and a length it never saw. The int8 copy keeps that front end float32, and
    sherpa-onnx metadata is refused (sherpa-onnx feeds features)."""
    pytest.importorskip("onnxruntime")
    import onnx
    import onnxruntime as ort
    net = randomize_our_batchnorm(ECAPA_TDNN(**dict(SMALL, channels=32, mfa_channels=96)), seed=4)
    net.set_train(False)
    contract = export_model(net, str(tmp_path / "ecapa"), "ONNX", "waveform", batch_size=2, seconds=SECONDS,
                            dynamic=True, settings=settings)
    ver = contract["verification"]
    print(f"\nONNX waveform dynamic {settings or 'speechbrain'}: max abs diff {ver['max_abs_diff']:.3g} over "
          f"{ver['checked_shapes']}; onnxruntime {ver['exported_ms']:.1f} ms for {ver['timed_shape']}")
    assert ver["checked_shapes"] == [[2, 8000], [2, 13333], [2, 5410]] and ver["max_abs_diff"] <= 1e-4
    assert contract["input"]["shape"] == [2, -1] and contract["input"]["name"] == "wav" and contract["dynamic_time"]
    path = str(tmp_path / "ecapa.onnx")
    wav = example_input("waveform", 3, 9871, seed=5)
    got = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"wav": wav})[0]
    expected = export_cell(net, "waveform", settings=settings)(ms.Tensor(wav)).asnumpy()
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)

    int8 = quantize_int8(net, path, contract, [example_input("waveform", 8, 8000, seed=6)], wav[:1])
    model = onnx.load(str(tmp_path / int8["model_file"]))
    front_end = [node.op_type for node in model.graph.node if FRONT_END_SCOPE in node.name]
    assert "MatMul" in front_end and "QuantizeLinear" not in front_end, "front end must stay float32"
    assert len(int8_weights(model)) >= 20, "the network's weights were not quantised"
    assert int8["quantization"]["min_cosine_vs_float"] >= 0.99
    with pytest.raises(OnnxToolError, match="input.kind is 'waveform', sherpa-onnx needs 'fbank'"):
        add_sherpa_metadata(path, contract)


def int8_weights(model):
    """The int8 constant tensors a static QDQ model dequantises (its quantised weights)."""
    from onnx import TensorProto
    int8 = {t.name for t in model.graph.initializer if t.data_type == TensorProto.INT8}
    return [node.input[0] for node in model.graph.node if node.op_type == "DequantizeLinear" and node.input[0] in int8]


def test_formats_refused_with_a_reason(tmp_path):
    net = small_network()
    with pytest.raises(ExportError, match="AIR export needs MindSpore's Ascend backend"):
        export_model(net, str(tmp_path / "a"), "AIR", seconds=SECONDS)
    with pytest.raises(ExportError, match="export_format: expected one of"):
        export_model(net, str(tmp_path / "a"), "TFLITE", seconds=SECONDS)
    assert os.listdir(tmp_path) == []


def test_export_command_writes_model_and_contract(tmp_path, capsys):
    args = ["--output_dir", str(tmp_path), "--export_seconds", "0.5", "--export_batch_size", "3", "--padding", "zeros"]
    for key, value in SMALL.items():
        args += [f"--{key}", str(value)]
    assert export.main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["model"] == str(tmp_path / "ecapa_tdnn.mindir") and summary["input"] == [3, 8000]
    contract = read_contract(str(tmp_path / "ecapa_tdnn.mindir.json"))
    assert contract["network"]["padding"] == "zeros" and contract["network"]["channels"] == 16
    # A mismatch (here forced with a tolerance no file can meet; the recipe refuses one below 0) is refused and
    # leaves no usable model.
    base = str(tmp_path / "bad")
    with pytest.raises(ExportError, match="exceeds"):
        export_model(small_network(), base, "MINDIR", seconds=SECONDS, tolerance=-1.0)
    assert os.path.exists(base + ".mindir.rejected") and not os.path.exists(base + ".mindir")
    assert not os.path.exists(base + ".mindir.json")
