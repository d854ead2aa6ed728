"""Compare two recordings, or write embeddings, from the command line.

    python -m src.evaluate.verify a.wav b.wav --checkpoint ecapa.ckpt [--summary runs/voxceleb/eval/eval_summary.json]
    python -m src.evaluate.verify a.wav b.wav --checkpoint ecapa.ckpt --calibration calibration.json [--p_target 0.01]
    python -m src.evaluate.verify --embed a.wav b.wav c.flac --checkpoint ecapa.ckpt --out emb.npz \\
        [--outputs pooled,embedding]

The first form prints the cosine score, the decision and the threshold with where it came from: ``--threshold``,
else the EER threshold in an evaluation summary written by eval.py, else DEFAULT_THRESHOLD; a warning says that
such a threshold is not calibrated. The second (a calibration file written by ``python -m src.calibrate`` for this
checkpoint) scores with the recipe's scoring the file was fitted on, turns the score into a log-likelihood ratio and
decides at the Bayes threshold ``log((1 - p_target) / p_target)``, printing the false-accept and false-reject rates
measured at that threshold on the calibration trials. The third writes an .npz with ``keys`` (the paths as given)
and ``embeddings`` (N, D).

From Python, ``score_pair(cfg, embedder, wavs, calibration)`` returns the score and, with a calibration, the LLR.

Files at any sample rate are resampled to 16 kHz (with a note) and stereo is mixed down. A missing, empty or
unreadable file stops the command with exit status 1 and a message naming the file; so does near-silent or very
short input (src/data/audio.py ``quality_problems``), or with ``--vad silero`` a file in which the VAD finds no
speech, when comparing, unless ``--force``. With ``--vad silero`` only the speech is embedded; a recording with more
than max_eval_seconds of speech is embedded as the mean of its windows (``long_audio``, src/recordings/windows.py). Model settings come from the
recipe (``--config``, any ``--key value`` override), e.g. ``--channels 512 --mfa_channels 1536``.
"""
import dataclasses
import json
import logging
import math
import os

from src.checkpoint import file_sha256
from src.cli import run_command, setup_logging
from src.config import UsageError, parse_recipe_args, recipe_parser
from src.data.audio import AudioError, audio_info, quality_problems, read_audio
from src.evaluate.calibration import read_calibration, scoring_settings, trial_features, utterance_quality
from src.evaluate.extract import Batching, embedded_seconds, extract_embeddings, save_embeddings, scoring_references
from src.evaluate.metrics import bayes_threshold
from src.evaluate.scoring import score_trials
from src.model.embedder import OUTPUT_NAMES, load_embedder, recipe_for_checkpoint
from src.recordings.vad import VadSettings
from src.recordings.windows import file_speech

logger = logging.getLogger("verify")

DEFAULT_THRESHOLD = 0.25   # cosine; a typical same-speaker threshold for ECAPA-TDNN on VoxCeleb, not calibrated
DEFAULT_P_TARGET = 0.01    # with a calibration: the prior of a same-speaker trial, as in the DCF of NIST SRE


def threshold_from(threshold, summary_path, checkpoint):
    """The decision threshold: ``threshold`` when given, else the one of an eval.py summary at ``summary_path``,
    else the default -> (threshold, where it came from)."""
    if threshold is not None:
        return float(threshold), "given with --threshold"
    if summary_path is None:
        logger.warning("no --summary given: using the default threshold %.2f, which is NOT calibrated for this "
                       "model; run eval.py and pass its eval_summary.json", DEFAULT_THRESHOLD)
        return DEFAULT_THRESHOLD, "default (uncalibrated)"
    path = summary_path
    try:
        with open(path, encoding="utf-8") as f:
            summary = json.load(f)
        value, source = summary["verify_threshold"]["value"], summary["verify_threshold"]["source"]
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"{path}: not an evaluation summary written by eval.py ({err})") from None
    if summary.get("checkpoint_sha256") not in (None, file_sha256(checkpoint)):
        logger.warning("%s was computed for another checkpoint (%s); its threshold may not fit %s",
                       path, summary.get("checkpoint"), checkpoint)
    return float(value), f"{source}, from {path}"


def pair_batching(batching, wavs):
    """Both files of a pair in one batch padded to the longer one: one graph compilation instead of one per
    bucket."""
    longest = max(frames / rate for frames, rate, _ in (audio_info(w) for w in wavs))
    return dataclasses.replace(batching, bucket_seconds=(), batch_size=2,
                               max_seconds=min(batching.max_seconds, math.ceil(longest * 10) / 10))


def check_quality(wavs, refuse, vad=VadSettings()):
    """Near-silent or very short input (src/data/audio.py ``quality_problems``), and with ``vad`` (a VadSettings)
    input without speech: refused when ``refuse``, else a warning per file."""
    for path in wavs:
        problems = quality_problems(read_audio(path, resample=True))
        if vad.enabled and not file_speech(path, vad, resample=True):
            problems.append("the VAD found no speech")
        if problems and refuse:
            raise ValueError(f"{path}: {', '.join(problems)}; a score would mean little (--force scores it anyway)")
        if problems:
            logger.warning("%s: %s; its score means little", path, ", ".join(problems))


def score_pair(cfg, embedder, wavs, calibration=None, calibration_path=""):
    """Score two recordings -> dict with "score" and, given a Calibration, "llr" (natural-log likelihood ratio).

    Without a calibration the score is plain cosine. With one, it is the recipe's scoring (``score_norm``,
    ``subtract_mean``: the cohort embeddings are cached beside the calibration file, as ``python -m src.calibrate``
    left them), and the calibration must have been fitted on it (``Calibration.check_fits``).
    """
    embeddings = extract_embeddings(embedder, wavs, "", pair_batching(Batching.from_recipe(cfg), wavs), resample=True,
                                    progress=False)
    trial = [(0, wavs[0], wavs[1])]
    if calibration is None:
        return {"score": float(score_trials(embeddings, trial)[0])}
    cohort, mean = scoring_references(cfg, embedder, Batching.from_recipe(cfg), os.path.join(
        os.path.dirname(os.path.abspath(calibration_path)), "embeddings_cohort.npz") if calibration_path else "")
    score = score_trials(embeddings, trial, cfg.score_norm, cohort, mean, int(cfg.asnorm_topk))
    seconds = embedded_seconds(wavs, "", Batching.from_recipe(cfg), resample=True)
    values = utterance_quality(embeddings, seconds, calibration.quality, cohort, mean, int(cfg.asnorm_topk))
    llr = calibration.llrs(trial_features(trial, score, calibration.quality, values))
    return {"score": float(score[0]), "llr": float(llr[0])}


def calibrated_decision(result, calibration, p_target):
    """The line verify prints for a calibrated ``score_pair`` result at ``p_target``."""
    threshold = bayes_threshold(p_target)
    decision = "same speaker" if result["llr"] >= threshold else "different speakers"
    line = (f"score {result['score']:.4f}  LLR {result['llr']:.3f}  decision: {decision}  (Bayes threshold "
            f"{threshold:.3f} for p_target {p_target:g}")
    point = calibration.operating_point(p_target)
    if point is None:
        stored = ", ".join(f"{op['p_target']:g}" for op in calibration.operating_points)
        return line + f"; expected error rates are stored for p_target {stored} only)"
    return line + (f"; expected at this threshold, from {calibration.trials.get('num_target', '?')} target and "
                   f"{calibration.trials.get('num_nontarget', '?')} nontarget calibration trials: false accepts "
                   f"{100 * point['false_accept']:.2f} %, false rejects {100 * point['false_reject']:.2f} %)")


def parse_args(argv):
    parser = recipe_parser("Speaker verification of two recordings, or embeddings of several.")
    parser.add_argument("audio", nargs="*", help="two files to compare (or, with --embed, files to embed)")
    parser.add_argument("--embed", action="store_true", help="write embeddings of the files instead")
    parser.add_argument("--out", help="with --embed: the .npz file to write")
    parser.add_argument("--outputs", default="embedding",
                        help=f"with --embed: comma-separated outputs from {', '.join(OUTPUT_NAMES)}")
    parser.add_argument("--summary", help="eval_summary.json of eval.py: its threshold is used")
    parser.add_argument("--threshold", type=float, help="decide with this cosine threshold")
    parser.add_argument("--p_target", type=float,
                        help="with --calibration: the prior probability of a target (same speaker) trial the Bayes "
                             f"threshold is set for (default {DEFAULT_P_TARGET})")
    parser.add_argument("--force", action="store_true", help="score near-silent or very short input anyway")
    cfg, args = parse_recipe_args(parser, argv)
    if not cfg.checkpoint:
        raise UsageError("checkpoint: no checkpoint given (--checkpoint PATH)")
    if args.embed:
        if not args.audio or not args.out:
            raise UsageError("--embed needs one or more audio files and --out FILE.npz")
    elif len(args.audio) != 2:
        raise UsageError(f"expected two audio files to compare, got {len(args.audio)}: {args.audio}")
    if args.p_target is not None and not cfg.calibration:
        raise UsageError("--p_target needs a calibration file (--calibration FILE from python -m src.calibrate)")
    if args.p_target is not None and not 0 < args.p_target < 1:
        raise UsageError(f"--p_target: expected a probability between 0 and 1, got {args.p_target}")
    if cfg.calibration and args.threshold is not None:
        raise UsageError("--threshold and --calibration exclude each other: the calibration sets the threshold")
    args.outputs = tuple(args.outputs.split(",")) if args.embed else ("embedding",)
    if any(name not in OUTPUT_NAMES for name in args.outputs):
        raise UsageError(f"--outputs: choose from {', '.join(OUTPUT_NAMES)}, got {','.join(args.outputs)}")
    return cfg, args


def main(argv=None):
    setup_logging()
    cfg, args = parse_args(argv)
    wavs = args.audio
    missing = [w for w in wavs if not os.path.isfile(w)]
    if missing:
        raise AudioError(f"{missing[0]}: audio file not found")
    check_quality(wavs, refuse=not args.embed and not args.force, vad=VadSettings.from_recipe(cfg))

    from src.device import setup_device
    setup_device(cfg.device_target, cfg.device_id)
    cfg = recipe_for_checkpoint(cfg, cfg.checkpoint)
    calibration = None
    if cfg.calibration and not args.embed:
        calibration = read_calibration(cfg.calibration)
        calibration.check_fits(cfg.calibration, file_sha256(cfg.checkpoint), scoring_settings(cfg, calibration.quality))
    embedder = load_embedder(cfg, cfg.checkpoint, args.outputs)
    if args.embed:
        batching = Batching.from_recipe(cfg)
        longest = max(frames / rate for frames, rate, _ in (audio_info(w) for w in wavs))
        if longest <= batching.max_seconds:       # no long recording cut into windows: batches of the files only
            batching = dataclasses.replace(batching, batch_size=min(batching.batch_size, len(wavs)))
        embeddings = extract_embeddings(embedder, wavs, "", batching, resample=True, progress=len(wavs) > 20)
        save_embeddings(args.out, embeddings, {"checkpoint": os.path.abspath(cfg.checkpoint),
                                               "outputs": list(args.outputs)})
        print(f"wrote {len(embeddings)} embeddings of size {next(iter(embeddings.values())).size} to {args.out}")
        return 0
    if calibration is not None:
        result = score_pair(cfg, embedder, wavs, calibration, cfg.calibration)
        print(calibrated_decision(result, calibration, args.p_target or DEFAULT_P_TARGET))
        return 0
    threshold, source = threshold_from(args.threshold, args.summary, cfg.checkpoint)
    score = score_pair(cfg, embedder, wavs)["score"]
    decision = "same speaker" if score >= threshold else "different speakers"
    if source != "default (uncalibrated)":       # the default's own warning says so already
        logger.warning("the threshold is not calibrated: a cosine score is not a likelihood ratio, and the error "
                       "rates at this threshold are unknown; python -m src.calibrate and --calibration FILE decide "
                       "at a stated prior")
    print(f"score {score:.4f}  decision: {decision}  (threshold {threshold:.4f}: {source})")
    return 0

if __name__ == "__main__":
    run_command(main)
