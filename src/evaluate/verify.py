"""Compare two recordings, or write embeddings, from the command line.

    python -m src.evaluate.verify a.wav b.wav --checkpoint ecapa.ckpt [--summary runs/voxceleb/eval/eval_summary.json]
    python -m src.evaluate.verify --embed a.wav b.wav c.flac --checkpoint ecapa.ckpt --out emb.npz \\
        [--outputs pooled,embedding]

The first form prints the cosine score, the decision and the threshold with where it came from: ``--threshold``,
else the EER threshold in an evaluation summary written by eval.py, else DEFAULT_THRESHOLD (uncalibrated: a
warning says so). The second writes an .npz with ``keys`` (the paths as given) and ``embeddings`` (N, D).

Files at any sample rate are resampled to 16 kHz (with a note) and stereo is mixed down. A missing, empty or
unreadable file stops the command with exit status 1 and a message naming the file; so does near-silent or very
short input (src/data/audio.py ``quality_problems``) when comparing, unless ``--force``. Model settings come from the
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
from src.evaluate.extract import Batching, extract_embeddings, save_embeddings
from src.evaluate.scoring import score_trials
from src.model.embedder import OUTPUT_NAMES, load_embedder, recipe_for_checkpoint

logger = logging.getLogger("verify")

DEFAULT_THRESHOLD = 0.25   # cosine; a typical same-speaker threshold for ECAPA-TDNN on VoxCeleb, not calibrated


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


def check_quality(wavs, refuse):
    """Near-silent or very short input (src/data/audio.py ``quality_problems``): refused when ``refuse``, else a
    warning per file."""
    for path in wavs:
        problems = quality_problems(read_audio(path, resample=True))
        if problems and refuse:
            raise ValueError(f"{path}: {', '.join(problems)}; a score would mean little (--force scores it anyway)")
        if problems:
            logger.warning("%s: %s; its score means little", path, ", ".join(problems))


def parse_args(argv):
    parser = recipe_parser("Speaker verification of two recordings, or embeddings of several.")
    parser.add_argument("audio", nargs="*", help="two files to compare (or, with --embed, files to embed)")
    parser.add_argument("--embed", action="store_true", help="write embeddings of the files instead")
    parser.add_argument("--out", help="with --embed: the .npz file to write")
    parser.add_argument("--outputs", default="embedding",
                        help=f"with --embed: comma-separated outputs from {', '.join(OUTPUT_NAMES)}")
    parser.add_argument("--summary", help="eval_summary.json of eval.py: its threshold is used")
    parser.add_argument("--threshold", type=float, help="decide with this cosine threshold")
    parser.add_argument("--force", action="store_true", help="score near-silent or very short input anyway")
    cfg, args = parse_recipe_args(parser, argv)
    if not cfg.checkpoint:
        raise UsageError("checkpoint: no checkpoint given (--checkpoint PATH)")
    if args.embed:
        if not args.audio or not args.out:
            raise UsageError("--embed needs one or more audio files and --out FILE.npz")
    elif len(args.audio) != 2:
        raise UsageError(f"expected two audio files to compare, got {len(args.audio)}: {args.audio}")
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
    check_quality(wavs, refuse=not args.embed and not args.force)

    from src.device import setup_device
    setup_device(cfg.device_target, cfg.device_id)
    cfg = recipe_for_checkpoint(cfg, cfg.checkpoint)
    embedder = load_embedder(cfg, cfg.checkpoint, args.outputs)
    batching = Batching.from_recipe(cfg)
    if args.embed:
        batching = dataclasses.replace(batching, batch_size=min(batching.batch_size, len(wavs)))
    else:
        batching = pair_batching(batching, wavs)
    embeddings = extract_embeddings(embedder, wavs, "", batching, resample=True, progress=len(wavs) > 20)
    if args.embed:
        save_embeddings(args.out, embeddings, {"checkpoint": os.path.abspath(cfg.checkpoint),
                                               "outputs": list(args.outputs)})
        print(f"wrote {len(embeddings)} embeddings of size {next(iter(embeddings.values())).size} to {args.out}")
        return 0
    threshold, source = threshold_from(args.threshold, args.summary, cfg.checkpoint)
    score = float(score_trials(embeddings, [(0, wavs[0], wavs[1])])[0])
    decision = "same speaker" if score >= threshold else "different speakers"
    print(f"score {score:.4f}  decision: {decision}  (threshold {threshold:.4f}: {source})")
    return 0


if __name__ == "__main__":
    run_command(main)
