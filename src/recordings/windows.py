"""What part of a recording is embedded: its speech (src/recordings/vad.py), whole or in windows.

A recording's speech is its VAD regions (with ``vad: none``, the whole recording). How it is embedded
(``plan_recording``):

- speech no longer than ``max_eval_seconds``: one piece, the speech regions joined end to end;
- longer, ``long_audio: windows``: windows of ``window_seconds`` every ``window_hop_seconds`` over each speech region
  (``speech_windows``; a region shorter than a window is one window), embedded in batches; the recording's
  embedding is the mean of the window embeddings weighted by their length (``weighted_mean``);
- longer, ``long_audio: crop``: only the first ``max_eval_seconds`` of the speech.

Windows are embedded through the evaluation's batched extraction (src/evaluate/extract.py): one compiled graph per
bucket, padding masked, so a window's embedding in a batch equals the window embedded alone.

Example::

    regions = speech_regions(samples, VadSettings("silero"))       # [(0.61, 12.85), (13.4, 20.1)] seconds
    windows = speech_windows(regions, 3.0, 1.5)                   # [(0.61, 3.61), (2.11, 5.11), ..., (17.1, 20.1)]
    matrix = embed_windows(embedder, samples, windows, Batching()) # (len(windows), D) float32
    embedding = weighted_mean(matrix, [e - s for s, e in windows]) # (D,)
"""
import dataclasses
import functools
import os

import numpy as np

from src.data.audio import read_audio
from src.recordings.vad import VadSettings, speech_samples

LONG_AUDIO_MODES = ("windows", "crop")


@dataclasses.dataclass(frozen=True)
class LongAudio:
    """How speech longer than the longest bucket is embedded: mode "windows" (every window_seconds window, hop
    hop_seconds, averaged) or "crop" (its first max_seconds). The default here is "crop", plain extraction; the
    recipe's ``long_audio`` defaults to "windows"."""
    mode: str = "crop"
    window_seconds: float = 3.0
    hop_seconds: float = 1.5

    def __post_init__(self):
        if self.mode not in LONG_AUDIO_MODES:
            raise ValueError(f"long_audio: expected one of {', '.join(LONG_AUDIO_MODES)}, got {self.mode!r}")
        if not 0 < self.hop_seconds <= self.window_seconds:
            raise ValueError(f"window_hop_seconds: got {self.hop_seconds}; expected > 0 and at most window_seconds "
                             f"({self.window_seconds})")

    @classmethod
    def from_recipe(cls, cfg):
        """The recipe's keys long_audio, window_seconds, window_hop_seconds."""
        return cls(str(cfg.long_audio).lower(), float(cfg.window_seconds), float(cfg.window_hop_seconds))

    def fingerprint(self):
        return dataclasses.asdict(self) if self.mode == "windows" else {"mode": "crop"}


# ---------------------------------------------------------------- windows
def window_bounds(regions, window, hop):
    """Windows over each region, in the regions' unit (samples or seconds) -> list of (start, end).

    A region no longer than ``window`` is one window; a longer one gets windows starting every ``hop`` and one more
    ending at the region's end, so every part of a region is covered and no window crosses a gap.
    """
    bounds = []
    for start, end in regions:
        if end - start <= window:
            bounds.append((start, end))
            continue
        count = int(np.ceil((end - start - window) / hop - 1e-9))
        bounds += [(start + i * hop, start + i * hop + window) for i in range(count)]
        bounds.append((end - window, end))
    return bounds


def speech_windows(regions, window_seconds, hop_seconds):
    """Windows of ``window_seconds`` every ``hop_seconds`` over speech ``regions`` [(start_s, end_s)] -> list of
    (start_s, end_s) in the recording's time, each inside one region (``window_bounds``)."""
    return [(float(s), float(e)) for s, e in window_bounds(regions, float(window_seconds), float(hop_seconds))]


def weighted_mean(embeddings, weights):
    """Mean of rows (N, D) weighted by ``weights`` (N,) (a window's length) -> (D,) float32."""
    embeddings = np.asarray(embeddings, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    if embeddings.shape[0] == 0 or weights.sum() <= 0:
        raise ValueError("weighted_mean: no windows to average")
    return (weights @ embeddings / weights.sum()).astype(np.float32)


# ---------------------------------------------------------------- what of a file is embedded
@dataclasses.dataclass(frozen=True)
class RecordingPlan:
    """What of one recording is embedded. pieces: each a tuple of (start, end) sample segments joined end to end
    and embedded as one input; the recording's embedding is the length-weighted mean over pieces. speech_samples:
    its speech (the whole file without VAD); no_speech: the VAD found none (then the whole file is used); cropped:
    the speech was cut to max_samples."""
    pieces: tuple
    speech_samples: int
    no_speech: bool = False
    cropped: bool = False

    @staticmethod
    def piece_samples(piece):
        return sum(e - s for s, e in piece)


def _take_first(regions, limit):
    """The first ``limit`` samples of the regions joined end to end -> tuple of (start, end)."""
    kept, left = [], limit
    for start, end in regions:
        if left <= 0:
            break
        kept.append((start, min(end, start + left)))
        left -= kept[-1][1] - start
    return tuple(kept)


def plan_from_regions(regions, num_samples, long_audio, max_samples, min_samples, sample_rate=16000):
    """The RecordingPlan of a recording of ``num_samples`` with speech ``regions`` [(start, end)] in samples
    ([] : no speech, the whole recording is used). Windows are at most ``max_samples`` long; windows shorter than
    ``min_samples`` are left out."""
    no_speech = not regions
    regions = [(int(s), int(e)) for s, e in regions] or [(0, int(num_samples))]
    speech = sum(e - s for s, e in regions)
    if speech <= max_samples:
        return RecordingPlan((tuple(regions),), speech, no_speech)
    if long_audio.mode == "crop":
        return RecordingPlan((_take_first(regions, max_samples),), speech, no_speech, cropped=True)
    window = min(int(round(long_audio.window_seconds * sample_rate)), max_samples)
    hop = min(int(round(long_audio.hop_seconds * sample_rate)), window)
    pieces = tuple(((s, e),) for s, e in window_bounds(regions, window, hop) if e - s >= min_samples)
    if not pieces:            # only regions too short for the network: their first max_samples, joined
        return RecordingPlan((_take_first(regions, max_samples),), speech, no_speech, cropped=True)
    return RecordingPlan(pieces, speech, no_speech)


@functools.lru_cache(maxsize=65536)
def _file_regions(path, stamp, vad, sample_rate, resample):
    return tuple(speech_samples(read_audio(path, sample_rate, resample=resample), vad, sample_rate))


def file_speech(path, vad, sample_rate=16000, resample=False):
    """Speech regions [(start, end)] in samples of the audio file ``path`` (remembered while the file is unchanged)."""
    info = os.stat(path)
    return list(_file_regions(os.path.abspath(path), (info.st_size, info.st_mtime_ns), vad, sample_rate, resample))


def plan_recording(path, num_samples, vad, long_audio, max_samples, min_samples, sample_rate=16000, resample=False):
    """The RecordingPlan of the audio file ``path`` of ``num_samples`` (from its header): without VAD it is not
    read; with VAD it is read once and its regions are remembered."""
    regions = file_speech(path, vad, sample_rate, resample) if vad.enabled else [(0, num_samples)]
    return plan_from_regions(regions, num_samples, long_audio, max_samples, min_samples, sample_rate)


# ---------------------------------------------------------------- embedding windows of one recording
def embed_windows(model, samples, windows, batching, progress=False):
    """Embed windows [(start_s, end_s)] of ``samples`` (float32 (S,) at batching.sample_rate) in batches -> (N, D)
    float32 in the order of ``windows``; each row equals that window embedded alone."""
    from src.evaluate.extract import embed_items      # extract.py plans files with this module: import when used
    rate = batching.sample_rate
    bounds = [(int(round(s * rate)), int(round(e * rate))) for s, e in windows]
    lengths = {i: e - s for i, (s, e) in enumerate(bounds)}
    short = [windows[i] for i, n in lengths.items() if n < batching.min_samples]
    if short:
        raise ValueError(f"window {short[0]} is shorter than the {batching.min_samples / rate:.3f} s the network needs")
    rows = embed_items(model, lengths, lambda i: samples[bounds[i][0]:bounds[i][1]], batching, progress=progress)
    return np.stack([rows[i] for i in range(len(bounds))]) if bounds else np.zeros((0, 0), np.float32)


def recording_embedding(model, samples, batching):
    """One embedding (D,) float32 of a recording held in memory (float32 (S,)), by ``batching``'s VAD and long-audio
    settings (``plan_from_regions``). Raises ValueError when the VAD finds no speech."""
    regions = speech_samples(samples, batching.vad, batching.sample_rate)
    if not regions:
        raise ValueError("the VAD found no speech in the recording")
    max_samples = int(round(batching.max_seconds * batching.sample_rate))
    plan = plan_from_regions(regions, samples.size, batching.long_audio, max_samples, batching.min_samples,
                             batching.sample_rate)
    from src.evaluate.extract import embed_items
    lengths = {i: RecordingPlan.piece_samples(p) for i, p in enumerate(plan.pieces)}
    rows = embed_items(model, lengths, lambda i: np.concatenate([samples[s:e] for s, e in plan.pieces[i]]),
                       batching, progress=False)
    return weighted_mean(np.stack([rows[i] for i in lengths]), [lengths[i] for i in lengths])
