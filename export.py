"""Export ECAPA-TDNN for inference (MINDIR by default; AIR on Ascend; ONNX) and verify it.

    python export.py --checkpoint runs/voxceleb/checkpoints/ckpt_step00100000.ckpt
    python export.py --checkpoint x.ckpt --export_format ONNX --export_input fbank --export_batch_size 8
    python export.py --checkpoint x.ckpt --export_dynamic true          # MINDIR with a dynamic time axis
    python export.py --checkpoint x.ckpt --export_format ONNX --export_input fbank --export_dynamic true   # any batch, length
    python export.py --checkpoint x.ckpt --export_format ONNX --export_int8 true    # also <file>.int8.onnx (static
                                                   # int8, calibrated on int8_calibration_crops training crops)
    python export.py --config kaldi_recipe.yaml --checkpoint x.ckpt --export_format ONNX --export_input fbank \
        --export_sherpa true                                             # metadata for sherpa-onnx

Writes ``<export_file>.<ext>`` and its contract ``<export_file>.<ext>.json``; exits with status 1 when the format is
not possible here or the exported file differs from the network by more than ``export_tolerance``.
The export and its check are src/deploy/verified_export.py; ``export_int8`` and ``export_sherpa`` are
src/deploy/onnx_tools.py steps on the written ONNX file.
"""
from src.mindspore_log import route_mindspore_log

if __name__ == "__main__":
    route_mindspore_log()       # first: MindSpore's C++ logger reads its settings when the imports below load it

import json
import logging
import os

from src.cli import run_command, setup_logging
from src.config import load_config
from src.deploy.verified_export import example_input, export_model, window_featurizer
from src.data.dataset import train_list_from_config
from src.deploy.onnx_tools import OnnxToolError, add_sherpa_metadata, calibration_crops, quantize_int8, sherpa_metadata
from src.deploy.contract import export_base
from src.model.ecapa_tdnn import build_ecapa
from src.model.embedder import embedder_settings
from src.checkpoint import load_network_weights, read_embedding_mean, recipe_for_checkpoint


def main(argv=None):
    cfg = load_config(argv, description=__doc__.splitlines()[0])
    setup_logging()
    from src.device import setup_device
    setup_device(cfg.device_target, cfg.device_id)
    if (cfg.export_int8 or cfg.export_sherpa) and str(cfg.export_format).upper() != "ONNX":
        raise OnnxToolError(f"export_int8 / export_sherpa work on an ONNX file; export_format is {cfg.export_format}")
    if cfg.checkpoint:
        cfg = recipe_for_checkpoint(cfg, cfg.checkpoint)
        network = load_network_weights(build_ecapa(cfg), cfg.checkpoint)
    else:
        network = build_ecapa(cfg)
        logging.warning("no --checkpoint given: exporting a randomly initialised network (for checks only)")
    settings = dict(embedder_settings(cfg), checkpoint=cfg.checkpoint)
    if cfg.export_sherpa:              # refuse before anything is written
        sherpa_metadata({"format": str(cfg.export_format).upper(), "input": {"kind": cfg.export_input},
                         "network": settings, "n_mels": network.n_mels, "sample_rate": int(cfg.sample_rate),
                         "batch_size": int(cfg.export_batch_size), "embedding_size": network.embedding_size})
    crops = None
    if cfg.export_int8:                # read the calibration crops first: a missing training set writes nothing
        crops = calibration_crops(train_list_from_config(cfg), int(cfg.int8_calibration_crops),
                                  int(round(float(cfg.crop_seconds) * int(cfg.sample_rate))), int(cfg.seed),
                                  int(cfg.sample_rate))
    contract = export_model(network, export_base(cfg), cfg.export_format, cfg.export_input,
                            int(cfg.export_batch_size), float(cfg.export_seconds), bool(cfg.export_dynamic),
                            float(cfg.export_tolerance), int(cfg.sample_rate), settings, seed=int(cfg.seed),
                            embedding_mean=read_embedding_mean(cfg.checkpoint) if cfg.checkpoint else None)
    folder = os.path.dirname(os.path.abspath(export_base(cfg)))
    path = os.path.join(folder, contract["model_file"])
    int8_path = None
    if cfg.export_sherpa:
        add_sherpa_metadata(path, contract)
    if cfg.export_int8:
        check = example_input(contract["input"]["kind"], contract["batch_size"], contract["window_samples"],
                              int(cfg.seed) + 1, contract["sample_rate"], contract["n_mels"], contract["network"])
        featurize = window_featurizer(contract) or (lambda rows: rows)
        calibration = [featurize(crops[i:i + 16]) for i in range(0, len(crops), 16)]
        int8 = quantize_int8(network, path, contract, calibration, check)
        int8_path = os.path.join(folder, int8["model_file"])
        if cfg.export_sherpa:
            add_sherpa_metadata(int8_path, int8)
    print(json.dumps({"model": path, "int8_model": int8_path,
                      "input": contract["input"]["shape"], "kind": contract["input"]["kind"],
                      "max_abs_diff": contract["verification"]["max_abs_diff"],
                      "network_ms": contract["verification"]["network_ms"],
                      "exported_ms": contract["verification"]["exported_ms"]}))
    return 0


if __name__ == "__main__":
    run_command(main)
