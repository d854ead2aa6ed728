"""After an ONNX export (src/deploy/verified_export.py): an int8 copy, and the metadata sherpa-onnx reads.

- ``quantize_int8``: onnxruntime's dynamic quantisation (int8 network weights, activations quantised per call; an
  in-graph front end stays float32) writes ``<file>.int8.onnx`` beside the float32 file, with its own contract
  ``<file>.int8.onnx.json`` (the float32 contract plus a "quantization" entry: how far its embeddings are from the
  float32 file's on a check input).
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
from src.model.embedder import KALDI_DEFAULTS
from src.model.kaldi_fbank import mel_high_freq

SHERPA_FBANK = {"library": "kaldi-native-fbank", "window": "povey", "snip_edges": False, "high_freq_hz": 7600,
                "n_mels": 80, "sample_rate": 16000}
FRONT_END_SCOPE = "/fbank-"


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
    """onnxruntime's quantiser logs one INFO line per tensor on the root logger: keep them out of the run's log."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        root.setLevel(level)


def front_end_nodes(model):
    """Names of the nodes of the in-graph front end (MindSpore names them after the Embedder's ``fbank`` cell)."""
    return [node.name for node in model.graph.node if FRONT_END_SCOPE in node.name]


def quantize_int8(path, contract, check_input):
    """Write ``<path minus .onnx>.int8.onnx`` and its contract -> the int8 contract dict.

    onnxruntime's ``quant_pre_process`` first folds the reshapes of the convolution weights into constants (else
    ``quantize_dynamic`` sees no constant weight to quantise), then every MatMul/Gemm/Conv weight of the network
    becomes int8 with one scale per output channel: the inference network's folded batch-norm scales give its rows
    different ranges, and one scale per tensor moved demo embeddings to cosine 0.965 (per channel: 0.9997). An in-graph front end stays float32: its DFT and mel matrices in int8 moved a test embedding to cosine
    0.24 from the float32 one. ``check_input``: an input of the export's shape; the embeddings of both files on it
    are compared and recorded (max abs diff, lowest cosine)."""
    import onnx
    import onnxruntime
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process
    if not path.endswith(".onnx"):
        raise OnnxToolError(f"{path}: int8 quantisation needs an ONNX export (.onnx), set export_format ONNX")
    int8_path = path[:-len(".onnx")] + ".int8.onnx"
    folded = int8_path + ".folded"
    quant_pre_process(path, folded, skip_symbolic_shape=True)
    try:
        excluded = front_end_nodes(onnx.load(folded))
        if contract["input"]["kind"] == "waveform" and not excluded:
            raise OnnxToolError(f"{path}: waveform input but no node named after the front end ({FRONT_END_SCOPE!r}); "
                                f"refusing to quantise the fbank matrices to int8")
        with _quiet_root_logger():
            quantize_dynamic(folded, int8_path, weight_type=QuantType.QInt8, nodes_to_exclude=excluded,
                             per_channel=True)
    finally:
        os.remove(folded)
    reference, got = run_onnx(path, check_input), run_onnx(int8_path, check_input)
    int8_contract = dict(contract, model_file=os.path.basename(int8_path), quantization={
        "method": "onnxruntime quant_pre_process + quantize_dynamic, weights QInt8, front end float32",
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
