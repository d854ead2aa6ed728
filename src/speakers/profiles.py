"""What a speaker store holds and how it checks what it is given, shared by both backends (src/speakers/store.py,
src/speakers/milvus_store.py; no MindSpore): the enrolment clips and profiles, the store's errors, speaker names,
the identity check and the exact top-k of a score matrix."""
import dataclasses
import datetime

import numpy as np

SPEAKER_FIELDS = ("name", "num_clips", "seconds", "log_norm", "enrolled")   # what ``speakers()`` tells of each


class StoreError(ValueError):
    """A store that is missing, unreadable, of another identity, or refuses a change; the message names it."""


class NoStore(StoreError):
    """There is no store at the place named (``open_store`` without ``create``)."""


# ---------------------------------------------------------------- what a store holds
@dataclasses.dataclass
class Clip:
    """One enrolment clip: its path as given, its raw embedding (D,) and the seconds of audio embedded."""
    path: str
    embedding: np.ndarray
    seconds: float


@dataclasses.dataclass
class Enrolment:
    """A speaker as stored: ``profile`` (D,) float32 is the mean of the clips' length-normalised embeddings;
    ``seconds`` their total; ``log_norm`` the mean log length of their raw embeddings (a quality measure of the
    calibration, src/evaluate/calibration.py)."""
    name: str
    profile: np.ndarray
    clips: list
    seconds: float
    log_norm: float

    @classmethod
    def from_clips(cls, name, clips):
        """The enrolment of ``name`` from a non-empty list of Clips."""
        if not clips:
            raise StoreError(f"enrolment of {name!r}: no clips; a profile needs at least one")
        raw = np.stack([np.asarray(c.embedding, dtype=np.float64) for c in clips])
        norms = np.maximum(np.linalg.norm(raw, axis=1), 1e-12)
        profile = (raw / norms[:, None]).mean(axis=0).astype(np.float32)
        return cls(name, profile, list(clips), float(sum(c.seconds for c in clips)), float(np.mean(np.log(norms))))


def check_name(name):
    """A speaker name: non-empty, printable, no whitespace (identification lists are whitespace-separated), not
    the word an identification list uses for non-enrolled speakers."""
    from src.speakers.metrics import UNKNOWN
    if not name or not name.isprintable() or any(ch.isspace() for ch in name) or len(name) > 255:
        raise StoreError(f"speaker name {name!r}: expected 1-255 printable characters without spaces")
    if name == UNKNOWN:
        raise StoreError(f"speaker name {name!r} is reserved for speakers who are not enrolled")
    return name


def normalized(matrix):
    """Rows (N, D) -> float32 rows of unit length (a zero row stays zero)."""
    matrix = np.asarray(matrix, dtype=np.float32)
    return matrix / np.maximum(np.linalg.norm(matrix, axis=-1, keepdims=True), 1e-12)


def top_k(scores, names, k):
    """Best ``k`` of each row of ``scores`` (Q, N) -> list of lists of (name, score), best first."""
    k = min(k, scores.shape[1])
    if k == 0:
        return [[] for _ in range(scores.shape[0])]
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(part, np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1), axis=1)
    return [[(names[j], float(scores[i, j])) for j in row] for i, row in enumerate(order)]


def identity_difference(stored, current):
    """The first setting in which two identities differ -> "key: value there, value here", or None."""
    for group in sorted(set(stored) | set(current)):
        a, b = stored.get(group), current.get(group)
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                if a.get(key) != b.get(key):
                    return f"{group} {key}: {a.get(key)!r} there, {b.get(key)!r} here"
        elif a != b:
            if group == "checkpoint_sha256":
                return f"checkpoint sha256 {str(a)[:12]}... there, {str(b)[:12]}... here"
            return f"{group}: {a!r} there, {b!r} here"
    return None


def check_identity(location, stored, current):
    """Refuse a store made with another checkpoint or other settings than ``current``."""
    difference = identity_difference(stored, current)
    if difference is not None:
        raise StoreError(f"{location}: this speaker store holds embeddings of another model or other settings "
                         f"({difference}); use the checkpoint and settings it was made with, or another store")


def now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
