"""Waveform augmentation (in the dataset workers) and SpecAugment (in the train graph).

``WaveAugment`` adds, per training sample and with configurable probabilities:

- reverberation: convolution with a room impulse response from ``RIRS_NOISES/simulated_rirs`` (any folder
  of RIR WAV files; searched recursively). The RIR is scaled to unit energy and the output is cropped from
  the RIR's direct-path peak, so the reverberant speech stays aligned with the dry speech;
- one kind of additive noise from MUSAN: ``noise`` at 0-15 dB SNR, ``music`` at 5-15 dB, or ``babble``
  (3-7 files of ``speech`` summed) at 13-20 dB. The SNR is measured over the whole crop:
  ``10 log10(mean(speech**2) / mean(noise**2))``; for babble it is the SNR of the summed babble.

All randomness comes from the ``numpy.random.Generator`` the caller passes in; the dataset makes one per
sample from ``(seed, epoch, index)``, so an epoch is reproducible from the seed and the epoch number,
whichever worker process handles a sample.

Speed perturbation changes the speaker's voice, so it lives in the dataset, which also offsets the label
(``speed_perturb`` and ``speed_factor`` below).

``SpecAugment`` is a MindSpore Cell applied to fbank features inside the train graph (features are computed
there); it masks random time and frequency bands using MindSpore's random ops.
"""
import functools
import logging
import math
import os

import numpy as np
import scipy.fft
import scipy.signal

import mindspore as ms
from mindspore import nn, ops

from src.data.audio import AUDIO_EXTENSIONS, AudioError, audio_info, read_audio, repeat_pad

logger = logging.getLogger(__name__)

MUSAN_CATEGORIES = ("noise", "music", "speech")
# Speed factors of the speed-perturbed copies; copy k (1, 2) gets labels offset by k * num_speakers.
SPEED_FACTORS = (1.0, 0.9, 1.1)


def list_audio_folder(folder, what):
    """Audio files below ``folder`` (recursive, sorted). A missing or empty folder is an error naming it."""
    if not folder or not os.path.isdir(folder):
        raise FileNotFoundError(f"{what} folder not found: {folder!r}")
    files = sorted(os.path.join(d, f) for d, _, names in os.walk(folder) for f in names
                   if f.lower().endswith(AUDIO_EXTENSIONS))
    if not files:
        raise FileNotFoundError(f"{what} folder {folder} holds no audio files ({'/'.join(AUDIO_EXTENSIONS)})")
    return files


def add_at_snr(speech, noise, snr_db):
    """``speech + g * noise`` with ``g`` chosen so that the mean-power SNR is ``snr_db`` -> float32 (S,).

    A silent noise (all zeros) leaves the speech unchanged.
    """
    speech_power = float(np.mean(np.square(speech, dtype=np.float64)))
    noise_power = float(np.mean(np.square(noise, dtype=np.float64)))
    if noise_power <= 0.0:
        return speech
    gain = math.sqrt(speech_power / (noise_power * 10.0 ** (snr_db / 10.0)))
    return (speech + gain * noise).astype(np.float32)


def reverberate(speech, rir):
    """Convolve ``speech`` (S,) with ``rir`` (K,) scaled to unit energy, aligned at the direct-path peak.

    Returns float32 (S,): output sample t is the reverberant speech at the time of input sample t.
    (One float32 FFT convolution: output samples peak .. peak + S - 1 of the full linear convolution.)
    """
    rir = np.asarray(rir, dtype=np.float32)
    energy = math.sqrt(float(np.sum(np.square(rir, dtype=np.float64))))
    if energy == 0.0:
        return speech
    peak = int(np.argmax(np.abs(rir)))
    n = scipy.fft.next_fast_len(len(speech) + len(rir) - 1, real=True)
    wet = scipy.fft.irfft(scipy.fft.rfft(speech.astype(np.float32), n) * scipy.fft.rfft(rir / energy, n), n)
    return wet[peak:peak + len(speech)].astype(np.float32)


@functools.lru_cache(maxsize=None)
def _resampling_filter(up, down):
    """The anti-aliasing FIR filter resample_poly would design for (up, down), made once."""
    max_rate = max(up, down)
    half_len = 10 * max_rate
    return scipy.signal.firwin(2 * half_len + 1, 1.0 / max_rate, window=("kaiser", 5.0))


def speed_perturb(wav, factor):
    """Play ``wav`` ``factor`` times faster (pitch moves too, like sox ``speed``) -> float32 (len / factor,)."""
    if factor == 1.0:
        return wav
    up, down = 10, int(round(10 * factor))
    g = math.gcd(up, down)
    up, down = up // g, down // g
    return scipy.signal.resample_poly(wav, up, down, window=_resampling_filter(up, down)).astype(np.float32)


class _Clips:
    """Audio files of one folder with their lengths, from which random segments are cut."""

    def __init__(self, files, what, sample_rate):
        self.files, self.sample_rate = files, sample_rate
        self.lengths = []
        for path in files:
            num, rate, _ = audio_info(path)
            if rate != sample_rate or num == 0:
                raise AudioError(f"{path}: {what} file has {num} samples at {rate} Hz, expected audio at "
                                 f"{sample_rate} Hz (run python -m src.data.check)")
            self.lengths.append(num)

    def segment(self, num_samples, rng):
        """A random ``num_samples`` segment of a random file (tiled when the file is shorter) -> float32."""
        k = int(rng.integers(len(self.files)))
        length = self.lengths[k]
        start = int(rng.integers(length - num_samples + 1)) if length > num_samples else 0
        clip = read_audio(self.files[k], self.sample_rate, start=start, num_samples=num_samples)
        return repeat_pad(clip, num_samples)


class WaveAugment:
    """Reverberation and MUSAN noise on waveforms, drawn from a caller-supplied numpy Generator.

    Args:
        musan_dir: folder with ``noise/``, ``music/``, ``speech/`` (needed when any of their probabilities > 0).
        rir_dir: folder of RIR files, e.g. ``RIRS_NOISES/simulated_rirs`` (needed when reverb_prob > 0).
        aug_prob: probability that a sample is augmented at all.
        reverb_prob: probability of reverberation for an augmented sample.
        noise_prob, music_prob, babble_prob: probabilities of each kind of additive noise for an augmented
            sample (at most one kind; ``1 - sum`` is the probability of none). Their sum must be <= 1.
        noise_snr, music_snr, babble_snr: (low, high) SNR in dB, drawn uniformly.
        babble_count: (low, high) number of speech files summed into babble, inclusive.

    Folders are checked when the object is made, so a missing or empty folder fails before training.
    """

    def __init__(self, musan_dir=None, rir_dir=None, sample_rate=16000, aug_prob=0.8, reverb_prob=0.5,
                 noise_prob=0.3, music_prob=0.3, babble_prob=0.3, noise_snr=(0, 15), music_snr=(5, 15),
                 babble_snr=(13, 20), babble_count=(3, 7)):
        self.aug_prob, self.reverb_prob = float(aug_prob), float(reverb_prob)
        self.additive_probs = np.array([noise_prob, music_prob, babble_prob], dtype=np.float64)
        if np.any(self.additive_probs < 0) or self.additive_probs.sum() > 1.0 + 1e-9:
            raise ValueError(f"noise_prob + music_prob + babble_prob must be within [0, 1], got "
                             f"{self.additive_probs.tolist()}")
        self.snr = {"noise": tuple(noise_snr), "music": tuple(music_snr), "speech": tuple(babble_snr)}
        self.babble_count = (int(babble_count[0]), int(babble_count[1]))
        self.clips, self.rirs = {}, []
        if self.aug_prob > 0:
            for category, prob in zip(MUSAN_CATEGORIES, self.additive_probs):
                if prob > 0:
                    if not musan_dir or not os.path.isdir(musan_dir):
                        raise FileNotFoundError(f"MUSAN folder not found: {musan_dir!r} (needed for "
                                                f"{category} augmentation)")
                    folder = os.path.join(musan_dir, category)
                    self.clips[category] = _Clips(list_audio_folder(folder, f"MUSAN {category}"),
                                                  f"MUSAN {category}", sample_rate)
            self.rirs = list_audio_folder(rir_dir, "RIR") if self.reverb_prob > 0 else []
        self.sample_rate = sample_rate

    @classmethod
    def from_config(cls, cfg):
        """Build from the recipe keys musan_dir, rir_dir, aug_prob, reverb_prob, {noise,music,babble}_{prob,snr},
        babble_speakers."""
        return cls(cfg.musan_dir, cfg.rir_dir, cfg.sample_rate, cfg.aug_prob, cfg.reverb_prob, cfg.noise_prob,
                   cfg.music_prob, cfg.babble_prob, cfg.noise_snr, cfg.music_snr, cfg.babble_snr,
                   cfg.babble_speakers)

    def random_rir(self, rng):
        """A random RIR from the folder -> float32 (K,)."""
        return read_audio(self.rirs[int(rng.integers(len(self.rirs)))], self.sample_rate)

    def __call__(self, wav, rng):
        """Augment ``wav`` float32 (S,) -> float32 (S,). Draws from ``rng`` in a fixed order.

        A noise or RIR file that fails to read is logged and that augmentation is left out for this sample.
        """
        if self.aug_prob <= 0 or rng.random() >= self.aug_prob:
            return wav
        if rng.random() < self.reverb_prob:
            try:
                wav = reverberate(wav, self.random_rir(rng))
            except AudioError as err:
                logger.warning("reverberation left out: %s", err)
        kind = rng.choice(4, p=np.append(self.additive_probs, max(0.0, 1.0 - self.additive_probs.sum())))
        if kind == 3:
            return wav
        category = MUSAN_CATEGORIES[kind]
        clips = self.clips[category]
        try:
            if category == "speech":
                count = int(rng.integers(self.babble_count[0], self.babble_count[1] + 1))
                noise = sum(clips.segment(len(wav), rng) for _ in range(count))
            else:
                noise = clips.segment(len(wav), rng)
        except AudioError as err:
            logger.warning("MUSAN %s left out: %s", category, err)
            return wav
        return add_at_snr(wav, noise, rng.uniform(*self.snr[category]))


class SpecAugment(nn.Cell):
    """Random time and frequency masks on features, for the train graph (MindSpore random ops).

    Each utterance gets ``num_time_masks`` masks of 0..``max_time`` frames and ``num_freq_masks`` masks of
    0..``max_freq`` mel bins, at uniform random positions; masked values are set to 0 (the mean of
    mean-normalised fbank features).

    Input feats (B, T, F) float32 -> (B, T, F) float32. Seed MindSpore (``ms.set_seed``) for repeatable masks.
    """

    def __init__(self, max_time=5, max_freq=10, num_time_masks=1, num_freq_masks=1):
        super().__init__()
        self.max_time, self.max_freq = int(max_time), int(max_freq)
        self.num_time_masks, self.num_freq_masks = int(num_time_masks), int(num_freq_masks)

    def _mask(self, batch, size, max_width, count):
        """(batch, size) float32, 1 where kept, 0 inside one of ``count`` random bands of width <= max_width."""
        width = ops.floor(ops.rand((batch, count, 1)) * (max_width + 1))
        start = ops.floor(ops.rand((batch, count, 1)) * (size - width + 1))
        pos = ops.arange(size).astype(ms.float32).reshape(1, 1, size)
        inside = ops.logical_and(pos >= start, pos < start + width).astype(ms.float32)
        return 1.0 - inside.max(axis=1)

    def construct(self, feats):
        batch, frames, bins = feats.shape
        keep = ops.ones((batch, frames, bins), ms.float32)
        if self.num_time_masks > 0 and self.max_time > 0:
            keep = keep * self._mask(batch, frames, self.max_time, self.num_time_masks).reshape(batch, frames, 1)
        if self.num_freq_masks > 0 and self.max_freq > 0:
            keep = keep * self._mask(batch, bins, self.max_freq, self.num_freq_masks).reshape(batch, 1, bins)
        return feats * keep
