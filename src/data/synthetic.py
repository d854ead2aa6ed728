"""A small synthetic speaker corpus in the VoxCeleb layout, for tests, the demo and smoke runs.

Each synthetic speaker is a source-filter voice with its own
- pitch (mean f0, 85-250 Hz, and how much it moves),
- vocal tract (a length factor that scales all formants, plus a personal shift of each vowel's formants,
  formant bandwidths, glottal spectral tilt, breathiness, fricative colour),
- speaking rate (syllable length) and vowel habits.
An utterance is a string of syllables (optional fricative onset, a vowel with a pitch contour, an
attack/decay envelope) with short pauses, declining pitch, a per-video channel colour and a little noise.
Speakers overlap enough that verification is not trivial, and differ enough that a small ECAPA-TDNN
trained for a few CPU minutes separates them.

Layout written by ``make_corpus(root, ...)``::

    root/train/id00001/<11-char video id>/00001.wav     training speakers (VoxCeleb2-like)
    root/test/id10001/<video>/00001.wav                 held-out speakers (VoxCeleb1-like)
    root/trials.txt                                     "1 id10001/v/00001.wav id10001/w/00003.wav" (test/)
    root/musan/{noise,music,speech}/<source>/*.wav      coloured noise, tonal music, babble voices
    root/RIRS_NOISES/simulated_rirs/{smallroom,mediumroom}/RoomNNN/RoomNNN-NNNNN.wav

Everything is 16-bit 16 kHz mono WAV and is a deterministic function of ``seed``.

Command line::

    python -m src.data.synthetic --out data/synthetic --train_speakers 40 --test_speakers 10 --utts 20
"""
import json
import logging
import os
from dataclasses import dataclass

import numpy as np
from scipy.signal import butter, fftconvolve, lfilter, sosfilt
from tqdm import tqdm

from src.cli import run_command, setup_logging
from src.config import ArgumentParser
from src.data.audio import write_wav
from src.data.trials import write_trials

logger = logging.getLogger(__name__)

# Adult male formant targets F1..F4 in Hz for seven vowels (a, i, u, e, o, ae, er); a speaker scales them.
VOWEL_FORMANTS = np.array([
    [730, 1090, 2440, 3400],
    [270, 2290, 3010, 3700],
    [300, 870, 2240, 3300],
    [530, 1840, 2480, 3500],
    [570, 840, 2410, 3300],
    [660, 1720, 2410, 3450],
    [490, 1350, 1690, 3300],
], dtype=np.float64)
FORMANT_BANDWIDTHS = np.array([70.0, 100.0, 140.0, 180.0])
VIDEO_ID_ALPHABET = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"))

# Stream names keep the random draws of different parts of the corpus independent of each other.
_STREAMS = {"train": 1, "test": 2, "babble": 3, "utt": 4, "video": 5, "noise": 6, "music": 7, "speech": 8,
            "rir": 9, "trials": 10, "cnceleb": 11, "recordings": 12}
CNCELEB_GENRES = ("interview", "singing", "speech", "vlog", "drama", "entertainment", "recitation")


def _rng(seed, *keys):
    """A numpy Generator determined by the seed and a path of integer keys."""
    return np.random.default_rng(np.random.SeedSequence([int(seed)] + [int(k) for k in keys]))


@dataclass
class SyntheticSpeaker:
    """The parameters of one synthetic voice."""
    f0: float                  # mean pitch, Hz
    pitch_spread: float        # std of per-syllable pitch changes, in log units
    formant_sos: np.ndarray    # (num_vowels, 4, 6) second-order sections of the vowel resonators
    tilt: float                # glottal source low-pass pole (0..1, larger = darker voice)
    breathiness: float         # aspiration noise relative to the glottal pulses
    fricative_sos: np.ndarray  # (2, 6) band-pass for fricative onsets
    syllable_seconds: float    # mean syllable length (speaking rate)
    vowel_probs: np.ndarray    # (num_vowels,) how often the speaker uses each vowel


def _resonator_sos(freqs, bandwidths, sample_rate):
    """Cascade of unity-peak-gain two-pole resonators -> sos array (len(freqs), 6)."""
    r = np.exp(-np.pi * bandwidths / sample_rate)
    theta = 2 * np.pi * freqs / sample_rate
    gain = (1 - r) * np.sqrt(1 - 2 * r * np.cos(2 * theta) + r * r)
    sos = np.zeros((len(freqs), 6))
    sos[:, 0] = gain
    sos[:, 3] = 1.0
    sos[:, 4] = -2 * r * np.cos(theta)
    sos[:, 5] = r * r
    return sos


def random_speaker(rng, sample_rate=16000):
    """Draw a speaker: pitch and vocal-tract length are loosely tied (as in people), the rest is personal."""
    f0 = float(np.exp(rng.uniform(np.log(85), np.log(250))))
    # Higher voices tend to have shorter vocal tracts (higher formants), with personal scatter.
    tract = float(np.clip(0.85 + 0.35 * (np.log(f0 / 85) / np.log(250 / 85)) + rng.normal(0, 0.06), 0.8, 1.3))
    personal = np.exp(rng.normal(0, 0.07, size=VOWEL_FORMANTS.shape))
    freqs = np.minimum(VOWEL_FORMANTS * tract * personal, 0.45 * sample_rate)
    bandwidths = FORMANT_BANDWIDTHS * rng.uniform(0.7, 1.6)
    formant_sos = np.stack([_resonator_sos(f, bandwidths, sample_rate) for f in freqs])
    fricative_hz = rng.uniform(2500, 5500) * tract
    low, high = fricative_hz * 0.75 / (sample_rate / 2), min(fricative_hz * 1.3 / (sample_rate / 2), 0.95)
    return SyntheticSpeaker(
        f0=f0,
        pitch_spread=float(rng.uniform(0.03, 0.12)),
        formant_sos=formant_sos,
        tilt=float(rng.uniform(0.6, 0.9)),
        breathiness=float(rng.uniform(0.0, 0.25)),
        fricative_sos=butter(1, [low, high], btype="bandpass", output="sos"),
        syllable_seconds=float(rng.uniform(0.12, 0.26)),
        vowel_probs=rng.dirichlet(np.full(len(VOWEL_FORMANTS), 2.0)),
    )


def _raised_cosine_envelope(n, attack, release):
    """Amplitude envelope (n,) rising over ``attack`` and falling over ``release`` samples."""
    env = np.ones(n)
    attack, release = min(attack, n // 2), min(release, n // 2)
    if attack > 0:
        env[:attack] = 0.5 - 0.5 * np.cos(np.pi * np.arange(attack) / attack)
    if release > 0:
        env[n - release:] = 0.5 + 0.5 * np.cos(np.pi * np.arange(release) / release)
    return env


def synthesize_utterance(speaker, seconds, rng, sample_rate=16000, channel=(0.0, 1.0), noise=True):
    """One utterance of ``speaker`` -> float32 (round(seconds * sample_rate),), peak below 1.

    ``channel`` is ``(tilt, gain)`` of the recording channel (first-order colouring and level), shared by
    the utterances of one video. ``noise``: add white noise at 18-35 dB SNR (False: the voice alone).
    """
    total = int(round(seconds * sample_rate))
    out = np.zeros(total + sample_rate)  # room for the last syllable to finish
    pos = int(rng.uniform(0.03, 0.15) * sample_rate)
    f0_utt = speaker.f0 * np.exp(rng.normal(0, 0.05))
    while pos < total:
        declination = 1.0 - 0.12 * pos / total
        # Optional fricative onset: band-limited noise burst in the speaker's fricative colour.
        if rng.random() < 0.4:
            n = int(rng.uniform(0.03, 0.08) * sample_rate)
            burst = sosfilt(speaker.fricative_sos, rng.standard_normal(n))
            burst *= rng.uniform(0.01, 0.04) / (np.sqrt(np.mean(burst ** 2)) + 1e-12)
            out[pos:pos + n] += burst * _raised_cosine_envelope(n, n // 4, n // 3)
            pos += n
        # Vowel: glottal pulse train with a pitch glide, through the speaker's formant resonators.
        n = max(int(speaker.syllable_seconds * rng.uniform(0.6, 1.4) * sample_rate), 160)
        f0_syl = f0_utt * declination * np.exp(rng.normal(0, speaker.pitch_spread))
        glide = rng.normal(0, 0.08)
        vibrato = 0.01 * np.sin(2 * np.pi * 5.5 * np.arange(n) / sample_rate)
        f0 = f0_syl * np.exp(np.linspace(-glide, glide, n) + vibrato)
        phase = np.cumsum(f0) / sample_rate + rng.random()
        pulses = np.diff(np.floor(phase), prepend=np.floor(phase[0])).astype(np.float64)
        source = lfilter([1.0 - speaker.tilt], [1.0, -speaker.tilt], pulses)
        source += speaker.breathiness * 0.025 * rng.standard_normal(n)
        vowel = rng.choice(len(speaker.vowel_probs), p=speaker.vowel_probs)
        voiced = sosfilt(speaker.formant_sos[vowel], source)
        voiced *= rng.uniform(0.06, 0.1) / (np.sqrt(np.mean(voiced ** 2)) + 1e-12)
        out[pos:pos + n] += voiced * _raised_cosine_envelope(n, int(0.015 * sample_rate), int(0.03 * sample_rate))
        pos += n
        # Gap between syllables; now and then a longer pause between words.
        pos += int(rng.uniform(0.0, 0.03) * sample_rate)
        if rng.random() < 0.15:
            pos += int(rng.uniform(0.08, 0.3) * sample_rate)
    wav = out[:total]
    tilt, gain = channel
    wav = lfilter([1.0, tilt], [1.0], wav)
    wav = wav / (np.abs(wav).max() + 1e-9) * gain
    if not noise:
        return wav.astype(np.float32)
    snr_db = rng.uniform(18, 35)
    noise = rng.standard_normal(total)
    noise *= np.sqrt(np.mean(wav ** 2) / 10 ** (snr_db / 10))
    wav = wav + noise
    return (wav / max(1.0, np.abs(wav).max() / 0.99)).astype(np.float32)


def synthesize_recording(speaker, seconds, rng, silence_fraction=0.4, sample_rate=16000, turn_seconds=(1.5, 6.0),
                         rt60=0.25, snr_db=20.0):
    """A long recording of one ``speaker``: turns of speech spread over the whole recording with pauses between
    them, a little reverberation and background noise -> (float32 (round(seconds * sample_rate),), speech intervals
    [(start_s, end_s)]).

    ``silence_fraction`` of the recording is pause (before, between and after the turns, each pause at least
    0.4 s); turns last ``turn_seconds`` (uniform). The voice goes through a room impulse response of ``rt60``
    seconds (0: none); pink noise is added over the whole recording at ``snr_db`` below the voice's level. The
    intervals are where each turn's dry voice is above 1 % of its peak (its words, including their short inner
    pauses).
    """
    total = int(round(seconds * sample_rate))
    speech_budget = (1.0 - silence_fraction) * seconds
    turns = []
    while sum(turns) < speech_budget - 0.5 * turn_seconds[0] or not turns:
        turns.append(min(rng.uniform(*turn_seconds), max(speech_budget - sum(turns), turn_seconds[0])))
    pause_total = max(seconds - sum(turns), 0.4 * (len(turns) + 1))
    pauses = 0.4 + (pause_total - 0.4 * (len(turns) + 1)) * rng.dirichlet(np.ones(len(turns) + 1))
    dry = np.zeros(total)
    intervals, pos = [], pauses[0]
    channel = (rng.uniform(-0.5, 0.5), 0.5)
    for turn, pause in zip(turns, pauses[1:]):
        start = int(round(pos * sample_rate))
        voice = synthesize_utterance(speaker, turn, rng, sample_rate, channel, noise=False)[:max(total - start, 0)]
        dry[start:start + voice.size] = voice
        loud = np.flatnonzero(np.abs(voice) > 0.01 * np.abs(voice).max())
        if loud.size:
            intervals.append(((start + loud[0]) / sample_rate, (start + loud[-1] + 1) / sample_rate))
        pos += turn + pause
    wav = fftconvolve(dry, _rir(rng, sample_rate, rt60))[:total] if rt60 > 0 else dry
    in_speech = np.zeros(total, bool)
    for a, b in intervals:
        in_speech[int(a * sample_rate):int(b * sample_rate)] = True
    level = np.mean(wav[in_speech] ** 2) if in_speech.any() else 1e-4
    wav = wav + _coloured_noise(total, 1, rng) * np.sqrt(level / 10 ** (snr_db / 10))
    return (wav / max(1.0, np.abs(wav).max() / 0.9)).astype(np.float32), intervals


def video_id(rng):
    """An 11-character YouTube-like id."""
    return "".join(rng.choice(VIDEO_ID_ALPHABET, size=11))


def write_speaker_set(out_dir, first_id, num_speakers, utts_per_speaker, seconds, seed, stream,
                      videos_per_speaker=3, sample_rate=16000, progress=True):
    """Write ``num_speakers`` speakers as ``out_dir/idNNNNN/<video>/NNNNN.wav``.

    Returns {speaker: [relative utterance paths]}.
    """
    written = {}
    total = num_speakers * utts_per_speaker
    with tqdm(total=total, desc=f"synthesizing {os.path.basename(out_dir)}", disable=not progress,
              leave=False) as bar:
        for s in range(num_speakers):
            name = f"id{first_id + s:05d}"
            speaker = random_speaker(_rng(seed, _STREAMS[stream], s), sample_rate)
            vrng = _rng(seed, _STREAMS[stream], s, _STREAMS["video"])
            videos = [(video_id(vrng), (vrng.uniform(-0.6, 0.6), vrng.uniform(0.3, 0.9)))
                      for _ in range(videos_per_speaker)]
            written[name] = []
            for u in range(utts_per_speaker):
                urng = _rng(seed, _STREAMS[stream], s, _STREAMS["utt"], u)
                vid, channel = videos[u % videos_per_speaker]
                wav = synthesize_utterance(speaker, urng.uniform(*seconds), urng, sample_rate, channel)
                rel = f"{name}/{vid}/{u + 1:05d}.wav"
                write_wav(os.path.join(out_dir, rel), wav, sample_rate)
                written[name].append(rel)
                bar.update(1)
    return written


def make_trials(utterances, seed, per_utterance=1):
    """Balanced trials: per utterance ``per_utterance`` target and as many nontarget trials (a pair drawn twice is
    kept once) -> list of (label, enroll, test).

    ``utterances`` is {speaker: [relative paths]}; a target pair prefers another video of the speaker.
    """
    rng = _rng(seed, _STREAMS["trials"])
    speakers = sorted(utterances)
    trials = []
    for s, spk in enumerate(speakers):
        utts = utterances[spk]
        for enroll in utts:
            video = enroll.split("/")[1]
            others = [u for u in utts if u != enroll and u.split("/")[1] != video] or \
                     [u for u in utts if u != enroll]
            if not others:
                continue
            for _ in range(per_utterance):
                trials.append((1, enroll, others[rng.integers(len(others))]))
                other = utterances[speakers[(s + 1 + rng.integers(len(speakers) - 1)) % len(speakers)]]
                trials.append((0, enroll, other[rng.integers(len(other))]))
    return list(dict.fromkeys(trials))


def _coloured_noise(n, exponent, rng):
    """Noise with power spectrum ~ 1 / f**exponent (0 white, 1 pink, 2 brown), unit RMS."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.arange(len(spectrum), dtype=np.float64)
    freqs[0] = 1.0
    noise = np.fft.irfft(spectrum / freqs ** (exponent / 2), n)
    return noise / (np.sqrt(np.mean(noise ** 2)) + 1e-12)


def _music(seconds, rng, sample_rate):
    """Tonal 'music': overlapping harmonic notes from a pentatonic scale with decaying envelopes."""
    total = int(seconds * sample_rate)
    out = np.zeros(total + sample_rate)
    root = rng.uniform(110, 220)
    scale = root * 2 ** (np.array([0, 2, 4, 7, 9, 12, 14, 16, 19, 21]) / 12)
    for voice in range(rng.integers(2, 4)):
        pos = int(rng.uniform(0, 0.2) * sample_rate)
        while pos < total:
            n = int(rng.uniform(0.15, 0.8) * sample_rate)
            t = np.arange(n) / sample_rate
            f = scale[rng.integers(len(scale))] * (2 if voice == 0 else 1)
            harmonics = np.arange(1, 6)[:, None]
            note = (np.sin(2 * np.pi * f * harmonics * t) / harmonics ** 1.5).sum(axis=0)
            out[pos:pos + n] += note * np.exp(-t * rng.uniform(2, 8)) * _raised_cosine_envelope(n, 80, 400)
            pos += n
    out = out[:total]
    return out / (np.abs(out).max() + 1e-9) * 0.7


def _rir(rng, sample_rate, rt60):
    """Exponentially decaying impulse response: silence, a direct-path peak, sparse early reflections and a
    noise tail with -2..8 dB direct-to-reverberant energy ratio."""
    delay = int(rng.uniform(0.002, 0.02) * sample_rate)
    length = delay + int(min(1.2 * rt60, 1.0) * sample_rate)
    t = np.arange(length - delay) / sample_rate
    tail = rng.standard_normal(len(t)) * np.exp(-6.9 * t / rt60)
    tail[:int(0.002 * sample_rate)] = 0.0
    for _ in range(6):  # early reflections
        tail[int(rng.uniform(0.002, 0.03) * sample_rate)] += rng.uniform(1.0, 3.0) * rng.choice([-1, 1])
    tail *= np.sqrt(10 ** (-rng.uniform(-2, 8) / 10) / np.sum(tail ** 2))
    tail = np.clip(tail, -0.8, 0.8)  # the direct path stays the strongest peak
    h = np.zeros(length)
    h[delay:] = tail
    h[delay] = 1.0
    return h / np.abs(h).max() * 0.9


def write_musan(musan_dir, seed, sample_rate=16000, num_noise=6, num_music=4, num_speech=6, seconds=6.0):
    """A MUSAN-like folder: noise (white/pink/brown, some modulated), music (tonal), speech (synthetic voices)."""
    for i in range(num_noise):
        rng = _rng(seed, _STREAMS["noise"], i)
        noise = _coloured_noise(int(seconds * sample_rate), i % 3, rng)
        if i >= 3:  # slowly fluctuating level, like traffic or wind
            noise *= 0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.2, 1.0) * np.arange(len(noise)) / sample_rate)
        write_wav(os.path.join(musan_dir, "noise", "free-sound", f"noise-free-sound-{i:04d}.wav"),
                  0.7 * noise / np.abs(noise).max(), sample_rate)
    for i in range(num_music):
        write_wav(os.path.join(musan_dir, "music", "fma", f"music-fma-{i:04d}.wav"),
                  _music(seconds, _rng(seed, _STREAMS["music"], i), sample_rate), sample_rate)
    for i in range(num_speech):
        rng = _rng(seed, _STREAMS["speech"], i)
        speaker = random_speaker(_rng(seed, _STREAMS["babble"], i), sample_rate)
        wav = synthesize_utterance(speaker, seconds, rng, sample_rate, (rng.uniform(-0.5, 0.5), 0.8))
        write_wav(os.path.join(musan_dir, "speech", "librivox", f"speech-librivox-{i:04d}.wav"), wav, sample_rate)


def write_rirs(rir_dir, seed, sample_rate=16000, rooms_per_size=2, rirs_per_room=4):
    """An RIRS_NOISES/simulated_rirs-like folder: small rooms (RT60 0.2-0.45 s) and medium rooms (0.4-0.8 s)."""
    for size, (lo, hi) in (("smallroom", (0.2, 0.45)), ("mediumroom", (0.4, 0.8))):
        for room in range(1, rooms_per_size + 1):
            rng = _rng(seed, _STREAMS["rir"], lo * 100, room)
            rt60 = rng.uniform(lo, hi)
            for k in range(1, rirs_per_room + 1):
                path = os.path.join(rir_dir, size, f"Room{room:03d}", f"Room{room:03d}-{k:05d}.wav")
                write_wav(path, _rir(rng, sample_rate, rt60), sample_rate)


def make_corpus(root, num_train_speakers=40, num_test_speakers=10, utts_per_speaker=20, seconds=(2.0, 4.0),
                seed=0, videos_per_speaker=3, sample_rate=16000, augment_folders=True, progress=True,
                trials_per_utterance=1):
    """Write the whole synthetic corpus below ``root`` (see the module docstring for the layout).

    Args:
        seconds: (min, max) utterance length, drawn uniformly per utterance.
        augment_folders: also write the MUSAN-like and RIR-like folders.
        trials_per_utterance: target (and nontarget) trials per test utterance in trials.txt.

    Returns:
        dict of paths: train_dir, test_dir, trials, musan_dir, rir_dir (the last two None when
        ``augment_folders`` is False), plus num_trials.
    """
    root = os.path.abspath(root)
    os.makedirs(root, exist_ok=True)
    paths = {"train_dir": os.path.join(root, "train"), "test_dir": os.path.join(root, "test"),
             "trials": os.path.join(root, "trials.txt"), "musan_dir": None, "rir_dir": None}
    write_speaker_set(paths["train_dir"], 1, num_train_speakers, utts_per_speaker, seconds, seed, "train",
                      videos_per_speaker, sample_rate, progress)
    test = write_speaker_set(paths["test_dir"], 10001, num_test_speakers, utts_per_speaker, seconds, seed,
                             "test", videos_per_speaker, sample_rate, progress)
    trials = make_trials(test, seed, trials_per_utterance) if num_test_speakers >= 2 else []
    write_trials(trials, paths["trials"])
    paths["num_trials"] = len(trials)
    if augment_folders:
        paths["musan_dir"] = os.path.join(root, "musan")
        paths["rir_dir"] = os.path.join(root, "RIRS_NOISES", "simulated_rirs")
        write_musan(paths["musan_dir"], seed, sample_rate)
        write_rirs(paths["rir_dir"], seed, sample_rate)
    logger.info("synthetic corpus written to %s", root)
    return paths


def make_long_recordings(root, num_speakers=8, recordings_per_speaker=3, seconds=(150.0, 150.0), seed=0,
                         silence_fraction=(0.3, 0.5), snr_db=(5.0, 20.0), sample_rate=16000, progress=True):
    """Write long recordings of held-out synthetic speakers (``synthesize_recording``) -> dict of paths.

    ``root/test/idNNNNN/<recording>/00001.wav``: each recording ``seconds`` long (uniform in the range), with
    ``silence_fraction`` of pauses, reverberation (RT60 0.15-0.35 s) and pink noise at ``snr_db``;
    ``root/trials.txt``: every pair of recordings (VoxCeleb format); ``root/speech.json``: each recording's speech
    intervals in seconds (the truth a VAD is measured against).
    """
    root = os.path.abspath(root)
    test_dir = os.path.join(root, "test")
    keys, speech = [], {}
    with tqdm(total=num_speakers * recordings_per_speaker, desc="synthesizing recordings", disable=not progress,
              leave=False) as bar:
        for s in range(num_speakers):
            speaker = random_speaker(_rng(seed, _STREAMS["recordings"], s), sample_rate)
            for r in range(recordings_per_speaker):
                rng = _rng(seed, _STREAMS["recordings"], s, _STREAMS["utt"], r)
                wav, intervals = synthesize_recording(speaker, rng.uniform(*seconds), rng,
                                                      rng.uniform(*silence_fraction), sample_rate,
                                                      rt60=rng.uniform(0.15, 0.35), snr_db=rng.uniform(*snr_db))
                key = f"id{20001 + s:05d}/{video_id(rng)}/00001.wav"
                write_wav(os.path.join(test_dir, key), wav, sample_rate)
                keys.append(key)
                speech[key] = [[round(a, 4), round(b, 4)] for a, b in intervals]
                bar.update(1)
    trials = [(int(a.split("/")[0] == b.split("/")[0]), a, b) for i, a in enumerate(keys) for b in keys[i + 1:]]
    paths = {"test_dir": test_dir, "trials": write_trials(trials, os.path.join(root, "trials.txt")),
             "speech": os.path.join(root, "speech.json"), "num_trials": len(trials)}
    with open(paths["speech"], "w", encoding="utf-8") as f:
        json.dump(speech, f, indent=1)
    return paths


def make_cnceleb_corpus(root, num_dev_speakers=6, num_eval_speakers=4, utts_per_speaker=6, seconds=(2.0, 4.0),
                        seed=0, enroll_utts=2, sample_rate=16000, progress=True):
    """Write a small corpus in CN-Celeb1's layout (src/data/cnceleb.py) below ``root`` -> dict of paths.

    Speakers id00000.. are dev (training) speakers, the next ``num_eval_speakers`` are evaluation speakers. Each
    utterance is ``data/<speaker>/<genre>-<session>-<utt>.flac``; an evaluation speaker's first ``enroll_utts``
    utterances are its enrolment (``eval/enroll/<speaker>-enroll.flac`` holds them joined), the others are copied to
    ``eval/test/<speaker>-<genre>-<session>-<utt>.flac``. ``eval/lists`` holds enroll.map, enroll.lst, test.lst and
    trials.lst (every enrolment speaker against every test utterance), naming ``.wav`` files as CN-Celeb's lists do.
    """
    root = os.path.abspath(root)
    lists_dir = os.path.join(root, "eval", "lists")
    os.makedirs(lists_dir, exist_ok=True)
    enroll_map, tests = {}, []
    for s in tqdm(range(num_dev_speakers + num_eval_speakers), desc="synthesizing CN-Celeb layout",
                  disable=not progress, leave=False):
        name = f"id{s:05d}"
        speaker = random_speaker(_rng(seed, _STREAMS["cnceleb"], s), sample_rate)
        enrolment = []
        for u in range(utts_per_speaker):
            rng = _rng(seed, _STREAMS["cnceleb"], s, _STREAMS["utt"], u)
            genre = CNCELEB_GENRES[int(rng.integers(len(CNCELEB_GENRES)))]
            utt = f"{genre}-{u // 3 + 1:02d}-{u % 3 + 1:03d}"
            wav = synthesize_utterance(speaker, rng.uniform(*seconds), rng, sample_rate,
                                       (rng.uniform(-0.6, 0.6), rng.uniform(0.3, 0.9)))
            write_wav(os.path.join(root, "data", name, utt + ".flac"), wav, sample_rate)
            if s < num_dev_speakers:
                continue
            if u < enroll_utts:
                enrolment.append(wav)
                enroll_map.setdefault(f"{name}-enroll", []).append(f"{name}/{utt}.wav")
            else:
                write_wav(os.path.join(root, "eval", "test", f"{name}-{utt}.flac"), wav, sample_rate)
                tests.append(f"test/{name}-{utt}.wav")
        if enrolment:
            write_wav(os.path.join(root, "eval", "enroll", f"{name}-enroll.flac"), np.concatenate(enrolment),
                      sample_rate)
    os.makedirs(os.path.join(root, "dev"), exist_ok=True)
    with open(os.path.join(root, "dev", "dev.lst"), "w", encoding="utf-8") as f:
        f.writelines(f"id{s:05d}\n" for s in range(num_dev_speakers))
    paths = {"root": root, "data_dir": os.path.join(root, "data"), "eval_dir": os.path.join(root, "eval"),
             "trials": os.path.join(lists_dir, "trials.lst"), "enroll_map": os.path.join(lists_dir, "enroll.map"),
             "enroll_list": os.path.join(lists_dir, "enroll.lst")}
    with open(paths["enroll_map"], "w", encoding="utf-8") as f:
        f.writelines(f"{spk} {' '.join(utts)}\n" for spk, utts in enroll_map.items())
    with open(paths["enroll_list"], "w", encoding="utf-8") as f:
        f.writelines(f"{spk} enroll/{spk}.wav\n" for spk in enroll_map)
    with open(os.path.join(lists_dir, "test.lst"), "w", encoding="utf-8") as f:
        f.writelines(f"{t}\n" for t in tests)
    with open(paths["trials"], "w", encoding="utf-8") as f:
        for spk in enroll_map:
            speaker = spk[:-len("-enroll")]
            f.writelines(f"{spk} {t} {int(t.startswith(f'test/{speaker}-'))}\n" for t in tests)
    paths["num_trials"] = len(enroll_map) * len(tests)
    return paths


def main(argv=None):
    parser = ArgumentParser(description="Write a synthetic speaker corpus in the VoxCeleb layout.")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--train_speakers", type=int, default=40)
    parser.add_argument("--test_speakers", type=int, default=10)
    parser.add_argument("--utts", type=int, default=20, help="utterances per speaker")
    parser.add_argument("--videos", type=int, default=3, help="videos (recording sessions) per speaker")
    parser.add_argument("--min_seconds", type=float, default=2.0)
    parser.add_argument("--max_seconds", type=float, default=4.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no_augment_folders", action="store_true", help="skip the MUSAN-like and RIR folders")
    parser.add_argument("--trials_per_utt", type=int, default=1,
                        help="target (and nontarget) trials per test utterance")
    parser.add_argument("--layout", choices=("voxceleb", "cnceleb", "recordings"), default="voxceleb",
                        help="cnceleb: CN-Celeb1's layout and eval lists instead (--train_speakers dev speakers, "
                             "--test_speakers evaluation speakers, 2 enrolment utterances each); recordings: long "
                             "recordings with pauses and noise (--test_speakers speakers, --utts recordings each, "
                             "--min_seconds/--max_seconds long), all pairs as trials")
    args = parser.parse_args(argv)
    setup_logging()
    if args.layout == "recordings":
        print(json.dumps(make_long_recordings(args.out, args.test_speakers, args.utts,
                                              (args.min_seconds, args.max_seconds), args.seed), indent=2))
        return 0
    if args.layout == "cnceleb":
        paths = make_cnceleb_corpus(args.out, args.train_speakers, args.test_speakers, args.utts,
                                    (args.min_seconds, args.max_seconds), args.seed)
        print(json.dumps(paths, indent=2))
        return 0
    paths = make_corpus(args.out, args.train_speakers, args.test_speakers, args.utts,
                        (args.min_seconds, args.max_seconds), args.seed, args.videos,
                        augment_folders=not args.no_augment_folders, trials_per_utterance=args.trials_per_utt)
    print(json.dumps(paths, indent=2))
    return 0


if __name__ == "__main__":
    run_command(main)
