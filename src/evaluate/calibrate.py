"""Fit a score calibration (scores -> log-likelihood ratios, optional quality measures) for one checkpoint, on
speakers the checkpoint never trained on.

    python -m src.calibrate --checkpoint runs/voxceleb/checkpoints/ckpt_step00100000.ckpt \\
        [--calibration_source runs/voxceleb/lists/heldout/train_list.txt] [--calibration_quality "[duration, norm]"] \\
        [--score_norm asnorm --cohort_source /data/vox2/dev/aac] [--calibration out/calibration.json]

(``python -m src.calibrate`` runs this module.)

1. Takes the calibration speakers from ``calibration_source``: a folder or train_list.txt; by default the run's
   held-out speakers, ``<train_list_dir>/heldout/train_list.txt`` (training with ``holdout_speakers`` writes it).
   Refused, each with one line: speakers of the recipe's ``trials`` lists (the evaluation must not see them);
   speakers the checkpoint trained on (``check_training_speakers``: the list the checkpoint records and the
   recipe's ``training_speakers``), unless ``allow_training_speakers`` (then a warning: the error rates stated from
   such trials are optimistic); speakers of the cohort, when the scoring or a quality measure uses one.
2. Draws ``calibration_utts_per_speaker`` random crops per speaker, each ``calibration_seconds`` long (log-uniform,
   at most the utterance), and writes them as WAV files to ``crops/`` beside the calibration file (reused on the next
   run).
3. Embeds them with the checkpoint (cached in ``embeddings_crops.npz``; the cohort, when the scoring needs one, in
   ``embeddings_cohort.npz``) and scores balanced target / nontarget pairs (``calibration_trials``) with the
   recipe's scoring (``score_norm``, ``subtract_mean``), exactly as eval.py scores trials.
4. Fits the prior-weighted logistic regression of src/evaluate/calibration.py and writes the calibration file
   (``calibration``, default ``<output_dir>/calibration/calibration.json``; its ``operating_points`` are the error
   rates these held-out trials give at each Bayes threshold) and ``calibrate.log``.

eval.py and ``python -m src.evaluate.verify`` apply the file with ``--calibration FILE``; both refuse it for another
checkpoint or another scoring.
"""
from src.mindspore_log import route_mindspore_log

if __name__ == "__main__":
    route_mindspore_log()       # first: MindSpore's C++ logger reads its settings when the imports below load it

import json
import logging
import os
import re
import sys

import numpy as np
from tqdm import tqdm

from src.checkpoint import file_sha256, read_training_speakers
from src.cli import run_command, setup_logging
from src.config import UsageError, load_config
from src.data.audio import audio_info, read_audio, write_wav
from src.data.lists import HELDOUT_DIR, TRAIN_LIST, cohort_utterances, speaker_of_path, trial_speakers
from src.data.trials import trial_list_paths
from src.evaluate.calibration import (calibration_pairs, choose_crops, crop_key, feature_names, fit_calibration,
                                      scoring_settings, utterance_quality, write_calibration)
from src.evaluate.extract import (Batching, embedded_seconds, extract_embeddings, recipe_cache,
                                  scoring_references)
from src.evaluate.scoring import score_trials
from src.files import write_atomically

logger = logging.getLogger("calibrate")


def calibration_paths(cfg):
    """-> (calibration source, calibration file) with the recipe's defaults filled in: the run's held-out speakers,
    ``<output_dir>/calibration/calibration.json``."""
    source = cfg.calibration_source or os.path.join(cfg.train_list_dir, HELDOUT_DIR, TRAIN_LIST)
    if not os.path.exists(source):
        if cfg.calibration_source:
            raise ValueError(f"calibration_source: {source} does not exist (a folder or train_list.txt of speakers "
                             f"the checkpoint never trained on)")
        raise ValueError(f"calibration_source: not given, and the run has no held-out speakers ({source} not found): "
                         f"train with --holdout_speakers N (or a share, e.g. 0.02), or give a folder or list of "
                         f"speakers the checkpoint never trained on (for a model trained on VoxCeleb2 dev: VoxCeleb1 "
                         f"dev)")
    output = cfg.calibration or os.path.join(cfg.output_dir, "calibration", "calibration.json")
    return source, output


def check_disjoint(source, speakers, trial_files):
    """Refuse calibration speakers that also appear in the recipe's (existing) trial lists."""
    existing = [path for path in trial_files if os.path.isfile(path)]
    shared = sorted(set(speakers) & trial_speakers(existing))
    if shared:
        raise ValueError(f"calibration_source {source}: {len(shared)} of its speakers are in the trial lists "
                         f"{existing} (e.g. {shared[:3]}); calibrate on speakers the evaluation does not use")


def recipe_training_speakers(training_speakers):
    """The recipe's ``training_speakers`` -> is_training(name) -> bool, or None when empty: a file listing them (the
    first word of each line, as speakers.txt) or a regular expression their names match whole (``id0[0-9]{4}``:
    VoxCeleb2's speakers)."""
    if not training_speakers:
        return None
    if os.path.isfile(training_speakers):
        with open(training_speakers, encoding="utf-8") as f:
            return {line.split()[0] for line in f if line.strip() and not line.startswith("#")}.__contains__
    try:
        pattern = re.compile(training_speakers)
    except re.error as err:
        raise ValueError(f"training_speakers: {training_speakers!r} is neither a file nor a regular expression "
                         f"({err})") from None
    return lambda name: pattern.fullmatch(name) is not None


def known_training_speakers(checkpoint, training_speakers):
    """What is known of the speakers ``checkpoint`` was trained on -> (is_training(name) -> bool, where that came
    from), or None when nothing is: the names the checkpoint records and those the recipe's ``training_speakers``
    names (both count: a run fine-tuned from an imported model records only its own speakers)."""
    recorded = read_training_speakers(checkpoint)
    named = recipe_training_speakers(training_speakers)
    sources = ([f"the {len(recorded)} speakers {checkpoint} records"] if recorded is not None else []) + (
        [f"training_speakers {training_speakers!r}"] if named else [])
    if not sources:
        return None
    recorded = set(recorded or [])
    return (lambda name: name in recorded or bool(named and named(name))), " and ".join(sources)


def check_training_speakers(source, speakers, checkpoint, training_speakers, allow):
    """Refuse calibration ``speakers`` (of ``source``) the checkpoint was trained on, unless ``allow`` -> how many
    of them it was trained on (None: unknown, only with ``allow``)."""
    known = known_training_speakers(checkpoint, training_speakers)
    if known is None:
        if not allow:
            raise ValueError(f"checkpoint {checkpoint}: records no training speakers and the recipe names none "
                             f"(training_speakers), so calibration_source {source} cannot be checked for them; set "
                             f"training_speakers (a regular expression or list of their names), or "
                             f"--allow_training_speakers true if you know the two sets are disjoint")
        return None
    is_training, where = known
    seen = sorted(s for s in speakers if is_training(s))
    if seen and not allow:
        raise ValueError(f"calibration_source {source}: {len(seen)} of its {len(speakers)} speakers trained the "
                         f"checkpoint (e.g. {seen[:3]}, from {where}); error rates stated from them would be far too "
                         f"optimistic for new speakers: calibrate on held-out speakers (holdout_speakers, or a set "
                         f"the model never saw), or pass --allow_training_speakers true")
    return len(seen)


def warn_training_speakers(num_training, num_speakers, source, checkpoint):
    """The warning of a calibration allowed on training speakers (or on speakers that could not be checked)."""
    if num_training is None:
        logger.warning("checkpoint %s records no training speakers and the recipe names none: calibration_source %s "
                       "is not checked for them", checkpoint, source)
    elif num_training:
        logger.warning("calibrating on %d speakers the checkpoint was trained on (of %d in %s): the false-accept and "
                       "false-reject rates this calibration states will be OPTIMISTIC for speakers it never saw",
                       num_training, num_speakers, source)


def check_cohort_disjoint(cfg, source, speakers, quality):
    """Refuse calibration speakers that are also cohort speakers when the scores or quality measures use the
    cohort: each calibration trial would be normalised against its own speakers."""
    if not cfg.cohort_source or (cfg.score_norm == "none" and "imposter_mean" not in quality):
        return
    _, keys = cohort_utterances(cfg.cohort_source, 1)
    shared = sorted(set(speakers) & {speaker_of_path(k) for k in keys})
    if shared:
        raise ValueError(f"calibration_source {source}: {len(shared)} of its speakers are also in cohort_source "
                         f"{cfg.cohort_source} (e.g. {shared[:3]}); take the cohort and the calibration speakers "
                         f"from disjoint sets")


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
    root, keys = cohort_utterances(source, sys.maxsize)     # every utterance of the source
    speakers = {speaker_of_path(k) for k in keys}
    check_disjoint(source, speakers, trial_list_paths(cfg.trials))
    check_cohort_disjoint(cfg, source, speakers, quality)
    num_training = check_training_speakers(source, speakers, cfg.checkpoint, cfg.training_speakers,
                                           cfg.allow_training_speakers)
    out_dir = os.path.dirname(os.path.abspath(output))
    setup_logging(os.path.join(out_dir, "calibrate.log"))      # checked: from here on the run writes its record
    warn_training_speakers(num_training, len(speakers), source, cfg.checkpoint)

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
                  "num_nontarget": int(labels.size - labels.sum()), "training_speakers": num_training,
                  "seconds": [float(min(seconds.values())), float(max(seconds.values()))]}
    calibration = fit_calibration(trials, scores, values, quality, float(cfg.calibration_prior),
                                  scoring_settings(cfg, quality), info["checkpoint"], info["checkpoint_sha256"],
                                  trial_info)
    write_calibration(output, calibration)
    m = calibration.fit_metrics
    logger.info("calibration trials (%d target, %d nontarget): Cllr %.4f (minCllr %.4f)  actDCF@0.01 %.4f "
                "(min %.4f)", m["num_target"], m["num_nontarget"], m["cllr"], m["min_cllr"], m["act_dcf_p0.01"],
                m["min_dcf_p0.01"])
    for p in (0.01, 0.05):
        point = calibration.operating_point(p)
        logger.info("expected at p_target %g (threshold %.3f): false accepts %.2f %%, false rejects %.2f %% (%s)", p,
                    point["threshold"], 100 * point["false_accept"], 100 * point["false_reject"],
                    calibration.trial_speakers())
    logger.info("llr = %s + %.4f; wrote %s", " + ".join(f"{w:.4f} * {name}" for w, name in
                                                        zip(calibration.weights, calibration.features)),
                calibration.bias, output)
    return calibration


def main(argv=None):
    calibrate(load_config(argv, description="Fit a score calibration (LLRs, quality measures) for a checkpoint."))
    return 0


if __name__ == "__main__":
    run_command(main)
