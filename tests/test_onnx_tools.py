"""ONNX post-processing (src/deploy/onnx_tools.py, export.py --export_int8 / --export_sherpa): the int8 copy stays
close to the float32 file, and sherpa-onnx, a real client, runs our export from the metadata we write: with
eval.py's embeddings (1 - cosine <= 1e-11) for a model of sherpa-onnx's front end (kaldi_snip_edges false,
kaldi_high_freq -400, povey), close to them (cosine >= 0.98) for the default Kaldi framing."""
import json
import shutil

import numpy as np
import pytest
import mindspore as ms

import export
from src.deploy.verified_export import example_input, example_waveform, export_model
from src.deploy.contract import contract_path, read_contract
from src.deploy.onnx_tools import (OnnxToolError, SHERPA_FBANK, add_sherpa_metadata, cosine_rows, run_onnx,
                                   sherpa_differences, sherpa_metadata)
from src.model.embedder import Embedder, build_front_end
from src.data.synthetic import make_corpus
from tests.test_export import SMALL, int8_weights, small_network
from tests.modes import op_by_op

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
    does not depend on the kaldi_* options (the front end is outside it), so every case below reuses it with its
    own "network" settings."""
    net = small_network()
    base = str(tmp_path_factory.mktemp("sherpa") / "ecapa")
    settings = {"front_end": "kaldi", "kaldi_window": "povey", "kaldi_scale_16bit": False, "kaldi_mean_norm": True}
    with op_by_op():      # the export's check runs the network op by op: nothing to compile
        contract = export_model(net, base, "ONNX", "fbank", seconds=0.5, dynamic=True, settings=settings)
    return net, base + ".onnx", contract


SHERPA_LENGTHS = (9123, 1234, 16000, 25037)     # samples: not a multiple of the shift, short, 1 s, 1.56 s
SHERPA_KEYS = dict(kaldi_window="povey", kaldi_snip_edges=False, kaldi_high_freq=-400)


# sherpa-onnx's own front end (3D-Speaker's scaling and CMN; 16-bit scaling, no CMN), then the default framing:
# 3D-Speaker's options, WeSpeaker's, and no mean normalisation (there the 16-bit scaling changes the features).
# The bounds are the ones docs/export.md states: 1 - cosine <= 1e-11 for sherpa-onnx's front end (measured up to
# 1.0e-12), cosine >= 0.98 for the default framing (measured 0.985-0.997 on these signals).
@pytest.mark.parametrize("keys,scale_16bit,mean_norm,max_distance", [
    (SHERPA_KEYS, False, True, 1e-11),
    (SHERPA_KEYS, True, False, 1e-11),
    (dict(kaldi_window="povey"), False, True, 0.02),
    (dict(kaldi_window="hamming"), True, True, 0.02),
    (dict(kaldi_window="povey"), True, False, 0.02),
], ids=["sherpa-3dspeaker", "sherpa-16bit-nocmn", "povey-3dspeaker", "hamming-wespeaker", "povey-16bit-nocmn"])
def test_sherpa_onnx_runs_our_export(tmp_path, fbank_export, keys, scale_16bit, mean_norm, max_distance):
    """sherpa-onnx on our fbank-input export with our metadata gives the embedding of our ONNX file on its
    features (1 - cosine <= 1e-11), and eval.py's embedding (the Embedder with the recipe's front end, the utterances
    in one padded batch) of a model trained with sherpa-onnx's front end (SHERPA_KEYS) within 1 - cosine <= 1e-11;
    with the default framing (snip_edges true, filters up to 8000 Hz) only close to it (1 - cosine <= 0.02)."""
    net, exported, contract = fbank_export
    settings = dict(dict(front_end="kaldi", kaldi_scale_16bit=scale_16bit, kaldi_mean_norm=mean_norm,
                         kaldi_snip_edges=True, kaldi_high_freq=0), **keys)
    path = str(tmp_path / "ecapa.onnx")
    shutil.copy(exported, path)
    metadata = add_sherpa_metadata(path, dict(contract, network=settings))
    assert {p.key: p.value for p in onnx.load(path).metadata_props}.items() >= metadata.items()
    recorded = read_contract(contract_path(path))["sherpa_onnx"]
    assert recorded["metadata"] == metadata
    assert recorded["audio_samples"] is None              # a dynamic time axis: audio of any length
    assert (recorded["differences"] == []) == (keys == SHERPA_KEYS), recorded["differences"]
    waveforms = [example_waveform(1, n, seed=5 + i)[0] for i, n in enumerate(SHERPA_LENGTHS)]
    got = np.stack([sherpa_embedding(path, wav) for wav in waveforms])
    same_features = np.concatenate([run_onnx(path, sherpa_features(wav, scale_16bit, mean_norm))
                                    for wav in waveforms])
    batch = np.zeros((len(waveforms), max(SHERPA_LENGTHS)), np.float32)
    for i, wav in enumerate(waveforms):
        batch[i, :len(wav)] = wav
    with op_by_op():
        front_end = build_front_end(dict(settings, sample_rate=16000, n_mels=80))
        ours = Embedder(net, front_end=front_end)(ms.Tensor(batch),
                                                  ms.Tensor(np.array(SHERPA_LENGTHS, np.int32))).asnumpy()
    exact, close = cosine_rows(got, same_features), cosine_rows(got, ours)
    print(f"\nsherpa-onnx, {settings}, lengths {SHERPA_LENGTHS}: 1 - cosine with our ONNX on sherpa's features "
          f"{' '.join(f'{1 - c:.1e}' for c in exact)}; with eval.py's embedding "
          f"{' '.join(f'{1 - c:.1e}' for c in close)}")
    assert (1 - exact).max() <= 1e-11
    assert (1 - close).max() <= max_distance


def test_sherpa_refuses_speechbrain_fbank(tmp_path):
    contract = {"format": "ONNX", "input": {"kind": "fbank"}, "network": {"front_end": "speechbrain"},
                "n_mels": 80, "sample_rate": 16000, "batch_size": 1, "embedding_size": 24}
    with pytest.raises(OnnxToolError, match="network.front_end is 'speechbrain'.*Kaldi's fbank"):
        sherpa_metadata(contract)
    with pytest.raises(OnnxToolError, match="input.kind is 'waveform'"):
        sherpa_metadata(dict(contract, input={"kind": "waveform"}, network={"front_end": "kaldi"}))


def test_sherpa_differences_follow_the_front_end():
    """The contract lists only the fbank differences present: none for sherpa-onnx's framing (high_freq -400 or
    7600, the same edge), snip_edges and the 8000 Hz edge for a contract made before those keys existed."""
    assert sherpa_differences({"front_end": "kaldi", **SHERPA_KEYS}) == []
    assert sherpa_differences({"front_end": "kaldi", **dict(SHERPA_KEYS, kaldi_high_freq=7600)}) == []
    old = sherpa_differences({"front_end": "kaldi", "kaldi_window": "hamming"})
    assert len(old) == 3 and "hamming" in old[0] and "snip_edges true" in old[1] and "8000 Hz" in old[2]
    assert sherpa_differences({"front_end": "kaldi", **dict(SHERPA_KEYS, kaldi_high_freq=-500)}) == [
        "sherpa-onnx mel filters end at 7600 Hz, this model's at 7500 Hz"]


def test_int8_export_command(tmp_path, capsys):
    """export.py --export_int8 true: <file>.int8.onnx with int8 weights and a float32 front end, its contract, and
    embeddings close to the float32 file's on an input the export never saw."""
    make_corpus(str(tmp_path / "corpus"), num_train_speakers=3, num_test_speakers=0, utts_per_speaker=2,
                seconds=(1.0, 1.5), augment_folders=False, progress=False)
    args = ["--output_dir", str(tmp_path), "--export_format", "ONNX", "--export_seconds", "0.5",
            "--export_int8", "true", "--train_dir", str(tmp_path / "corpus" / "train"),
            "--train_list_dir", str(tmp_path / "lists"), "--int8_calibration_crops", "24", "--crop_seconds", "1.0"]
    for key, value in SMALL.items():
        args += [f"--{key}", str(value)]
    assert export.main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    int8_path = str(tmp_path / "ecapa_tdnn.int8.onnx")
    assert summary["int8_model"] == int8_path
    contract = read_contract(contract_path(int8_path))
    assert contract["model_file"] == "ecapa_tdnn.int8.onnx" and contract["input"]["shape"] == [1, 8000]
    model = onnx.load(int8_path)
    front_end = [node.op_type for node in model.graph.node if "/fbank-" in node.name]
    assert len(int8_weights(model)) >= 20, "the network's weights were not quantised"
    assert "MatMul" in front_end and "QuantizeLinear" not in front_end, "the front end must stay float32"
    assert contract["quantization"]["calibration_inputs"] == 24

    x = example_input("waveform", 4, 8000, seed=11)
    cosine = cosine_rows(run_onnx(int8_path, x[:1]), run_onnx(str(tmp_path / "ecapa_tdnn.onnx"), x[:1]))
    print(f"\nint8 vs float32 ONNX: cosine {cosine.min():.5f}; recorded {contract['quantization']}")
    assert cosine.min() >= 0.99
    assert contract["quantization"]["min_cosine_vs_float"] >= 0.99


def test_sherpa_export_refused_before_writing(tmp_path):
    """export.py --export_sherpa true with waveform input (sherpa-onnx always feeds features) stops before the
    export: no file in the output folder."""
    args = ["--output_dir", str(tmp_path / "out"), "--export_format", "ONNX", "--export_seconds", "0.5",
            "--export_sherpa", "true", "--front_end", "kaldi"]
    for key, value in SMALL.items():
        args += [f"--{key}", str(value)]
    with pytest.raises(OnnxToolError, match="input.kind is 'waveform', sherpa-onnx needs 'fbank'"):
        export.main(args)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
