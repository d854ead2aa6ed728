"""ONNX post-processing (src/deploy/onnx_tools.py, export.py --export_int8 / --export_sherpa): the int8 copy stays
close to the float32 file, and sherpa-onnx, a real client, runs our export from the metadata we write."""
import json
import shutil

import numpy as np
import pytest
import mindspore as ms

import export
from src.deploy.export import example_input, example_waveform, export_model
from src.deploy.infer_files import contract_path, read_contract
from src.deploy.onnx_tools import (OnnxToolError, SHERPA_FBANK, add_sherpa_metadata, cosine_rows, run_onnx,
                                   sherpa_metadata)
from src.model.embedder import Embedder, build_front_end
from tests.test_export import SMALL, small_network

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def sherpa_embedding(path, wav):
    """sherpa-onnx's SpeakerEmbeddingExtractor on the ONNX file ``path`` and one 16 kHz waveform -> (D,)."""
    sherpa_onnx = pytest.importorskip("sherpa_onnx")
    extractor = sherpa_onnx.SpeakerEmbeddingExtractor(
        sherpa_onnx.SpeakerEmbeddingExtractorConfig(model=path, num_threads=1))
    stream = extractor.create_stream()
    stream.accept_waveform(16000, wav)
    stream.input_finished()
    assert extractor.is_ready(stream)
    return np.array(extractor.compute(stream), np.float32)


def sherpa_features(wav, scale_16bit, mean_norm):
    """What sherpa-onnx feeds the model, rebuilt with kaldi-native-fbank and SHERPA_FBANK -> (1, T, 80)."""
    knf = pytest.importorskip("kaldi_native_fbank")
    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0
    opts.frame_opts.snip_edges = SHERPA_FBANK["snip_edges"]
    opts.frame_opts.window_type = SHERPA_FBANK["window"]
    opts.mel_opts.num_bins = SHERPA_FBANK["n_mels"]
    opts.mel_opts.high_freq = SHERPA_FBANK["high_freq_hz"] - 8000
    fbank = knf.OnlineFbank(opts)
    fbank.accept_waveform(16000, (wav * (32768 if scale_16bit else 1)).tolist())
    fbank.input_finished()
    feats = np.array([fbank.get_frame(i) for i in range(fbank.num_frames_ready)], np.float32)
    return (feats - feats.mean(axis=0) if mean_norm else feats)[None]


@pytest.fixture(scope="module")
def fbank_export(tmp_path_factory):
    """One dynamic-length fbank-input ONNX export of a small network -> (network, ONNX path, contract). The graph
    does not depend on the kaldi_* options (the front end is outside it), so every case below reuses it."""
    net = small_network()
    base = str(tmp_path_factory.mktemp("sherpa") / "ecapa")
    settings = {"front_end": "kaldi", "kaldi_window": "povey", "kaldi_scale_16bit": False, "kaldi_mean_norm": True}
    contract = export_model(net, base, "ONNX", "fbank", seconds=0.5, dynamic=True, settings=settings)
    return net, base + ".onnx", contract


# 3D-Speaker's options, WeSpeaker's, and no mean normalisation (there the 16-bit scaling changes the features)
@pytest.mark.parametrize("window,scale_16bit,mean_norm", [("povey", False, True), ("hamming", True, True),
                                                          ("povey", True, False)])
def test_sherpa_onnx_runs_our_export(tmp_path, fbank_export, window, scale_16bit, mean_norm):
    """sherpa-onnx on our fbank-input export with our metadata gives the embedding of our ONNX file on its
    features (cosine >= 0.9999), and close to our own front end's (the fbank options differ: SHERPA_FBANK)."""
    net, exported, contract = fbank_export
    settings = {"front_end": "kaldi", "kaldi_window": window, "kaldi_scale_16bit": scale_16bit,
                "kaldi_mean_norm": mean_norm}
    path = str(tmp_path / "ecapa.onnx")
    shutil.copy(exported, path)
    metadata = add_sherpa_metadata(path, dict(contract, network=settings))
    assert {p.key: p.value for p in onnx.load(path).metadata_props}.items() >= metadata.items()
    recorded = read_contract(contract_path(path))["sherpa_onnx"]
    assert recorded["metadata"] == metadata
    assert recorded["audio_samples"] is None              # a dynamic time axis: audio of any length
    wav = example_waveform(1, 9123, seed=5)[0]
    got = sherpa_embedding(path, wav)
    same_features = run_onnx(path, sherpa_features(wav, scale_16bit, mean_norm))[0]
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        front_end = build_front_end(dict(settings, sample_rate=16000, n_mels=80))
        ours = Embedder(net, front_end=front_end)(ms.Tensor(wav[None])).asnumpy()[0]
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)
    exact, close = cosine_rows(got[None], same_features[None])[0], cosine_rows(got[None], ours[None])[0]
    print(f"\nsherpa-onnx, {settings}: cosine {exact:.6f} with our ONNX on sherpa's features, "
          f"{close:.5f} with our Kaldi front end")
    assert exact >= 0.9999
    assert close >= 0.95


def test_sherpa_refuses_speechbrain_fbank(tmp_path):
    contract = {"format": "ONNX", "input": {"kind": "fbank"}, "network": {"front_end": "speechbrain"},
                "n_mels": 80, "sample_rate": 16000, "batch_size": 1, "embedding_size": 24}
    with pytest.raises(OnnxToolError, match="network.front_end is 'speechbrain'.*Kaldi's fbank"):
        sherpa_metadata(contract)
    with pytest.raises(OnnxToolError, match="input.kind is 'waveform'"):
        sherpa_metadata(dict(contract, input={"kind": "waveform"}, network={"front_end": "kaldi"}))


def test_int8_export_command(tmp_path, capsys):
    """export.py --export_int8 true: <file>.int8.onnx with int8 weights and a float32 front end, its contract, and
    embeddings close to the float32 file's on an input the export never saw."""
    args = ["--output_dir", str(tmp_path), "--export_format", "ONNX", "--export_seconds", "0.5",
            "--export_int8", "true"]
    for key, value in SMALL.items():
        args += [f"--{key}", str(value)]
    assert export.main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    int8_path = str(tmp_path / "ecapa_tdnn.int8.onnx")
    assert summary["int8_model"] == int8_path
    contract = read_contract(contract_path(int8_path))
    assert contract["model_file"] == "ecapa_tdnn.int8.onnx" and contract["input"]["shape"] == [1, 8000]
    ops = [node.op_type for node in onnx.load(int8_path).graph.node]
    front_end = [node.op_type for node in onnx.load(int8_path).graph.node if "/fbank-" in node.name]
    assert ops.count("MatMulInteger") >= 20, "the network's weights were not quantised"
    assert "MatMul" in front_end and "MatMulInteger" not in front_end, "the front end must stay float32"

    x = example_input("waveform", 4, 8000, seed=11)
    cosine = cosine_rows(run_onnx(int8_path, x[:1]), run_onnx(str(tmp_path / "ecapa_tdnn.onnx"), x[:1]))
    print(f"\nint8 vs float32 ONNX: cosine {cosine.min():.5f}; recorded {contract['quantization']}")
    assert cosine.min() >= 0.99
    assert contract["quantization"]["min_cosine_vs_float"] >= 0.99
