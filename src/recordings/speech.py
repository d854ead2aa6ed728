"""Find the speech in recordings from the command line: voice activity detection (src/recordings/vad.py).

    python -m src.recordings.speech a.wav [b.flac ...] [--vad_threshold 0.5 --vad_min_silence_seconds 0.1 ...]
        [--rttm speech.rttm] [--truth speech.json]

Prints each file's speech regions (seconds) and how much of it is speech. ``--rttm`` writes the regions as RTTM
lines (``SPEAKER <file> 1 <start> <duration> <NA> <NA> speech <NA> <NA>``, the form pyannote's VAD output takes).
``--truth`` (a JSON file of ``{path: [[start, end], ...]}``, as ``python -m src.data.synthetic --layout recordings``
writes for its recordings; paths may be relative to the truth file's folder's ``test/``) adds frame-level
precision and recall (10 ms frames), per file and over all files. The VAD is Silero (``--vad silero`` is implied); its settings are the recipe's
``vad_*`` keys. A file in which no speech is found is named, and the command ends with status 1.
"""
import json
import logging
import os

import numpy as np

from src.cli import run_command, setup_logging
from src.config import parse_recipe_args, recipe_parser
from src.data.audio import AudioError, read_audio
from src.files import write_atomically
from src.recordings.vad import VadSettings, speech_regions

logger = logging.getLogger("speech")
FRAME_SECONDS = 0.01


def frame_mask(intervals, num_frames, frame_seconds=FRAME_SECONDS):
    """[(start_s, end_s)] -> boolean (num_frames,) marking the frames inside any interval."""
    mask = np.zeros(num_frames, bool)
    for start, end in intervals:
        mask[int(round(start / frame_seconds)):int(round(end / frame_seconds))] = True
    return mask


def frame_counts(found, truth, seconds):
    """Frames (10 ms) of ``found`` speech intervals that are true speech, frames found, true speech frames."""
    n = int(round(seconds / FRAME_SECONDS))
    got, expected = frame_mask(found, n), frame_mask(truth, n)
    return np.array([(got & expected).sum(), got.sum(), expected.sum()], np.int64)


def precision_recall(counts):
    """(hits, found, true) frame counts -> (precision, recall)."""
    hits, found, true = (float(c) for c in counts)
    return hits / max(found, 1.0), hits / max(true, 1.0)


def rttm_lines(name, regions):
    """RTTM lines of speech regions of the file ``name`` (its uri: the file name without extension)."""
    return [f"SPEAKER {name} 1 {start:.3f} {end - start:.3f} <NA> <NA> speech <NA> <NA>\n" for start, end in regions]


def truth_of(truth, path, truth_path):
    """The truth intervals of ``path`` in a truth file keyed by paths below <its folder>/test or by full path."""
    folder = os.path.join(os.path.dirname(os.path.abspath(truth_path)), "test")
    rel = os.path.relpath(os.path.abspath(path), folder)
    for key in (path, os.path.abspath(path), rel):
        if key in truth:
            return truth[key]
    raise ValueError(f"{truth_path}: no speech intervals for {path}")


def main(argv=None):
    setup_logging()
    parser = recipe_parser("Find the speech in recordings with Silero VAD.")
    parser.add_argument("audio", nargs="+", help="audio files")
    parser.add_argument("--rttm", help="write the speech regions to this RTTM file")
    parser.add_argument("--truth", help="JSON of true speech intervals per file: adds frame precision and recall")
    cfg, args = parse_recipe_args(parser, argv)
    settings = VadSettings.from_recipe(cfg.with_values(vad="silero"))
    truth = None
    if args.truth:
        with open(args.truth, encoding="utf-8") as f:
            truth = json.load(f)
    lines, silent, total = [], [], np.zeros(3, np.int64)
    for path in args.audio:
        if not os.path.isfile(path):
            raise AudioError(f"{path}: audio file not found", "missing")
        samples = read_audio(path, resample=True)
        seconds = samples.size / 16000.0
        regions = speech_regions(samples, settings)
        speech = sum(e - s for s, e in regions)
        print(f"{path}: {len(regions)} speech regions, {speech:.1f} s of {seconds:.1f} s "
              f"({100 * speech / max(seconds, 1e-9):.0f} %)")
        for start, end in regions:
            print(f"  {start:9.3f} {end:9.3f}")
        if truth is not None:
            counts = frame_counts(regions, truth_of(truth, path, args.truth), seconds)
            total += counts
            print("  against {}: frame precision {:.3f}, recall {:.3f}".format(args.truth, *precision_recall(counts)))
        if not regions:
            silent.append(path)
        lines += rttm_lines(os.path.splitext(os.path.basename(path))[0], regions)
    if truth is not None and len(args.audio) > 1:
        print("all {} files: frame precision {:.3f}, recall {:.3f}".format(len(args.audio), *precision_recall(total)))
    if args.rttm:
        write_atomically(args.rttm, "w", lambda f: f.writelines(lines))
        print(f"wrote {args.rttm}")
    if silent:
        raise ValueError(f"{silent[0]}: the VAD found no speech" + (f" (and in {len(silent) - 1} more files)"
                                                                     if len(silent) > 1 else ""))
    return 0


if __name__ == "__main__":
    run_command(main)
