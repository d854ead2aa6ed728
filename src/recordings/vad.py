"""Voice activity detection: where in a recording someone speaks, with Silero VAD run by onnxruntime.

Silero VAD (MIT licence; the VAD of pyannote, WhisperX and sherpa-onnx) is a small recurrent network. It reads
16 kHz audio in frames of 512 samples (32 ms), each preceded by the last 64 samples of the previous frame, carries a
(2, 1, 128) state from frame to frame, and gives each frame a speech probability. Its model file comes from the
``silero-vad`` PyPI package (pinned in scripts/setup_env.sh and installed with ``--no-deps``: the package declares
PyTorch, which the model file does not need); the file is found without importing the package (its ``__init__``
imports torch) and its SHA-256 is checked when it is loaded.

Probabilities become speech regions by the same rules as Silero's ``get_speech_timestamps`` (without its
maximum-length split), written here as ``regions_from_probabilities``:

- speech starts at the first frame whose probability is >= ``threshold``;
- while in speech, a frame below ``threshold - 0.15`` (at least 0.01) starts a possible end; speech at or above
  ``threshold`` cancels it; once the quiet has lasted ``min_silence_seconds`` the region ends where the quiet began;
- regions not longer than ``min_speech_seconds`` are dropped (a region still open at the end of the recording runs
  to its end);
- each region is padded by ``pad_seconds`` on both sides; when two regions are closer than twice the pad, the gap
  is split between them.

Example::

    settings = VadSettings(method="silero")
    speech_regions(samples, settings)        # samples: float32 (S,) at 16 kHz -> [(0.61, 2.85), (3.4, 7.12)] seconds

With ``method="none"`` the whole recording is one region.
"""
import dataclasses
import functools
import hashlib
import importlib.util
import os

import numpy as np

SAMPLE_RATE = 16000
FRAME_SAMPLES = 512            # one probability per 32 ms frame at 16 kHz
CONTEXT_SAMPLES = 64           # the model sees the last 64 samples of the previous frame before each frame
STATE_SHAPE = (2, 1, 128)
NEGATIVE_OFFSET = 0.15         # speech ends below threshold - 0.15 (Silero's neg_threshold), at least 0.01

SILERO_PACKAGE = "silero_vad"                       # PyPI silero-vad==6.2.3 (scripts/setup_env.sh)
SILERO_MODEL = os.path.join("data", "silero_vad.onnx")
SILERO_SHA256 = "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3"
VAD_METHODS = ("none", "silero")


class VadError(ValueError):
    """The VAD model cannot be found or is not the expected file; the message says which file and what to do."""


@dataclasses.dataclass(frozen=True)
class VadSettings:
    """How speech is found. method: "none" (all of a recording is speech) or "silero"; threshold: speech probability
    at which speech starts; min_speech_seconds: shorter regions are dropped; min_silence_seconds: quiet this long
    ends a region; pad_seconds: added on both sides of a region. Defaults are Silero's."""
    method: str = "none"
    threshold: float = 0.5
    min_speech_seconds: float = 0.25
    min_silence_seconds: float = 0.1
    pad_seconds: float = 0.03

    def __post_init__(self):
        if self.method not in VAD_METHODS:
            raise ValueError(f"vad: expected one of {', '.join(VAD_METHODS)}, got {self.method!r}")

    @classmethod
    def from_recipe(cls, cfg):
        """The recipe's keys vad, vad_threshold, vad_min_speech_seconds, vad_min_silence_seconds, vad_pad_seconds."""
        return cls(str(cfg.vad).lower(), float(cfg.vad_threshold), float(cfg.vad_min_speech_seconds),
                   float(cfg.vad_min_silence_seconds), float(cfg.vad_pad_seconds))

    @property
    def enabled(self):
        return self.method != "none"

    def fingerprint(self):
        """What an embedding made with these settings depends on -> dict (only the method when there is no VAD)."""
        return dataclasses.asdict(self) if self.enabled else {"method": "none"}


# ---------------------------------------------------------------- the model
def silero_model_path():
    """Path of silero_vad.onnx inside the installed silero-vad package, found without importing the package."""
    spec = importlib.util.find_spec(SILERO_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = os.path.join(folder, SILERO_MODEL)
        if os.path.isfile(path):
            return path
    raise VadError("vad silero: the silero-vad package, which carries the model file silero_vad/data/silero_vad.onnx, "
                   "is not installed (pip install --no-deps silero-vad==6.2.3, or bash scripts/setup_env.sh)")


@functools.lru_cache(maxsize=4)
def load_silero(path=None):
    """An onnxruntime session of Silero VAD at ``path`` (default: the installed package's file), after checking the
    file's SHA-256 against SILERO_SHA256. One thread: the network is tiny and runs frame by frame."""
    import onnxruntime
    path = path or silero_model_path()
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    if digest != SILERO_SHA256:
        raise VadError(f"{path}: SHA-256 is {digest}, expected {SILERO_SHA256} (the silero_vad.onnx of "
                       f"silero-vad==6.2.3); reinstall that package")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def speech_probabilities(samples, session=None):
    """Silero's speech probability of every 32 ms frame -> (ceil(S / 512),) float32.

    ``samples``: float32 (S,) at 16 kHz. Frame i covers samples [512 i, 512 i + 512); the last frame is zero-padded.
    The model's state and 64-sample context start at zero and run through the whole recording.
    """
    session = session or load_silero()
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    num_frames = -(-samples.size // FRAME_SAMPLES)
    padded = np.zeros(CONTEXT_SAMPLES + num_frames * FRAME_SAMPLES, np.float32)
    padded[CONTEXT_SAMPLES:CONTEXT_SAMPLES + samples.size] = samples
    state = np.zeros(STATE_SHAPE, np.float32)
    rate = np.array(SAMPLE_RATE, np.int64)
    probs = np.empty(num_frames, np.float32)
    for i in range(num_frames):
        chunk = padded[i * FRAME_SAMPLES:(i + 1) * FRAME_SAMPLES + CONTEXT_SAMPLES][None, :]
        out, state = session.run(None, {"input": chunk, "state": state, "sr": rate})
        probs[i] = out[0, 0]
    return probs


# ---------------------------------------------------------------- probabilities -> regions
def regions_from_probabilities(probs, num_samples, settings, sample_rate=SAMPLE_RATE):
    """Frame probabilities (F,) of a recording of ``num_samples`` -> speech regions [(start, end)] in samples, by the
    rules in the module docstring."""
    min_speech = settings.min_speech_seconds * sample_rate
    min_silence = settings.min_silence_seconds * sample_rate
    pad = settings.pad_seconds * sample_rate
    negative = max(settings.threshold - NEGATIVE_OFFSET, 0.01)
    regions, start, quiet_since = [], None, None
    for i, p in enumerate(probs):
        now = i * FRAME_SAMPLES
        if p >= settings.threshold:
            quiet_since = None
            if start is None:
                start = now
            continue
        if start is not None and p < negative:
            quiet_since = now if quiet_since is None else quiet_since
            if now - quiet_since >= min_silence:
                if quiet_since - start > min_speech:
                    regions.append([start, quiet_since])
                start = quiet_since = None
    if start is not None and num_samples - start > min_speech:
        regions.append([start, num_samples])
    return _pad_regions(regions, pad, num_samples)


def _pad_regions(regions, pad, num_samples):
    """Widen each region by ``pad`` samples on both sides; a gap narrower than 2 pad is split in the middle."""
    if not regions:
        return []
    regions[0][0] = int(max(0, regions[0][0] - pad))
    for here, after in zip(regions, regions[1:]):
        gap = after[0] - here[1]
        widen = gap // 2 if gap < 2 * pad else pad
        here[1] = int(min(num_samples, here[1] + widen))
        after[0] = int(max(0, after[0] - widen))
    regions[-1][1] = int(min(num_samples, regions[-1][1] + pad))
    return [(int(s), int(e)) for s, e in regions]


def speech_samples(samples, settings, sample_rate=SAMPLE_RATE, session=None):
    """Speech regions of ``samples`` (float32 (S,)) -> [(start, end)] in samples; ``method="none"``: [(0, S)]."""
    num_samples = int(np.asarray(samples).size)
    if not settings.enabled:
        return [(0, num_samples)] if num_samples else []
    if sample_rate != SAMPLE_RATE:
        raise ValueError(f"vad silero: expected {SAMPLE_RATE} Hz audio, got {sample_rate} Hz")
    return regions_from_probabilities(speech_probabilities(samples, session), num_samples, settings, sample_rate)


def speech_regions(samples, settings, sample_rate=SAMPLE_RATE):
    """Speech regions of ``samples`` (float32 (S,) at 16 kHz) -> [(start_s, end_s)] in seconds, ascending and
    disjoint; [] when no speech is found. ``settings``: a VadSettings (``method="none"``: the whole recording)."""
    return [(s / sample_rate, e / sample_rate) for s, e in speech_samples(samples, settings, sample_rate)]
