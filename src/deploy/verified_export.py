"""Export ECAPA-TDNN (MINDIR, AIR, ONNX), verify every file right after writing it, write its contract JSON.

What is exported:

- ``input_kind="waveform"``: ``wav (B, S)`` float32 16 kHz samples -> the recipe's front end (src/model/fbank.py or
  src/model/kaldi_fbank.py, ``build_front_end``) inside the graph -> ECAPA-TDNN -> ``(B, E)``. The 310 program then
  needs no feature code at all.
- ``input_kind="fbank"``: ``feats (B, T, n_mels)`` log-mel frames -> ECAPA-TDNN -> ``(B, E)``.

What is written is the folded ``inference_network`` (src/model/ecapa_tdnn.py: batch norms folded into the next
linear layer); the file is verified against the unfolded network, so the check also covers the folding.

The time axis is fixed (``seconds``, default 3 s: S = 48000 samples, T = 301 frames; with the Kaldi front end 298, or
300 without snip_edges) or dynamic: MINDIR, or ONNX, which src/deploy/onnx_graph.py writes itself (MindSpore 2.10's
ONNX exporter cannot write a dynamic axis), with waveform input its front end too; that file's batch axis is dynamic
too.
Every frame/sample of the input is valid (no lengths input): fixed-length windows are repeat-padded by
preprocess.py, never zero-padded.

Verification: the written file is loaded back (``nn.GraphCell(ms.load(path))`` for MINDIR, onnxruntime for
ONNX) and run on the same realistic input as the network (three lengths for a dynamic axis). A max abs
difference above ``tolerance`` renames the file to ``<file>.rejected`` and raises ``ExportError``. AIR cannot be
loaded back by MindSpore: the same graph is also exported as MINDIR and that file is verified.

The contract ``<file>.json`` (src/deploy/contract.py ``contract_path``) records input/output names, shapes (-1 for a
dynamic axis), dtype, input kind, sample rate, window length, embedding size, batch size, the network config,
the verification result and timings.
"""
import logging
import os
import time

import numpy as np
import mindspore as ms
from mindspore import nn

from src.model.ecapa_tdnn import inference_network
from src.model.embedder import Embedder, build_front_end, front_end_frames
from src.deploy.contract import CONTRACT_VERSION, INPUT_KINDS, contract_path, write_contract

logger = logging.getLogger(__name__)

EXPORT_FORMATS = ("MINDIR", "AIR", "ONNX")
EXTENSIONS = {"MINDIR": ".mindir", "AIR": ".air", "ONNX": ".onnx"}
INPUT_NAMES = {"waveform": "wav", "fbank": "feats"}   # the construct argument, the graph's input name
INPUT_TEXT = {"waveform": "16 kHz mono waveform in [-1, 1]; fbank is computed inside the graph",
              "fbank": "log-mel filterbank frames of src/model/fbank.py Fbank (10 ms hop)",
              "kaldi fbank": "Kaldi log-mel filterbank frames of src/model/kaldi_fbank.py KaldiFbank (10 ms shift; "
                             "framing and options under 'network')"}


class ExportError(ValueError):
    """Export refused or failed, or the exported file does not reproduce the network."""


def front_end_settings(settings, sample_rate, n_mels):
    """The front-end settings of an export (``build_front_end``): ``settings`` (embedder settings or a contract's
    "network"; None or without ``front_end``: SpeechBrain's fbank) with ``sample_rate`` and ``n_mels``."""
    return {**(settings or {}), "sample_rate": int(sample_rate), "n_mels": int(n_mels)}


def export_cell(network, input_kind, sample_rate=16000, settings=None):
    """The Cell that is exported: the network itself (fbank input) or the Embedder, front end of ``settings`` +
    network (waveform input, every sample valid)."""
    if input_kind not in INPUT_KINDS:
        raise ValueError(f"export_input: expected one of {INPUT_KINDS}, got {input_kind!r}")
    if input_kind == "fbank":
        cell = network
    else:
        front_end = build_front_end(front_end_settings(settings, sample_rate, network.n_mels))
        cell = Embedder(network, front_end=front_end)
    cell.set_train(False)
    return cell


def example_waveform(batch_size, num_samples, seed=0, sample_rate=16000):
    """A speech-like test signal (B, S) float32: a few harmonics with a moving pitch plus noise, each row different."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_samples) / sample_rate
    rows = []
    for _ in range(batch_size):
        f0 = rng.uniform(90, 220) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.5, 3) * t))
        phase = 2 * np.pi * np.cumsum(f0) / sample_rate
        voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
        envelope = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 5) * t) ** 2
        rows.append(0.1 * voiced * envelope + 0.01 * rng.standard_normal(num_samples))
    return np.stack(rows).astype(np.float32)


def example_input(input_kind, batch_size, num_samples, seed=0, sample_rate=16000, n_mels=80, settings=None):
    """A realistic model input: waveform (B, S), or its features (B, T, n_mels) computed with the front end of
    ``settings`` (``front_end_settings``)."""
    wav = example_waveform(batch_size, num_samples, seed, sample_rate)
    if input_kind == "waveform":
        return wav
    feats, _ = build_front_end(front_end_settings(settings, sample_rate, n_mels))(ms.Tensor(wav))
    return feats.asnumpy()


def _median_ms(fn, repeats=3):
    fn()                                             # warm-up (compiles)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(1000.0 * (time.perf_counter() - start))
    return float(np.median(times))


def _export_file(cell, spec, file_base, file_format):
    """ms.export -> the written path; a refusal becomes an ExportError that says what to do."""
    try:
        ms.export(cell, spec, file_name=file_base, file_format=file_format)
    except (RuntimeError, TypeError, ValueError) as err:
        text = str(err)
        if file_format == "ONNX":
            raise ExportError(
                "ONNX export failed: MindSpore's ONNX exporter has no translation for an operator of this graph "
                "(known ones: reflect PadV3 via ops.pad, ops.clamp(min=) without max, ops.stack of a Python list); "
                f"export MINDIR instead. MindSpore said: {text.splitlines()[0]}") from err
        raise ExportError(f"{file_format} export of {file_base} failed: {text.splitlines()[0]}") from err
    return file_base + EXTENSIONS[file_format]


def _write_dynamic_onnx(network, file_base, front_end=None):
    """Write ``network`` as an ONNX file with dynamic batch and time axes -> its path: fbank input, or waveform input
    with the feature Cell ``front_end`` in the graph. MindSpore's exporter cannot (see the module docstring):
    src/deploy/onnx_graph.py writes the graph itself. A front end it cannot translate raises ExportError before
    anything is written."""
    try:
        import onnx
    except ImportError:
        raise ExportError("a dynamic ONNX file is written with the onnx package: pip install onnx") from None
    from src.deploy.onnx_graph import OnnxGraphError, ecapa_onnx
    try:
        model = ecapa_onnx(network, front_end)
    except OnnxGraphError as err:
        raise ExportError(f"dynamic ONNX export: {err}") from err
    path = file_base + EXTENSIONS["ONNX"]
    onnx.save(model, path)
    return path


def _run_onnx(path, x):
    try:
        import onnxruntime as ort
    except ImportError:
        raise ExportError(f"{path}: onnxruntime is not installed, so the ONNX file cannot be verified "
                          f"(pip install onnxruntime)") from None
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return session, name, lambda: session.run(None, {name: x})[0]


def _reject(path, message):
    os.replace(path, path + ".rejected")
    raise ExportError(f"{path}: {message}; the file was renamed to {path}.rejected")


def verify_export(cell, path, file_format, inputs, tolerance):
    """Run the written file and ``cell`` (the reference: the unfolded network) on every array of ``inputs`` -> dict
    of diffs, names and timings."""
    result = {"tolerance": tolerance, "max_abs_diff": 0.0, "checked_shapes": [], "loaded_with": None}
    if file_format == "MINDIR":
        loaded = nn.GraphCell(ms.load(path))
        result["loaded_with"] = "mindspore nn.GraphCell(ms.load(path))"
    for x in inputs:
        expected = cell(ms.Tensor(x)).asnumpy()
        if file_format == "MINDIR":
            got = loaded(ms.Tensor(x)).asnumpy()
        else:
            session, name, run = _run_onnx(path, x)
            result.update(loaded_with=f"onnxruntime {__import__('onnxruntime').__version__}", input_name=name,
                          output_name=session.get_outputs()[0].name)
            got = run()
        if got.shape != expected.shape:
            _reject(path, f"output shape {got.shape} on input {x.shape}, the network gives {expected.shape}")
        diff = float(np.max(np.abs(got - expected)))
        result["max_abs_diff"] = max(result["max_abs_diff"], diff)
        result["checked_shapes"].append(list(x.shape))
        if not diff <= tolerance:
            _reject(path, f"max abs difference {diff:.3g} from the network on input {x.shape} exceeds {tolerance:g}")
    x = inputs[0]
    result["network_ms"] = _median_ms(lambda: cell(ms.Tensor(x)).asnumpy())
    if file_format == "MINDIR":
        result["exported_ms"] = _median_ms(lambda: loaded(ms.Tensor(x)).asnumpy())
    else:
        result["exported_ms"] = _median_ms(_run_onnx(path, x)[2])
    result["timed_shape"] = list(x.shape)
    return result


def check_export_request(file_format, dynamic, batch_size, input_kind="waveform"):
    """Refuse what cannot be exported here, before anything is written -> the format in upper case."""
    file_format = str(file_format).upper()
    if file_format not in EXPORT_FORMATS:
        raise ExportError(f"export_format: expected one of {EXPORT_FORMATS}, got {file_format!r}")
    if file_format == "AIR" and ms.get_context("device_target") != "Ascend":
        raise ExportError("AIR export needs MindSpore's Ascend backend (device_target Ascend on an Ascend machine); "
                          f"this run uses {ms.get_context('device_target')}: export MINDIR (the 310 program loads it)")
    if dynamic and file_format not in ("MINDIR", "ONNX"):
        raise ExportError(f"a dynamic time axis is only possible for MINDIR and ONNX; {file_format} needs a fixed "
                          f"length (set export_dynamic false)")
    if batch_size < 1:
        raise ExportError(f"export_batch_size must be >= 1, got {batch_size}")
    return file_format


def export_model(network, file_base, file_format="MINDIR", input_kind="waveform", batch_size=1, seconds=3.0,
                 dynamic=False, tolerance=1e-4, sample_rate=16000, settings=None, seed=0, embedding_mean=None):
    """Export ``network`` (an ECAPA_TDNN, in eval mode) folded (``inference_network``) to ``file_base`` + extension,
    verify it against the unfolded network, write its contract
    (``settings``: what the contract records under "network", e.g. the embedder settings and the checkpoint; its
    front-end keys choose the front end, SpeechBrain's fbank when it has none; ``embedding_mean``: an imported
    model's (D,) mean embedding, recorded for postprocess.py's ``subtract_mean``).

    Returns the contract dict (also written to ``<file>.json``). Raises ``ExportError`` when the format is not
    possible here (AIR off Ascend or with a dynamic axis, an untranslatable operator or front-end setting) or the
    file does not reproduce the network within ``tolerance``.
    """
    file_format = check_export_request(file_format, dynamic, batch_size, input_kind)
    window_samples = int(round(seconds * sample_rate))
    n_mels, embedding_size = network.n_mels, network.embedding_size
    front_end = front_end_settings(settings, sample_rate, n_mels)
    frames = front_end_frames(front_end, window_samples)
    network.set_train(False)
    reference = export_cell(network, input_kind, sample_rate, settings)
    cell = export_cell(inference_network(network), input_kind, sample_rate, settings)

    # A dynamic axis is checked at three lengths; the other two (13333 and 5410 samples for 0.5 s) are not whole
    # numbers of hops.
    lengths = [window_samples, window_samples * 5 // 3, window_samples * 2 // 3 + 77] if dynamic else [window_samples]
    inputs = [example_input(input_kind, batch_size, s, seed, sample_rate, n_mels, settings) for s in lengths]
    row = [window_samples] if input_kind == "waveform" else [frames, n_mels]
    shape = [batch_size] + row
    if dynamic:
        shape[1] = -1
        spec = ms.Tensor(shape=[batch_size, None] + row[1:], dtype=ms.float32)
    else:
        spec = ms.Tensor(inputs[0])

    folder = os.path.dirname(os.path.abspath(file_base))
    os.makedirs(folder, exist_ok=True)
    start = time.perf_counter()
    if dynamic and file_format == "ONNX":
        path = _write_dynamic_onnx(network, file_base, cell.fbank if input_kind == "waveform" else None)
    else:
        path = _export_file(cell, spec, file_base, file_format)
    export_seconds = time.perf_counter() - start
    verified_path, verified_format = path, file_format
    if file_format == "AIR":
        verified_path = _export_file(cell, spec, file_base, "MINDIR")
        verified_format = "MINDIR"
    verification = verify_export(reference, verified_path, verified_format, inputs, tolerance)
    verification["verified_file"] = os.path.basename(verified_path)
    logger.info("%s verified: max abs diff %.3g over inputs %s", path, verification["max_abs_diff"],
                verification["checked_shapes"])

    text = "kaldi fbank" if input_kind == "fbank" and front_end.get("front_end") == "kaldi" else input_kind
    contract = {
        "contract_version": CONTRACT_VERSION,
        "model_file": os.path.basename(path), "format": file_format,
        "input": {"name": verification.get("input_name", INPUT_NAMES[input_kind]), "kind": input_kind,
                  "shape": shape, "dtype": "float32", "byte_order": "little", "description": INPUT_TEXT[text]},
        "output": {"name": verification.get("output_name", "embedding"), "kind": "embedding",
                   "shape": [batch_size, embedding_size], "dtype": "float32"},
        "batch_size": batch_size, "dynamic_time": bool(dynamic), "sample_rate": sample_rate,
        "window_seconds": float(seconds), "window_samples": window_samples, "frames_per_window": frames,
        "hop_samples": sample_rate // 100, "n_mels": n_mels, "embedding_size": embedding_size,
        "network": dict(settings or {}), "verification": verification,
        "export_seconds": round(export_seconds, 2), "mindspore_version": ms.__version__,
    }
    if embedding_mean is not None:
        contract["embedding_mean"] = [float(v) for v in embedding_mean]
    write_contract(contract_path(path), contract)
    return contract


def window_featurizer(contract):
    """For a fbank-input contract: a function (N, S) waveform windows -> (N, T, n_mels) features of the front end
    its "network" settings name, else None."""
    if contract["input"]["kind"] != "fbank":
        return None
    fbank = build_front_end(front_end_settings(contract.get("network"), contract["sample_rate"], contract["n_mels"]))

    def featurize(rows):
        feats, _ = fbank(ms.Tensor(rows))
        return feats.asnumpy()
    return featurize
