"""Speaker embeddings of full-length utterances: bucketed batches, one compiled graph per bucket, disk cache.

Shared by eval.py and ``python -m src.evaluate.verify``.

How a set of utterances is embedded (``extract_embeddings``):

1. Each file's length is read from its header. What of it is embedded is planned by src/recordings/windows.py
   (``Batching.vad`` and ``Batching.long_audio``): without VAD the whole file, with VAD its speech regions joined;
   speech longer than ``max_seconds`` is cut into windows whose embeddings are averaged (``long_audio`` "windows")
   or cropped to its first ``max_seconds`` (``long_audio`` "crop", with a warning saying how many were cropped).
   A file in which the VAD finds no speech is embedded whole, with a warning naming it.
   The pieces' lengths are grouped into a few buckets (``bucket_seconds``, plus ``max_seconds`` as the last
   bucket); a piece is zero-padded up to its bucket's length.
2. Every batch of a bucket has the same shape (batch_size, bucket_samples): the last batch is filled up with
   dummy rows that are dropped afterwards. So the network sees at most one input shape per bucket, and GRAPH mode
   compiles at most ``len(buckets)`` graphs however many distinct lengths there are.
3. The embedder (src.model.embedder.Embedder) computes features + ECAPA-TDNN in one graph from (wav, wav_lens); the
   valid lengths mask the padding, so an utterance gets the same embedding in a padded batch as alone.
4. Audio of the next batch is read in a background thread while the current batch runs.

Cache (``EmbeddingCache``, e.g. ``emb.npz``): ``keys`` (N,) str, ``embeddings`` (N, D) float32 and ``stamps`` (N,)
str (each file's size and modification time when it was embedded), plus a JSON sidecar ``emb.json`` with the
``fingerprint`` (``cache_fingerprint``: parameter hash, embedder settings, outputs, audio root, ``max_seconds``,
VAD and long-audio settings)
and ``info`` for people to read. A cache is used only when its fingerprint matches, and an entry only while its
file's stamp is unchanged; missing entries are computed, and the cache is rewritten every ``save_every_seconds``
and when extraction stops for any reason, so an interrupted run keeps what it computed.

Example::

    embedder = load_embedder(cfg, "ecapa.ckpt")          # src/model/embedder.py: the folded inference network
    emb = extract_embeddings(embedder, ["id10270/x6uYqmx31kE/00001.wav"], "/data/voxceleb1/wav", Batching())
    emb["id10270/x6uYqmx31kE/00001.wav"].shape                # (192,)
"""
import concurrent.futures
import dataclasses
import json
import logging
import math
import os
import time
import zipfile

import numpy as np
import mindspore as ms
from mindspore import nn
from tqdm import tqdm

from src.checkpoint import parameters_sha256, read_embedding_mean
from src.data.audio import AudioError, audio_info, quality_problems, read_audio
from src.data.lists import cohort_utterances
from src.device import CompileLogged
from src.evaluate.scoring import mean_embedding
from src.files import write_atomically
from src.model.embedder import embedder_settings, min_samples as shortest_input
from src.recordings.vad import VadSettings
from src.recordings.windows import LongAudio, RecordingPlan, plan_recording, weighted_mean

logger = logging.getLogger(__name__)

MIN_SAMPLES = shortest_input({})        # 5 frames of the default (SpeechBrain) front end; Kaldi's needs 1040


# ---------------------------------------------------------------- buckets
@dataclasses.dataclass(frozen=True)
class Batching:
    """How utterances are grouped into fixed-shape batches.

    sample_rate (Hz); bucket_seconds: bucket lengths below ``max_seconds``; max_seconds: the last bucket (longer
    speech is windowed or cropped, by ``long_audio``); batch_size: utterances per batch; batch_seconds: at most this much padded audio
    per batch (long buckets get smaller batches); min_samples: the shortest utterance the front end and network
    take (src.model.embedder.min_samples); vad: a src.recordings.vad.VadSettings (which samples are speech);
    long_audio: a src.recordings.windows.LongAudio (speech longer than ``max_seconds``: windows or crop).
    """
    sample_rate: int = 16000
    bucket_seconds: tuple = (3, 5, 8, 12, 20, 30)
    max_seconds: float = 60.0
    batch_size: int = 16
    batch_seconds: float = 240.0
    min_samples: int = MIN_SAMPLES
    vad: VadSettings = VadSettings()
    long_audio: LongAudio = LongAudio()

    @classmethod
    def from_recipe(cls, cfg):
        """The recipe's keys sample_rate, bucket_seconds, max_eval_seconds, eval_batch_size, eval_batch_seconds, the
        shortest input of its front_end, its VAD keys (vad, vad_*) and long-audio keys (long_audio, window_*)."""
        return cls(int(cfg.sample_rate), tuple(float(s) for s in cfg.bucket_seconds), float(cfg.max_eval_seconds),
                   int(cfg.eval_batch_size), float(cfg.eval_batch_seconds), shortest_input(cfg),
                   VadSettings.from_recipe(cfg), LongAudio.from_recipe(cfg))

    @property
    def max_samples(self):
        return int(round(self.max_seconds * self.sample_rate))

    def speech_fingerprint(self):
        """The VAD and long-audio settings an embedding depends on -> dict."""
        return {"vad": self.vad.fingerprint(), "long_audio": self.long_audio.fingerprint()}

    def plan_file(self, path, num_samples, resample=False):
        """What of the audio file ``path`` (``num_samples`` long) is embedded -> src.recordings.windows.RecordingPlan."""
        return plan_recording(path, num_samples, self.vad, self.long_audio, self.max_samples, self.min_samples,
                              self.sample_rate, resample)

    def bucket_lengths(self):
        """Bucket lengths in samples, ascending: ``bucket_seconds`` up to ``max_seconds``, then that maximum."""
        edges = sorted(float(s) for s in self.bucket_seconds if float(s) < self.max_seconds) + [self.max_seconds]
        lengths = sorted({int(round(s * self.sample_rate)) for s in edges})
        if lengths[0] < self.min_samples:
            raise ValueError(f"bucket_seconds: buckets shorter than {self.min_samples / self.sample_rate} s cannot be "
                             f"embedded")
        return lengths

    def batch_size_for(self, bucket_samples):
        """Utterances per batch of a bucket: batch_size, lowered so a batch holds <= batch_seconds of audio."""
        seconds = bucket_samples / float(self.sample_rate)
        return max(1, min(self.batch_size, int(self.batch_seconds // seconds)))

    def plan(self, lengths):
        """Group utterances into fixed-shape batches.

        ``lengths``: dict key -> samples. Returns a list of ``(bucket_samples, keys)`` with at most
        ``batch_size_for(bucket_samples)`` keys each, and the list of keys longer than ``max_seconds``.
        """
        buckets = self.bucket_lengths()
        members = {b: [] for b in buckets}
        cropped = []
        for key in sorted(lengths, key=lambda k: (lengths[k], k)):
            n = lengths[key]
            if n > buckets[-1]:
                cropped.append(key)
            members[next((b for b in buckets if b >= n), buckets[-1])].append(key)
        batches = []
        for bucket, keys in members.items():
            size = self.batch_size_for(bucket)
            batches += [(bucket, keys[i:i + size]) for i in range(0, len(keys), size)]
        return batches, cropped


# ---------------------------------------------------------------- files
def audio_path(root, key):
    """Where the audio of ``key`` is: ``root/key``, or ``key`` itself when it is absolute or there is no root."""
    return key if not root or os.path.isabs(key) else os.path.join(root, key)


def file_stamp(path):
    """A file's identity for the cache: its size and modification time (nanoseconds)."""
    info = os.stat(path)
    return f"{info.st_size}:{info.st_mtime_ns}"


def expected_samples(path, sample_rate, resample, shortest=MIN_SAMPLES):
    """Samples ``read_audio`` will return for ``path``, from the file header; fewer than ``shortest`` (or none) is
    an AudioError."""
    frames, rate, _ = audio_info(path)
    if rate != sample_rate:
        if not resample:
            raise AudioError(f"{path}: sample rate is {rate} Hz, expected {sample_rate} Hz")
        g = math.gcd(int(rate), int(sample_rate))
        frames = math.ceil(frames * (sample_rate // g) / (rate // g))
    if frames == 0:
        raise AudioError(f"{path}: the file holds no audio (0 samples)")
    if frames < shortest:
        raise AudioError(f"{path}: {frames} samples is too short; the network needs at least {shortest} "
                         f"samples ({shortest / sample_rate:.2f} s)")
    return frames


def embedded_seconds(keys, root, batching, resample=False):
    """Seconds of audio each utterance's embedding saw -> dict key -> float: its speech (the whole file without VAD;
    with VAD the regions, remembered from the extraction), at most ``batching.max_seconds`` when long audio is
    cropped."""
    rate, seconds = batching.sample_rate, {}
    for k in keys:
        path = audio_path(root, k)
        plan = batching.plan_file(path, expected_samples(path, rate, resample, batching.min_samples), resample)
        speech = plan.speech_samples / rate
        seconds[k] = min(speech, batching.max_seconds) if batching.long_audio.mode == "crop" else speech
    return seconds


def save_embeddings(path, embeddings, meta=None, stamps=None):
    """Write dict key -> (D,) as ``path`` (.npz with ``keys``, ``embeddings`` and, when given, ``stamps`` (dict
    key -> str)) and ``meta`` as its JSON sidecar. Both go to temporary names first, so a crash never leaves half a
    file; a failed write leaves no temporary file behind."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    keys = list(embeddings)
    matrix = np.stack([embeddings[k] for k in keys]).astype(np.float32) if keys else np.zeros((0, 0), np.float32)
    arrays = {"keys": np.array(keys, dtype=str), "embeddings": matrix}
    if stamps is not None:
        arrays["stamps"] = np.array([stamps[k] for k in keys], dtype=str)
    write_atomically(path, "wb", lambda f: np.savez(f, **arrays))
    if meta is not None:
        write_atomically(sidecar_path(path), "w",
                          lambda f: json.dump(dict(meta, num_keys=len(keys)), f, indent=2))
    return path


def load_embeddings(path, with_stamps=False):
    """Read a file written by ``save_embeddings`` -> dict key -> (D,) float32 (and dict key -> stamp when
    ``with_stamps``). Errors name the file."""
    try:
        with np.load(path) as data:
            if "keys" not in data or "embeddings" not in data:
                raise ValueError(f"{path}: expected arrays 'keys' and 'embeddings' in the .npz file")
            keys = [str(k) for k in data["keys"]]
            embeddings = dict(zip(keys, data["embeddings"]))
            stamps = dict(zip(keys, (str(s) for s in data["stamps"]))) if "stamps" in data else {}
    except (OSError, EOFError, KeyError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path}: not a readable embedding file ({err})") from None
    return (embeddings, stamps) if with_stamps else embeddings


def sidecar_path(path):
    return os.path.splitext(path)[0] + ".json"


def cache_fingerprint(model, settings, root, max_seconds, model_id=None, speech=None):
    """What a cache's embeddings depend on: the weights (``model_id``, default the hash of ``model``'s parameters),
    the embedder ``settings`` (src.model.embedder.embedder_settings), the outputs, the audio root, the longest
    bucket and ``speech`` (``Batching.speech_fingerprint``: VAD and long-audio settings)."""
    model_id = model_id or (parameters_sha256(model.get_parameters()) if isinstance(model, nn.Cell) else None)
    if model_id is None:
        raise ValueError("embedding cache: the model has no parameters to hash; pass model_id")
    fingerprint = {"model": model_id, "outputs": list(getattr(model, "outputs", ["custom"])),
                   "root": os.path.abspath(root) if root else "", "settings": dict(settings),
                   "max_seconds": float(max_seconds)}
    if speech is not None:
        fingerprint["speech"] = dict(speech)
    return json.loads(json.dumps(fingerprint))


@dataclasses.dataclass
class EmbeddingCache:
    """Embeddings on disk for one fingerprint (see the module docstring); ``info`` is stored for people to read."""
    path: str
    fingerprint: dict
    info: dict = dataclasses.field(default_factory=dict)

    def load(self):
        """-> (dict key -> embedding, dict key -> stamp) of the entries made with this fingerprint ({} if none)."""
        if not os.path.isfile(self.path) or not os.path.isfile(sidecar_path(self.path)):
            return {}, {}
        try:
            with open(sidecar_path(self.path), encoding="utf-8") as f:
                meta = json.load(f)
            if meta.get("fingerprint") != self.fingerprint:
                logger.info("embedding cache %s was made by another model/config/root; recomputing", self.path)
                return {}, {}
            return load_embeddings(self.path, with_stamps=True)
        except (OSError, ValueError) as err:
            logger.warning("embedding cache %s is damaged (%s); recomputing it", self.path, err)
            return {}, {}

    def save(self, embeddings, stamps):
        save_embeddings(self.path, embeddings, {"fingerprint": self.fingerprint, "info": self.info}, stamps)


# ---------------------------------------------------------------- extraction
def _load_batch(bucket, items, batch_size, read, sample_rate):
    """Read one batch -> (wav (batch_size, bucket) float32, wav_lens (batch_size,) int32, {item: quality problems});
    dummy rows at the end."""
    wav = np.zeros((batch_size, bucket), np.float32)
    lens = np.full((batch_size,), bucket, np.int32)       # dummy rows: full length (any valid length works)
    problems = {}
    for row, item in enumerate(items):
        audio = read(item)[:bucket]
        wav[row, :audio.size] = audio
        lens[row] = audio.size
        found = quality_problems(audio, sample_rate)
        if found:
            problems[item] = found
    return wav, lens, problems


def _run(model, wav, lens):
    out = model(ms.Tensor(wav), ms.Tensor(lens))
    return out.asnumpy() if hasattr(out, "asnumpy") else np.asarray(out)


def embed_items(model, lengths, read, batching, progress=True, on_batch=None):
    """Embed pieces of audio of any origin in bucketed fixed-shape batches -> dict item -> (D,) float32.

    Args:
        model: as in ``extract_embeddings``.
        lengths: dict item -> samples (items: hashable and sortable, e.g. keys or (key, index) pairs).
        read: item -> float32 (samples,) audio; called from a background thread one batch ahead.
        batching: a ``Batching`` (buckets and batch sizes; pieces longer than its ``max_seconds`` are cropped).
        on_batch: called after every batch with (dict item -> embedding, dict item -> quality problems).
    """
    if isinstance(model, nn.Cell):
        model.set_train(False)
        model = CompileLogged(model, "embedding")
    batches, _ = batching.plan(lengths)
    result = {}
    bar = tqdm(total=len(lengths), desc="embeddings", unit="piece", disable=not progress)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as reader:
        def submit(i):
            bucket, items = batches[i]
            return reader.submit(_load_batch, bucket, items, batching.batch_size_for(bucket), read,
                                 batching.sample_rate)
        pending = submit(0) if batches else None
        for i, (bucket, items) in enumerate(batches):
            wav, lens, problems = pending.result()
            pending = submit(i + 1) if i + 1 < len(batches) else None
            out = _run(model, wav, lens)
            done = {item: out[row].astype(np.float32) for row, item in enumerate(items)}
            result.update(done)
            bar.update(len(items))
            if on_batch is not None:
                on_batch(done, problems)
    bar.close()
    return result


def extract_embeddings(model, keys, root, batching, cache=None, resample=False, progress=True,
                       save_every_seconds=60.0):
    """Embed audio files in bucketed batches -> dict key -> (D,) float32, in the order of ``keys``: each file's
    speech, whole or as the mean of its windows (``batching.vad``, ``batching.long_audio``; module docstring).

    Args:
        model: an Embedder, or any Cell/callable mapping (wav Tensor (B, S) float32, wav_lens Tensor (B,) int32)
            -> (B, D).
        keys: audio paths, relative to ``root`` (VoxCeleb trial-list keys) or absolute; they key the result.
        root: folder the keys are relative to ("" or None: keys are paths as they are).
        batching: a ``Batching`` (buckets, batch sizes, sample rate).
        cache: an ``EmbeddingCache`` to reuse and extend, or None.
        resample: read files at any sample rate (resampled to batching.sample_rate) instead of rejecting them.
        save_every_seconds: with a cache, how often computed embeddings are written during a long extraction.

    Raises AudioError naming the file for missing, unreadable, empty or too-short audio.
    """
    if isinstance(model, nn.Cell):
        model.set_train(False)
    keys = list(dict.fromkeys(keys))
    if cache is None:
        result = _extract(model, keys, root, batching, resample, progress, {})
        return {k: result[k] for k in keys}
    stamps = {k: file_stamp(audio_path(root, k)) for k in keys if os.path.isfile(audio_path(root, k))}
    cached, cached_stamps = cache.load()
    result = {k: cached[k] for k in keys if k in cached and cached_stamps.get(k) == stamps.get(k)}
    logger.info("embedding cache %s: %d of %d utterances found", cache.path, len(result), len(keys))
    todo = [k for k in keys if k not in result]
    if todo:
        last_save = [time.monotonic()]

        def save():          # every entry of the cache file, with the stamps of the files this run read
            cache.save({**cached, **result}, {**cached_stamps, **{k: stamps[k] for k in result}})
            last_save[0] = time.monotonic()

        def after_batch():
            if time.monotonic() - last_save[0] >= save_every_seconds:
                save()
        found = len(result)
        try:
            _extract(model, todo, root, batching, resample, progress, result, after_batch)
        finally:             # also on errors and Ctrl-C: what was computed is kept
            if len(result) > found:
                save()
    return {k: result[k] for k in keys}


def _plan_files(keys, root, batching, resample, progress):
    """What of each file is embedded -> dict key -> RecordingPlan (src/recordings/windows.py); warns about cropped
    files and files without speech."""
    rate, plans = batching.sample_rate, {}
    desc = "voice activity" if batching.vad.enabled else "audio lengths"
    for key in tqdm(keys, desc=desc, unit="file", disable=not progress or (len(keys) < 1000 and not batching.vad.enabled)):
        path = audio_path(root, key)
        plans[key] = batching.plan_file(path, expected_samples(path, rate, resample, batching.min_samples), resample)
    cropped = [k for k, plan in plans.items() if plan.cropped]
    if cropped:
        logger.warning("%d utterances have more than max_eval_seconds=%s s of %s and were cropped to their first "
                       "%s s (long_audio: crop), e.g. %s", len(cropped), batching.max_seconds,
                       "speech" if batching.vad.enabled else "audio", batching.max_seconds, cropped[:3])
    silent = [k for k, plan in plans.items() if plan.no_speech]
    if silent:
        logger.warning("%d utterance(s) have no speech the VAD found, so they are embedded whole and their scores "
                       "mean little: %s", len(silent), ", ".join(silent[:5]))
    return plans


def _piece_reader(root, plans, sample_rate, resample):
    """(key, index) -> float32 samples of that piece of the key's file: its segments joined end to end."""
    def read(item):
        key, index = item
        segments = plans[key].pieces[index]
        first, last = segments[0][0], segments[-1][1]
        audio = read_audio(audio_path(root, key), sample_rate, resample=resample, start=first,
                           num_samples=last - first)
        if len(segments) == 1:
            return audio
        return np.concatenate([audio[s - first:e - first] for s, e in segments])
    return read


def _extract(model, keys, root, batching, resample, progress, result, after_batch=None):
    """Embed ``keys`` into the dict ``result`` batch by batch: a key enters ``result`` once all its pieces are
    embedded (their length-weighted mean)."""
    plans = _plan_files(keys, root, batching, resample, progress)
    lengths = {(k, i): RecordingPlan.piece_samples(piece) for k, plan in plans.items()
               for i, piece in enumerate(plan.pieces)}
    logger.info("embedding %d utterances as %d pieces", len(keys), len(lengths))
    parts = {k: {} for k in keys}
    flagged, problems_of = {}, {}

    def on_batch(done, problems):
        for (key, index), embedding in done.items():
            parts[key][index] = embedding
            if (key, index) in problems:
                problems_of.setdefault(key, []).append(problems[(key, index)])
            pieces = plans[key].pieces
            if len(parts[key]) < len(pieces):
                continue
            if len(pieces) == 1:
                result[key] = embedding
            else:
                result[key] = weighted_mean([parts[key][i] for i in range(len(pieces))],
                                            [RecordingPlan.piece_samples(p) for p in pieces])
            del parts[key]
            if len(problems_of.get(key, ())) == len(pieces):
                flagged[key] = problems_of[key][0]
        if after_batch is not None:
            after_batch()
    embed_items(model, lengths, _piece_reader(root, plans, batching.sample_rate, resample), batching, progress,
                on_batch)
    if flagged:
        logger.warning("%d utterance(s) are near-silent or very short, so their scores mean little: %s", len(flagged),
                       "; ".join(f"{k}: {', '.join(v)}" for k, v in list(flagged.items())[:5]))
    return result


# ---------------------------------------------------------------- what a recipe's scoring needs
def recipe_cache(cfg, embedder, batching, path, root, info):
    """The EmbeddingCache at ``path`` for utterances under ``root`` embedded by ``embedder`` with the recipe's
    settings, or None when ``path`` is ""."""
    if not path:
        return None
    return EmbeddingCache(path, cache_fingerprint(embedder, embedder_settings(cfg), root, batching.max_seconds,
                                                  speech=batching.speech_fingerprint()), info)


def scoring_references(cfg, embedder, batching, cache_path="", info=None):
    """The cohort and the mean embedding the recipe's scoring uses -> (cohort or None, mean or None).

    cohort: dict key -> (D,) raw embeddings of ``cohort_utts_per_speaker`` utterances per speaker of
    ``cohort_source`` (None without cohort_source), cached at ``cache_path`` ("": no cache); mean: with
    ``subtract_mean``, the (D,) mean of the cohort embeddings, or without a cohort the one the checkpoint carries
    (src/checkpoint.py read_embedding_mean).
    """
    cohort = mean = None
    if cfg.cohort_source:
        root, keys = cohort_utterances(cfg.cohort_source, int(cfg.cohort_utts_per_speaker))
        logger.info("cohort: %d utterances of training speakers from %s", len(keys), cfg.cohort_source)
        cohort = extract_embeddings(embedder, keys, root, batching,
                                    recipe_cache(cfg, embedder, batching, cache_path, root, info or {}))
    if cfg.subtract_mean:
        if cohort is not None:
            mean = mean_embedding(cohort)
            logger.info("subtract_mean: the mean embedding of the %d cohort utterances", len(cohort))
        else:
            mean = checkpoint_mean(cfg.checkpoint)
            logger.info("subtract_mean: the mean embedding %s carries", cfg.checkpoint)
    return cohort, mean


def checkpoint_mean(checkpoint):
    """The mean embedding ``checkpoint`` carries (an imported SpeechBrain model's), for ``subtract_mean`` without a
    cohort -> (D,) float64; raises ValueError naming the checkpoint when it carries none."""
    mean = read_embedding_mean(checkpoint)
    if mean is None:
        raise ValueError(f"subtract_mean needs a mean embedding: set cohort_source to a training folder or "
                         f"train_list.txt ({checkpoint} carries none)")
    return mean
