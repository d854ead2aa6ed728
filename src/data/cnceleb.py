"""CN-Celeb's evaluation protocol: enrolment speakers given by several utterances, trials of (speaker, utterance).

CN-Celeb1 (``cn-celeb_v2.tar.gz`` unpacks as ``CN-Celeb_flac``) is laid out as::

    data/<speaker>/<genre>-<session>-<utt>.flac   every speaker's utterances (dev speakers: dev/dev.lst)
    eval/enroll/<speaker>-enroll.flac            one file per enrolment speaker: its enrolment utterances joined
    eval/test/<speaker>-<genre>-<session>-<utt>.flac
    eval/lists/enroll.map                        <enroll_id> <speaker>/<utt>.wav ... (paths below data/)
    eval/lists/enroll.lst                        <enroll_id> enroll/<enroll_id>.wav (paths below eval/)
    eval/lists/trials.lst                        <enroll_id> test/<utt>.wav <1|0> (paths below eval/)

The lists name ``.wav`` files, as in the WAV copies the WeSpeaker and 3D-Speaker recipes make; a listed file that is
missing is looked for with the other extension (``resolve_audio_keys``), so the FLAC release is read as it is.

An enrolment speaker is scored in one of two ways (``read_enrollment``):
- ``mean``: the mean of the raw embeddings of its enroll.map utterances (WeSpeaker's ``CNC-Eval-Avg.lst``, the list
  of WeSpeaker's published CN-Celeb results);
- ``concat``: the embedding of its enroll.lst file, the enrolment utterances joined end to end (3D-Speaker's
  recipes, whose published results, e.g. ECAPA-TDNN EER 8.01 %, use it; WeSpeaker's ``CNC-Eval-Concat.lst``).
"""
import os
import sys

from src.data.audio import AUDIO_EXTENSIONS

ENROLL_MAP = "enroll.map"
ENROLL_LIST = "enroll.lst"
ENROLLMENT_MODES = ("mean", "concat")


class EnrollmentError(ValueError):
    """An enrolment list that cannot be read or does not cover a trial list; the message names the file."""


def _read_rows(path, min_fields, expected):
    if not os.path.isfile(path):
        raise EnrollmentError(f"{path}: enrolment list not found (CN-Celeb's eval/lists holds {ENROLL_MAP} and "
                              f"{ENROLL_LIST} beside trials.lst)")
    rows = {}
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            fields = line.split()
            if not fields or fields[0].startswith("#"):
                continue
            if len(fields) < min_fields:
                raise EnrollmentError(f"{path}:{line_no}: expected {expected}, got {line.strip()[:200]!r}")
            if fields[0] in rows:
                raise EnrollmentError(f"{path}:{line_no}: enrolment speaker {fields[0]} is listed twice")
            rows[sys.intern(fields[0])] = fields[1:]
    if not rows:
        raise EnrollmentError(f"{path}: no enrolment speakers in the file")
    return rows


def read_enrollment_map(path):
    """``enroll.map`` -> dict enroll_id -> [utterance paths below data/] (one or more per speaker)."""
    return _read_rows(path, 2, "'<enroll_id> <utterance> [<utterance> ...]'")


def read_enrollment_list(path):
    """``enroll.lst`` -> dict enroll_id -> [its one enrolment file, below eval/]."""
    rows = _read_rows(path, 2, "'<enroll_id> <file>'")
    extra = next((k for k, v in rows.items() if len(v) != 1), None)
    if extra is not None:
        raise EnrollmentError(f"{path}: expected one file per enrolment speaker, {extra} has {len(rows[extra])}")
    return rows


def read_enrollment(trials_path, mode):
    """The enrolment of a CN-Celeb trial list -> dict enroll_id -> [keys], from the list beside ``trials_path``:
    ``enroll.map`` for ``mode`` "mean" (keys below data/), ``enroll.lst`` for "concat" (keys below eval/)."""
    if mode not in ENROLLMENT_MODES:
        raise ValueError(f"cnceleb_enrollment: expected one of {', '.join(ENROLLMENT_MODES)}, got {mode!r}")
    folder = os.path.dirname(os.path.abspath(trials_path))
    if mode == "mean":
        return read_enrollment_map(os.path.join(folder, ENROLL_MAP))
    return read_enrollment_list(os.path.join(folder, ENROLL_LIST))


def check_enrolled(trials_path, trials, enrollment, enrollment_path):
    """Refuse a trial list whose enrolment speakers are not all in the enrolment list, naming one."""
    missing = sorted({enroll for _, enroll, _ in trials} - set(enrollment))
    if missing:
        raise EnrollmentError(f"{trials_path}: {len(missing)} enrolment speaker(s) are not in {enrollment_path}, "
                              f"e.g. {missing[0]}")


def cnceleb_speaker(key):
    """The speaker of a CN-Celeb name: ``id00800-enroll``, ``test/id00800-singing-01-002.wav`` and
    ``id00800/singing-01-001.wav`` -> ``id00800``."""
    parts = key.split("/")
    if len(parts) >= 2 and parts[0] not in ("test", "enroll"):
        return parts[0]
    return parts[-1].split("-")[0]


def resolve_audio_keys(root, keys):
    """Map listed paths to files that exist below ``root`` -> dict key -> key on disk: the key itself when it
    exists, else the same name with another audio extension that exists (the lists say .wav, the release ships
    .flac), else the key unchanged (reading it then names the missing file)."""
    resolved = {}
    for key in keys:
        path = os.path.join(root, key) if root else key
        if os.path.isfile(path):
            resolved[key] = key
            continue
        stem = os.path.splitext(key)[0]
        resolved[key] = next((stem + ext for ext in AUDIO_EXTENSIONS
                              if os.path.isfile(os.path.join(root, stem + ext) if root else stem + ext)), key)
    return resolved
