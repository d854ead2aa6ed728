"""Time and memory of scoring a trial list the size of CN-Celeb1 eval's: 196 enrolment speakers x 17,777 test
utterances (3,484,292 trials), 192-dimensional embeddings.

    python benchmarks/cnceleb_scoring.py [--speakers 196] [--tests 17777] [--dim 192]

Writes a trials.lst of that size in CN-Celeb's format to a temporary folder, reads it (src/data/trials.py), gives
every name a random embedding and scores it (src/evaluate/scoring.py score_trials, cosine and AS-norm against a
1000-speaker cohort), printing the seconds of each step and the process's peak resident memory after each
(``resource.getrusage``; includes Python and NumPy themselves). Prints a JSON line of the figures last.
"""
import argparse
import json
import os
import resource
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from src.data.trials import read_trial_list          # noqa: E402
from src.evaluate.metrics import summarize           # noqa: E402
from src.evaluate.scoring import score_trials        # noqa: E402


def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speakers", type=int, default=196)
    parser.add_argument("--tests", type=int, default=17777)
    parser.add_argument("--dim", type=int, default=192)
    args = parser.parse_args()
    figures = {"trials": args.speakers * args.tests, "start_peak_mb": peak_mb()}
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "trials.lst")
        speakers = [f"id{800 + s:05d}-enroll" for s in range(args.speakers)]
        tests = [f"test/id{800 + t % args.speakers:05d}-singing-01-{t:05d}.wav" for t in range(args.tests)]
        with open(path, "w", encoding="utf-8") as f:
            for s, spk in enumerate(speakers):
                f.writelines(f"{spk} {t} {int(i % args.speakers == s)}\n" for i, t in enumerate(tests))
        start = time.time()
        _, trials = read_trial_list(path)
        figures.update(read_seconds=round(time.time() - start, 1), read_peak_mb=round(peak_mb()))
    embeddings = {k: rng.standard_normal(args.dim).astype(np.float32) for k in speakers + tests}
    cohort = {f"id{s:05d}/x/{u}.wav": rng.standard_normal(args.dim).astype(np.float32)
              for s in range(1000) for u in range(2)}
    labels = np.fromiter((label for label, _, _ in trials), np.int64, len(trials))
    start = time.time()
    scores = score_trials(embeddings, trials)
    figures.update(cosine_seconds=round(time.time() - start, 1), cosine_peak_mb=round(peak_mb()))
    start = time.time()
    score_trials(embeddings, trials, "asnorm", cohort, topk=300)
    figures.update(asnorm_seconds=round(time.time() - start, 1), asnorm_peak_mb=round(peak_mb()))
    start = time.time()
    summarize(scores, labels)
    figures.update(metrics_seconds=round(time.time() - start, 1), metrics_peak_mb=round(peak_mb()))
    for step in ("read", "cosine", "asnorm", "metrics"):
        print(f"{step:8s} {figures[step + '_seconds']:7.1f} s   peak resident memory {figures[step + '_peak_mb']:6d} MB")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
