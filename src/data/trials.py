"""Trial lists: which pairs of utterances to score and whether they share a speaker.

Three formats are read, one per file (decided by the first non-blank line):

- VoxCeleb: ``1 id10270/x6uYqmx31kE/00001.wav id10270/8jEAjG6SegY/00008.wav`` (label 1 target, 0 nontarget).
  The cleaned VoxCeleb1 lists are ``veri_test2.txt`` (Vox1-O), ``list_test_all2.txt`` (Vox1-E) and
  ``list_test_hard2.txt`` (Vox1-H).
- Kaldi: ``enroll test target`` or ``enroll test nontarget``.
- CN-Celeb (``eval/lists/trials.lst``): ``id00800-enroll test/id00800-singing-01-002.wav 1``: an enrolment
  speaker (src/data/cnceleb.py maps it to its utterances), a test utterance, 1 target / 0 nontarget.

Blank lines and lines starting with ``#`` are skipped. Any other malformed line raises ``TrialFileError`` naming the
file and line number.
"""
import os
import sys

KALDI_LABELS = {"target": 1, "nontarget": 0}
VOX_LABELS = {"1": 1, "0": 0}
TRIAL_FORMATS = ("voxceleb", "kaldi", "cnceleb")


class TrialFileError(ValueError):
    """A trial list that cannot be read; the message names the file and line."""


def _parse_line(fields):
    """-> (format, (label, enroll, test)) or None when the fields fit neither format."""
    if len(fields) != 3:
        return None
    if fields[0] in VOX_LABELS:
        return "voxceleb", (VOX_LABELS[fields[0]], fields[1], fields[2])
    if fields[2] in KALDI_LABELS:
        return "kaldi", (KALDI_LABELS[fields[2]], fields[0], fields[1])
    if fields[2] in VOX_LABELS:
        return "cnceleb", (VOX_LABELS[fields[2]], fields[0], fields[1])
    return None


def read_trials(path):
    """Read a VoxCeleb-, Kaldi- or CN-Celeb-format trial list -> list of ``(label, enroll, test)``, label 1 target /
    0 not."""
    return read_trial_list(path)[1]


def read_trial_list(path):
    """Read a trial list -> (its format: "voxceleb", "kaldi" or "cnceleb", list of ``(label, enroll, test)``).

    Names are interned: a list of millions of trials over thousands of utterances keeps one string per name.
    """
    if not os.path.isfile(path):
        raise TrialFileError(f"{path}: trial list not found")
    trials, file_format = [], None
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            parsed = _parse_line(text.split())
            if parsed is None:
                raise TrialFileError(
                    f"{path}:{line_no}: expected '<1|0> <enroll> <test>' (VoxCeleb), "
                    f"'<enroll> <test> <target|nontarget>' (Kaldi) or '<enroll_id> <test> <1|0>' (CN-Celeb), "
                    f"got: {text[:200]!r}")
            line_format, trial = parsed
            file_format = file_format or line_format
            if line_format != file_format:
                raise TrialFileError(f"{path}:{line_no}: a {line_format}-format line in a {file_format}-format "
                                     f"trial list: {text[:200]!r}")
            trials.append((trial[0], sys.intern(trial[1]), sys.intern(trial[2])))
    if not trials:
        raise TrialFileError(f"{path}: no trials in the file")
    return file_format, trials


def write_trials(trials, path, file_format="voxceleb"):
    """Write ``(label, enroll, test)`` tuples in VoxCeleb (``1 a b``) or Kaldi (``a b target``) format."""
    if file_format not in ("voxceleb", "kaldi"):
        raise ValueError(f"file_format: expected voxceleb or kaldi, got {file_format!r}")
    with open(path, "w", encoding="utf-8") as f:
        for label, enroll, test in trials:
            if file_format == "voxceleb":
                f.write(f"{int(label)} {enroll} {test}\n")
            else:
                f.write(f"{enroll} {test} {'target' if label else 'nontarget'}\n")
    return path


def trial_list_paths(value):
    """A recipe's ``trials`` value (one path, a list of paths, or empty) -> list of paths."""
    paths = value if isinstance(value, (list, tuple)) else [value]
    return [str(p) for p in paths if p]


def paths_outside_root(keys):
    """Keys that leave the audio root they are relative to: absolute paths, or paths that climb out with '..'."""
    return [k for k in keys if os.path.isabs(k) or os.path.normpath(k).split(os.sep)[0] == ".."]


def check_inside_test_dir(keys, test_dir, allowed):
    """Refuse trial keys that leave ``test_dir``, the audio root they are relative to, unless ``allowed``."""
    outside = paths_outside_root(keys)
    if outside and not allowed:
        raise ValueError(f"trials: {len(outside)} path(s) leave test_dir ({test_dir or 'the working folder'}), e.g. "
                         f"{outside[0]!r}; set --allow_outside_test_dir true to read them anyway")


def trial_utterances(trials):
    """Distinct utterances of one or several trial lists, sorted -> list of str."""
    return sorted({key for _, enroll, test in trials for key in (enroll, test)})
