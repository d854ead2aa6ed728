"""DER by condition: the recordings of a scored run grouped by their number of speakers and by their overlap.

Both conditions come from the reference (speakers in its RTTM, the fraction of its speech with two or more voices),
so any scored set can be broken down: generated conversations, VoxConverse, AMI. A group's DER pools its
recordings' seconds (errors over reference speech), as the total does.

    python -m src.diarize.breakdown --scores diar_out/scores.json --reference conversations/rttm
"""
import json
import math

from src.cli import run_command
from src.config import ArgumentParser
from src.diarize.rttm import read_references
from src.diarize.scoring import TOTAL
from src.diarize.segments import overlap_fraction

OVERLAP_BINS = ((0.0, 0.05), (0.05, 0.10), (0.10, 0.15), (0.15, 1.0))
PARTS = ("der", "missed", "false_alarm", "confusion")


def pooled(rows):
    """Rows of per-recording rates with their ``speech`` seconds -> the rates of their pooled seconds."""
    speech = sum(r["speech"] for r in rows)
    return {part: sum(r[part] * r["speech"] for r in rows) / speech if speech > 0 else math.nan for part in PARTS}


def breakdown(rows, references):
    """rows: dict recording -> score row (one condition of src.diarize.scoring.score_recordings); references:
    dict recording -> reference Segments -> list of (group name, recordings, pooled rates)."""
    names = [name for name in rows if name != TOTAL]
    speakers = {name: len({s.speaker for s in references[name]}) for name in names}
    overlap = {name: overlap_fraction(references[name]) for name in names}
    groups = []
    for count in sorted(set(speakers.values())):
        members = [n for n in names if speakers[n] == count]
        groups.append((f"{count} speakers", members))
    for low, high in OVERLAP_BINS:
        members = [n for n in names if low <= overlap[n] < high]
        if members:
            groups.append((f"overlap {100 * low:.0f}-{100 * min(high, 1.0):.0f} %" if high < 1 else
                           f"overlap >= {100 * low:.0f} %", members))
    groups.append(("all", names))
    return [(name, len(members), pooled([rows[m] for m in members])) for name, members in groups]


def format_breakdown(condition, table):
    lines = [f"{condition}:", f"  {'group':<18} {'recordings':>10} {'DER %':>7} {'missed':>7} {'false al':>8} "
                              f"{'confus':>7}"]
    for name, count, rates in table:
        lines.append(f"  {name:<18} {count:>10} {100 * rates['der']:7.2f} {100 * rates['missed']:7.2f} "
                     f"{100 * rates['false_alarm']:8.2f} {100 * rates['confusion']:7.2f}")
    return "\n".join(lines)


def main(argv=None):
    parser = ArgumentParser(description="DER of a scored diarization run by number of speakers and by overlap.")
    parser.add_argument("--scores", required=True, help="scores.json written by python -m src.diarize --reference")
    parser.add_argument("--reference", required=True, help="the reference RTTM file or folder that was scored")
    parser.add_argument("--condition", action="append", default=None,
                        help="condition(s) to show (default: collar 0.25 s and no collar, overlap scored)")
    args = parser.parse_args(argv)
    with open(args.scores, encoding="utf-8") as f:
        scores = json.load(f)
    references = read_references(args.reference)
    conditions = args.condition or ["collar 0.25 s, overlap scored", "no collar, overlap scored"]
    for condition in conditions:
        if condition not in scores:
            raise ValueError(f"--condition: {args.scores} has no {condition!r}; it has {', '.join(scores)}")
        missing = sorted(set(scores[condition]) - {TOTAL} - set(references))
        if missing:
            raise ValueError(f"--reference: no turns for recording(s) {', '.join(missing[:5])} of {args.scores}")
        print(format_breakdown(condition, breakdown(scores[condition], references)))
    return 0


if __name__ == "__main__":
    run_command(main)
