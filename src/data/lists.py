"""Training lists: which files to train on, their speaker labels and lengths, as plain text files.

From a VoxCeleb-style folder (``<train_dir>/<speaker>/<video>/<utt>.{wav,flac,m4a}``) or a CN-Celeb-style one
(``<train_dir>/<speaker>/<genre>-<session>-<utt>.flac``; symbolic links to speaker folders are followed, so one
folder can gather CN-Celeb1 dev and CN-Celeb2) this writes into ``list_dir``:

- ``train_list.txt``: one utterance a line, ``speaker/video/utt.wav label num_samples`` (path relative to
  train_dir, integer label, length in samples at the recipe's sample rate), preceded by ``#`` header lines
  recording the folder, the sample rate and the excluded trial lists;
- ``speakers.txt``: ``speaker label``, one speaker a line, labels 0..N-1 in sorted speaker order.

Reuse rule: on the next run both files are read back instead of reading every audio header again when
(1) both exist, (2) the header's train_dir, sample_rate and exclude_trials equal this run's, and (3) the set
of audio files found under train_dir (a directory walk, no file is opened) minus the excluded speakers equals
the set of paths in the list plus the files that were left out as unreadable last time (listed in
``skipped.txt``). Otherwise the lists are rebuilt. ``rebuild=True`` forces a rebuild.

Files that cannot be used (unreadable, empty, wrong sample rate) are left out with a warning and written
to ``skipped.txt`` (``path<TAB>reason``); ``python -m src.data.check`` reports them all.
"""
import logging
import os
from contextlib import nullcontext
from dataclasses import dataclass
from multiprocessing import Pool

from tqdm import tqdm

from src.data.audio import FFMPEG_EXTENSIONS, AUDIO_EXTENSIONS, AudioError, audio_info, ffmpeg_available
from src.data.cnceleb import cnceleb_speaker
from src.data.trials import read_trial_list
from src.files import write_atomically

logger = logging.getLogger(__name__)

TRAIN_LIST = "train_list.txt"
SPEAKERS = "speakers.txt"
SKIPPED = "skipped.txt"


def speaker_of_path(path):
    """The speaker of a VoxCeleb-style path: its first component (``id10270/x6uYqmx31kE/00001.wav`` -> ``id10270``)."""
    return path.split("/")[0]


class ListFileError(ValueError):
    """A list file that cannot be read; the message names the file and line."""


@dataclass
class TrainList:
    """The training utterances of one recipe.

    Attributes:
        root: folder the paths are relative to.
        paths: list of str, ``speaker/video/utt.wav``.
        labels: list of int, speaker label per utterance.
        num_samples: list of int, utterance length in samples.
        speakers: list of str, speaker name per label (``speakers[label]``).
    """
    root: str
    paths: list
    labels: list
    num_samples: list
    speakers: list

    def __len__(self):
        return len(self.paths)

    @property
    def num_speakers(self):
        return len(self.speakers)


def find_audio_files(root):
    """Relative paths of all audio files two levels (``speaker/utt.ext``, CN-Celeb) or three levels
    (``speaker/video/utt.ext``, VoxCeleb) below ``root``, sorted; symbolic links to folders are followed."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root}: training folder not found (expected <speaker>/<video>/<utt>.wav or "
                                f"<speaker>/<utt>.flac below it)")
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, root)
        if rel_dir.count(os.sep) > 1 or rel_dir == ".":
            continue
        found.extend(f"{rel_dir.replace(os.sep, '/')}/{name}" for name in filenames
                     if name.lower().endswith(AUDIO_EXTENSIONS))
    return sorted(found)


def trial_speakers(trial_files):
    """Speakers of every utterance in the given trial lists -> set of str: the first path component, or in a
    CN-Celeb list the speaker its names start with (src/data/cnceleb.py ``cnceleb_speaker``)."""
    speakers = set()
    for path in trial_files:
        file_format, trials = read_trial_list(path)
        speaker_of = cnceleb_speaker if file_format == "cnceleb" else speaker_of_path
        for key in {key for _, enroll, test in trials for key in (enroll, test)}:
            speakers.add(speaker_of(key))
    return speakers


def _header(train_dir, sample_rate, exclude_trials):
    return [f"# train_dir: {os.path.abspath(train_dir)}",
            f"# sample_rate: {int(sample_rate)}",
            f"# exclude_trials: {' '.join(os.path.abspath(p) for p in exclude_trials) or '-'}",
            "# columns: path label num_samples"]


def _read_lines(path):
    """Non-comment lines of a text file -> list of (line_no, fields), plus the header lines."""
    if not os.path.isfile(path):
        raise ListFileError(f"{path}: list file not found")
    rows, header = [], []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            text = line.strip()
            if text.startswith("#"):
                header.append(text)
            elif text:
                rows.append((line_no, text.split()))
    return rows, header


def read_speakers(path):
    """Read ``speakers.txt`` (``speaker label`` lines, labels 0..N-1) -> list of speaker names by label."""
    rows, _ = _read_lines(path)
    speakers = {}
    for line_no, fields in rows:
        if len(fields) != 2 or not fields[1].isdigit():
            raise ListFileError(f"{path}:{line_no}: expected '<speaker> <label>', got {' '.join(fields)!r}")
        label = int(fields[1])
        if label in speakers:
            raise ListFileError(f"{path}:{line_no}: label {label} given twice")
        speakers[label] = fields[0]
    if sorted(speakers) != list(range(len(speakers))):
        raise ListFileError(f"{path}: labels must be 0..{len(speakers) - 1} without gaps")
    return [speakers[i] for i in range(len(speakers))]


def read_train_list(path, root=None, speakers_path=None):
    """Read ``train_list.txt`` (and ``speakers.txt`` beside it) -> TrainList.

    ``root`` defaults to the train_dir recorded in the header. Errors name the file and line.
    """
    rows, header = _read_lines(path)
    meta = dict(h[1:].strip().split(": ", 1) for h in header if ": " in h)
    root = root or meta.get("train_dir")
    if root is None:
        raise ListFileError(f"{path}: no '# train_dir:' header line and no root given")
    speakers = read_speakers(speakers_path or os.path.join(os.path.dirname(path), SPEAKERS))
    paths, labels, lengths = [], [], []
    for line_no, fields in rows:
        if len(fields) != 3 or not fields[1].isdigit() or not fields[2].isdigit():
            raise ListFileError(f"{path}:{line_no}: expected '<speaker/video/utt.wav> <label> <num_samples>', "
                                f"got {' '.join(fields)!r}")
        label = int(fields[1])
        if label >= len(speakers):
            raise ListFileError(f"{path}:{line_no}: label {label} but speakers.txt has {len(speakers)} speakers")
        paths.append(fields[0])
        labels.append(label)
        lengths.append(int(fields[2]))
    if not paths:
        raise ListFileError(f"{path}: the list holds no utterances")
    return TrainList(root, paths, labels, lengths, speakers)


def write_train_list(train_list, list_dir, sample_rate, exclude_trials=()):
    """Write ``train_list.txt`` and ``speakers.txt`` into ``list_dir``."""
    os.makedirs(list_dir, exist_ok=True)
    with open(os.path.join(list_dir, SPEAKERS), "w", encoding="utf-8") as f:
        f.writelines(f"{name} {label}\n" for label, name in enumerate(train_list.speakers))
    lines = _header(train_list.root, sample_rate, exclude_trials)
    lines += [f"{p} {lab} {n}" for p, lab, n in zip(train_list.paths, train_list.labels, train_list.num_samples)]
    write_atomically(os.path.join(list_dir, TRAIN_LIST), "w", lambda f: f.write("\n".join(lines) + "\n"))


def _read_skipped(list_dir):
    path = os.path.join(list_dir, SKIPPED)
    if not os.path.isfile(path):
        return set()
    with open(path, encoding="utf-8") as f:
        return {line.split("\t", 1)[0] for line in f if line.strip()}


def _reusable(list_dir, train_dir, sample_rate, exclude_trials, files):
    """True when the lists in ``list_dir`` describe exactly ``files`` under the same settings."""
    list_path = os.path.join(list_dir, TRAIN_LIST)
    if not (os.path.isfile(list_path) and os.path.isfile(os.path.join(list_dir, SPEAKERS))):
        return None
    try:
        old = read_train_list(list_path)
    except ListFileError as err:
        logger.warning("rebuilding the training list: %s", err)
        return None
    _, header = _read_lines(list_path)
    if header != _header(train_dir, sample_rate, exclude_trials):
        logger.info("rebuilding the training list: %s was made with other settings", list_path)
        return None
    if set(old.paths) | _read_skipped(list_dir) != set(files):
        logger.info("rebuilding the training list: the files under %s changed", train_dir)
        return None
    return old


def _header_facts(job):
    """``(path, sample_rate)`` -> (num_samples, None) for a usable file, else (None, reason). For Pool workers."""
    path, sample_rate = job
    try:
        num, rate, _ = audio_info(path)
        if num == 0:
            raise AudioError("the file holds no audio (0 samples)", "empty")
        if rate != sample_rate:
            raise AudioError(f"sample rate is {rate} Hz, expected {sample_rate} Hz", "sample_rate")
    except AudioError as err:
        return None, str(err)
    return num, None


def build_train_list(train_dir, list_dir, exclude_trials=(), sample_rate=16000, rebuild=False, progress=True,
                     num_workers=1):
    """Make (or reuse, see the module docstring) the training list of a VoxCeleb-style folder -> TrainList.

    Args:
        train_dir: folder with ``<speaker>/<video>/<utt>.{wav,flac,m4a}`` or ``<speaker>/<utt>.flac``.
        list_dir: where ``train_list.txt``, ``speakers.txt`` and ``skipped.txt`` are written.
        exclude_trials: trial list files whose speakers are left out of training.
        sample_rate: the recipe's rate; files at another rate are left out (with a warning).
        num_workers: processes reading the audio headers (M4A files are decoded whole by ffmpeg, one process
            per file, so a large M4A corpus wants several; converting it to WAV first is faster still).
    """
    exclude_trials = list(exclude_trials or [])
    excluded = trial_speakers(exclude_trials)
    files = [p for p in find_audio_files(train_dir) if speaker_of_path(p) not in excluded]
    if not files:
        raise FileNotFoundError(f"{train_dir}: no audio files (.wav/.flac/.m4a) found at <speaker>/<video>/<utt> "
                                f"or <speaker>/<utt> depth" + (f" after excluding {len(excluded)} trial speakers" if excluded else ""))
    if not rebuild:
        old = _reusable(list_dir, train_dir, sample_rate, exclude_trials, files)
        if old is not None:
            logger.info("reusing %s (%d utterances, %d speakers)", os.path.join(list_dir, TRAIN_LIST), len(old),
                        old.num_speakers)
            return old
    compressed = [p for p in files if p.lower().endswith(FFMPEG_EXTENSIONS)]
    if compressed and not ffmpeg_available():
        raise AudioError(f"{os.path.join(train_dir, compressed[0])}: {len(compressed)} files under {train_dir} are "
                         f"M4A/AAC and ffmpeg is not installed; install ffmpeg (e.g. apt-get install ffmpeg), or "
                         f"convert them to WAV where ffmpeg is installed (faster to train on, too): python -m "
                         f"src.data.convert --src {train_dir} --dst <wav folder>, or one file with "
                         f"ffmpeg -i in.m4a -ac 1 -ar {sample_rate} out.wav")
    kept, lengths, skipped = [], [], []
    jobs = [(os.path.join(train_dir, rel), sample_rate) for rel in files]
    with Pool(num_workers) if num_workers > 1 else nullcontext() as pool:
        facts = pool.imap(_header_facts, jobs, chunksize=64) if pool else map(_header_facts, jobs)
        for rel, (num, reason) in zip(files, tqdm(facts, total=len(jobs), desc="reading audio headers",
                                                  disable=not progress)):
            if reason is not None:
                logger.warning("leaving out %s: %s", rel, reason)
                skipped.append((rel, reason))
                continue
            kept.append(rel)
            lengths.append(num)
    if not kept:
        raise AudioError(f"{train_dir}: none of the {len(files)} audio files is usable (see "
                         f"{os.path.join(list_dir, SKIPPED)})")
    speakers = sorted({speaker_of_path(p) for p in kept})
    label_of = {name: i for i, name in enumerate(speakers)}
    train_list = TrainList(os.path.abspath(train_dir), kept, [label_of[speaker_of_path(p)] for p in kept], lengths,
                           speakers)
    write_train_list(train_list, list_dir, sample_rate, exclude_trials)
    with open(os.path.join(list_dir, SKIPPED), "w", encoding="utf-8") as f:
        f.writelines(f"{rel}\t{reason}\n" for rel, reason in skipped)
    logger.info("wrote %s: %d utterances, %d speakers, %d files left out%s", os.path.join(list_dir, TRAIN_LIST),
                len(kept), len(speakers), len(skipped), f" (see {SKIPPED})" if skipped else "")
    return train_list


def cohort_utterances(source, per_speaker):
    """Training utterances for a score-normalisation cohort -> (root, keys): the first ``per_speaker`` of each
    speaker, sorted.

    ``source``: a folder in the VoxCeleb layout (``<speaker>/<video>/<utt>.wav``) or a ``train_list.txt`` written
    by ``build_train_list``.
    """
    if os.path.isdir(source):
        root, paths = source, find_audio_files(source)
    else:
        train_list = read_train_list(source)
        root, paths = train_list.root, sorted(train_list.paths)
    chosen, count = [], {}
    for path in paths:
        speaker = speaker_of_path(path)
        if count.get(speaker, 0) < per_speaker:
            chosen.append(path)
            count[speaker] = count.get(speaker, 0) + 1
    if len(count) < 2:
        raise ValueError(f"cohort_source {source}: found {len(count)} speakers; a cohort needs at least 2")
    return root, chosen
