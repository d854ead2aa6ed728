"""One recording from audio to speaker turns: speech regions -> windows -> embeddings -> speakers -> segments.

1. The recording is read in chunks of ``chunk_seconds`` (memory holds one chunk of audio, not the recording; a
   file at another sample rate than ``sample_rate`` is read and resampled whole first).
2. Voice activity detection finds the speech regions of each chunk (src/recordings/vad.py).
3. Sliding windows (``window_seconds`` long, every ``hop_seconds``) cover each region; a region shorter than a
   window is one shorter window (src/recordings/windows.py). They are embedded in fixed-shape batches of one
   bucket, ``window_seconds`` long, through the evaluation's batched extraction: one compiled graph.
4. The window embeddings are clustered into speakers (src/diarize/clustering.py).
5. The window labels become segments: overlapping windows split at midpoints, short gaps merged
   (src/diarize/segments.py).

Memory: one chunk of audio plus (windows x embedding size) floats; the clustering's own bound is described in
src/diarize/clustering.py (at most ``max_dense`` windows clustered densely).

Example::

    settings = DiarizeSettings.from_recipe(cfg)
    result = diarize_recording("meeting.wav", embedder, settings, min_samples(cfg))
    result.segments          # [Segment(0.52, 3.9, "spk0"), ...]
"""
import dataclasses
import math
import time

import numpy as np

from src.data.audio import AudioError, audio_info, read_audio
from src.diarize.clustering import ClusterSettings, cluster_embeddings
from src.diarize.segments import window_segments
from src.evaluate.extract import Batching
from src.recordings.vad import VadSettings, speech_regions
from src.recordings.embed import embed_windows
from src.recordings.windows import speech_windows


@dataclasses.dataclass(frozen=True)
class DiarizeSettings:
    """window_seconds, hop_seconds: the sliding windows over speech; min_window_seconds: shorter pieces of speech
    are not embedded; merge_gap_seconds: gaps of one speaker shorter than this are filled; chunk_seconds: audio
    read (and searched for speech) at a time; batch_size: windows per embedding batch; sample_rate (Hz); vad: the
    voice activity detection settings; clustering: the ClusterSettings."""
    window_seconds: float = 1.5
    hop_seconds: float = 0.75
    min_window_seconds: float = 0.3
    merge_gap_seconds: float = 0.5
    chunk_seconds: float = 600.0
    batch_size: int = 32
    sample_rate: int = 16000
    vad: VadSettings = VadSettings()
    clustering: ClusterSettings = ClusterSettings()

    @classmethod
    def from_recipe(cls, cfg, num_speakers=0, min_speakers=1, max_speakers=10):
        """The recipe's diarize_* keys, its vad_* keys (with diarize_vad as the method) and sample_rate; the speaker
        counts of the command line."""
        clustering = ClusterSettings(method=cfg.diarize_clustering, num_speakers=num_speakers,
                                     min_speakers=min_speakers, max_speakers=max_speakers,
                                     pruning=float(cfg.diarize_pruning), threshold=float(cfg.diarize_threshold),
                                     max_dense=int(cfg.diarize_max_dense_windows),
                                     micro_clusters=int(cfg.diarize_micro_clusters), seed=int(cfg.seed))
        return cls(float(cfg.diarize_window_seconds), float(cfg.diarize_hop_seconds),
                   float(cfg.diarize_min_window_seconds), float(cfg.diarize_merge_gap_seconds),
                   float(cfg.diarize_chunk_seconds), int(cfg.diarize_batch_size), int(cfg.sample_rate),
                   dataclasses.replace(VadSettings.from_recipe(cfg), method=cfg.diarize_vad), clustering)


@dataclasses.dataclass
class Diarization:
    """What ``diarize_recording`` found: segments (list of Segment), regions ((R, 2) speech seconds), windows
    ((N, 2) seconds), embeddings ((N, D) float32), labels ((N,) speaker per window), seconds (recording length) and
    times (seconds per stage)."""
    segments: list
    regions: np.ndarray
    windows: np.ndarray
    embeddings: np.ndarray
    labels: np.ndarray
    seconds: float
    times: dict


def window_batching(settings, min_samples):
    """The Batching (src/evaluate/extract.py) of diarization windows: one bucket of ``window_seconds``, so every
    batch has the shape (batch_size, window samples) and one graph serves the whole run."""
    window = settings.window_seconds
    return Batching(settings.sample_rate, (window,), window, settings.batch_size, window * settings.batch_size,
                    min_samples)


def diarization_windows(regions, settings):
    """Speech regions [(start_s, end_s)] -> (N, 2) windows in seconds (src/recordings/windows.py
    ``speech_windows``), without those shorter than ``min_window_seconds``."""
    windows = np.array(speech_windows(regions, settings.window_seconds, settings.hop_seconds), np.float64)
    windows = windows.reshape(-1, 2)
    return windows[windows[:, 1] - windows[:, 0] >= settings.min_window_seconds - 1e-9]


def diarize_recording(path, embedder, settings, min_samples, progress=None):
    """Diarize one recording -> Diarization.

    Args:
        path: an audio file at ``settings.sample_rate`` (other rates are resampled).
        embedder: an Embedder (src/model/embedder.py), or any callable (wav Tensor (B, S), wav_lens Tensor (B,))
            -> (B, D).
        settings: DiarizeSettings.
        min_samples: the shortest input the embedder takes (src.model.embedder.min_samples).
        progress: optional callable(seconds done, seconds total) after each chunk.
    Raises AudioError/ValueError naming the file: unreadable or empty audio, no speech found, more speakers asked
    for than there are windows.
    """
    rate = settings.sample_rate
    frames, file_rate, _ = audio_info(path)
    total = int(math.ceil(frames * rate / file_rate))
    if total == 0:
        raise AudioError(f"{path}: the file holds no audio (0 samples)", "empty")
    chunk = max(int(settings.chunk_seconds * rate), int(settings.window_seconds * rate))
    batching = window_batching(settings, min_samples)
    times = {"vad": 0.0, "embedding": 0.0, "clustering": 0.0}
    regions, windows, embeddings = [], [], []
    whole = read_audio(path, rate, resample=True) if file_rate != rate else None
    for offset in range(0, total, chunk):
        samples = whole[offset:offset + chunk] if whole is not None else \
            read_audio(path, rate, start=offset, num_samples=chunk)
        if samples.size == 0:
            break
        start = time.perf_counter()
        found = np.asarray(speech_regions(samples, settings.vad, rate), np.float64).reshape(-1, 2)
        times["vad"] += time.perf_counter() - start
        start = time.perf_counter()
        spans = diarization_windows(found, settings)
        if len(spans):
            embeddings.append(embed_windows(embedder, samples, spans, batching))
            windows.append(spans + offset / rate)
        regions.append(found + offset / rate)
        times["embedding"] += time.perf_counter() - start
        if progress is not None:
            progress(min(offset + chunk, total) / rate, total / rate)
    regions = np.concatenate(regions) if regions else np.zeros((0, 2))
    if not windows:
        speech = float((regions[:, 1] - regions[:, 0]).sum()) if len(regions) else 0.0
        raise ValueError(f"{path}: no speech found ({speech:.2f} s of speech regions, none of at least "
                         f"{settings.min_window_seconds} s); nothing to diarize")
    windows, embeddings = np.concatenate(windows), np.concatenate(embeddings)
    start = time.perf_counter()
    try:
        labels = cluster_embeddings(embeddings, settings.clustering)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    segments = window_segments(windows, labels, settings.merge_gap_seconds,
                               names={k: f"spk{k}" for k in range(labels.max() + 1)})
    times["clustering"] += time.perf_counter() - start
    return Diarization(segments, regions, windows, embeddings, labels, total / rate, times)
