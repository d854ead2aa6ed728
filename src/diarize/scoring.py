"""Diarization error rate (DER) and Jaccard error rate (JER) through pyannote.metrics, the standard implementation.

DER = (missed speech + false alarm + speaker confusion) / reference speech, after the best one-to-one mapping of
hypothesis speakers to reference speakers. JER averages, over reference speakers, 1 - intersection / union of each
speaker's time with its mapped hypothesis speaker's (DIHARD II).

Four conditions are scored: a collar of 0.25 s or none around every reference boundary, and overlapped speech
scored or skipped. The collar is given as md-eval's ``-c``: 0.25 s on each side of a boundary, so pyannote.metrics
receives ``collar=0.5`` (its collar is the full width of the region removed).

Example::

    table = score_recordings({"rec": reference_segments}, {"rec": hypothesis_segments})
    table["collar 0.25 s, overlap scored"]["TOTAL"]["der"]
"""
import warnings

from pyannote.core import Annotation, Segment as PSegment, Timeline
from pyannote.metrics.diarization import DiarizationErrorRate, JaccardErrorRate

# (name, collar on each side of a boundary in seconds, skip overlapped speech)
CONDITIONS = (("collar 0.25 s, overlap scored", 0.25, False),
              ("collar 0.25 s, overlap skipped", 0.25, True),
              ("no collar, overlap scored", 0.0, False),
              ("no collar, overlap skipped", 0.0, True))
TOTAL = "TOTAL"


def annotation(recording, segments):
    """Segments -> pyannote.core Annotation (speaker labels as names)."""
    result = Annotation(uri=recording)
    for i, seg in enumerate(segments):
        if seg.end > seg.start:
            result[PSegment(seg.start, seg.end), i] = seg.speaker
    return result


def uem_timeline(recording, regions):
    """[(start, end)] seconds -> pyannote.core Timeline."""
    return Timeline([PSegment(start, end) for start, end in regions], uri=recording)


def score_recordings(references, hypotheses, uem=None, conditions=CONDITIONS):
    """DER and its parts and JER per recording and in total, for each condition.

    Args:
        references, hypotheses: dict recording -> list of Segments. Every hypothesis recording must have a reference.
        uem: dict recording -> [(start, end)] scored regions, or None (scored: the extent of reference and
            hypothesis, pyannote.metrics' default).
    Returns:
        dict condition -> dict recording (and ``TOTAL``) -> dict with ``der``, ``missed``, ``false_alarm``,
        ``confusion`` (rates: seconds / reference speech seconds), ``jer``, ``speech`` (scored reference seconds).
        ``TOTAL`` pools the seconds of all recordings (JER: the mean over every reference speaker of all recordings,
        as pyannote.metrics pools it).
    """
    missing = sorted(set(hypotheses) - set(references))
    if missing:
        raise ValueError(f"reference: no reference turns for recording(s) {', '.join(missing[:5])}")
    if uem is not None:
        no_uem = sorted(set(hypotheses) - set(uem))
        if no_uem:
            raise ValueError(f"uem: no scored regions for recording(s) {', '.join(no_uem[:5])}")
    table = {}
    for name, collar, skip_overlap in conditions:
        der = DiarizationErrorRate(collar=2 * collar, skip_overlap=skip_overlap)
        jer = JaccardErrorRate(collar=2 * collar, skip_overlap=skip_overlap)
        rows = {}
        for recording in sorted(hypotheses):
            ref = annotation(recording, references[recording])
            hyp = annotation(recording, hypotheses[recording])
            kwargs = {} if uem is None else {"uem": uem_timeline(recording, uem[recording])}
            with warnings.catch_warnings():      # "uem was approximated": the documented default without a UEM
                warnings.filterwarnings("ignore", message=".*'uem' was approximated")
                parts = der(ref, hyp, detailed=True, **kwargs)
                rows[recording] = _rates(parts, jer(ref, hyp, **kwargs))
        rows[TOTAL] = _rates(der[:], abs(jer)) if rows else _rates({}, float("nan"))
        table[name] = rows
    return table


def _rates(parts, jer_value):
    total = parts.get("total", 0.0)

    def rate(key):
        return parts.get(key, 0.0) / total if total > 0 else float("nan")
    return {"der": rate("missed detection") + rate("false alarm") + rate("confusion"),
            "missed": rate("missed detection"), "false_alarm": rate("false alarm"), "confusion": rate("confusion"),
            "jer": float(jer_value), "speech": float(total)}


def format_table(table):
    """The score table as text: one block per condition, one row per recording, percentages."""
    lines = []
    for condition, rows in table.items():
        lines.append(f"{condition}:")
        lines.append(f"  {'recording':<28} {'DER %':>7} {'missed':>7} {'false al':>8} {'confus':>7} {'JER %':>7} "
                     f"{'speech s':>9}")
        for recording, r in rows.items():
            lines.append(f"  {recording[:28]:<28} {100 * r['der']:7.2f} {100 * r['missed']:7.2f} "
                         f"{100 * r['false_alarm']:8.2f} {100 * r['confusion']:7.2f} {100 * r['jer']:7.2f} "
                         f"{r['speech']:9.1f}")
    return "\n".join(lines)
