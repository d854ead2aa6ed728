"""Generated conversations with an exact reference: multi-speaker recordings and their RTTM, for diarization.

The voices are synthetic speakers (src/data/synthetic.py) drawn from their own random stream, so no corpus speaker
(train or test) appears. A conversation of ``num_speakers`` voices is a sequence of turns:

- each turn is one utterance of 0.5-10 s (log-uniform: short turns are common), by a speaker other than the last;
- between turns a pause of 0.1-1.5 s, or, with a probability set from ``overlap``, the next speaker starts before
  the current one ends (0.2-2 s early, at most half of the current turn): about ``overlap`` of the speech time has
  two voices; the fraction actually reached is measured from the turns and stored;
- each speaker has its own level and channel colour; optionally a reverberant room per speaker (the RTTM keeps the
  dry boundaries, as human references do) and background noise at an SNR.

A turn's reference boundaries are its audible extent: the utterance is trimmed to where its smoothed envelope
exceeds 2 % of its peak before it is placed, so the RTTM is exact to a few milliseconds.

Audio is written while it is generated (memory holds a few turns, not the recording), so an hour is no harder than a
minute. Layout written by ``make_conversations(out, ...)``::

    out/wav/conv0001.wav            16-bit mono WAV
    out/rttm/conv0001.rttm          the reference turns
    out/recordings.txt              one WAV path per line (the diarization command's --list)
    out/conversations.json          per recording: speakers, seconds, overlap (measured), noise SNR, reverb

Command line::

    python -m src.data.conversations --out data/conversations --count 20 --speakers 2 8 --minutes 1 3
"""
import dataclasses
import json
import logging
import os

import numpy as np
import soundfile as sf
from scipy.ndimage import maximum_filter1d
from scipy.signal import fftconvolve
from tqdm import tqdm

from src.cli import run_command, setup_logging
from src.config import ArgumentParser
from src.data.synthetic import _coloured_noise, _rir, _rng, random_speaker, synthesize_utterance
from src.diarize.rttm import write_rttm
from src.diarize.segments import Segment, overlap_fraction
from src.files import write_atomically

logger = logging.getLogger(__name__)

STREAM = 20             # random stream of the conversation voices (src/data/synthetic.py uses 1-10)
MIX_GAIN = 0.5          # every voice is scaled by this before mixing, so overlapped speech stays below 1
EARLY_SECONDS = (0.2, 2.0)


@dataclasses.dataclass(frozen=True)
class ConversationSettings:
    """One conversation: num_speakers voices, about ``seconds`` long; turn and pause lengths in seconds (min, max);
    overlap: target fraction of speech with two voices; noise_snr: background noise in dB (None: none);
    reverb: each voice in its own reverberant room."""
    num_speakers: int = 3
    seconds: float = 60.0
    turn_seconds: tuple = (0.5, 10.0)
    pause_seconds: tuple = (0.1, 1.5)
    overlap: float = 0.1
    noise_snr: float = None
    reverb: bool = False
    sample_rate: int = 16000


def _overlap_probability(settings):
    """Probability that a turn starts before the last ends, so that about ``overlap`` of speech is overlapped:
    overlap time per turn p * E[early] over speech time per turn E[turn] - p * E[early]. E[early] is the mean of
    min(early draw, half the turn) over the turn-length distribution (a fixed-seed estimate)."""
    rng = np.random.default_rng(0)
    low, high = settings.turn_seconds
    turn = np.exp(rng.uniform(np.log(low), np.log(high), 20000))
    early = np.minimum(rng.uniform(*EARLY_SECONDS, 20000), turn / 2)
    r = settings.overlap
    return float(min(1.0, r * turn.mean() / (early.mean() * (1 + r))))


def _audible(wav, sample_rate):
    """(first, last + 1) samples where the 20 ms max envelope exceeds 2 % of the peak."""
    envelope = maximum_filter1d(np.abs(wav), int(0.02 * sample_rate))
    loud = np.flatnonzero(envelope > 0.02 * envelope.max())
    return (int(loud[0]), int(loud[-1]) + 1) if loud.size else (0, 0)


def write_conversation(wav_path, rttm_path, name, settings, seed):
    """Generate one conversation into ``wav_path`` (streamed) and its turns into ``rttm_path`` -> info dict
    (speakers, seconds, overlap measured from the turns, noise_snr, reverb, turns)."""
    rate = settings.sample_rate
    rng = _rng(seed, STREAM, 1)
    voices = rng.choice(100000, settings.num_speakers, replace=False)
    speakers = [random_speaker(_rng(seed, STREAM, 2, int(v)), rate) for v in voices]
    names = [f"spk{int(v):05d}" for v in voices]
    channels = [(rng.uniform(-0.5, 0.5), rng.uniform(0.4, 0.9)) for _ in speakers]
    rooms = [_rir(rng, rate, rng.uniform(0.2, 0.6)) for _ in speakers] if settings.reverb else None
    p_early = _overlap_probability(settings)
    total = int(round(settings.seconds * rate))
    turns, previous, ended = [], None, 0          # ended: the latest end of the turns before the current one
    buffer, buffer_start = np.zeros(0, np.float32), 0        # samples from buffer_start on are not final yet
    speech_power, noise_rng = [], _rng(seed, STREAM, 3)
    tmp = wav_path + ".tmp.wav"
    os.makedirs(os.path.dirname(os.path.abspath(wav_path)), exist_ok=True)
    try:
        with sf.SoundFile(tmp, "w", rate, 1, "PCM_16") as out:
            def flush(until):
                nonlocal buffer, buffer_start
                if until > buffer_start + buffer.size:                 # silence up to ``until``
                    buffer = np.concatenate([buffer, np.zeros(until - buffer_start - buffer.size, np.float32)])
                block = buffer[:max(0, until - buffer_start)]
                if settings.noise_snr is not None and block.size:
                    level = np.sqrt(np.mean(speech_power)) if speech_power else 0.05
                    noise = _coloured_noise(block.size, 1.0, noise_rng) * level * 10 ** (-settings.noise_snr / 20)
                    block = block + noise.astype(np.float32)
                out.write(np.clip(block, -1.0, 1.0))
                buffer, buffer_start = buffer[block.size:], buffer_start + block.size

            start = int(rng.uniform(0.2, 1.0) * rate)
            while start < total:
                who = rng.choice([s for s in range(len(speakers)) if s != previous or len(speakers) == 1])
                low, high = settings.turn_seconds
                seconds = float(np.exp(rng.uniform(np.log(low), np.log(high))))
                wav = synthesize_utterance(speakers[who], seconds + 0.3, rng, rate, channels[who])
                first, last = _audible(wav, rate)
                wav = wav[first:last][:total - start] * MIX_GAIN        # the recording ends at ``seconds``
                if wav.size < int(0.2 * rate):
                    if total - start < int(0.2 * rate):
                        break
                    continue
                turns.append(Segment(round(start / rate, 3), round((start + wav.size) / rate, 3), names[who]))
                speech_power.append(float(np.mean(wav ** 2)))
                if rooms is not None:
                    wav = fftconvolve(wav, rooms[who])[:wav.size + rate // 2].astype(np.float32)
                end = min(start + wav.size, total)
                wav = wav[:end - start]
                flush(start)                                   # later turns start after this one did
                if end > buffer_start + buffer.size:
                    buffer = np.concatenate([buffer, np.zeros(end - buffer_start - buffer.size, np.float32)])
                buffer[start - buffer_start:end - buffer_start] += wav
                dry_end = int(round(turns[-1].end * rate))
                if rng.random() < p_early and len(speakers) > 1:
                    early = int(rng.uniform(*EARLY_SECONDS) * rate)
                    next_start = max(dry_end - min(early, (dry_end - start) // 2), ended, start + 1)   # never 3 voices
                else:
                    next_start = max(dry_end, ended) + int(rng.uniform(*settings.pause_seconds) * rate)
                ended = max(ended, dry_end)
                previous, start = who, next_start
            buffer = buffer[:total - buffer_start]
            flush(total)
        os.replace(tmp, wav_path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    write_rttm(rttm_path, name, turns)
    return {"speakers": settings.num_speakers, "seconds": total / rate, "overlap": round(overlap_fraction(turns), 4),
            "noise_snr": settings.noise_snr, "reverb": settings.reverb, "turns": len(turns)}


def make_conversations(out, count, speakers=(2, 8), minutes=(1.0, 3.0), overlap=(0.0, 0.2), noise_prob=0.0,
                       noise_snr=(5.0, 20.0), reverb_prob=0.0, seed=0, progress=True):
    """Write ``count`` conversations below ``out`` (layout: module docstring) -> dict name -> info.

    Per conversation the number of speakers is drawn from ``speakers`` (inclusive), the length from ``minutes``, the
    overlap target from ``overlap``; with probability ``noise_prob`` noise at an SNR from ``noise_snr`` (dB), with
    ``reverb_prob`` reverberation. Conversations already written (WAV and RTTM present, same settings) are kept.
    """
    catalogue_path = os.path.join(out, "conversations.json")
    catalogue = {}
    if os.path.isfile(catalogue_path):
        with open(catalogue_path, encoding="utf-8") as f:
            catalogue = json.load(f)
    rng = _rng(seed, STREAM, 0)
    paths = []
    for i in tqdm(range(count), desc="conversations", unit="rec", disable=not progress):
        settings = ConversationSettings(
            num_speakers=int(rng.integers(speakers[0], speakers[1] + 1)),
            seconds=float(rng.uniform(*minutes) * 60), overlap=float(rng.uniform(*overlap)),
            noise_snr=float(rng.uniform(*noise_snr)) if rng.random() < noise_prob else None,
            reverb=bool(rng.random() < reverb_prob))
        name = f"conv{i + 1:04d}"
        wav_path = os.path.join(out, "wav", name + ".wav")
        rttm_path = os.path.join(out, "rttm", name + ".rttm")
        wanted = {"seed": seed, **dataclasses.asdict(settings)}
        paths.append(wav_path)
        known = catalogue.get(name, {})
        if os.path.isfile(wav_path) and os.path.isfile(rttm_path) and known.get("settings") == json.loads(
                json.dumps(wanted)):
            continue
        info = write_conversation(wav_path, rttm_path, name, settings, seed * 100003 + i)
        catalogue[name] = dict(info, settings=wanted)
        write_atomically(catalogue_path, "w", lambda f: json.dump(catalogue, f, indent=1))
    write_atomically(os.path.join(out, "recordings.txt"), "w",
                     lambda f: f.write("".join(os.path.abspath(p) + "\n" for p in paths)))
    logger.info("%d conversations in %s", count, out)
    return {name: catalogue[name] for name in sorted(catalogue) if name <= f"conv{count:04d}"}


def main(argv=None):
    parser = ArgumentParser(description="Write generated multi-speaker conversations with exact RTTM references.")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--count", type=int, default=10, help="number of conversations")
    parser.add_argument("--speakers", type=int, nargs=2, default=[2, 8], metavar=("MIN", "MAX"),
                        help="speakers per conversation, inclusive range (2-8)")
    parser.add_argument("--minutes", type=float, nargs=2, default=[1.0, 3.0], metavar=("MIN", "MAX"),
                        help="length in minutes (1-60)")
    parser.add_argument("--overlap", type=float, nargs=2, default=[0.0, 0.2], metavar=("MIN", "MAX"),
                        help="target fraction of speech with two voices (0-0.2)")
    parser.add_argument("--noise_prob", type=float, default=0.0, help="probability of background noise")
    parser.add_argument("--noise_snr", type=float, nargs=2, default=[5.0, 20.0], metavar=("MIN", "MAX"),
                        help="SNR range of the background noise, dB")
    parser.add_argument("--reverb_prob", type=float, default=0.0, help="probability of reverberation")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not 1 <= args.speakers[0] <= args.speakers[1]:
        raise ValueError(f"--speakers: expected 1 <= MIN <= MAX, got {args.speakers}")
    if not 0 < args.minutes[0] <= args.minutes[1]:
        raise ValueError(f"--minutes: expected 0 < MIN <= MAX, got {args.minutes}")
    if not 0 <= args.overlap[0] <= args.overlap[1] < 1:
        raise ValueError(f"--overlap: expected 0 <= MIN <= MAX < 1, got {args.overlap}")
    setup_logging()
    catalogue = make_conversations(args.out, args.count, tuple(args.speakers), tuple(args.minutes),
                                   tuple(args.overlap), args.noise_prob, tuple(args.noise_snr), args.reverb_prob,
                                   args.seed)
    for name, info in catalogue.items():
        print(f"{name}: {info['speakers']} speakers, {info['seconds']:.0f} s, {100 * info['overlap']:.1f} % overlap, "
              f"{info['turns']} turns")
    return 0


if __name__ == "__main__":
    run_command(main)
