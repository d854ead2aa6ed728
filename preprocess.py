"""Cut the evaluation utterances into the exported model's fixed-length windows, as .bin files + a manifest.

    python preprocess.py --infer_model runs/voxceleb/ecapa_tdnn.mindir --test_dir /data/voxceleb1/wav \
        --trials [/data/voxceleb1/veri_test2.txt] --infer_dir runs/voxceleb/infer

Reads the model's contract (<model>.json) for the window length, input kind and batch size, and writes
<infer_dir>/input/batch_NNNNNN.bin, manifest.json and run_id.txt (layout: ascend310_infer/BIN_FORMAT.md).
Utterances come from the trial lists (all their enrolment and test files) or from --infer_utt_list.
The new input/ replaces the old one only when complete (a failed run leaves it as it was); the old
<infer_dir>/output/ then belongs to no input and is deleted.
"""
from src.mindspore_log import route_mindspore_log

if __name__ == "__main__":
    route_mindspore_log()       # first: MindSpore's C++ logger reads its settings when the imports below load it

import logging
import os
import shutil

from src.cli import run_command, setup_logging
from src.config import load_config
from src.deploy.ascend310_files import infer_folders, infer_paths, write_inputs
from src.deploy.contract import contract_path, read_contract
from src.data.trials import check_inside_test_dir, read_trials, trial_list_paths, trial_utterances


def utterance_keys(cfg):
    """Utterance paths relative to test_dir: from infer_utt_list when set, else every trial list's files."""
    if cfg.infer_utt_list:
        with open(cfg.infer_utt_list, encoding="utf-8") as f:
            keys = [line.split()[0] for line in f if line.strip() and not line.startswith("#")]
        if not keys:
            raise ValueError(f"{cfg.infer_utt_list}: no utterances listed")
        return keys
    trial_files = trial_list_paths(cfg.trials)
    if not trial_files:
        raise ValueError("set --trials (trial lists) or --infer_utt_list (one utterance path per line)")
    return trial_utterances([t for path in trial_files for t in read_trials(path)])


def remove_stale_outputs(output_dir):
    """Delete ``output_dir`` (outputs of the input folder just replaced) when it exists."""
    if os.path.isdir(output_dir):
        shutil.rmtree(output_dir)
        logging.info("removed %s: its outputs were computed from the replaced input folder", output_dir)


def main(argv=None):
    cfg = load_config(argv, description=__doc__.splitlines()[0])
    setup_logging()
    model, infer_dir = infer_paths(cfg)
    contract = read_contract(contract_path(model))
    featurize = None
    if contract["input"]["kind"] == "fbank":
        from src.device import setup_device
        from src.deploy.verified_export import window_featurizer
        setup_device("CPU")
        featurize = window_featurizer(contract)
    keys = utterance_keys(cfg)
    check_inside_test_dir(keys, cfg.test_dir, cfg.allow_outside_test_dir)
    input_dir, output_dir = infer_folders(infer_dir)
    manifest = write_inputs(keys, cfg.test_dir, contract, input_dir, int(cfg.infer_max_windows), featurize)
    logging.info("%d utterances -> %s", len(keys), manifest)
    remove_stale_outputs(output_dir)
    return 0


if __name__ == "__main__":
    run_command(main)
