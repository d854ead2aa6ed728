"""After an ONNX export (src/deploy/verified_export.py): an int8 copy, and the metadata sherpa-onnx reads.

- ``quantize_int8``: onnxruntime's static quantisation (int8 network weights, uint8 activations with scales
  calibrated on training crops, ``calibration_crops``; an in-graph front end stays float32) writes
  ``<file>.int8.onnx`` beside the float32 file, with its own contract ``<file>.int8.onnx.json`` (the float32
  contract plus a "quantization" entry: how it was made and how far its embeddings are from the float32 file's on a
  check input). Dynamic quantisation (activations quantised per call) turns convolutions into ConvInteger, which
  has no fast kernel on x86 and ran 2-4x slower than float32; the static form runs onnxruntime's integer GEMM.
- ``add_sherpa_metadata``: the keys sherpa-onnx's ``SpeakerEmbeddingExtractor`` reads from the model (framework,
  sample_rate, output_dim, normalize_samples, feature_normalize_type, language), written into the ONNX file.

What sherpa-onnx feeds the model (sherpa-onnx 2.0.1, ``SpeakerEmbeddingExtractor`` for framework "3d-speaker" or
"wespeaker"; measured with a model that returns its input): ``(1, T, 80)`` frames of kaldi-native-fbank with a povey
window, ``snip_edges`` false (T = (S + 80) // 160, edge frames reflected), mel filters up to 7600 Hz
(``high_freq`` -400), samples x 32768 when ``normalize_samples`` is 0, and the utterance mean subtracted when
``feature_normalize_type`` is "global-mean". None of that is configurable from the metadata. Our Kaldi front end
(src/model/kaldi_fbank.py) by default frames as WeSpeaker's and 3D-Speaker's training does, with ``snip_edges``
true and filters up to 8000 Hz, and WeSpeaker's window is Hamming: sherpa-onnx's embeddings of such a model come
close to ours but are not equal. A model trained with ``kaldi_window`` povey, ``kaldi_snip_edges`` false and
``kaldi_high_freq`` -400 gets sherpa-onnx's features exactly (``sherpa_differences`` lists what differs, recorded in
the contract). SpeechBrain's fbank (src/model/fbank.py: centred frames, no pre-emphasis, a 400-point FFT, another
mel scale, 10 log10 with an 80 dB floor) is another feature altogether: those models are refused. sherpa-onnx also
needs a time axis it can set (any T); an export of fixed length only runs on audio of 160 T samples.
"""
import contextlib
import logging
import os

import numpy as np

from src.deploy.contract import contract_path, write_contract
from src.deploy.onnx_graph import FRONT_END_SCOPE, ecapa_onnx
from src.model.embedder import KALDI_DEFAULTS
from src.model.kaldi_fbank import mel_high_freq

SHERPA_FBANK = {"library": "kaldi-native-fbank", "window": "povey", "snip_edges": False, "high_freq_hz": 7600,
                "n_mels": 80, "sample_rate": 16000}
INT8_OPS = ["MatMul", "Pad", "Slice", "Concat"]     # what the static int8 export quantises (quantize_int8)


class OnnxToolError(ValueError):
    """An ONNX post-processing step is not possible for this export."""


def _session(path):
    import onnxruntime as ort
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def run_onnx(path, x):
    """Run the ONNX file ``path`` on the float32 array ``x`` -> its first output."""
    session = _session(path)
    return session.run(None, {session.get_inputs()[0].name: np.asarray(x, np.float32)})[0]


def cosine_rows(a, b):
    """Cosine similarity of each row of ``a`` with the same row of ``b`` -> (N,) float64."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@contextlib.contextmanager
def _quiet_root_logger():
    """onnxruntime's quantiser logs one INFO line per tensor, and advice meant for other models, on the root logger:
    keep them out of the run's log."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)


def front_end_nodes(model):
    """Names of the nodes of the in-graph front end (MindSpore names them after the Embedder's ``fbank`` cell)."""
    return [node.name for node in model.graph.node if FRONT_END_SCOPE in node.name]


def calibration_crops(train_list, count, crop_samples, seed=0, sample_rate=16000):
    """``count`` random crops of ``crop_samples`` samples from a training list (src/data/lists.py TrainList), as
    training draws them (src/data/dataset.py ``random_crop``: shorter utterances repeated) -> (count, crop_samples)
    float32. Utterances are drawn without replacement while the list has enough; the same ``seed`` gives the same
    crops."""
    from src.data.audio import read_audio
    from src.data.dataset import random_crop
    rng = np.random.default_rng([seed, count])
    picks = rng.choice(len(train_list), size=count, replace=count > len(train_list))
    crops = []
    for index in picks:
        path = os.path.join(train_list.root, train_list.paths[index])

        def reader(start, num, path=path):
            return read_audio(path, sample_rate, start=start, num_samples=num)
        crops.append(random_crop(reader, train_list.num_samples[index], crop_samples, rng))
    return np.stack(crops).astype(np.float32)


class _Calibration:
    """onnxruntime's CalibrationDataReader over a list of model inputs, one (1, ...) array per call."""

    def __init__(self, name, inputs):
        self.name, self.rows = name, iter([row[None] for batch in inputs for row in np.asarray(batch, np.float32)])

    def get_next(self):
        row = next(self.rows, None)
        return None if row is None else {self.name: row}


def _excluded_nodes(model):
    """Nodes to keep float32: the in-graph front end, and every MatMul without a constant weight (the means over
    time written as a row of 1/T times the activations)."""
    constants = {tensor.name for tensor in model.graph.initializer}
    return front_end_nodes(model) + [node.name for node in model.graph.node
                                     if node.op_type == "MatMul" and node.input[1] not in constants]


def quantize_int8(network, path, contract, calibration, check_input):
    """Write ``<path minus .onnx>.int8.onnx``, the static int8 form of the export ``path`` of ``network``, and its
    contract -> the int8 contract dict.

    The network is written again channels-last with its convolutions as MatMuls (src/deploy/onnx_graph.py
    ``ecapa_onnx(channels_last=True)``, dynamic batch and time axes, the front end of the contract's "network"
    settings when the input is a waveform) and quantised statically in QDQ form: every MatMul weight int8 with one
    scale per output channel (folded batch-norm scales give the rows different ranges), the activations entering
    those MatMuls and the pads, shifts and concatenations feeding them uint8 with scales from the min-max ranges
    seen on ``calibration`` (model inputs of the contract's kind, e.g. a few hundred training crops:
    ``calibration_crops``), their outputs left float32 (onnxruntime runs DequantizeLinear -> MatMul as its integer
    GEMM, MatMulIntegerToFloat). The front end, the attentive pooling and the embedding layer stay float32: the
    fbank's DFT and mel matrices in int8 moved a test embedding to cosine 0.24 from the float32 one, and the pooling
    is a small share of the work. ``check_input``: an input of the export's shape; both files' embeddings of it are
    compared and recorded (max abs diff, lowest cosine)."""
    import onnx
    import onnxruntime
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from src.model.embedder import build_front_end
    if not path.endswith(".onnx"):
        raise OnnxToolError(f"{path}: int8 quantisation needs an ONNX export (.onnx), set export_format ONNX")
    if not len(calibration):
        raise OnnxToolError(f"{path}: int8 quantisation needs calibration inputs, got none")
    front_end = None
    if contract["input"]["kind"] == "waveform":
        front_end = build_front_end({**contract.get("network", {}), "sample_rate": contract["sample_rate"],
                                     "n_mels": contract["n_mels"]})
    int8_path = path[:-len(".onnx")] + ".int8.onnx"
    float_path = int8_path + ".float"
    model = ecapa_onnx(network, front_end, channels_last=True)
    onnx.save(model, float_path)
    try:
        with _quiet_root_logger():
            quantize_static(float_path, int8_path + ".partial", _Calibration(model.graph.input[0].name, calibration),
                            quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                            op_types_to_quantize=INT8_OPS, nodes_to_exclude=_excluded_nodes(model),
                            extra_options={"QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},
                                           "OpTypesToExcludeOutputQuantization": ["MatMul"]})
        os.replace(int8_path + ".partial", int8_path)
    finally:
        for leftover in (float_path, int8_path + ".partial"):
            if os.path.exists(leftover):
                os.remove(leftover)
    reference, got = run_onnx(path, check_input), run_onnx(int8_path, check_input)
    int8_contract = dict(contract, model_file=os.path.basename(int8_path), quantization={
        "method": "onnxruntime quantize_static, QDQ, MatMul weights QInt8 per output channel, activations QUInt8 "
                  "(min-max calibration), front end and pooling float32",
        "graph": "channels-last, convolutions as MatMul, dynamic batch and time axes",
        "calibration_inputs": int(sum(len(batch) for batch in calibration)),
        "calibration_shape": list(np.asarray(calibration[0]).shape[1:]),
        "float_model": os.path.basename(path), "onnxruntime_version": onnxruntime.__version__,
        "checked_shape": list(check_input.shape),
        "max_abs_diff_vs_float": float(np.max(np.abs(got - reference))),
        "min_cosine_vs_float": float(np.min(cosine_rows(got, reference))),
        "bytes": os.path.getsize(int8_path), "float_bytes": os.path.getsize(path)})
    write_contract(contract_path(int8_path), int8_contract)
    return int8_contract


def sherpa_metadata(contract):
    """The sherpa-onnx metadata of an export from its contract -> dict of str. Raises OnnxToolError, naming the
    contract field, for an export sherpa-onnx cannot feed: waveform input, SpeechBrain's fbank, n_mels other than 80,
    a sample rate other than 16 kHz, or a batch size other than 1."""
    network = contract.get("network", {})
    checks = [
        ("format", contract.get("format"), "ONNX"),
        ("input.kind", contract["input"]["kind"], "fbank"),
        ("network.front_end", network.get("front_end", "speechbrain"), "kaldi"),
        ("n_mels", contract.get("n_mels"), SHERPA_FBANK["n_mels"]),
        ("sample_rate", contract.get("sample_rate"), SHERPA_FBANK["sample_rate"]),
        ("batch_size", contract.get("batch_size"), 1),
    ]
    for field, value, expected in checks:
        if value != expected:
            why = (" (SpeechBrain's fbank has centred frames, no pre-emphasis, another mel scale and 10 log10 with an "
                   "80 dB floor; sherpa-onnx computes Kaldi's fbank, so only models trained or imported with "
                   "front_end kaldi can run there)"
                   if field == "network.front_end" else "")
            raise OnnxToolError(f"export for sherpa-onnx: contract field {field} is {value!r}, sherpa-onnx needs "
                                f"{expected!r}{why}")
    kaldi = dict(KALDI_DEFAULTS, **network)
    return {
        "framework": "3d-speaker",            # any of wespeaker/3d-speaker: both take the same (1, T, 80) path
        "sample_rate": str(contract["sample_rate"]),
        "output_dim": str(contract["embedding_size"]),
        "normalize_samples": "0" if network.get("kaldi_scale_16bit") else "1",
        "feature_normalize_type": "global-mean" if network.get("kaldi_mean_norm", True) else "",
        "language": "any",
        "comment": f"ECAPA-TDNN (MindSpore), kaldi window {kaldi.get('kaldi_window', 'povey')}, snip_edges "
                   f"{str(kaldi['kaldi_snip_edges']).lower()}, high_freq {kaldi['kaldi_high_freq']}",
    }


def sherpa_differences(network):
    """How the fbank sherpa-onnx computes (SHERPA_FBANK) differs from the Kaldi front end of a contract's "network"
    settings -> list of str, empty when sherpa-onnx feeds the model what it was trained on. The 16-bit scaling and
    the mean normalisation are not differences: the metadata tells sherpa-onnx to match them."""
    settings = dict(KALDI_DEFAULTS, **network)
    window = settings.get("kaldi_window", "povey")
    differences = []
    if window != SHERPA_FBANK["window"]:
        differences.append(f"sherpa-onnx uses a {SHERPA_FBANK['window']} window, this model a {window} window")
    if bool(settings["kaldi_snip_edges"]) != SHERPA_FBANK["snip_edges"]:
        differences.append("sherpa-onnx frames with snip_edges false (T = (S + 80) // 160, edges mirrored), this "
                           "model with snip_edges true (T = 1 + (S - 400) // 160)")
    edge = mel_high_freq(settings["kaldi_high_freq"], SHERPA_FBANK["sample_rate"])     # sherpa_metadata checked it
    if edge != SHERPA_FBANK["high_freq_hz"]:
        differences.append(f"sherpa-onnx mel filters end at {SHERPA_FBANK['high_freq_hz']} Hz, this model's at "
                           f"{edge:g} Hz")
    return differences


def add_sherpa_metadata(path, contract):
    """Write the sherpa-onnx metadata into the ONNX file ``path`` (in place) and record it in its contract under
    "sherpa_onnx" (with the fbank differences, and "audio_samples": the only audio length a fixed-length export
    runs on in sherpa-onnx) -> the metadata dict."""
    import onnx
    metadata = sherpa_metadata(contract)
    model = onnx.load(path)
    kept = [(p.key, p.value) for p in model.metadata_props if p.key not in metadata]
    del model.metadata_props[:]
    for key, value in kept + sorted(metadata.items()):
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, path + ".partial")
    os.replace(path + ".partial", path)               # MindSpore writes the file read-only
    contract["sherpa_onnx"] = {
        "metadata": metadata, "fbank": SHERPA_FBANK, "differences": sherpa_differences(contract.get("network", {})),
        "audio_samples": None if contract.get("dynamic_time") else 160 * contract["frames_per_window"],
    }
    write_contract(contract_path(path), contract)
    return metadata
