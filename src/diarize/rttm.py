"""RTTM and UEM files, the NIST formats every diarization scoring tool reads.

An RTTM line is one speaker turn (ten space-separated fields)::

    SPEAKER <recording> <channel> <start s> <duration s> <NA> <NA> <speaker> <NA> <NA>

A UEM line is one scored region of a recording::

    <recording> <channel> <start s> <end s>

Example::

    write_rttm("out/meeting.rttm", "meeting", [Segment(0.0, 2.5, "A"), Segment(2.5, 4.0, "B")])
    read_rttm("out/meeting.rttm")        # {"meeting": [Segment(0.0, 2.5, "A"), Segment(2.5, 4.0, "B")]}
"""
import os

from src.diarize.segments import Segment
from src.files import write_atomically

# RTTM line types besides SPEAKER (NIST RT-09 evaluation plan); lines of these types are skipped.
OTHER_TYPES = ("SEGMENT", "NOSCORE", "NO_RT_METADATA", "LEXEME", "NON-LEX", "NON-SPEECH", "FILLER", "IP", "EDIT", "SU",
               "CB", "A/P", "SPKR-INFO")


def rttm_lines(recording, segments):
    """The RTTM text of one recording's segments (sorted by start), one line per segment."""
    if any(ch.isspace() for ch in recording):
        raise ValueError(f"RTTM: recording name {recording!r} contains white space")
    return "".join(f"SPEAKER {recording} 1 {seg.start:.3f} {seg.duration:.3f} <NA> <NA> {seg.speaker} <NA> <NA>\n"
                   for seg in sorted(segments))


def write_rttm(path, recording, segments):
    """Write one recording's segments as an RTTM file (atomically; its folder is created) -> path."""
    text = rttm_lines(recording, segments)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_atomically(path, "w", lambda f: f.write(text))
    return path


def read_rttm(path):
    """RTTM file -> dict recording -> list of Segments sorted by start. Lines of other types than SPEAKER and
    comment lines (``;;``, ``#``) are skipped; a malformed SPEAKER line is a ValueError naming the file and line."""
    turns = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            fields = line.split()
            if not fields or fields[0].startswith((";;", "#")):
                continue
            if fields[0] != "SPEAKER":
                if fields[0] in OTHER_TYPES:
                    continue
                raise ValueError(f"{path}:{number}: not an RTTM line (expected 'SPEAKER <recording> <channel> "
                                 f"<start> <duration> <NA> <NA> <speaker> <NA> <NA>'): {line.strip()!r}")
            if len(fields) < 8:
                raise ValueError(f"{path}:{number}: an RTTM SPEAKER line has 10 fields (recording, channel, start, "
                                 f"duration, ..., speaker at the 8th), got {len(fields)}: {line.strip()!r}")
            try:
                start, duration = float(fields[3]), float(fields[4])
            except ValueError:
                raise ValueError(f"{path}:{number}: start and duration must be numbers of seconds, got "
                                 f"{fields[3]!r} and {fields[4]!r}") from None
            if start < 0 or duration < 0:
                raise ValueError(f"{path}:{number}: negative start or duration ({start}, {duration})")
            turns.setdefault(fields[1], []).append(Segment(start, round(start + duration, 6), fields[7]))
    return {recording: sorted(segments) for recording, segments in turns.items()}


def read_uem(path):
    """UEM file -> dict recording -> list of (start, end) seconds; a malformed line is a ValueError naming the file
    and line."""
    regions = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            fields = line.split()
            if not fields or fields[0].startswith((";;", "#")):
                continue
            try:
                if len(fields) != 4:
                    raise ValueError
                start, end = float(fields[2]), float(fields[3])
            except ValueError:
                raise ValueError(f"{path}:{number}: expected '<recording> <channel> <start> <end>', got "
                                 f"{line.strip()!r}") from None
            if end < start:
                raise ValueError(f"{path}:{number}: the region ends ({end}) before it starts ({start})")
            regions.setdefault(fields[0], []).append((start, end))
    return regions


def read_references(path):
    """An RTTM file, or a folder of ``*.rttm`` files -> dict recording -> list of Segments (a recording's turns
    from several files are joined)."""
    if os.path.isdir(path):
        files = sorted(os.path.join(path, name) for name in os.listdir(path) if name.endswith(".rttm"))
        if not files:
            raise ValueError(f"{path}: the reference folder holds no .rttm files")
    elif os.path.isfile(path):
        files = [path]
    else:
        raise FileNotFoundError(f"reference RTTM not found: {path}")
    references = {}
    for file in files:
        for recording, segments in read_rttm(file).items():
            references[recording] = sorted(references.get(recording, []) + segments)
    return references
