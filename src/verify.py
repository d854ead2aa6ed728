"""Compare two recordings, or write embeddings, from the command line.

    python -m src.verify a.wav b.wav --checkpoint ecapa.ckpt [--summary runs/voxceleb/eval/eval_summary.json]
    python -m src.verify --embed a.wav b.wav c.flac --checkpoint ecapa.ckpt --out emb.npz [--outputs pooled,embedding]

The first form prints the cosine score, the decision and the threshold with where it came from: ``--threshold``,
else the EER threshold in an evaluation summary written by eval.py, else DEFAULT_THRESHOLD (uncalibrated: a
warning says so). The second writes an .npz with ``keys`` (the paths as given) and ``embeddings`` (N, D).

Files at any sample rate are resampled to 16 kHz (with a note) and stereo is mixed down. A missing, empty or
unreadable file stops the command with exit status 1 and a message naming the file. Model settings come from the
recipe (``--config``, any ``--key value`` override), e.g. ``--channels 512 --mfa_channels 1536``.
"""
import json
import logging
import math
import os
import sys

from src.config import load_config
from src.data.audio import AudioError, audio_info
from src.embedding import OUTPUT_NAMES, extract_embeddings, file_sha256, load_network, save_embeddings
from src.scoring import score_trials

logger = logging.getLogger("verify")

DEFAULT_THRESHOLD = 0.25   # cosine; a typical same-speaker threshold for ECAPA-TDNN on VoxCeleb, not calibrated
OWN_FLAGS = {"--summary", "--out", "--threshold", "--outputs"}   # flags that take a value; --embed takes none


def split_args(argv):
    """-> (wav paths, this command's options, recipe overrides ``--key value``)."""
    wavs, own, overrides, i = [], {"embed": False}, [], 0
    while i < len(argv):
        arg = argv[i]
        name, _, inline = arg.partition("=")
        if arg == "--embed":
            own["embed"] = True
            i += 1
        elif name in OWN_FLAGS:
            if not inline and i + 1 >= len(argv):
                raise ValueError(f"{name}: missing value")
            own[name[2:]] = inline or argv[i + 1]
            i += 1 if inline else 2
        elif arg.startswith("--"):
            overrides.append(arg)
            if not inline and i + 1 < len(argv):
                overrides.append(argv[i + 1])
                i += 1
            i += 1
        else:
            wavs.append(arg)
            i += 1
    return wavs, own, overrides


def threshold_from(own, checkpoint):
    """-> (threshold, where it came from)."""
    if "threshold" in own:
        return float(own["threshold"]), "given with --threshold"
    if "summary" not in own:
        logger.warning("no --summary given: using the default threshold %.2f, which is NOT calibrated for this "
                       "model; run eval.py and pass its eval_summary.json", DEFAULT_THRESHOLD)
        return DEFAULT_THRESHOLD, "default (uncalibrated)"
    path = own["summary"]
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


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    argv = sys.argv[1:] if argv is None else list(argv)
    if "-h" in argv or "--help" in argv:
        print(__doc__)
        return 0
    wavs, own, overrides = split_args(argv)
    cfg = load_config(overrides, description="Speaker verification of two recordings.")
    if not cfg.checkpoint:
        raise ValueError("checkpoint: no checkpoint given (--checkpoint PATH)")
    if own["embed"]:
        if not wavs or "out" not in own:
            raise ValueError("--embed needs one or more audio files and --out FILE.npz")
    elif len(wavs) != 2:
        raise ValueError(f"expected two audio files to compare, got {len(wavs)}: {wavs}")
    outputs = tuple(own.get("outputs", "embedding").split(","))
    if any(name not in OUTPUT_NAMES for name in outputs):
        raise ValueError(f"--outputs: choose from {', '.join(OUTPUT_NAMES)}, got {own['outputs']}")
    missing = [w for w in wavs if not os.path.isfile(w)]
    if missing:
        raise AudioError(f"{missing[0]}: audio file not found")

    from src.device import setup_device
    setup_device(cfg.device_target, cfg.device_id)
    network = load_network(cfg, cfg.checkpoint)
    cfg.eval_batch_size = min(int(cfg.eval_batch_size), len(wavs))
    if not own["embed"]:
        # Both files in one batch padded to the longer one: one graph compilation instead of one per bucket.
        longest = max(frames / rate for frames, rate, _ in (audio_info(w) for w in wavs))
        cfg.bucket_seconds = []
        cfg.max_eval_seconds = min(float(cfg.max_eval_seconds), math.ceil(longest * 10) / 10)
    embeddings = extract_embeddings(network, wavs, "", cfg, outputs=outputs if own["embed"] else ("embedding",),
                                    resample=True, progress=len(wavs) > 20)
    if own["embed"]:
        save_embeddings(own["out"], embeddings, {"checkpoint": os.path.abspath(cfg.checkpoint),
                                                 "outputs": list(outputs)})
        print(f"wrote {len(embeddings)} embeddings of size {next(iter(embeddings.values())).size} to {own['out']}")
        return 0
    threshold, source = threshold_from(own, cfg.checkpoint)
    score = float(score_trials(embeddings, [(0, wavs[0], wavs[1])])[0])
    decision = "same speaker" if score >= threshold else "different speakers"
    print(f"score {score:.4f}  decision: {decision}  (threshold {threshold:.4f}: {source})")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
