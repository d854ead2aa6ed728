"""Data check: find every audio file the recipe would fail on, before training starts.

Reads (fully decodes) every audio file of the training folder (minus the speakers of ``exclude_trials``),
the MUSAN folder (noise, music, speech) and the RIR folder, and, when the recipe names them, the evaluation
audio of ``test_dir`` + ``trials``. Prints each missing, unreadable, empty or wrong-rate file with the
problem, then a summary per folder. Speech files (training and evaluation audio) that are near-silent or very
short (src/data/audio.py ``quality_problems``) are listed as warnings. Exit status 1 when any file (or a needed
folder) is bad, else 0.

    python -m src.data.check --config configs/ecapa-tdnn_config.yaml
    python -m src.data.check --config configs/ecapa-tdnn_config.yaml --train_dir /data/vox2/dev/wav \\
        --musan_dir /data/musan --rir_dir /data/RIRS_NOISES/simulated_rirs --num_workers 4
"""
from src.mindspore_log import route_mindspore_log

if __name__ == "__main__":
    route_mindspore_log()       # first: MindSpore's C++ logger reads its settings when the imports below load it

import logging
import os
import sys
from collections import Counter
from multiprocessing import Pool

from tqdm import tqdm

from src.cli import run_command
from src.config import load_config
from src.data.audio import AudioError, quality_problems, read_audio
from src.data.augment import MUSAN_CATEGORIES, list_audio_folder
from src.data.lists import find_audio_files, speaker_of_path, trial_speakers
from src.data.trials import read_trials, trial_list_paths, trial_utterances

logger = logging.getLogger(__name__)

WARNING = "warning"      # kind of a usable but questionable file (near-silent or very short speech)


def check_file(job):
    """``(path, sample_rate, speech)`` -> None when the file reads cleanly, else ``(path, kind, message)``; for
    speech (``speech`` True), a near-silent or very short file is reported with kind ``warning``."""
    path, sample_rate, speech = job
    try:
        wav = read_audio(path, sample_rate)
    except AudioError as err:
        return path, err.kind, str(err)
    problems = quality_problems(wav, sample_rate) if speech else []
    return (path, WARNING, f"{path}: {', '.join(problems)}") if problems else None


def check_files(paths, sample_rate, num_workers=1, desc="checking", speech=False):
    """Problems of the given files -> list of ``(path, kind, message)`` in the order of ``paths``."""
    jobs = [(p, sample_rate, speech) for p in paths]
    if num_workers > 1 and len(jobs) > 1:
        with Pool(num_workers) as pool:
            results = list(tqdm(pool.imap(check_file, jobs, chunksize=32), total=len(jobs), desc=desc))
    else:
        results = [check_file(job) for job in tqdm(jobs, desc=desc)]
    return [r for r in results if r is not None]


def data_sets(cfg):
    """The folders the recipe reads -> list of (name, paths or an error message when the folder is unusable)."""
    sets = []
    try:
        excluded = trial_speakers(cfg.exclude_trials or [])
        files = [p for p in find_audio_files(cfg.train_dir) if speaker_of_path(p) not in excluded]
        if not files:
            raise FileNotFoundError(f"{cfg.train_dir}: no audio files at <speaker>/<video>/<utt> depth")
        sets.append((f"train_dir {cfg.train_dir}", [os.path.join(cfg.train_dir, p) for p in files]))
    except (FileNotFoundError, ValueError) as err:
        sets.append((f"train_dir {cfg.train_dir}", str(err)))
    if cfg.aug_prob > 0:
        probs = {"noise": cfg.noise_prob, "music": cfg.music_prob, "speech": cfg.babble_prob}
        for category in MUSAN_CATEGORIES:
            if probs[category] > 0:
                folder = os.path.join(cfg.musan_dir or "", category)
                try:
                    sets.append((f"MUSAN {folder}", list_audio_folder(folder, f"MUSAN {category}")))
                except FileNotFoundError as err:
                    sets.append((f"MUSAN {folder}", str(err)))
        if cfg.reverb_prob > 0:
            try:
                sets.append((f"RIR {cfg.rir_dir}", list_audio_folder(cfg.rir_dir, "RIR")))
            except FileNotFoundError as err:
                sets.append((f"RIR {cfg.rir_dir}", str(err)))
    if cfg.get("test_dir") and cfg.get("trials"):
        try:
            utts = trial_utterances([t for path in trial_list_paths(cfg.trials) for t in read_trials(path)])
            sets.append((f"test_dir {cfg.test_dir}", [os.path.join(cfg.test_dir, u) for u in utts]))
        except ValueError as err:
            sets.append((f"test_dir {cfg.test_dir}", str(err)))
    return sets


def run_check(cfg, out=None):
    """Check every folder of the recipe, print problems and a summary (to ``out``, default stdout)
    -> number of problems found."""
    out = out or sys.stdout
    total_bad = 0
    summary = []
    for name, paths in data_sets(cfg):
        if isinstance(paths, str):
            print(f"FOLDER {paths}", file=out)
            summary.append(f"{name}: unusable folder")
            total_bad += 1
            continue
        speech = name.startswith(("train_dir", "test_dir"))
        problems = check_files(paths, cfg.sample_rate, int(cfg.get("num_workers", 1)), desc=name[:40], speech=speech)
        for _, kind, message in problems:
            print(f"{kind.upper():12s} {message}", file=out)
        bad = [p for p in problems if p[1] != WARNING]
        kinds = Counter(kind for _, kind, _ in bad)
        detail = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        warned = len(problems) - len(bad)
        summary.append(f"{name}: {len(paths)} files, {len(bad)} bad" + (f" ({detail})" if detail else "") +
                       (f", {warned} near-silent or very short (warnings)" if warned else ""))
        total_bad += len(bad)
    print("\nsummary:", file=out)
    for line in summary:
        print(f"  {line}", file=out)
    print(f"  {'no problems found' if total_bad == 0 else f'{total_bad} problem(s) found'}", file=out)
    return total_bad


def main(argv=None):
    cfg = load_config(argv, description="Check every audio file the recipe uses.")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    return 1 if run_check(cfg) else 0


if __name__ == "__main__":
    run_command(main)
