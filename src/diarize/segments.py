"""From window labels to speaker turns.

Windows overlap (a 1.5 s window every 0.75 s): where two windows of one speech region overlap, each owns the part up
to the midpoint between them, so every instant of speech belongs to exactly one window. Consecutive owned parts
with the same speaker join into one segment, and a gap shorter than ``merge_gap`` between two segments of the same
speaker (a pause, or a window the clustering put elsewhere between regions) is filled.

Example::

    windows = np.array([[0.0, 1.5], [0.75, 2.25], [1.5, 3.0]])
    window_segments(windows, np.array([0, 0, 1]))
    # [Segment(0.0, 1.875, '0'), Segment(1.875, 3.0, '1')]
"""
import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True, order=True)
class Segment:
    """One speaker turn: start and end in seconds from the start of the recording, and the speaker's name."""
    start: float
    end: float
    speaker: str

    @property
    def duration(self):
        return self.end - self.start


def owned_spans(windows):
    """(N, 2) window [start, end) seconds, sorted by start -> (N, 2) the part each window owns: overlapping
    neighbours split at the midpoint of their overlap."""
    spans = np.array(windows, np.float64).reshape(-1, 2)
    for i in range(1, len(spans)):
        if spans[i, 0] < spans[i - 1, 1]:
            cut = 0.5 * (spans[i, 0] + spans[i - 1, 1])
            spans[i - 1, 1] = cut
            spans[i, 0] = cut
    return spans


def window_segments(windows, labels, merge_gap=0.0, names=None):
    """Window spans (N, 2) seconds and speaker labels (N,) -> list of Segments sorted by start.

    Adjacent owned parts of one speaker join; gaps shorter than ``merge_gap`` seconds between segments of one
    speaker are filled when no other speaker talks in between. ``names``: label -> speaker name (default
    str(label)).
    """
    order = np.argsort(np.asarray(windows)[:, 0], kind="stable") if len(windows) else np.zeros(0, int)
    spans = owned_spans(np.asarray(windows)[order])
    labels = np.asarray(labels)[order]
    turns = []
    for (start, end), label in zip(spans, labels):
        if turns and turns[-1][2] == label and start - turns[-1][1] <= merge_gap + 1e-9:
            turns[-1][1] = max(turns[-1][1], end)
        else:
            turns.append([start, end, label])
    name = (lambda label: str(label)) if names is None else names.__getitem__
    return [Segment(round(float(s), 3), round(float(e), 3), name(label)) for s, e, label in turns if e > s]


def speaker_seconds(segments):
    """dict speaker -> total seconds."""
    totals = {}
    for seg in segments:
        totals[seg.speaker] = totals.get(seg.speaker, 0.0) + seg.duration
    return totals


def overlap_fraction(segments):
    """Fraction of speech time (union of all segments) during which two or more speakers talk."""
    edges = sorted([(s.start, 1) for s in segments] + [(s.end, -1) for s in segments])
    speech = overlap = 0.0
    active, last = 0, None
    for time, change in edges:
        if last is not None:
            if active >= 1:
                speech += time - last
            if active >= 2:
                overlap += time - last
        active += change
        last = time
    return overlap / speech if speech > 0 else 0.0
