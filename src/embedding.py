"""Speaker embeddings of full-length utterances: bucketed batches, one compiled graph per bucket, disk cache.

Shared by eval.py, ``python -m src.verify`` and the Ascend-310 CPU runner.

How a set of utterances is embedded (``extract_embeddings``):

1. Each file's length is read from its header. Lengths are grouped into a few buckets (``bucket_seconds``, plus
   ``max_eval_seconds`` as the last bucket). An utterance is zero-padded up to its bucket's length and never
   cropped, unless it is longer than ``max_eval_seconds`` (then its first ``max_eval_seconds`` are kept and a
   warning says how many were cropped).
2. Every batch of a bucket has the same shape (batch_size, bucket_samples): the last batch is filled up with
   dummy rows that are dropped afterwards. So the network sees at most one input shape per bucket, and GRAPH mode
   compiles at most ``len(buckets)`` graphs however many distinct lengths there are.
3. ``SpeakerEmbedder`` computes fbank + ECAPA-TDNN in one graph from (wav, wav_lens); the valid lengths mask
   the padding, so an utterance gets the same embedding in a padded batch as alone.
4. Audio of the next batch is read in a background thread while the current batch runs.

Cache format (``cache_path``, e.g. ``emb.npz``): ``keys`` (N,) str and ``embeddings`` (N, D) float32, plus a
JSON sidecar ``emb.json`` with ``fingerprint`` (parameter hash of the network, the model/feature config, the
audio root, the output names, ``max_eval_seconds``) and ``info`` (e.g. the checkpoint path and its sha256). A
cache is reused only when its fingerprint matches; missing keys are computed and the cache rewritten.

Example::

    net = load_network(cfg, "ecapa.ckpt")                    # ECAPA_TDNN with weights, in eval mode
    emb = extract_embeddings(net, ["id10270/x6uYqmx31kE/00001.wav"], "/data/voxceleb1/wav", cfg)
    emb["id10270/x6uYqmx31kE/00001.wav"].shape                # (192,)
"""
import concurrent.futures
import hashlib
import json
import logging
import math
import os

import numpy as np
import mindspore as ms
from mindspore import nn, ops
from tqdm import tqdm

from src.checkpoint import fitting_parameters, read_checkpoint
from src.data.audio import AudioError, audio_info, read_audio
from src.ecapa_tdnn import ECAPA_TDNN, ecapa_from_config, frame_mask
from src.features import HOP_LENGTH, Fbank

logger = logging.getLogger(__name__)

# Named outputs in network order; "blockN" is the masked mean and std over valid frames of block N's output.
OUTPUT_NAMES = ("block0", "block1", "block2", "block3", "pooled", "embedding")
MIN_SAMPLES = 4 * HOP_LENGTH          # 5 feature frames, the network's shortest input
# Config keys whose values change the embeddings (part of the cache fingerprint besides the weights).
FINGERPRINT_KEYS = ("sample_rate", "n_mels", "channels", "mfa_channels", "embedding_size", "attention_channels",
                    "se_channels", "res2net_scale", "global_context", "padding", "max_eval_seconds")


# ---------------------------------------------------------------- network
class SpeakerEmbedder(nn.Cell):
    """Waveforms -> requested outputs, fbank and network in one graph.

    ``construct(wav, wav_lens)``: wav (B, S) float32 at 16 kHz, wav_lens (B,) int32 valid samples ->
    (B, D) float32: the outputs named in ``outputs`` concatenated in network order (``OUTPUT_NAMES``). Sizes:
    "blockN" 2 * channels (mean, std), "pooled" 2 * mfa_channels, "embedding" embedding_size.
    """

    def __init__(self, network, outputs=("embedding",), sample_rate=16000, n_mels=80):
        super().__init__()
        unknown = [name for name in outputs if name not in OUTPUT_NAMES]
        if unknown or not outputs:
            raise ValueError(f"outputs: unknown names {unknown}; choose from {', '.join(OUTPUT_NAMES)}")
        self.fbank = Fbank(sample_rate, n_mels)
        self.network = network
        self.outputs = tuple(name for name in OUTPUT_NAMES if name in outputs)
        self.block_ids = tuple(int(name[-1]) for name in self.outputs if name.startswith("block"))
        self.want_pooled = "pooled" in self.outputs
        self.want_embedding = "embedding" in self.outputs
        self.embedding_only = self.outputs == ("embedding",)

    def construct(self, wav, wav_lens):
        feats, frame_lens = self.fbank(wav, wav_lens)
        if self.embedding_only:
            return self.network(feats, frame_lens)
        blocks, pooled, embedding = self.network.forward_features(feats, frame_lens)
        mask = frame_mask(frame_lens, feats.shape[1], feats.dtype)                  # (B, T, 1)
        count = mask.sum(axis=1)                                                     # (B, 1)
        parts = []
        for i in self.block_ids:
            x = blocks[i]
            mean = (x * mask).sum(axis=1) / count
            centred = (x - mean.expand_dims(1)) * mask
            std = ops.sqrt(ops.maximum((centred * centred).sum(axis=1) / count, 1e-12))
            parts.append(mean)
            parts.append(std)
        if self.want_pooled:
            parts.append(pooled)
        if self.want_embedding:
            parts.append(embedding)
        return ops.concat(parts, axis=-1)


def load_network(cfg, checkpoint):
    """Build ECAPA_TDNN from ``cfg`` and load ``checkpoint`` (see ``load_weights``) -> network in eval mode."""
    network = ecapa_from_config(cfg)
    load_weights(network, checkpoint)
    network.set_train(False)
    return network


def load_weights(network, checkpoint):
    """Load a MindSpore .ckpt into ``network``; every network parameter must be found, with the right shape.

    Names match exactly or after a prefix (``network.blocks.0.conv.weight`` fills ``blocks.0.conv.weight``, as
    in a training checkpoint of a wrapper cell). Extra entries (classifier, optimizer state) are logged and left
    out. Raises ValueError naming the file and the missing or misshapen parameters.
    """
    stored, _ = read_checkpoint(checkpoint)
    prefix = _checkpoint_prefix(stored, network.parameters_dict())
    mapped = fitting_parameters(checkpoint, network, stored, lambda name: name if name in stored else prefix + name)
    extra = sorted(set(stored) - {n if n in stored else prefix + n for n in mapped})
    if extra:
        logger.info("%s: %d entries are not network parameters and were left out, e.g. %s",
                    checkpoint, len(extra), extra[:4])
    logger.info("%s: loaded %d network parameters", checkpoint, len(mapped))
    return network


def _checkpoint_prefix(stored, names):
    """The prefix (e.g. "network.") under which most network parameter names appear in the checkpoint; "" if none."""
    counts = {}
    for key in stored:
        for i, char in enumerate(key):
            if char == "." and key[i + 1:] in names:
                counts[key[:i + 1]] = counts.get(key[:i + 1], 0) + 1
    direct = sum(name in stored for name in names)
    best = max(counts, key=lambda p: (counts[p], -len(p)), default="")
    return best if counts.get(best, 0) > direct else ""


def file_sha256(path, block=1 << 20):
    """SHA-256 hex digest of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(block), b""):
            digest.update(chunk)
    return digest.hexdigest()


def parameters_sha256(cell):
    """SHA-256 over a Cell's parameter names and values (the weights an embedding depends on); None if none."""
    params = sorted(cell.parameters_and_names(), key=lambda item: item[0]) if isinstance(cell, nn.Cell) else []
    if not params:
        return None
    digest = hashlib.sha256()
    for name, param in params:
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(param.asnumpy()).tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------- buckets
def bucket_lengths(cfg):
    """Bucket lengths in samples, ascending: ``bucket_seconds`` up to ``max_eval_seconds``, then that maximum."""
    rate = int(cfg.sample_rate)
    max_seconds = float(cfg.max_eval_seconds)
    edges = sorted(float(s) for s in cfg.bucket_seconds if float(s) < max_seconds) + [max_seconds]
    lengths = sorted({int(round(s * rate)) for s in edges})
    if lengths[0] < MIN_SAMPLES:
        raise ValueError(f"bucket_seconds: buckets shorter than {MIN_SAMPLES / rate} s cannot be embedded")
    return lengths


def batch_size_for(bucket_samples, cfg):
    """Utterances per batch of a bucket: eval_batch_size, lowered so a batch holds <= eval_batch_seconds audio."""
    seconds = bucket_samples / float(cfg.sample_rate)
    return max(1, min(int(cfg.eval_batch_size), int(float(cfg.eval_batch_seconds) // seconds)))


def plan_batches(lengths, cfg):
    """Group utterances into fixed-shape batches.

    ``lengths``: dict key -> samples at cfg.sample_rate. Returns a list of ``(bucket_samples, keys)`` with at most
    ``batch_size_for(bucket_samples)`` keys each, and the list of keys longer than ``max_eval_seconds``.
    """
    buckets = bucket_lengths(cfg)
    members = {b: [] for b in buckets}
    cropped = []
    for key in sorted(lengths, key=lambda k: (lengths[k], k)):
        n = lengths[key]
        if n > buckets[-1]:
            cropped.append(key)
        members[next((b for b in buckets if b >= n), buckets[-1])].append(key)
    batches = []
    for bucket, keys in members.items():
        size = batch_size_for(bucket, cfg)
        batches += [(bucket, keys[i:i + size]) for i in range(0, len(keys), size)]
    return batches, cropped


# ---------------------------------------------------------------- extraction
def _path(root, key):
    return key if not root or os.path.isabs(key) else os.path.join(root, key)


def _expected_samples(path, sample_rate, resample):
    """Samples ``read_audio`` will return for ``path``, from the file header."""
    frames, rate, _ = audio_info(path)
    if rate != sample_rate:
        if not resample:
            raise AudioError(f"{path}: sample rate is {rate} Hz, expected {sample_rate} Hz")
        g = math.gcd(int(rate), int(sample_rate))
        frames = math.ceil(frames * (sample_rate // g) / (rate // g))
    if frames == 0:
        raise AudioError(f"{path}: the file holds no audio (0 samples)")
    if frames < MIN_SAMPLES:
        raise AudioError(f"{path}: {frames} samples is too short; the network needs at least {MIN_SAMPLES} "
                         f"samples ({MIN_SAMPLES / sample_rate:.2f} s)")
    return frames


def _load_batch(bucket, keys, batch_size, root, sample_rate, resample):
    """Read one batch -> (wav (batch_size, bucket) float32, wav_lens (batch_size,) int32); dummy rows at the end."""
    wav = np.zeros((batch_size, bucket), np.float32)
    lens = np.full((batch_size,), bucket, np.int32)       # dummy rows: full length (any valid length works)
    for row, key in enumerate(keys):
        audio = read_audio(_path(root, key), sample_rate, resample=resample)[:bucket]
        wav[row, :audio.size] = audio
        lens[row] = audio.size
    return wav, lens


def _run(model, wav, lens):
    out = model(ms.Tensor(wav), ms.Tensor(lens))
    return out.asnumpy() if hasattr(out, "asnumpy") else np.asarray(out)


def extract_embeddings(model, keys, root, cfg, cache_path=None, info=None, outputs=("embedding",),
                       resample=False, progress=True, model_id=None):
    """Embed full-length utterances in bucketed batches -> dict key -> (D,) float32.

    Args:
        model: an ``ECAPA_TDNN`` (wrapped here in ``SpeakerEmbedder(model, outputs)``), a ``SpeakerEmbedder``, or
            any Cell/callable mapping (wav Tensor (B, S) float32, wav_lens Tensor (B,) int32) -> (B, D).
        keys: audio paths, relative to ``root`` (VoxCeleb trial-list keys) or absolute; they key the result.
        root: folder the keys are relative to ("" or None: keys are paths as they are).
        cfg: config with sample_rate, bucket_seconds, max_eval_seconds, eval_batch_size, eval_batch_seconds
            (and the model keys, which go into the cache fingerprint).
        cache_path: .npz file to reuse/write embeddings (see the module docstring), or None for no cache.
        info: JSON-ready dict stored in the cache sidecar for people to read (e.g. checkpoint path and sha256).
        outputs: names from ``OUTPUT_NAMES`` when ``model`` is an ECAPA_TDNN.
        resample: read files at any sample rate (resampled to cfg.sample_rate) instead of rejecting them.
        model_id: string identifying the weights for the cache; default the hash of the model's parameters.

    Raises AudioError naming the file for missing, unreadable, empty or too-short audio.
    """
    if isinstance(model, ECAPA_TDNN):
        model = SpeakerEmbedder(model, outputs, int(cfg.sample_rate), int(cfg.n_mels))
    if isinstance(model, nn.Cell):
        model.set_train(False)
    keys = list(dict.fromkeys(keys))
    result, fingerprint = {}, None
    if cache_path:
        fingerprint = _fingerprint(model, cfg, root, model_id)
        wanted = set(keys)
        result = {k: v for k, v in _read_cache(cache_path, fingerprint).items() if k in wanted}
        logger.info("embedding cache %s: %d of %d utterances found", cache_path, len(result), len(keys))
    todo = [k for k in keys if k not in result]
    if todo:
        result.update(_extract(model, todo, root, cfg, resample, progress))
        if cache_path:
            cached = _read_cache(cache_path, fingerprint)
            cached.update(result)
            save_embeddings(cache_path, cached, {"fingerprint": fingerprint, "info": info or {}})
    return {k: result[k] for k in keys}


def _extract(model, keys, root, cfg, resample, progress):
    rate = int(cfg.sample_rate)
    lengths = {k: _expected_samples(_path(root, k), rate, resample) for k in
               tqdm(keys, desc="audio lengths", unit="file", disable=not progress or len(keys) < 1000)}
    batches, cropped = plan_batches(lengths, cfg)
    if cropped:
        logger.warning("%d utterances are longer than max_eval_seconds=%s s and were cropped to their first "
                       "%s s, e.g. %s", len(cropped), cfg.max_eval_seconds, cfg.max_eval_seconds, cropped[:3])
    logger.info("embedding %d utterances in %d batches over %d bucket shapes", len(keys), len(batches),
                len({b for b, _ in batches}))
    result = {}
    bar = tqdm(total=len(keys), desc="embeddings", unit="utt", disable=not progress)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as reader:
        def submit(i):
            bucket, batch_keys = batches[i]
            return reader.submit(_load_batch, bucket, batch_keys, batch_size_for(bucket, cfg), root, rate,
                                 resample)
        pending = submit(0) if batches else None
        for i, (bucket, batch_keys) in enumerate(batches):
            wav, lens = pending.result()
            pending = submit(i + 1) if i + 1 < len(batches) else None
            out = _run(model, wav, lens)
            for row, key in enumerate(batch_keys):
                result[key] = out[row].astype(np.float32)
            bar.update(len(batch_keys))
    bar.close()
    return result


# ---------------------------------------------------------------- files
def _fingerprint(model, cfg, root, model_id):
    model_id = model_id or parameters_sha256(model)
    if model_id is None:
        raise ValueError("embedding cache: the model has no parameters to hash; pass model_id")
    return {"model": model_id, "outputs": list(getattr(model, "outputs", ["custom"])),
            "root": os.path.abspath(root) if root else "",
            "config": {k: cfg.get(k) for k in FINGERPRINT_KEYS}}


def _sidecar(path):
    return os.path.splitext(path)[0] + ".json"


def _read_cache(path, fingerprint):
    """Cached embeddings whose sidecar fingerprint equals ``fingerprint``, else {} (with a note why)."""
    if not os.path.isfile(path) or not os.path.isfile(_sidecar(path)):
        return {}
    with open(_sidecar(path), encoding="utf-8") as f:
        meta = json.load(f)
    if meta.get("fingerprint") != json.loads(json.dumps(fingerprint)):
        logger.info("embedding cache %s was made by another model/config/root; recomputing", path)
        return {}
    return load_embeddings(path)


def save_embeddings(path, embeddings, meta=None):
    """Write dict key -> (D,) as ``path`` (.npz with ``keys`` and ``embeddings``) and ``meta`` as its JSON sidecar.

    Both files are written to temporary names and renamed, so a crash never leaves half a cache.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    keys = list(embeddings)
    matrix = np.stack([embeddings[k] for k in keys]).astype(np.float32) if keys else np.zeros((0, 0), np.float32)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        np.savez(f, keys=np.array(keys, dtype=str), embeddings=matrix)
    os.replace(tmp, path)
    if meta is not None:
        with open(_sidecar(path) + ".tmp", "w", encoding="utf-8") as f:
            json.dump(dict(meta, num_keys=len(keys)), f, indent=2)
        os.replace(_sidecar(path) + ".tmp", _sidecar(path))
    return path


def load_embeddings(path):
    """Read a file written by ``save_embeddings`` -> dict key -> (D,) float32."""
    with np.load(path) as data:
        if "keys" not in data or "embeddings" not in data:
            raise ValueError(f"{path}: expected arrays 'keys' and 'embeddings' in the .npz file")
        return {str(k): e for k, e in zip(data["keys"], data["embeddings"])}
