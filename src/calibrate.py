"""Fit a score calibration (scores -> log-likelihood ratios, optional quality measures) for one checkpoint.

    python -m src.calibrate --checkpoint runs/voxceleb/checkpoints/ckpt_step00100000.ckpt \\
        [--calibration_source runs/voxceleb/lists/train_list.txt] [--calibration_quality "[duration, norm]"] \\
        [--score_norm asnorm --cohort_source /data/vox2/dev/aac] [--calibration out/calibration.json]

1. Draws ``calibration_utts_per_speaker`` random crops per speaker of ``calibration_source`` (a training folder or
   train_list.txt, default the recipe's training list), each ``calibration_seconds`` long (log-uniform, at most the
   utterance), and writes them as WAV files to ``crops/`` beside the calibration file (reused on the next run).
   Speakers of the recipe's ``trials`` lists are refused: calibration speakers must be unseen by the evaluation.
2. Embeds them with the checkpoint (cached in ``embeddings_crops.npz``; the cohort, when the scoring needs one, in
   ``embeddings_cohort.npz``) and scores balanced target / nontarget pairs (``calibration_trials``) with the
   recipe's scoring (``score_norm``, ``subtract_mean``), exactly as eval.py scores trials.
3. Fits the prior-weighted logistic regression of src/evaluate/calibration.py and writes the calibration file
   (``calibration``, default ``<output_dir>/calibration/calibration.json``) and ``calibrate.log``.

eval.py and ``python -m src.evaluate.verify`` apply the file with ``--calibration FILE``; both refuse it for another
checkpoint or another scoring.
"""
from src.mindspore_log import route_mindspore_log

if __name__ == "__main__":
    route_mindspore_log()       # first: MindSpore's C++ logger reads its settings when the imports below load it

import json
import logging
import os
import sys

import numpy as np
from tqdm import tqdm

from src.checkpoint import file_sha256
from src.cli import run_command, setup_logging
from src.config import UsageError, load_config
from src.data.audio import audio_info, read_audio, write_wav
from src.data.lists import TRAIN_LIST, cohort_utterances, speaker_of_path, trial_speakers
from src.data.trials import trial_list_paths
from src.evaluate.calibration import (calibration_pairs, choose_crops, crop_key, feature_names, fit_calibration,
                                      scoring_settings, utterance_quality, write_calibration)
from src.evaluate.extract import (Batching, embedded_seconds, extract_embeddings, recipe_cache,
                                  scoring_references)
from src.evaluate.scoring import score_trials
from src.files import write_atomically

logger = logging.getLogger("calibrate")


def calibration_paths(cfg):
    """-> (calibration source, calibration file) with the recipe's defaults filled in."""
    source = cfg.calibration_source or os.path.join(cfg.train_list_dir, TRAIN_LIST)
    output = cfg.calibration or os.path.join(cfg.output_dir, "calibration", "calibration.json")
    return source, output


def check_disjoint(source, speakers, trial_files):
    """Refuse calibration speakers that also appear in the recipe's (existing) trial lists."""
    existing = [path for path in trial_files if os.path.isfile(path)]
    shared = sorted(set(speakers) & trial_speakers(existing))
    if shared:
        raise ValueError(f"calibration_source {source}: {len(shared)} of its speakers are in the trial lists "
                         f"{existing} (e.g. {shared[:3]}); calibrate on training speakers only")


CROP_SOURCES = "sources.json"     # in the crop folder: crop key -> the source file (path, size, mtime) it was cut from


def write_crops(crops, root, crop_dir, sample_rate):
    """Write each ``(key, start, num_samples)`` crop of ``root/key`` as ``crop_dir/crop_key(...)`` -> the crop keys,
    in order. A crop written by an earlier run is reused only while its source file is the same one, unchanged
    (``crop_dir/sources.json`` records where each crop came from)."""
    sources_path = os.path.join(crop_dir, CROP_SOURCES)
    made = {}
    if os.path.isfile(sources_path):
        with open(sources_path, encoding="utf-8") as f:
            made = json.load(f)
    keys = []
    for key, start, num in tqdm(crops, desc="calibration crops", unit="file"):
        keys.append(crop_key(key, start, num))
        path, source = os.path.join(crop_dir, keys[-1]), os.path.abspath(os.path.join(root, key))
        stat = os.stat(source)
        stamp = f"{source} {stat.st_size} {stat.st_mtime_ns}"
        if made.get(keys[-1]) != stamp or not os.path.isfile(path):
            made.pop(keys[-1], None)
            write_wav(path, read_audio(source, sample_rate, start=start, num_samples=num), sample_rate)
            made[keys[-1]] = stamp
    os.makedirs(crop_dir, exist_ok=True)
    write_atomically(sources_path, "w", lambda f: json.dump(made, f, indent=1))
    return keys


def calibrate(cfg):
    """Run the calibration the recipe describes -> the Calibration written."""
    if not cfg.checkpoint:
        raise UsageError("checkpoint: no checkpoint given (--checkpoint PATH)")
    quality = list(cfg.calibration_quality)
    feature_names(quality)                                  # unknown measures fail before any work
    source, output = calibration_paths(cfg)
    out_dir = os.path.dirname(os.path.abspath(output))
    setup_logging(os.path.join(out_dir, "calibrate.log"))
    if not os.path.exists(source):
        raise ValueError(f"calibration_source: {source} does not exist (a training folder or train_list.txt)")
    root, keys = cohort_utterances(source, sys.maxsize)     # every utterance of the source
    check_disjoint(source, {speaker_of_path(k) for k in keys}, trial_list_paths(cfg.trials))

    from src.device import setup_device
    from src.checkpoint import load_embedder, recipe_for_checkpoint
    setup_device(cfg.device_target, cfg.device_id)
    cfg = recipe_for_checkpoint(cfg, cfg.checkpoint)
    rate = int(cfg.sample_rate)
    crops = choose_crops(keys, lambda key: audio_info(os.path.join(root, key))[0],
                         int(cfg.calibration_utts_per_speaker), cfg.calibration_seconds, rate, cfg.seed)
    crop_dir = os.path.join(out_dir, "crops")
    crop_keys = write_crops(crops, root, crop_dir, rate)
    logger.info("%d crops of %d speakers from %s in %s", len(crops), len({speaker_of_path(k) for k in crop_keys}),
                source, crop_dir)

    embedder = load_embedder(cfg, cfg.checkpoint)
    info = {"checkpoint": os.path.abspath(cfg.checkpoint), "checkpoint_sha256": file_sha256(cfg.checkpoint)}
    batching = Batching.from_recipe(cfg)
    embeddings = extract_embeddings(embedder, crop_keys, crop_dir, batching, recipe_cache(
        cfg, embedder, batching, os.path.join(out_dir, "embeddings_crops.npz"), crop_dir, info))
    cohort, mean = scoring_references(cfg, embedder, batching, os.path.join(out_dir, "embeddings_cohort.npz"), info)

    trials = calibration_pairs(crop_keys, int(cfg.calibration_trials), cfg.seed)
    scores = score_trials(embeddings, trials, cfg.score_norm, cohort, mean, int(cfg.asnorm_topk))
    seconds = embedded_seconds(crop_keys, crop_dir, batching)
    values = utterance_quality(embeddings, seconds, quality, cohort, mean, int(cfg.asnorm_topk))
    labels = np.array([label for label, _, _ in trials])
    trial_info = {"source": os.path.abspath(source), "num_speakers": len({speaker_of_path(k) for k in crop_keys}),
                  "num_crops": len(crop_keys), "num_target": int(labels.sum()),
                  "num_nontarget": int(labels.size - labels.sum()),
                  "seconds": [float(min(seconds.values())), float(max(seconds.values()))]}
    calibration = fit_calibration(trials, scores, values, quality, float(cfg.calibration_prior),
                                  scoring_settings(cfg, quality), info["checkpoint"], info["checkpoint_sha256"],
                                  trial_info)
    write_calibration(output, calibration)
    m = calibration.fit_metrics
    logger.info("calibration trials (%d target, %d nontarget): Cllr %.4f (minCllr %.4f)  actDCF@0.01 %.4f "
                "(min %.4f)", m["num_target"], m["num_nontarget"], m["cllr"], m["min_cllr"], m["act_dcf_p0.01"],
                m["min_dcf_p0.01"])
    logger.info("llr = %s + %.4f; wrote %s", " + ".join(f"{w:.4f} * {name}" for w, name in
                                                        zip(calibration.weights, calibration.features)),
                calibration.bias, output)
    return calibration


def main(argv=None):
    calibrate(load_config(argv, description="Fit a score calibration (LLRs, quality measures) for a checkpoint."))
    return 0


if __name__ == "__main__":
    run_command(main)
