"""Reading and writing audio files: one place that turns a path into mono float32 samples.

``read_audio`` reads WAV and FLAC with soundfile (libsndfile); other formats that libsndfile reads (OGG,
MP3 with libsndfile >= 1.1) work too. VoxCeleb2's AAC/M4A files are decoded with ``ffmpeg`` when it is on
PATH; without it the error says how to convert them to WAV first. Every failure raises ``AudioError`` (a
``ValueError``) whose message starts with the file's path and says what was expected.

Example::

    wav = read_audio("id10001/1zcIwhmdeo4/00001.wav")          # float32 (S,), 16 kHz, in [-1, 1]
    wav = read_audio("clip_44k.flac", resample=True)             # resampled to 16 kHz
    part = read_audio("long.wav", start=16000, num_samples=32000) # samples 1 s .. 3 s only
"""
import logging
import math
import os
import shutil
import subprocess
import tempfile

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

logger = logging.getLogger(__name__)

# Containers that libsndfile cannot open; they are decoded by ffmpeg.
FFMPEG_EXTENSIONS = (".m4a", ".aac", ".mp4")
# Extensions that the data lists and checks treat as audio files.
AUDIO_EXTENSIONS = (".wav", ".flac") + FFMPEG_EXTENSIONS


class AudioError(ValueError):
    """An audio file is missing, unreadable, empty or has the wrong sample rate.

    ``kind`` is one of "missing", "unreadable", "empty", "sample_rate", "needs_ffmpeg".
    """

    def __init__(self, message, kind="unreadable"):
        super().__init__(message)
        self.kind = kind

    def __reduce__(self):  # keep ``kind`` when the error crosses a process boundary
        return AudioError, (str(self), self.kind)


def ffmpeg_available():
    """True when an ``ffmpeg`` executable is on PATH."""
    return shutil.which("ffmpeg") is not None


def _decode_with_ffmpeg(path):
    """Decode an M4A/AAC file with ffmpeg -> (float32 (S, C), sample_rate)."""
    if not ffmpeg_available():
        raise AudioError(
            f"{path}: {os.path.splitext(path)[1]} files need ffmpeg, which is not installed. Install ffmpeg "
            f"(e.g. apt-get install ffmpeg), or convert the files to WAV first where ffmpeg is installed: a whole "
            f"<speaker>/<video>/<utt> tree with python -m src.data.convert --src DIR --dst DIR, one file with "
            f"ffmpeg -i '{path}' -ac 1 -ar 16000 '{os.path.splitext(path)[0]}.wav'", "needs_ffmpeg")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "decoded.wav")
        result = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", path, "-c:a", "pcm_f32le", out],
                                capture_output=True, text=True)
        if result.returncode != 0 or not os.path.isfile(out):
            raise AudioError(f"{path}: ffmpeg could not decode the file: {result.stderr.strip()[-300:]}")
        samples, rate = sf.read(out, dtype="float32", always_2d=True)
    return samples, rate


def audio_info(path):
    """Header facts of an audio file without decoding it -> ``(num_samples, sample_rate, channels)``.

    M4A/AAC files are fully decoded with ffmpeg (there is no cheap header read for them).
    """
    if not os.path.isfile(path):
        raise AudioError(f"{path}: audio file not found", "missing")
    if path.lower().endswith(FFMPEG_EXTENSIONS):
        samples, rate = _decode_with_ffmpeg(path)
        return samples.shape[0], rate, samples.shape[1]
    try:
        info = sf.info(path)
    except (RuntimeError, sf.LibsndfileError) as err:
        raise AudioError(f"{path}: not a readable audio file ({err})") from None
    return info.frames, info.samplerate, info.channels


def read_audio(path, sample_rate=16000, resample=False, start=0, num_samples=None):
    """Read an audio file as mono float32 samples in [-1, 1].

    Args:
        path: WAV or FLAC file (M4A/AAC when ffmpeg is installed).
        sample_rate: the rate the caller expects, in Hz.
        resample: when False a file at another rate is an error; when True it is resampled (logged once per
            call at INFO level).
        start, num_samples: read only samples ``[start, start + num_samples)`` (counted at ``sample_rate``);
            ``num_samples=None`` reads to the end. Only that part is decoded when no resampling is needed.

    Returns:
        np.ndarray float32 of shape (S,); stereo and multi-channel files are averaged over channels.

    Raises:
        AudioError naming the file: missing, unreadable/corrupt, empty (zero samples), wrong sample rate.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise AudioError(f"{path}: audio file not found", "missing")
    if path.lower().endswith(FFMPEG_EXTENSIONS):
        samples, rate = _decode_with_ffmpeg(path)     # always the whole file: cut the requested part here
        if samples.shape[0] == 0:
            raise AudioError(f"{path}: the file holds no audio (0 samples)", "empty")
        file_start = start if rate == sample_rate else 0
        if rate == sample_rate:
            samples = samples[start:None if num_samples is None else start + num_samples]
    else:
        try:
            with sf.SoundFile(path) as f:
                rate, total = f.samplerate, f.frames
                # Read only the requested part when it is already at the right rate.
                file_start = start if rate == sample_rate else 0
                count = -1 if (num_samples is None or rate != sample_rate) else num_samples
                if file_start > 0:
                    f.seek(min(file_start, total))
                samples = f.read(frames=count, dtype="float32", always_2d=True)
        except (RuntimeError, sf.LibsndfileError) as err:
            raise AudioError(f"{path}: not a readable audio file ({err})") from None
        if total == 0:
            raise AudioError(f"{path}: the file holds no audio (0 samples)", "empty")
    if samples.shape[0] == 0 and file_start == 0:
        raise AudioError(f"{path}: the file holds no audio (0 samples)", "empty")

    wav = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    if not np.all(np.isfinite(wav)):
        raise AudioError(f"{path}: the file holds NaN or infinite sample values")

    if rate != sample_rate:
        if not resample:
            raise AudioError(f"{path}: sample rate is {rate} Hz, expected {sample_rate} Hz "
                             f"(resample the file, or read it with resample=True)", "sample_rate")
        logger.info("%s: resampling from %d Hz to %d Hz", path, rate, sample_rate)
        g = math.gcd(int(rate), int(sample_rate))
        wav = resample_poly(wav, sample_rate // g, rate // g).astype(np.float32)
        stop = None if num_samples is None else start + num_samples
        wav = wav[start:stop]
    return np.ascontiguousarray(np.clip(wav, -1.0, 1.0), dtype=np.float32)


def write_wav(path, samples, sample_rate=16000, subtype="PCM_16"):
    """Write mono samples (float in [-1, 1], shape (S,)) as a WAV file, creating parent folders.

    Values outside [-1, 1] are clipped. ``subtype`` is a soundfile subtype (PCM_16, FLOAT, ...).
    """
    samples = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
    if samples.ndim != 1:
        raise ValueError(f"{path}: write_wav expects mono samples of shape (S,), got shape {samples.shape}")
    parent = os.path.dirname(os.fspath(path))
    if parent:
        os.makedirs(parent, exist_ok=True)
    sf.write(path, samples, int(sample_rate), subtype=subtype)


def repeat_pad(wav, length):
    """(L,) -> (length,): the waveform repeated end to end and cut at ``length`` samples (L >= length: cut)."""
    if wav.shape[0] == 0:
        raise AudioError("cannot repeat-pad an empty waveform", "empty")
    return np.tile(wav, -(-length // wav.shape[0]))[:length]


MIN_USEFUL_SECONDS = 0.5    # shorter input: too few frames for a meaningful speaker embedding
SILENCE_DBFS = -60.0        # RMS level below which input counts as near-silent (dB relative to full scale)


def quality_problems(wav, sample_rate=16000):
    """What makes a waveform unusable for a speaker decision -> list of short texts (empty when none): near-silent
    (RMS below SILENCE_DBFS) or very short (under MIN_USEFUL_SECONDS)."""
    problems = []
    seconds = wav.shape[0] / float(sample_rate)
    if seconds < MIN_USEFUL_SECONDS:
        problems.append(f"very short ({seconds:.2f} s < {MIN_USEFUL_SECONDS} s)")
    rms = float(np.sqrt(np.mean(np.square(wav, dtype=np.float64)))) if wav.size else 0.0
    level = 20.0 * math.log10(rms) if rms > 0 else float("-inf")
    if level < SILENCE_DBFS:
        problems.append(f"near-silent (RMS {level:.1f} dBFS < {SILENCE_DBFS:g} dBFS)")
    return problems
