"""Enrol speakers, identify who speaks in a clip, and score identification lists, from the command line.

    python -m src.speakers enroll alice a1.wav a2.wav a3.wav --checkpoint ecapa.ckpt [--store speakers.db] [--replace]
    python -m src.speakers enroll --enroll_map spk2utt.txt --audio_dir wav/ --checkpoint ecapa.ckpt
    python -m src.speakers identify who.wav --checkpoint ecapa.ckpt [--top_k 5] [--calibration cal.json --p_target 0.01]
    python -m src.speakers list [--store speakers.db]
    python -m src.speakers remove alice [--store speakers.db]
    python -m src.speakers evaluate --list ident.txt --audio_dir test/ --checkpoint ecapa.ckpt [--fpir 0.01]

The store is an SQLite file (``--store``, default ``<output_dir>/speakers.db``), or Milvus with ``--backend milvus``
(``--store`` a local ``*.db`` path for milvus-lite, or ``http://host:19530``; ``--collection`` names it). See
docs/speakers.md for the store, the decision and the metrics. Model settings come from the recipe (``--config``,
``--key value``); a store refuses clips embedded by another checkpoint or other settings.
"""
import json
import logging
import os

from src.cli import setup_logging
from src.config import UsageError, parse_recipe_args, recipe_parser
from src.data.audio import AudioError
from src.files import write_atomically
from src.speakers.metrics import UNKNOWN, identification_metrics, open_set_rates, read_identification_list
from src.speakers.profiles import Enrolment, NoStore, StoreError, check_name
from src.speakers.store import BACKENDS, open_store

logger = logging.getLogger("speakers")

ACTIONS = ("enroll", "identify", "list", "remove", "evaluate")
DEFAULT_P_TARGET = 0.01
DEFAULT_FPIR = 0.01


def parse_args(argv):
    parser = recipe_parser("Enrol speakers and identify them (a speaker store in SQLite or Milvus).")
    parser.add_argument("action", choices=ACTIONS, help="what to do")
    parser.add_argument("items", nargs="*", help="enroll: NAME CLIP...; identify: CLIP...; remove: NAME")
    parser.add_argument("--store", help="the store: an SQLite file (default <output_dir>/speakers.db), or with "
                                        "--backend milvus a local *.db path (milvus-lite) or http://host:19530")
    parser.add_argument("--backend", default="sqlite", choices=BACKENDS, help="store backend (default %(default)s)")
    parser.add_argument("--collection", default="speakers", help="milvus: the store's collection name prefix")
    parser.add_argument("--milvus_index", default="FLAT", choices=("FLAT", "HNSW", "AUTOINDEX"),
                        help="milvus: index of a new store's profiles (FLAT: exact)")
    parser.add_argument("--enroll_map", help="enroll: many speakers, a line each '<name> <clip> <clip> ...' (Kaldi's "
                                             "spk2utt, CN-Celeb's enroll.map), clips below --audio_dir")
    parser.add_argument("--replace", action="store_true", help="enroll: replace a speaker already enrolled")
    parser.add_argument("--top_k", type=int, default=5, help="identify: candidates listed per clip")
    parser.add_argument("--p_target", type=float, help="with --calibration: prior of an enrolled speaker the "
                                                       f"Bayes threshold is set for (default {DEFAULT_P_TARGET})")
    parser.add_argument("--list", dest="id_list", help="evaluate: identification list '<utterance> <speaker>'")
    parser.add_argument("--audio_dir", default="", help="evaluate, enroll --enroll_map: folder the list's "
                                                         "utterances are relative to")
    parser.add_argument("--fpir", type=float, default=DEFAULT_FPIR,
                        help="evaluate: the false-positive identification rate FNIR is reported at")
    parser.add_argument("--out", help="identify: write the answers as JSON here; evaluate: the output folder "
                                      "(default <output_dir>/identification)")
    parser.add_argument("--force", action="store_true", help="enroll near-silent or very short clips, or with --vad "
                                                             "silero clips without speech, anyway")
    cfg, args = parse_recipe_args(parser, argv)
    args.store = args.store or os.path.join(cfg.output_dir, "speakers.db")
    needs = {"enroll": "NAME CLIP...", "identify": "CLIP...", "remove": "NAME", "list": "", "evaluate": ""}
    if args.action == "remove" and len(args.items) != 1 or args.action in ("list", "evaluate") and args.items:
        raise UsageError(f"{args.action}: expected {needs[args.action] or 'no positional arguments'}, got "
                         f"{args.items}")
    if args.action == "enroll" and args.enroll_map and args.items:
        raise UsageError("enroll: give NAME CLIP... or --enroll_map FILE, not both")
    if args.action in ("enroll", "identify") and not args.items and not (args.action == "enroll" and args.enroll_map):
        raise UsageError(f"{args.action}: expected {needs[args.action]}"
                         + (" (or --enroll_map FILE)" if args.action == "enroll" else ""))
    if args.action in ("enroll", "identify", "evaluate") and not cfg.checkpoint:
        raise UsageError("checkpoint: no checkpoint given (--checkpoint PATH)")
    if args.action == "evaluate" and not args.id_list:
        raise UsageError("evaluate: --list FILE (an identification list) is required")
    if args.top_k < 1:
        raise UsageError(f"--top_k: expected an integer >= 1, got {args.top_k}")
    if args.p_target is not None and not cfg.calibration:
        raise UsageError("--p_target needs a calibration file (--calibration FILE from python -m src.calibrate)")
    if args.p_target is not None and not 0 < args.p_target < 1:
        raise UsageError(f"--p_target: expected a probability between 0 and 1, got {args.p_target}")
    if not 0 <= args.fpir < 1:
        raise UsageError(f"--fpir: expected a rate in [0, 1), got {args.fpir}")
    if args.action in ("enroll", "identify", "evaluate") and (cfg.score_norm != "none" or cfg.subtract_mean):
        raise UsageError("score_norm / subtract_mean: identification scores by cosine against profiles; set "
                         "--score_norm none --subtract_mean false")
    args.p_target = args.p_target or DEFAULT_P_TARGET
    return cfg, args


def open_for(args, identity, create=False):
    return open_store(args.backend, args.store, identity, create, args.collection, args.milvus_index)


def check_files(paths):
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise AudioError(f"{missing[0]}: audio file not found")


class Model:
    """The checkpoint's embedder and the identity of the stores it may write to and read from, loaded on demand
    (after the cheap checks, so a refused command costs no graph compilation)."""

    def __init__(self, cfg):
        from src.checkpoint import file_sha256
        from src.checkpoint import recipe_for_checkpoint
        from src.speakers.identification import store_identity
        self.cfg = recipe_for_checkpoint(cfg, cfg.checkpoint)
        self.sha256 = file_sha256(cfg.checkpoint)
        self.identity = store_identity(self.cfg, self.sha256)
        self._embedder = None

    def embed(self, paths, progress=None):
        from src.speakers.identification import embed_clips
        if self._embedder is None:
            from src.device import setup_device
            from src.checkpoint import load_embedder
            setup_device(self.cfg.device_target, self.cfg.device_id)
            self._embedder = load_embedder(self.cfg, self.cfg.checkpoint)
        return embed_clips(self.cfg, self._embedder, paths, progress)

    def calibration(self):
        """The recipe's calibration (checked to fit) or None."""
        if not self.cfg.calibration:
            return None
        from src.evaluate.calibration import read_calibration
        from src.speakers.identification import check_calibration
        calibration = read_calibration(self.cfg.calibration)
        check_calibration(calibration, self.cfg.calibration, self.cfg, self.sha256)
        return calibration


def enrolment_lists(args):
    """The speakers to enrol -> list of (name, [clip paths]): NAME CLIP... or the lines of --enroll_map."""
    if args.enroll_map:
        from src.data.cnceleb import read_enrollment_map
        from src.evaluate.extract import audio_path
        rows = read_enrollment_map(args.enroll_map)
        return [(check_name(name), [audio_path(args.audio_dir, u) for u in utts]) for name, utts in rows.items()]
    name, paths = check_name(args.items[0]), args.items[1:]
    if not paths:
        raise StoreError(f"enroll {name}: no clips given; an enrolment needs at least one clip")
    return [(name, paths)]


def enroll(cfg, args):
    """Enrol every speaker given, in one transaction after all their clips are embedded."""
    speakers = enrolment_lists(args)
    paths = [p for _, clips in speakers for p in clips]
    check_files(paths)
    model = Model(cfg)
    try:                      # an existing store is checked before any embedding; a new one is made only at the end
        with open_for(args, model.identity) as store:
            taken = [name for name, _ in speakers if store.has(name)]
            if taken and not args.replace:
                raise StoreError(f"{args.store}: speaker {taken[0]!r} is already enrolled (--replace replaces it)")
    except NoStore:
        pass
    from src.evaluate.verify import check_quality
    from src.recordings.vad import VadSettings
    check_quality(paths, refuse=not args.force, vad=VadSettings.from_recipe(model.cfg))
    embedded = iter(model.embed(paths, progress=len(paths) > 20))
    enrolments = [Enrolment.from_clips(name, [next(embedded) for _ in clips]) for name, clips in speakers]
    with open_for(args, model.identity, create=True) as store:
        store.enroll(enrolments, replace=args.replace)
    for enrolment in enrolments:
        print(f"enrolled {enrolment.name} from {len(enrolment.clips)} clip(s), {enrolment.seconds:.1f} s, in "
              f"{args.store}")
    return 0


def identify(cfg, args):
    from src.speakers.identification import identify as rank
    check_files(args.items)
    model = Model(cfg)
    calibration = model.calibration()
    with open_for(args, model.identity) as store:
        clips = model.embed(args.items)
        results = rank(store, clips, args.top_k, calibration, args.p_target)
    for result in results:
        print(result.clip)
        for i, (name, score) in enumerate(result.candidates):
            llr = f"  LLR {result.llrs[i]:7.3f}" if result.llrs is not None else ""
            print(f"  {i + 1:2d}. {name:24s} score {score:.4f}{llr}")
        if result.decision is not None:
            from src.evaluate.metrics import bayes_threshold
            print(f"  decision: {result.decision}  (Bayes threshold {bayes_threshold(args.p_target):.3f} for "
                  f"p_target {args.p_target:g})")
        if not result.candidates:
            print("  (the store holds no speakers)")
    if args.out:
        write_atomically(args.out, "w", lambda f: json.dump([r.as_dict() for r in results], f, indent=2))
        print(f"wrote {args.out}")
    return 0


def list_speakers(cfg, args):
    with open_for(args, None) as store:
        speakers = store.speakers()
    for s in speakers:
        print(f"{s['name']:24s} {s['num_clips']:4d} clip(s) {s['seconds']:8.1f} s  enrolled {s['enrolled']}")
    print(f"{len(speakers)} speaker(s) in {args.store}")
    return 0


def remove(cfg, args):
    with open_for(args, None) as store:
        store.remove(args.items[0])
    print(f"removed {args.items[0]} from {args.store}")
    return 0


def evaluate(cfg, args):
    """Identify every utterance of an identification list; write the metrics and the answers."""
    from src.evaluate.extract import audio_path
    from src.evaluate.metrics import bayes_threshold
    from src.speakers.identification import identify as rank
    searches = read_identification_list(args.id_list)
    paths = [audio_path(args.audio_dir, utt) for utt, _ in searches]
    check_files(paths)
    model = Model(cfg)
    calibration = model.calibration()
    with open_for(args, model.identity) as store:
        enrolled = {s["name"] for s in store.speakers()}
        stray = next(((i, s) for i, (_, s) in enumerate(searches) if s != UNKNOWN and s not in enrolled), None)
        if stray is not None:
            raise ValueError(f"{args.id_list}: search {stray[0] + 1}: speaker {stray[1]!r} is not enrolled in "
                             f"{args.store}; write '{UNKNOWN}' for speakers who are not")
        results = rank(store, model.embed(paths, progress=True), max(5, args.top_k), calibration, args.p_target)
    truths = [speaker for _, speaker in searches]
    ranked = [[n for n, _ in r.candidates] for r in results]
    scores = [[s for _, s in r.candidates] for r in results]
    summary = {"list": os.path.abspath(args.id_list), "store": args.store, "num_enrolled": len(enrolled),
               "cosine": identification_metrics(ranked, scores, truths, args.fpir)}
    if calibration is not None:
        threshold = bayes_threshold(args.p_target)
        fnir, fpir = open_set_rates(ranked, [r.llrs for r in results], truths, threshold)
        summary["calibrated"] = {"p_target": args.p_target, "bayes_threshold": threshold, "fnir": fnir, "fpir": fpir}
    out = args.out or os.path.join(cfg.output_dir, "identification")
    os.makedirs(out, exist_ok=True)
    lines = [f"{utt} {truth} {' '.join(f'{n}:{s:.4f}' for n, s in r.candidates)}"
             + (f" decision:{r.decision}" if r.decision else "")
             for (utt, truth), r in zip(searches, results)]
    write_atomically(os.path.join(out, "identification_results.txt"), "w", lambda f: f.write("\n".join(lines) + "\n"))
    write_atomically(os.path.join(out, "identification_summary.json"), "w",
                     lambda f: json.dump(summary, f, indent=2))
    print(summary_lines(summary))
    print(f"wrote {out}/identification_summary.json and identification_results.txt")
    return 0


def summary_lines(summary):
    """The printed lines of an evaluate summary."""
    m = summary["cosine"]
    lines = [f"{m['num_searches']} searches ({m['num_mated']} of enrolled speakers, {m['num_nonmated']} of others) "
             f"against {summary['num_enrolled']} enrolled speakers"]
    if "top1_accuracy" in m:
        lines.append(f"  closed set: top-1 accuracy {100 * m['top1_accuracy']:.2f} %, top-5 accuracy "
                     f"{100 * m['top5_accuracy']:.2f} %")
    if "fnir" in m:
        lines.append(f"  open set: FNIR {100 * m['fnir']:.2f} % at FPIR {100 * m['fpir']:.2f} % (stated "
                     f"{100 * m['fpir_stated']:.2f} %, cosine threshold {m['threshold']:.4f})")
    c = summary.get("calibrated")
    if c is not None:
        lines.append(f"  calibrated decisions at p_target {c['p_target']:g} (LLR >= {c['bayes_threshold']:.3f}): "
                     f"FNIR {100 * c['fnir']:.2f} %, FPIR {100 * c['fpir']:.2f} %")
    return "\n".join(lines)


def main(argv=None):
    setup_logging()
    cfg, args = parse_args(argv)
    action = {"enroll": enroll, "identify": identify, "list": list_speakers, "remove": remove,
              "evaluate": evaluate}[args.action]
    return action(cfg, args)
