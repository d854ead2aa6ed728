"""Export ECAPA-TDNN for inference (MINDIR by default; AIR on Ascend; ONNX with a fixed length) and verify it.

    python export.py --checkpoint runs/voxceleb/checkpoints/ecapa-10_1000.ckpt
    python export.py --checkpoint x.ckpt --export_format ONNX --export_input fbank --export_batch_size 8
    python export.py --checkpoint x.ckpt --export_dynamic true          # MINDIR with a dynamic time axis

Writes ``<export_file>.<ext>`` and its contract ``<export_file>.<ext>.json``; exits non-zero when the format is not
possible here or the exported file differs from the network by more than ``export_tolerance``.
"""
import json
import logging
import os
import sys

from src.config import load_config
from src.device import setup_device
from src.ecapa_tdnn import ecapa_from_config
from src.embedding import load_weights
from src.exporting import ExportError, export_model
from src.infer_io import export_base

NETWORK_KEYS = ("n_mels", "channels", "mfa_channels", "embedding_size", "attention_channels", "se_channels",
                "res2net_scale", "global_context", "padding")


def main(argv=None):
    cfg = load_config(argv, description=__doc__.splitlines()[0])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    setup_device(cfg.device_target, cfg.device_id)
    network = ecapa_from_config(cfg)
    if cfg.checkpoint:
        load_weights(network, cfg.checkpoint)
    else:
        logging.warning("no --checkpoint given: exporting a randomly initialised network (for checks only)")
    network.set_train(False)
    config = {k: cfg[k] for k in NETWORK_KEYS}
    config["checkpoint"] = cfg.checkpoint
    try:
        contract = export_model(network, export_base(cfg), cfg.export_format, cfg.export_input,
                                int(cfg.export_batch_size), float(cfg.export_seconds), bool(cfg.export_dynamic),
                                float(cfg.export_tolerance), int(cfg.sample_rate), int(cfg.n_mels), config,
                                seed=int(cfg.seed))
    except ExportError as err:
        logging.error("%s", err)
        return 1
    folder = os.path.dirname(os.path.abspath(export_base(cfg)))
    print(json.dumps({"model": os.path.join(folder, contract["model_file"]),
                      "input": contract["input"]["shape"], "kind": contract["input"]["kind"],
                      "max_abs_diff": contract["verification"]["max_abs_diff"],
                      "network_ms": contract["verification"]["network_ms"],
                      "exported_ms": contract["verification"]["exported_ms"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
