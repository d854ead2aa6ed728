"""Embed a recording held in memory: its windows (``embed_windows``) or the whole of it by the VAD and long-audio
settings (``recording_embedding``), through the evaluation's batched extraction (src/evaluate/extract.py
``embed_items``: one compiled graph per bucket, padding masked, so a window's embedding in a batch equals the window
embedded alone).

Example::

    windows = speech_windows(speech_regions(samples, VadSettings("silero")), 3.0, 1.5)
    matrix = embed_windows(embedder, samples, windows, Batching())    # (len(windows), D) float32
    embedding = recording_embedding(embedder, samples, Batching())    # (D,)
"""
import numpy as np

from src.evaluate.extract import embed_items
from src.recordings.vad import speech_samples
from src.recordings.windows import RecordingPlan, plan_from_regions, weighted_mean


def embed_windows(model, samples, windows, batching, progress=False):
    """Embed windows [(start_s, end_s)] of ``samples`` (float32 (S,) at batching.sample_rate) in batches -> (N, D)
    float32 in the order of ``windows``; each row equals that window embedded alone."""
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
    lengths = {i: RecordingPlan.piece_samples(p) for i, p in enumerate(plan.pieces)}
    rows = embed_items(model, lengths, lambda i: np.concatenate([samples[s:e] for s, e in plan.pieces[i]]),
                       batching, progress=False)
    return weighted_mean(np.stack([rows[i] for i in lengths]), [lengths[i] for i in lengths])
