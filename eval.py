"""Evaluate a checkpoint on VoxCeleb trial lists: embeddings, cosine / AS-norm scores, EER, minDCF, DET plot.

    python eval.py --checkpoint runs/voxceleb/ckpt/ckpt_step00100000.ckpt --test_dir /data/voxceleb1/wav \
        --trials "[veri_test2.txt, list_test_hard2.txt]" [--score_norm asnorm --cohort_source /data/vox2/dev/aac]

Writes into eval_output_dir (default <output_dir>/eval):
    scores_<list>.txt     one trial a line: ``enroll test score label`` (the configured scoring)
    det_<list>.png        DET curves (plain cosine, and the configured scoring when it differs)
    eval_summary.json     metrics per list and scoring, the threshold ``python -m src.verify`` uses, the config
    embeddings.npz/.json  embedding cache (reused when checkpoint and config match)
    embeddings_cohort.npz/.json   the same for the cohort utterances (only with cohort_source)
    mean_embedding.npy    the subtracted mean embedding (only with subtract_mean)
    eval.log              this run's log
"""
import json
import logging
import os
import sys
import time

import numpy as np

from src.config import load_config
from src.device import setup_device
from src.embedding import SpeakerEmbedder, extract_embeddings, file_sha256, load_network
from src.metrics import plot_det, summarize
from src.scoring import SCORE_NORMS, score_trials, speaker_means
from src.trials import read_trials, trial_utterances

logger = logging.getLogger("eval")


def check_config(cfg):
    """Fail early, before any audio is read, on settings that cannot work."""
    if not cfg.checkpoint:
        raise ValueError("checkpoint: no checkpoint given (--checkpoint PATH)")
    if not cfg.trials:
        raise ValueError("trials: no trial list given (--trials PATH or --trials '[a.txt, b.txt]')")
    if isinstance(cfg.trials, str):
        cfg.trials = [cfg.trials]
    if cfg.test_dir and not os.path.isdir(cfg.test_dir):
        raise ValueError(f"test_dir: {cfg.test_dir} is not a folder (the audio root of the trial-list paths)")
    if cfg.score_norm not in SCORE_NORMS:
        raise ValueError(f"score_norm: expected one of {', '.join(SCORE_NORMS)}, got {cfg.score_norm!r}")
    if (cfg.score_norm != "none" or cfg.subtract_mean) and not cfg.cohort_source:
        raise ValueError("score_norm / subtract_mean need training data: set cohort_source to a training folder "
                         "or train_list.txt")


def cohort_utterances(source, per_speaker):
    """Training utterances for the cohort -> (root, keys): the first ``per_speaker`` of each speaker, sorted.

    ``source``: a folder in the VoxCeleb layout (``<speaker>/<video>/<utt>.wav``) or a ``train_list.txt`` written by
    src/data/lists.py.
    """
    from src.data.lists import find_audio_files, read_train_list
    if os.path.isdir(source):
        root, paths = source, find_audio_files(source)
    else:
        train_list = read_train_list(source)
        root, paths = train_list.root, sorted(train_list.paths)
    chosen, count = [], {}
    for path in paths:
        speaker = path.split("/")[0]
        if count.get(speaker, 0) < per_speaker:
            chosen.append(path)
            count[speaker] = count.get(speaker, 0) + 1
    if len(count) < 2:
        raise ValueError(f"cohort_source {source}: found {len(count)} speakers; a cohort needs at least 2")
    return root, chosen


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
    with open(path, "w", encoding="utf-8") as f:
        for (label, enroll, test), score in zip(trials, scores):
            f.write(f"{enroll} {test} {score:.6f} {label}\n")


def main(argv=None):
    cfg = load_config(argv, description="Evaluate a checkpoint on speaker-verification trial lists.")
    out_dir = cfg.eval_output_dir or os.path.join(cfg.output_dir, "eval")
    os.makedirs(out_dir, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        handlers=[logging.StreamHandler(), logging.FileHandler(os.path.join(out_dir, "eval.log"))],
                        force=True)
    check_config(cfg)
    start = time.time()
    setup_device(cfg.device_target, cfg.device_id)
    trial_lists = {name: (path, read_trials(path)) for name, path in list_names(list(cfg.trials)).items()}

    network = load_network(cfg, cfg.checkpoint)
    embedder = SpeakerEmbedder(network, sample_rate=int(cfg.sample_rate), n_mels=int(cfg.n_mels))
    info = {"checkpoint": os.path.abspath(cfg.checkpoint), "checkpoint_sha256": file_sha256(cfg.checkpoint)}
    cache = os.path.join(out_dir, "embeddings.npz") if cfg.embedding_cache == "auto" else cfg.embedding_cache
    keys = trial_utterances([t for _, trials in trial_lists.values() for t in trials])
    logger.info("%d trial lists, %d utterances to embed", len(trial_lists), len(keys))
    embeddings = extract_embeddings(embedder, keys, cfg.test_dir, cfg, cache_path=cache or None, info=info)

    cohort = mean = None
    if cfg.cohort_source:
        root, cohort_keys = cohort_utterances(cfg.cohort_source, int(cfg.cohort_utts_per_speaker))
        logger.info("cohort: %d utterances of training speakers from %s", len(cohort_keys), cfg.cohort_source)
        cohort_cache = cache and os.path.splitext(cache)[0] + "_cohort.npz"
        cohort_emb = extract_embeddings(embedder, cohort_keys, root, cfg, cache_path=cohort_cache or None,
                                        info=info)
        mean = np.mean(np.stack(list(cohort_emb.values())), axis=0, dtype=np.float64) if cfg.subtract_mean else None
        _, cohort = speaker_means(cohort_emb, lambda key: key.split("/")[0])
        if mean is not None:
            np.save(os.path.join(out_dir, "mean_embedding.npy"), mean)

    method = ("mean_" if cfg.subtract_mean else "") + ("cosine" if cfg.score_norm == "none" else cfg.score_norm)
    summary = {"checkpoint": info["checkpoint"], "checkpoint_sha256": info["checkpoint_sha256"],
               "scoring": method, "num_utterances": len(keys), "trial_lists": {}}
    for name, (path, trials) in trial_lists.items():
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
        summary["trial_lists"][name] = {"trials": os.path.abspath(path), "score_file": os.path.abspath(score_file),
                                        "det_plot": os.path.abspath(det_file), "metrics": metrics}
        for scoring, m in metrics.items():
            logger.info("%-16s %-12s EER %.3f%% (threshold %.4f)  minDCF@0.01 %.4f  minDCF@0.05 %.4f  "
                        "(%d target, %d nontarget)", name, scoring, m["eer_percent"], m["eer_threshold"],
                        m["min_dcf_p0.01"], m["min_dcf_p0.05"], m["num_target"], m["num_nontarget"])

    first = next(iter(trial_lists))
    summary["verify_threshold"] = {
        "value": summary["trial_lists"][first]["metrics"]["cosine"]["eer_threshold"],
        "source": f"EER threshold of plain cosine scores on {first}"}
    summary["seconds"] = round(time.time() - start, 1)
    summary["config"] = dict(cfg)
    summary_file = os.path.join(out_dir, "eval_summary.json")
    with open(summary_file, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    logger.info("wrote %s", summary_file)
    return summary


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError, KeyError) as err:
        logging.getLogger("eval").error("%s", err)
        sys.exit(1)
