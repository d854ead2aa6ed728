"""Kaldi-compatible log-mel filterbank features as a MindSpore Cell (the front end of WeSpeaker and 3D-Speaker).

The numbers follow Kaldi's ``compute-fbank-feats`` as re-implemented by ``torchaudio.compliance.kaldi.fbank`` and
k2-fsa's ``kaldi-native-fbank`` with 16 kHz audio, 25 ms frames, a 10 ms shift, dither 0, no energy term:

1. Framing. ``snip_edges`` true (Kaldi's default, WeSpeaker's and 3D-Speaker's): frame t holds samples
   [160 t, 160 t + 400), so S samples give ``1 + (S - 400) // 160`` frames (0 below 400 samples); no frame reaches
   past the end. ``snip_edges`` false (sherpa-onnx's): frame t holds samples [160 t - 120, 160 t + 280), so S
   samples give ``(S + 80) // 160`` frames; a sample index s outside [0, S) is mirrored as Kaldi's ``ExtractWindow``
   does (s < 0 -> -s - 1, s >= S -> 2 S - 1 - s, repeated while outside).
2. Per frame: subtract its mean (DC offset), pre-emphasis ``x[i] -= 0.97 x[i - 1]`` (``x[0] -= 0.97 x[0]``),
   multiply by the symmetric povey window ``(0.5 - 0.5 cos(2 pi n / 399)) ** 0.85`` or the symmetric Hamming window
   ``0.54 - 0.46 cos(2 pi n / 399)``.
3. Zero padding to 512 samples (the next power of two), FFT, power spectrum ``re**2 + im**2``.
4. Kaldi's triangular mel filters: centres equally spaced on the mel scale ``1127 ln(1 + f / 700)`` between
   ``low_freq`` 20 Hz and ``high_freq`` (Kaldi's convention: 0 is the Nyquist frequency, a negative value is
   Nyquist + value, e.g. -400 -> 7600 Hz as sherpa-onnx), each filter linear in mel between its neighbours'
   centres, on FFT bins 0..255 (the Nyquist bin gets no weight, so the DFT leaves it out).
5. ``log(max(energy, eps))`` with eps the float32 machine epsilon (1.19e-7).

Options: ``scale_16bit`` multiplies the waveform by 32768 first (what Kaldi and WeSpeaker feed it: 16-bit sample
values; torchaudio's and 3D-Speaker's default is the waveform as it is); ``mean_norm`` subtracts the utterance's
mean over its valid frames (WeSpeaker's and 3D-Speaker's CMN; not part of Kaldi's fbank itself).

Pre-emphasis, window, DFT and the scaling are linear in the frame, so they are folded into one (400, 512) matrix. The
DC offset is subtracted explicitly before it: folded into the matrix too, its float32 rounding scales with the offset
and moved weak bands of a signal with a large offset (0.3 DC + 0.01 noise) by 2e-3 instead of 4e-4. The whole front
end is slicing, concat, a mean, two matmuls and elementwise ops, plus without ``snip_edges`` one gather of the
samples at computed mirror indices (each utterance mirrored at its own length); no FFT or PadV3. So it runs in GRAPH
mode and exports to MINDIR (fixed or dynamic length) and fixed-shape ONNX like src/model/fbank.py. Keep it in
float32 (see there).

Example: WeSpeaker's front end (Kaldi framing, utterance mean removed) of 0.5 s and 0.3 s in one padded batch.

>>> wav = np.random.default_rng(0).uniform(-0.5, 0.5, (2, 8000)).astype(np.float32)
>>> fbank = KaldiFbank(window="hamming", scale_16bit=True)
>>> feats, frame_lens = fbank(ms.Tensor(wav), ms.Tensor(np.array([8000, 4800], np.int32)))
>>> feats.shape, frame_lens.asnumpy().tolist()
((2, 48, 80), [48, 28])
>>> alone, _ = fbank(ms.Tensor(wav[1:, :4800]))
>>> bool(np.allclose(feats.asnumpy()[1, :28], alone.asnumpy()[0], atol=1e-3))
True
"""
import math

import numpy as np
import mindspore as ms
from mindspore import nn, ops

from src.model.fbank import HOP_LENGTH, WIN_LENGTH, frame_matmul, frames_every_hop

PADDED_LENGTH = 512                        # FFT size: 400 rounded up to a power of two
PREEMPHASIS = 0.97
LOW_FREQ = 20.0                            # Hz, lower edge of the first mel filter
LOG_FLOOR = float(np.finfo(np.float32).eps)
SCALE_16BIT = 32768.0
WINDOWS = ("povey", "hamming")
EDGE_OFFSET = WIN_LENGTH // 2 - HOP_LENGTH // 2     # 120: without snip_edges frame t starts at sample 160 t - 120


def num_frames(num_samples, snip_edges=True):
    """Feature frames of ``num_samples`` samples: ``1 + (S - 400) // 160`` (0 below 400 samples) with snip_edges,
    ``(S + 80) // 160`` without.

    >>> num_frames(48000), num_frames(48000, snip_edges=False), num_frames(399)
    (298, 300, 0)
    """
    if snip_edges:
        return max(0, 1 + (int(num_samples) - WIN_LENGTH) // HOP_LENGTH)
    return max(0, (int(num_samples) + HOP_LENGTH // 2) // HOP_LENGTH)


def mel_high_freq(high_freq, sample_rate=16000):
    """Kaldi's ``high_freq`` option -> the top mel filter edge in Hz: > 0 as it is, <= 0 Nyquist + value. Raises
    ValueError unless LOW_FREQ < edge <= Nyquist."""
    nyquist = sample_rate / 2.0
    edge = float(high_freq) if high_freq > 0 else nyquist + float(high_freq)
    if not LOW_FREQ < edge <= nyquist:
        raise ValueError(f"high_freq: {high_freq:g} puts the top mel filter edge at {edge:g} Hz; expected above "
                         f"{LOW_FREQ:g} Hz (low_freq) and at most {nyquist:g} Hz (0: Nyquist, < 0: Nyquist + value)")
    return edge


def window_function(window, length=WIN_LENGTH):
    """Kaldi's symmetric analysis window -> (length,) float64: "povey" or "hamming"."""
    if window not in WINDOWS:
        raise ValueError(f"window: expected one of {', '.join(WINDOWS)}, got {window!r}")
    cosine = np.cos(2.0 * math.pi * np.arange(length) / (length - 1))
    if window == "povey":
        return (0.5 - 0.5 * cosine) ** 0.85
    return 0.54 - 0.46 * cosine


def frame_matrix(window, scale=1.0, length=WIN_LENGTH, n_fft=PADDED_LENGTH):
    """Pre-emphasis, window, zero padding to ``n_fft`` and the real DFT of bins 0..n_fft/2 - 1 as one matrix
    -> (length, n_fft) float64: ``frames @ matrix`` = ``[re | im]`` of ``scale`` * each processed (DC-free) frame."""
    preemphasis = np.eye(length) - PREEMPHASIS * np.eye(length, k=1)
    preemphasis[0, 0] = 1.0 - PREEMPHASIS                         # y[0] = x[0] - 0.97 x[0]
    k = np.arange(n_fft // 2)
    angle = 2.0 * math.pi * np.outer(np.arange(length), k) / n_fft
    dft = np.concatenate([np.cos(angle), -np.sin(angle)], axis=1)
    return scale * (preemphasis * window_function(window, length)[None, :]) @ dft


def kaldi_mel_banks(n_mels=80, sample_rate=16000, n_fft=PADDED_LENGTH, low_freq=LOW_FREQ, high_freq=0.0):
    """Kaldi's mel filters (no VTLN) -> (n_fft // 2, n_mels) float64 on FFT bins 0..n_fft/2-1.

    Filter i spans mel points i, i + 1 (peak 1) and i + 2 of ``n_mels + 2`` points equally spaced on
    ``1127 ln(1 + f / 700)`` between ``low_freq`` and ``mel_high_freq(high_freq)``; a bin gets weight only strictly
    inside.
    """
    def mel(hz):
        return 1127.0 * np.log(1.0 + hz / 700.0)
    points = np.linspace(mel(low_freq), mel(mel_high_freq(high_freq, sample_rate)), n_mels + 2)
    left, centre, right = points[:-2], points[1:-1], points[2:]
    bin_mel = mel(np.arange(n_fft // 2) * sample_rate / n_fft)[:, None]
    rising = (bin_mel - left) / (centre - left)
    falling = (right - bin_mel) / (right - centre)
    inside = (bin_mel > left) & (bin_mel < right)
    return np.where(inside, np.where(bin_mel <= centre, rising, falling), 0.0)


class KaldiFbank(nn.Cell):
    """Waveforms -> Kaldi log-mel filterbanks (natural log), with length masking. Same contract as
    src.model.fbank.Fbank.

    ``construct(wav, wav_lens=None)``: wav (B, S) float32 at 16 kHz, S >= 400 (>= 80 without ``snip_edges``);
    wav_lens (B,) int32 valid samples per utterance, or None when every sample is valid. Returns
    ``(feats, frame_lens)``: feats (B, T, n_mels) float32 with T = ``num_frames(S, snip_edges)``; frame_lens (B,)
    int32 = ``num_frames(wav_lens, snip_edges)``. With snip_edges a valid frame never reaches a padded sample; without,
    each utterance is mirrored at its own length; either way an utterance gets the same features on its valid frames
    in a padded batch as alone. Padded frames are 0. ``high_freq``: the top mel filter edge (``mel_high_freq``).
    """

    def __init__(self, sample_rate=16000, n_mels=80, window="povey", scale_16bit=False, mean_norm=True,
                 snip_edges=True, high_freq=0.0):
        super().__init__()
        if sample_rate != 16000:
            raise ValueError(f"sample_rate: KaldiFbank uses 400-sample frames and a 160-sample shift, made for "
                             f"16000 Hz audio; got {sample_rate}")
        self.sample_rate, self.n_mels, self.window = sample_rate, n_mels, window
        self.scale_16bit, self.mean_norm = scale_16bit, mean_norm
        self.snip_edges, self.high_freq = bool(snip_edges), float(high_freq)
        scale = SCALE_16BIT if scale_16bit else 1.0       # a power of two: exact in float32
        self.dft = ms.Tensor(frame_matrix(window, scale).astype(np.float32))             # (400, 512)
        mel = kaldi_mel_banks(n_mels, sample_rate, high_freq=high_freq)
        self.mel_stacked = ms.Tensor(np.concatenate([mel, mel]).astype(np.float32))    # (512, n_mels)

    def frames(self, wav, n_frames):
        """(B, S) -> (B, T, 400) snip_edges frames: 160-sample rows t, t + 1 and the first 80 samples of t + 2.

        80 zeros are appended so that 160 (T + 2) samples always exist (S >= 160 T + 240); they only reach the
        unused second half of row T + 1."""
        batch = wav.shape[0]
        padded = ops.concat((wav, ops.zeros((batch, WIN_LENGTH - 2 * HOP_LENGTH), wav.dtype)), 1)
        return frames_every_hop(padded, n_frames)

    def mirrored_frames(self, wav, lens, n_frames):
        """(B, S), lens (B, 1) int32 -> (B, T, 400) frames without snip_edges: sample j of the gathered row is
        sample j - 120 mirrored into [0, lens) (two rounds: exact for lens >= 80, i.e. every utterance with a
        frame), then ``frames_every_hop``. Samples only invalid frames read are clipped into the row."""
        batch, num_samples = wav.shape
        source = ops.arange(HOP_LENGTH * (n_frames + 2), dtype=ms.int32).reshape(1, -1) - EDGE_OFFSET
        source = source + ops.zeros_like(lens)                                        # (B, 160 (T + 2))
        for _ in range(2):
            source = ops.select(source < 0, -source - 1, source)
            source = ops.select(source >= lens, 2 * lens - 1 - source, source)
        source = ops.clip_by_value(source, 0, num_samples - 1)
        source = source + ops.arange(batch, dtype=ms.int32).reshape(-1, 1) * num_samples
        rows = ops.gather(wav.reshape(-1), source.reshape(-1), 0).reshape(batch, -1)
        return frames_every_hop(rows, n_frames)

    def construct(self, wav, wav_lens=None):
        if wav.ndim != 2:
            raise ValueError(f"KaldiFbank: wav must be (batch, samples), got shape {wav.shape}")
        batch, num_samples = wav.shape
        if self.snip_edges:
            n_frames = 1 + (num_samples - WIN_LENGTH) // HOP_LENGTH
        else:
            n_frames = (num_samples + HOP_LENGTH // 2) // HOP_LENGTH
        frame_index = ops.arange(n_frames, dtype=ms.int32).reshape(1, n_frames)
        if wav_lens is None:
            frame_lens = ops.fill(ms.int32, (batch,), n_frames)
        elif self.snip_edges:
            frame_lens = (wav_lens - WIN_LENGTH) // HOP_LENGTH + 1
        else:
            frame_lens = (wav_lens + HOP_LENGTH // 2) // HOP_LENGTH
        if wav_lens is not None:
            frame_lens = ops.maximum(ops.minimum(frame_lens, n_frames), 0).astype(ms.int32)
        valid = (frame_index < frame_lens.reshape(batch, 1)).astype(wav.dtype).reshape(batch, n_frames, 1)

        if self.snip_edges:
            frames = self.frames(wav, n_frames)                                       # (B, T, 400)
        else:
            if wav_lens is None:
                lens = ops.fill(ms.int32, (batch, 1), num_samples)
            else:
                lens = ops.minimum(wav_lens.astype(ms.int32), num_samples).reshape(batch, 1)
            frames = self.mirrored_frames(wav, lens, n_frames)
        frames = frames - frames.mean(axis=2, keep_dims=True)                         # DC offset
        spec = frame_matmul(frames, self.dft)                                         # (B, T, 512): re | im
        mel_power = frame_matmul(spec * spec, self.mel_stacked)                       # (B, T, n_mels)
        feats = ops.log(ops.maximum(mel_power, LOG_FLOOR))
        if self.mean_norm:
            count = ops.maximum(frame_lens, 1).astype(wav.dtype).reshape(batch, 1, 1)
            feats = feats - (feats * valid).sum(axis=1, keepdims=True) / count
        return feats * valid, frame_lens
