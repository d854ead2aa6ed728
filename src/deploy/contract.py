"""The export contract: the JSON file ``<model file>.json`` written beside every exported model.

It records what a program running the model needs to know (src/deploy/verified_export.py writes it): input and
output names, shapes (-1 for a dynamic axis), dtype, input kind (waveform or fbank), sample rate, window length,
embedding size, batch size, the embedder settings and the verification result. The 310 flow (src/deploy/
ascend310_files.py, ascend310_infer/), the ONNX tools and the sherpa-onnx metadata all read it from here.

Example::

    contract = read_contract(contract_path("runs/voxceleb/ecapa_tdnn.mindir"))   # ecapa_tdnn.mindir.json
    contract["window_samples"], contract["input"]["kind"]                          # (48000, 'waveform')
"""
import json
import os

CONTRACT_VERSION = 1
INPUT_KINDS = ("waveform", "fbank")


class InferFileError(ValueError):
    """A contract, manifest, list or .bin file that does not match the layout (the message names the file)."""


def export_base(cfg):
    """Exported model path without extension (export_file, "" -> <output_dir>/ecapa_tdnn)."""
    return cfg.export_file or os.path.join(cfg.output_dir, "ecapa_tdnn")


def contract_path(model_path):
    """The contract JSON written beside an exported model: ``ecapa.mindir`` -> ``ecapa.mindir.json``."""
    return os.fspath(model_path) + ".json"


def write_contract(path, contract):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(contract, f, indent=2)
    return path


def read_contract(path):
    """Read and check an export contract -> dict (keys as written by src/deploy/verified_export.py)."""
    if not os.path.isfile(path):
        raise InferFileError(f"{path}: export contract not found (export.py writes it beside the model as "
                             f"<model file>.json)")
    with open(path, encoding="utf-8") as f:
        try:
            contract = json.load(f)
        except json.JSONDecodeError as err:
            raise InferFileError(f"{path}: not valid JSON: {err}") from None
    required = ("input", "output", "batch_size", "sample_rate", "window_samples", "embedding_size")
    missing = [k for k in required if k not in contract]
    if missing:
        raise InferFileError(f"{path}: not an export contract, missing keys {missing}")
    kind = contract["input"].get("kind")
    if kind not in INPUT_KINDS:
        raise InferFileError(f"{path}: input.kind must be one of {INPUT_KINDS}, got {kind!r}")
    return contract
