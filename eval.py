"""Evaluate a checkpoint on trial lists: embeddings, cosine / AS-norm scores, EER, minDCF, DET plot.

    python eval.py --checkpoint runs/voxceleb/checkpoints/ckpt_step00100000.ckpt --test_dir /data/voxceleb1/wav \
        --trials "[veri_test2.txt, list_test_hard2.txt]" [--score_norm asnorm --cohort_source /data/vox2/dev/aac] \
        [--calibration runs/voxceleb/calibration/calibration.json] [--vad silero]
    python eval.py --config configs/pretrained/3dspeaker_ecapa_cnceleb.yaml --test_dir /data/CN-Celeb_flac/eval \
        --trials /data/CN-Celeb_flac/eval/lists/trials.lst [--cnceleb_enrollment mean]

Trial lists are VoxCeleb, Kaldi or CN-Celeb lists (src/data/trials.py). A CN-Celeb list pairs enrolment speakers
with test utterances; each speaker is the mean embedding of its enroll.map utterances (below cnceleb_data_dir,
default <test_dir>/../data) or the embedding of its enroll.lst file (below test_dir), by cnceleb_enrollment
(src/data/cnceleb.py).

Writes into eval_output_dir (default <output_dir>/eval):
    scores_<list>.txt     one trial a line: ``enroll test score label`` (the configured scoring)
    llr_<list>.txt        the same with calibrated log-likelihood ratios (only with --calibration, a file written by
                          python -m src.calibrate for this checkpoint and scoring); the summary adds Cllr, minCllr and
                          actDCF under "calibrated"
    det_<list>.png        DET curves (plain cosine, and the configured scoring when it differs)
    eval_summary.json     metrics per list and scoring, the threshold ``python -m src.evaluate.verify`` uses, the config
    embeddings.npz/.json  embedding cache (reused when checkpoint, config and audio files match)
    embeddings_cohort.npz/.json   the same for the cohort utterances (only with cohort_source)
    embeddings_enroll.npz/.json   the same for CN-Celeb enrolment utterances (only with cnceleb_enrollment mean)
    mean_embedding.npy    the subtracted mean embedding (only with subtract_mean): of the cohort utterances, or without
                          cohort_source the one an imported checkpoint carries (SpeechBrain's mean_var_norm_emb)
    eval.log              this run's log
"""
import json
import logging
import os
import time

import numpy as np

from src.checkpoint import file_sha256
from src.cli import run_command, setup_logging
from src.config import UsageError, load_config
from src.data.cnceleb import check_enrolled, read_enrollment, resolve_audio_keys
from src.data.trials import check_inside_test_dir, read_trial_list, trial_list_paths, trial_utterances
from src.evaluate.calibration import read_calibration, scoring_settings, trial_features, utterance_quality
from src.evaluate.extract import (Batching, checkpoint_mean, embedded_seconds, extract_embeddings, recipe_cache,
                                  scoring_references)
from src.evaluate.metrics import plot_det, summarize
from src.evaluate.scoring import enrollment_means, score_trials, scoring_name
from src.files import write_atomically
from src.model.embedder import load_embedder, recipe_for_checkpoint

logger = logging.getLogger("eval")


def check_config(cfg):
    """Fail early, before any audio is read, on settings that cannot work."""
    if not cfg.checkpoint:
        raise UsageError("checkpoint: no checkpoint given (--checkpoint PATH)")
    if not trial_list_paths(cfg.trials):
        raise UsageError("trials: no trial list given (--trials PATH or --trials '[a.txt, b.txt]')")
    if cfg.test_dir and not os.path.isdir(cfg.test_dir):
        raise ValueError(f"test_dir: {cfg.test_dir} is not a folder (the audio root of the trial-list paths)")
    if cfg.score_norm != "none" and not cfg.cohort_source:
        raise ValueError(f"score_norm {cfg.score_norm} needs training data: set cohort_source to a training folder "
                         "or train_list.txt")
    if cfg.subtract_mean and not cfg.cohort_source:
        checkpoint_mean(cfg.checkpoint)


def read_lists(cfg):
    """The recipe's trial lists -> dict name -> (path, trials, enrollment or None): a CN-Celeb list's enrolment is
    dict enroll_id -> [keys] (src/data/cnceleb.py read_enrollment, by cnceleb_enrollment)."""
    lists = {}
    for name, path in list_names(trial_list_paths(cfg.trials)).items():
        file_format, trials = read_trial_list(path)
        enrollment = None
        if file_format == "cnceleb":
            enrollment = read_enrollment(path, cfg.cnceleb_enrollment)
            check_enrolled(path, trials, enrollment, f"the {cfg.cnceleb_enrollment} enrolment list beside it")
            if cfg.calibration:
                raise UsageError(f"calibration: {path} is a CN-Celeb list, whose enrolment speakers have no "
                                 f"single audio file to measure; leave calibration empty")
        lists[name] = (path, trials, enrollment)
    return lists


def audio_keys(cfg, trial_lists):
    """What to embed -> (keys below test_dir, keys below the CN-Celeb data folder): every utterance of plain trial
    lists; of CN-Celeb lists the test utterances, with cnceleb_enrollment concat the enroll.lst files (below
    test_dir), with mean the enroll.map utterances."""
    test, enroll = set(), set()
    for _, trials, enrollment in trial_lists.values():
        if enrollment is None:
            test.update(trial_utterances(trials))
            continue
        test.update(t for _, _, t in trials)
        used = {e for _, e, _ in trials}
        (test if cfg.cnceleb_enrollment == "concat" else enroll).update(
            k for spk in used for k in enrollment[spk])
    return sorted(test), sorted(enroll)


def enrolled_embeddings(embeddings, enroll_embeddings, trial_lists, mode):
    """Embeddings of CN-Celeb enrolment speakers, added to ``embeddings`` under their enroll_id: the mean of their
    utterances' (``mode`` "mean", from ``enroll_embeddings``) or their enroll.lst file's ("concat")."""
    for _, _, enrollment in trial_lists.values():
        if enrollment is None:
            continue
        if mode == "mean":
            embeddings.update(enrollment_means(enroll_embeddings, enrollment))
        else:
            embeddings.update({spk: embeddings[keys[0]] for spk, keys in enrollment.items() if keys[0] in embeddings})
    return embeddings


def cnceleb_data_dir(cfg):
    """Where enroll.map's utterances are: cnceleb_data_dir, or CN-Celeb's data/ beside test_dir (eval/)."""
    return cfg.cnceleb_data_dir or os.path.join(os.path.dirname(os.path.abspath(cfg.test_dir or ".")), "data")


def list_names(paths):
    """Short unique names for trial lists: file name without extension (veri_test2, list_test_hard2, ...)."""
    names = {}
    for path in paths:
        base = os.path.splitext(os.path.basename(path))[0]
        name, i = base, 2
        while name in names:
            name, i = f"{base}_{i}", i + 1
        names[name] = path
    return names


def write_scores(path, trials, scores):
    write_atomically(path, "w", lambda f: f.writelines(f"{enroll} {test} {score:.6f} {label}\n"
                                                       for (label, enroll, test), score in zip(trials, scores)))


def embed_listed(embedder, keys, root, batching, cache):
    """Embeddings of listed paths -> dict key -> (D,), each key read from the file that exists with its name or
    another audio extension (src/data/cnceleb.py resolve_audio_keys)."""
    on_disk = resolve_audio_keys(root, keys)
    embeddings = extract_embeddings(embedder, sorted(set(on_disk.values())), root, batching, cache)
    return {key: embeddings[on_disk[key]] for key in keys}


def embed_all(cfg, embedder, keys, out_dir, info, enroll_keys=()):
    """Embeddings of the trial utterances, of CN-Celeb enrolment utterances (``enroll_keys``, below
    cnceleb_data_dir) and, with cohort_source, of the cohort -> (embeddings, enrolment embeddings, cohort or None,
    mean or None); all are cached in out_dir (see src/evaluate/extract.py)."""
    batching = Batching.from_recipe(cfg)
    cache_path = os.path.join(out_dir, "embeddings.npz") if cfg.embedding_cache == "auto" else cfg.embedding_cache
    embeddings = embed_listed(embedder, keys, cfg.test_dir, batching,
                              recipe_cache(cfg, embedder, batching, cache_path, cfg.test_dir, info))
    enrolled = {}
    if enroll_keys:
        root = cnceleb_data_dir(cfg)
        enroll_cache = cache_path and os.path.splitext(cache_path)[0] + "_enroll.npz"
        enrolled = embed_listed(embedder, list(enroll_keys), root, batching,
                                recipe_cache(cfg, embedder, batching, enroll_cache, root, info))
    cohort_cache = cache_path and os.path.splitext(cache_path)[0] + "_cohort.npz"
    cohort, mean = scoring_references(cfg, embedder, batching, cohort_cache, info)
    if mean is not None:
        np.save(os.path.join(out_dir, "mean_embedding.npy"), mean)
    return embeddings, enrolled, cohort, mean


def score_list(cfg, name, path, trials, embeddings, cohort, mean, method, out_dir, calibrate=None):
    """Score one trial list (plain cosine, and ``method`` when it differs), write its score file and DET plot
    -> its summary entry. ``calibrate``: None, or (trials, scores) -> LLRs; the LLRs are written as
    ``llr_<name>.txt`` and summarised as "calibrated"."""
    labels = np.array([label for label, _, _ in trials])
    cosine = score_trials(embeddings, trials)
    metrics, curves = {"cosine": summarize(cosine, labels)}, {"cosine": (cosine, labels)}
    scores = cosine
    if method != "cosine":
        scores = score_trials(embeddings, trials, cfg.score_norm, cohort, mean, int(cfg.asnorm_topk))
        metrics[method] = summarize(scores, labels)
        curves[method] = (scores, labels)
    score_file = os.path.join(out_dir, f"scores_{name}.txt")
    write_scores(score_file, trials, scores)
    det_file = plot_det(curves, os.path.join(out_dir, f"det_{name}.png"), title=f"DET: {name}")
    entry = {"trials": os.path.abspath(path), "score_file": os.path.abspath(score_file),
             "det_plot": os.path.abspath(det_file), "metrics": metrics}
    if calibrate is not None:
        llrs = calibrate(trials, scores)
        metrics["calibrated"] = summarize(llrs, labels, llr=True)
        entry["llr_file"] = os.path.abspath(os.path.join(out_dir, f"llr_{name}.txt"))
        write_scores(entry["llr_file"], trials, llrs)
    for scoring, m in metrics.items():
        logger.info("%-16s %-12s EER %.3f%% (threshold %.4f)  minDCF@0.01 %.4f  minDCF@0.05 %.4f  "
                    "(%d target, %d nontarget)", name, scoring, m["eer_percent"], m["eer_threshold"],
                    m["min_dcf_p0.01"], m["min_dcf_p0.05"], m["num_target"], m["num_nontarget"])
    if calibrate is not None:
        m = metrics["calibrated"]
        logger.info("%-16s calibrated   Cllr %.4f (minCllr %.4f)  actDCF@0.01 %.4f (min %.4f)  actDCF@0.05 %.4f "
                    "(min %.4f)", name, m["cllr"], m["min_cllr"], m["act_dcf_p0.01"], m["min_dcf_p0.01"],
                    m["act_dcf_p0.05"], m["min_dcf_p0.05"])
    return entry


def calibrator(cfg, calibration, embeddings, cohort, mean):
    """(trials, scores) -> LLRs with ``calibration`` and the quality measures of the trial ``embeddings``."""
    seconds = embedded_seconds(list(embeddings), cfg.test_dir, Batching.from_recipe(cfg))
    values = utterance_quality(embeddings, seconds, calibration.quality, cohort, mean, int(cfg.asnorm_topk))
    return lambda trials, scores: calibration.llrs(trial_features(trials, scores, calibration.quality, values))


def evaluate(cfg):
    """Run the evaluation the recipe describes -> the summary written to eval_summary.json."""
    check_config(cfg)
    out_dir = cfg.eval_output_dir or os.path.join(cfg.output_dir, "eval")
    setup_logging(os.path.join(out_dir, "eval.log"))
    start = time.time()
    from src.device import setup_device
    setup_device(cfg.device_target, cfg.device_id)
    trial_lists = read_lists(cfg)
    keys, enroll_keys = audio_keys(cfg, trial_lists)
    check_inside_test_dir(keys, cfg.test_dir, cfg.allow_outside_test_dir)
    logger.info("%d trial lists, %d utterances to embed%s", len(trial_lists), len(keys),
                f" and {len(enroll_keys)} enrolment utterances" if enroll_keys else "")

    cfg = recipe_for_checkpoint(cfg, cfg.checkpoint)
    embedder = load_embedder(cfg, cfg.checkpoint)
    info = {"checkpoint": os.path.abspath(cfg.checkpoint), "checkpoint_sha256": file_sha256(cfg.checkpoint)}
    calibration = read_calibration(cfg.calibration) if cfg.calibration else None
    if calibration is not None:
        calibration.check_fits(cfg.calibration, info["checkpoint_sha256"], scoring_settings(cfg, calibration.quality))
    embeddings, enrolled, cohort, mean = embed_all(cfg, embedder, keys, out_dir, info, enroll_keys)
    embeddings = enrolled_embeddings(embeddings, enrolled, trial_lists, cfg.cnceleb_enrollment)

    method = scoring_name(cfg.score_norm, cfg.subtract_mean)
    summary = {"checkpoint": info["checkpoint"], "checkpoint_sha256": info["checkpoint_sha256"],
               "scoring": method, "num_utterances": len(keys), "trial_lists": {}}
    calibrate = None
    if calibration is not None:
        calibrate = calibrator(cfg, calibration, embeddings, cohort, mean)
        summary["calibration"] = {"file": os.path.abspath(cfg.calibration), "features": calibration.features,
                                  "prior": calibration.prior}
    for name, (path, trials, _) in trial_lists.items():
        summary["trial_lists"][name] = score_list(cfg, name, path, trials, embeddings, cohort, mean, method, out_dir,
                                                  calibrate)
    first = next(iter(trial_lists))
    summary["verify_threshold"] = {
        "value": summary["trial_lists"][first]["metrics"]["cosine"]["eer_threshold"],
        "source": f"EER threshold of plain cosine scores on {first}"}
    summary["seconds"] = round(time.time() - start, 1)
    summary["config"] = dict(cfg)
    summary_file = os.path.join(out_dir, "eval_summary.json")
    write_atomically(summary_file, "w", lambda f: json.dump(summary, f, indent=2))
    logger.info("wrote %s", summary_file)
    return summary


def main(argv=None):
    evaluate(load_config(argv, description="Evaluate a checkpoint on speaker-verification trial lists."))
    return 0


if __name__ == "__main__":
    run_command(main)
