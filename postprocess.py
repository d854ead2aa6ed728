"""Score the trials from the inference outputs: average window embeddings per utterance, cosine (+ optional
s-norm / AS-norm), EER and minDCF.

    python postprocess.py --infer_dir runs/voxceleb/infer --trials [/data/voxceleb1/veri_test2.txt]

Reads <infer_dir>/input/manifest.json and <infer_dir>/output/ (output_list.txt + .bin; refused when its run id is
not the manifest's, i.e. the outputs come from another preprocess run), prints one line per trial
list and writes <infer_dir>/result.json (src/evaluate/metrics.py summarize() per list) and the averaged embeddings
(<infer_dir>/embeddings.npz). score_norm snorm/asnorm needs --infer_cohort: an embedding .npz (src/evaluate/extract.py
format, e.g. eval.py's embeddings_cohort.npz) of training utterances <speaker>/<video>/<utt>.wav.
"""
from src.mindspore_log import route_mindspore_log

if __name__ == "__main__":
    route_mindspore_log()       # first: MindSpore's C++ logger reads its settings when the imports below load it

import json
import os

import numpy as np

from src.cli import run_command, setup_logging
from src.config import load_config
from src.evaluate.extract import load_embeddings, save_embeddings
from src.deploy.ascend310_files import MANIFEST_FILE, infer_folders, infer_paths, read_manifest, utterance_embeddings
from src.evaluate.metrics import summarize
from src.evaluate.scoring import mean_embedding, score_trials
from src.data.trials import read_trials, trial_list_paths


def cohort_and_mean(cfg, contract):
    """(cohort embeddings or None, mean embedding or None) from infer_cohort; without it, subtract_mean takes the
    mean embedding the export contract records (an imported SpeechBrain model's mean_var_norm_emb)."""
    cohort = load_embeddings(cfg.infer_cohort) if cfg.infer_cohort else None
    if cohort is None and cfg.score_norm != "none":
        raise ValueError(f"score_norm {cfg.score_norm} needs --infer_cohort (a cohort .npz)")
    if not cfg.subtract_mean:
        return cohort, None
    if cohort is not None:
        return cohort, mean_embedding(cohort)
    if "embedding_mean" not in contract:
        raise ValueError("subtract_mean needs --infer_cohort (a cohort .npz): the exported model's contract "
                         "records no mean embedding")
    return None, np.asarray(contract["embedding_mean"], dtype=np.float64)


def main(argv=None):
    cfg = load_config(argv, description=__doc__.splitlines()[0])
    setup_logging()
    _, infer_dir = infer_paths(cfg)
    input_dir, output_dir = infer_folders(infer_dir)
    manifest = read_manifest(os.path.join(input_dir, MANIFEST_FILE))
    embeddings = utterance_embeddings(input_dir, output_dir, manifest)
    save_embeddings(os.path.join(infer_dir, "embeddings.npz"), embeddings,
                    {"model_file": manifest["contract"]["model_file"], "max_windows": manifest["max_windows"]})
    cohort, mean = cohort_and_mean(cfg, manifest["contract"])
    trial_files = trial_list_paths(cfg.trials)
    if not trial_files:
        raise ValueError("trials: no trial list to score (--trials PATH or --trials '[a.txt, b.txt]')")
    results = {}
    for path in trial_files:
        trials = read_trials(path)
        scores = score_trials(embeddings, trials, cfg.score_norm, cohort, mean, int(cfg.asnorm_topk))
        summary = summarize(scores, np.array([label for label, _, _ in trials]))
        summary.update(score_norm=cfg.score_norm, max_windows=manifest["max_windows"])
        results[os.path.basename(path)] = summary
        print(f"{os.path.basename(path)}: EER {summary['eer_percent']:.3f}%  "
              f"minDCF(0.01) {summary['min_dcf_p0.01']:.4f}  minDCF(0.05) {summary['min_dcf_p0.05']:.4f}  "
              f"({summary['num_trials']} trials, score_norm {cfg.score_norm})")
    with open(os.path.join(infer_dir, "result.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    run_command(main)
