"""Who spoke when: diarize recordings with the project's speaker embeddings, optionally scored against references.

    python -m src.diarize meeting.wav --checkpoint ecapa.ckpt --out diar_out
    python -m src.diarize --list recordings.txt --checkpoint ecapa.ckpt --out diar_out --reference refs/ \\
        --num_speakers 4

Per recording NAME (the file name without extension, also the RTTM recording name) the output folder gets
``NAME.rttm`` (the turns), ``NAME.json`` (segments, speech regions, timing, the settings that made them) and
``NAME.png`` (a timeline, the reference beside it when one is given). With ``--reference`` (an RTTM file or a folder
of them; ``--uem`` limits the scored regions) the DER, its parts and the JER are printed per recording and in total
for collars 0.25 s and 0 s with overlapped speech scored and skipped, and written to ``scores.json``.

With ``--runtime onnxruntime`` the windows are embedded by onnxruntime on the checkpoint's cached dynamic ONNX
export (src/deploy/onnx_runtime.py), as in every command that embeds audio.

A recording whose outputs exist and were made by the same model file, settings and audio file is not diarized
again, so an interrupted run continues where it stopped. A recording that cannot be diarized (empty, no speech,
more speakers asked for than windows) is reported and the others go on; the command then ends with one error line.
"""
from src.mindspore_log import route_mindspore_log

if __name__ == "__main__":
    route_mindspore_log()       # first: MindSpore's C++ logger reads its settings when the imports below load it

import dataclasses
import json
import logging
import os

from tqdm import tqdm

from src.checkpoint import file_sha256
from src.cli import log_to_file, run_command, setup_logging
from src.config import UsageError, parse_recipe_args, recipe_parser
from src.device import setup_device
from src.diarize.pipeline import DiarizeSettings, diarize_recording
from src.diarize.plot import plot_timeline
from src.diarize.rttm import read_references, read_rttm, read_uem, write_rttm
from src.diarize.scoring import TOTAL, format_table, score_recordings
from src.evaluate.extract import file_stamp
from src.files import write_atomically
from src.checkpoint import load_embedder, recipe_for_checkpoint
from src.model.embedder import min_samples

logger = logging.getLogger(__name__)


def recording_paths(positional, list_file):
    """The recordings of the command line and of ``--list`` (one path per line; relative paths are relative to the
    list's folder) -> dict name -> path. Names (file names without extension) must be unique."""
    paths = list(positional)
    if list_file:
        if not os.path.isfile(list_file):
            raise FileNotFoundError(f"--list: file not found: {list_file}")
        folder = os.path.dirname(os.path.abspath(list_file))
        with open(list_file, encoding="utf-8") as f:
            paths += [line.strip() if os.path.isabs(line.strip()) else os.path.join(folder, line.strip())
                      for line in f if line.strip() and not line.startswith("#")]
    if not paths:
        raise UsageError("no recordings: give audio files, or --list with one path per line")
    named = {}
    for path in paths:
        name = os.path.splitext(os.path.basename(path))[0]
        if name in named and named[name] != path:
            raise ValueError(f"two recordings are both named {name!r} ({named[name]} and {path}); names come from "
                             f"the file names and must be unique")
        named[name] = path
    return named


def output_paths(out, name):
    return {kind: os.path.join(out, f"{name}.{kind}") for kind in ("rttm", "json", "png")}


def is_done(paths, fingerprint):
    """True when a recording's RTTM and JSON exist and the JSON was made with ``fingerprint``."""
    if not (os.path.isfile(paths["rttm"]) and os.path.isfile(paths["json"])):
        return False
    try:
        with open(paths["json"], encoding="utf-8") as f:
            return json.load(f).get("fingerprint") == fingerprint
    except (OSError, ValueError):
        return False


def chunk_logger(name):
    """A progress callback for diarize_recording: one log line per chunk of a recording."""
    return lambda done, total: logger.info("%s: %.0f of %.0f s read and embedded", name, done, total)


def write_outputs(paths, name, result, fingerprint, reference, plot):
    """RTTM, JSON and PNG of one recording (each written atomically; the JSON, which marks it done, last)."""
    write_rttm(paths["rttm"], name, result.segments)
    if plot:
        plot_timeline(paths["png"], name, result.segments, reference, result.seconds)
    document = {"recording": name, "seconds": result.seconds, "fingerprint": fingerprint,
                "speakers": len({s.speaker for s in result.segments}),
                "segments": [dataclasses.asdict(s) for s in result.segments],
                "speech_regions": result.regions.round(3).tolist(), "windows": len(result.windows),
                "stage_seconds": {k: round(v, 3) for k, v in result.times.items()}}
    write_atomically(paths["json"], "w", lambda f: json.dump(document, f, indent=1))


def main(argv=None):
    parser = recipe_parser("Diarize recordings: who spoke when, as RTTM, JSON and a timeline per recording.")
    parser.add_argument("recordings", nargs="*", help="audio files (WAV, FLAC, ...)")
    parser.add_argument("--list", default="", help="a text file with one recording path per line")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--reference", default="", help="reference RTTM file or folder of .rttm files: score")
    parser.add_argument("--uem", default="", help="UEM file: score only these regions")
    parser.add_argument("--num_speakers", type=int, default=0, help="the number of speakers when known (0: estimate)")
    parser.add_argument("--min_speakers", type=int, default=1, help="fewest speakers the estimate may give")
    parser.add_argument("--max_speakers", type=int, default=10, help="most speakers the estimate may give")
    parser.add_argument("--no_plot", action="store_true", help="skip the timeline PNGs")
    cfg, args = parse_recipe_args(parser, argv)
    if args.num_speakers < 0 or not 1 <= args.min_speakers <= args.max_speakers:
        raise ValueError(f"speaker counts: expected --num_speakers >= 0 and 1 <= --min_speakers <= --max_speakers, "
                         f"got {args.num_speakers}, {args.min_speakers}, {args.max_speakers}")
    recordings = recording_paths(args.recordings, args.list)
    references = read_references(args.reference) if args.reference else None
    uem = read_uem(args.uem) if args.uem else None
    if not cfg.checkpoint:
        raise ValueError("checkpoint: give --checkpoint PATH (a network checkpoint the project loads)")
    os.makedirs(args.out, exist_ok=True)
    setup_logging()
    log_to_file(os.path.join(args.out, "diarize.log"))
    setup_device(cfg.device_target, cfg.device_id)
    cfg = recipe_for_checkpoint(cfg, cfg.checkpoint)
    embedder = load_embedder(cfg, cfg.checkpoint)
    settings = DiarizeSettings.from_recipe(cfg, args.num_speakers, args.min_speakers, args.max_speakers)
    base = {"model": file_sha256(cfg.checkpoint), "runtime": cfg.runtime, "settings": json.loads(json.dumps(dataclasses.asdict(settings)))}
    failed = {}
    bar = tqdm(recordings.items(), desc="diarizing", unit="rec", disable=len(recordings) < 2)
    for name, path in bar:
        paths = output_paths(args.out, name)
        try:
            fingerprint = dict(base, audio=file_stamp(path))
            if is_done(paths, fingerprint):
                logger.info("%s: done already (%s)", name, paths["rttm"])
                continue
            result = diarize_recording(path, embedder, settings, min_samples(cfg), chunk_logger(name))
        except (ValueError, OSError) as err:
            failed[name] = str(err)
            logger.error("%s", err)
            continue
        write_outputs(paths, name, result, fingerprint, (references or {}).get(name), not args.no_plot)
        logger.info("%s: %d speakers, %d segments, %.1f s of audio (vad %.1f s, embedding %.1f s, clustering %.1f s)",
                    name, len({s.speaker for s in result.segments}), len(result.segments), result.seconds,
                    result.times["vad"], result.times["embedding"], result.times["clustering"])
    done = [name for name in recordings if name not in failed]
    if references is not None and done:
        hypotheses = {name: read_rttm(output_paths(args.out, name)["rttm"]).get(name, []) for name in done}
        table = score_recordings(references, hypotheses, uem)
        print(format_table(table))
        write_atomically(os.path.join(args.out, "scores.json"), "w", lambda f: json.dump(table, f, indent=1))
        logger.info("DER %.2f %% (collar 0.25 s, overlap scored) over %d recordings; scores in %s",
                    100 * table["collar 0.25 s, overlap scored"][TOTAL]["der"], len(done),
                    os.path.join(args.out, "scores.json"))
    if failed:
        name, message = next(iter(failed.items()))
        more = f" (and {len(failed) - 1} more recordings; see {os.path.join(args.out, 'diarize.log')})" \
            if len(failed) > 1 else ""
        raise ValueError(message + more)
    return 0


if __name__ == "__main__":
    run_command(main)
