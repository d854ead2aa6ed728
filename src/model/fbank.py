"""Log-mel filterbank features as a MindSpore Cell, so a compiled (or exported) graph can take waveforms.

The numbers follow SpeechBrain's ``speechbrain.lobes.features.Fbank(n_mels=80)``, which the older zoo's checkpoint
was trained on, followed by per-utterance mean subtraction (SpeechBrain's ``InputNormalization(norm_type="sentence",
std_norm=False)``):

1. STFT with ``center=True`` and constant zero padding of n_fft // 2 samples on both sides, periodic Hamming window
   of 400 samples (25 ms), hop 160 samples (10 ms), n_fft 400 -> 201 frequency bins.
2. Power spectrum ``re**2 + im**2``.
3. 80 triangular mel filters laid on the linear frequency grid exactly as SpeechBrain builds them (HTK mel scale,
   each triangle symmetric with the half-width of the band below its centre).
4. ``10 * log10(max(power, 1e-10))``, then floored at 80 dB below the utterance's maximum (top_db).
5. Subtract the utterance's mean over its valid frames.

Only reshape, concat, slicing, matmul and elementwise ops are used (no gather, FFT or PadV3), so the Cell runs in
GRAPH mode on CPU, GPU and Ascend and exports to MINDIR (fixed or dynamic number of samples) and, for a fixed input
shape, to ONNX. The DFT needs float32 matmuls: with float16 matmul inputs (Ascend's
"allow_fp32_to_fp16"/"force_fp16" precision modes, or mixed precision applied to this Cell) bands 40-80 dB below
their frame's peak move by up to ~3 dB, so keep this Cell in float32 ("must_keep_origin_dtype").

Example: two utterances of 0.5 s and 0.3 s in one padded batch; the second gets the features it gets alone.

>>> wav = np.random.default_rng(0).uniform(-0.5, 0.5, (2, 8000)).astype(np.float32)
>>> feats, frame_lens = Fbank()(ms.Tensor(wav), ms.Tensor(np.array([8000, 4800], np.int32)))
>>> feats.shape, frame_lens.asnumpy().tolist()
((2, 51, 80), [51, 31])
>>> alone, _ = Fbank()(ms.Tensor(wav[1:, :4800]))
>>> bool(np.allclose(feats.asnumpy()[1, :31], alone.asnumpy()[0], atol=1e-3))
True
"""
import math

import numpy as np
import mindspore as ms
from mindspore import nn, ops

HOP_LENGTH = 160      # samples (10 ms at 16 kHz)
WIN_LENGTH = 400      # samples (25 ms at 16 kHz)
N_FFT = 400
AMIN = 1e-10          # power floor before the log
TOP_DB = 80.0         # dynamic range kept below each utterance's maximum


def num_frames(num_samples):
    """Number of feature frames for ``num_samples`` waveform samples (centred STFT): ``1 + num_samples // 160``.

    >>> num_frames(48000), num_frames(159)
    (301, 1)
    """
    return 1 + int(num_samples) // HOP_LENGTH


def frames_every_hop(samples, n_frames):
    """(B, >= 160 (T + 2)) samples -> (B, T, 400) frames starting every 160 samples, without gather: rows t, t + 1
    and the first 80 samples of row t + 2 of the 160-sample rows make frame t (400 = 160 + 160 + 80).

    ``ops.slice``, not ``[a:b]``: MindSpore's CPU StridedSlice took 40 ms of the demo recipe's 300 ms train step
    here; Slice adds 0.5 ms (benchmarks/profile_train_step.py, before and after)."""
    batch = samples.shape[0]
    rows = ops.slice(samples, (0, 0), (batch, HOP_LENGTH * (n_frames + 2))).reshape(batch, n_frames + 2, HOP_LENGTH)
    tail = WIN_LENGTH - 2 * HOP_LENGTH
    return ops.concat((ops.slice(rows, (0, 0, 0), (batch, n_frames, HOP_LENGTH)),
                       ops.slice(rows, (0, 1, 0), (batch, n_frames, HOP_LENGTH)),
                       ops.slice(rows, (0, 2, 0), (batch, n_frames, tail))), 2)


def frame_matmul(x, matrix):
    """(B, T, n) @ matrix (n, m) -> (B, T, m) as one 2-D matmul: ``ops.matmul`` on a batch copies the matrix once per
    utterance (BroadcastTo: 11 ms of the demo recipe's train step, benchmarks/profile_train_step.py) and runs a
    batched matmul."""
    batch, num_frames, width = x.shape
    return ops.matmul(x.reshape(batch * num_frames, width), matrix).reshape(batch, num_frames, -1)


def _hz_to_mel(hz):
    return 2595.0 * np.log10(1.0 + hz / 700.0)


def _mel_to_hz(mel):
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(sample_rate=16000, n_fft=N_FFT, n_mels=80, f_min=0.0, f_max=None):
    """Triangular mel filters as SpeechBrain's ``Filterbank`` builds them -> (n_fft // 2 + 1, n_mels) float64.

    Centres are equally spaced on the HTK mel scale between f_min and f_max (default sample_rate // 2); filter i
    rises from 0 at ``centre_i - band_i`` to 1 at ``centre_i`` and falls to 0 at ``centre_i + band_i``, where
    ``band_i`` is the distance to the previous centre. The frequency grid is ``linspace(0, sample_rate // 2, bins)``.
    """
    if f_max is None:
        f_max = sample_rate // 2
    mel_points = np.linspace(_hz_to_mel(f_min), _hz_to_mel(f_max), n_mels + 2)
    hz_points = _mel_to_hz(mel_points)
    centre = hz_points[1:-1]
    band = hz_points[1:-1] - hz_points[:-2]
    freqs = np.linspace(0, sample_rate // 2, n_fft // 2 + 1)
    slope = (freqs[:, None] - centre[None, :]) / band[None, :]
    return np.maximum(0.0, np.minimum(1.0 + slope, 1.0 - slope))


def windowed_dft_matrix(n_fft=N_FFT, win_length=WIN_LENGTH):
    """Real DFT with the periodic Hamming window folded in -> (win_length, 2 * (n_fft // 2 + 1)) float64.

    ``frames @ matrix`` gives ``[re | im]`` of the one-sided spectrum of the windowed frames.
    """
    if win_length != n_fft:
        raise ValueError(f"win_length ({win_length}) must equal n_fft ({n_fft})")
    n = np.arange(win_length)
    window = 0.54 - 0.46 * np.cos(2.0 * math.pi * n / win_length)
    k = np.arange(n_fft // 2 + 1)
    angle = 2.0 * math.pi * np.outer(n, k) / n_fft
    return np.concatenate([window[:, None] * np.cos(angle), -window[:, None] * np.sin(angle)], axis=1)


class Fbank(nn.Cell):
    """Waveforms -> mean-normalised 80-bin log-mel filterbanks (SpeechBrain numerics), with length masking.

    ``construct(wav, wav_lens=None)``: wav (B, S) float32 at ``sample_rate``; wav_lens (B,) int32 number of valid
    samples per utterance (the rest is padding), or None when every sample is valid.
    Returns ``(feats, frame_lens)``: feats (B, T, n_mels) float32 in dB with T = 1 + S // 160; frame_lens (B,) int32
    = 1 + wav_lens // 160. Samples from wav_lens on are treated as zeros whatever they hold, so on its valid frames an
    utterance gets the same features as when computed alone; its padded frames are 0.
    """

    def __init__(self, sample_rate=16000, n_mels=80, mean_norm=True):
        super().__init__()
        if sample_rate != 16000:
            raise ValueError(f"sample_rate: Fbank uses 400-sample windows and a 160-sample hop, made for 16000 Hz "
                             f"audio; got {sample_rate}")
        self.sample_rate = sample_rate
        self.n_mels = n_mels
        self.mean_norm = mean_norm
        self.dft = ms.Tensor(windowed_dft_matrix().astype(np.float32))
        mel = mel_filterbank(sample_rate, N_FFT, n_mels)
        self.mel_stacked = ms.Tensor(np.concatenate([mel, mel]).astype(np.float32))  # (2 * bins, n_mels)
        self.db_floor = 10.0 * math.log10(AMIN)

    def frames(self, wav):
        """(B, S) -> (B, T, 400) centred frames: zero pad, split into 160-sample rows, join 3 shifted row views."""
        batch, num_samples = wav.shape
        n_frames = num_frames(num_samples)
        left = N_FFT // 2
        right = HOP_LENGTH * (n_frames + 2) - left - num_samples
        padded = ops.concat((ops.zeros((batch, left), wav.dtype), wav, ops.zeros((batch, right), wav.dtype)), 1)
        return frames_every_hop(padded, n_frames)

    def construct(self, wav, wav_lens=None):
        if wav.ndim != 2:
            raise ValueError(f"Fbank: wav must be (batch, samples), got shape {wav.shape}")
        batch, num_samples = wav.shape
        n_frames = num_frames(num_samples)
        frame_index = ops.arange(n_frames, dtype=ms.int32).reshape(1, n_frames)
        if wav_lens is None:
            frame_lens = ops.fill(ms.int32, (batch,), n_frames)
        else:
            # Zero the padding so that its content (zeros, repeats, noise) never reaches the valid frames.
            sample_index = ops.arange(num_samples, dtype=ms.int32).reshape(1, num_samples)
            wav = wav * (sample_index < wav_lens.reshape(batch, 1)).astype(wav.dtype)
            frame_lens = ops.minimum(wav_lens // HOP_LENGTH + 1, n_frames).astype(ms.int32)
        valid = (frame_index < frame_lens.reshape(batch, 1)).astype(wav.dtype)      # (B, T)

        spec = frame_matmul(self.frames(wav), self.dft)                               # (B, T, 2 * bins): re | im
        # (re^2 + im^2) @ mel, as one matmul of [re^2 | im^2] with the filters stacked twice
        mel_power = frame_matmul(spec * spec, self.mel_stacked)                       # (B, T, n_mels)
        db = ops.log(ops.maximum(mel_power, AMIN)) * (10.0 / math.log(10.0))

        # top_db floor relative to the maximum over valid frames (every value is >= db_floor, so padded frames set
        # to db_floor never raise the maximum).
        frame_max = db.max(axis=2)                                                    # (B, T)
        frame_max = frame_max * valid + self.db_floor * (1.0 - valid)
        utt_max = frame_max.max(axis=1, keepdims=True).reshape(batch, 1, 1)
        # broadcast first: CPU Maximum with a broadcast operand took 9 ms of the demo recipe's step, 0.3 ms this way
        db = ops.maximum(db, ops.broadcast_to(utt_max - TOP_DB, db.shape))

        valid = valid.reshape(batch, n_frames, 1)
        if self.mean_norm:
            count = frame_lens.astype(wav.dtype).reshape(batch, 1, 1)
            mean = (db * valid).sum(axis=1, keepdims=True) / count
            db = db - mean
        return db * valid, frame_lens
