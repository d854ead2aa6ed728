"""The one waveform -> embedding Cell: front end and network in one graph, for training, evaluation and export.

Example::

    import numpy as np, mindspore as ms
    from src.model.ecapa_tdnn import ECAPA_TDNN
    from src.model.embedder import Embedder
    embedder = Embedder(ECAPA_TDNN(channels=64, mfa_channels=192))
    embedder.set_train(False)
    wav = ms.Tensor(np.random.randn(2, 32000).astype(np.float32) * 0.1)
    lens = ms.Tensor(np.array([32000, 20000], np.int32))
    emb = embedder(wav, lens)           # (2, 192); the second row equals that utterance embedded alone

The front end is the recipe's ``front_end`` (``build_front_end``): SpeechBrain's fbank (src/model/fbank.py, the
default) or Kaldi's (src/model/kaldi_fbank.py, with the ``kaldi_*`` options), e.g.
``Embedder(network, front_end=build_front_end(cfg))``. A checkpoint's Embedder, its weights loaded and the recipe taking
the model settings the checkpoint carries, comes from src/checkpoint.py (``load_embedder``, ``recipe_for_checkpoint``).
"""
from mindspore import nn, ops

from src.model.ecapa_tdnn import DILATIONS, KERNEL_SIZES, MODEL_KEYS, min_frames
from src.model.fbank import HOP_LENGTH, WIN_LENGTH, Fbank, num_frames
from src.model.kaldi_fbank import KaldiFbank, num_frames as kaldi_num_frames
from src.model.layers import frame_mask, frame_mean_std

# Named outputs in network order at the default depth; "blockN" is the mean and std over valid frames of block N's
# output (block0 the first TDNN, then one per SE-Res2Block: ``output_names`` of a network of another depth).
OUTPUT_NAMES = ("block0", "block1", "block2", "block3", "pooled", "embedding")
FRONT_ENDS = ("speechbrain", "kaldi")
FRONTEND_KEYS = ("sample_rate", "front_end", "kaldi_window", "kaldi_scale_16bit", "kaldi_mean_norm", "kaldi_snip_edges",
                 "kaldi_high_freq")
# What settings stored before a key existed (checkpoints, caches, contracts) mean: Kaldi's framing and filters.
KALDI_DEFAULTS = {"kaldi_snip_edges": True, "kaldi_high_freq": 0}
# Every recipe key that changes what a waveform's embedding is: the front end's and the network's.
EMBEDDER_KEYS = FRONTEND_KEYS + MODEL_KEYS


def embedder_settings(cfg):
    """The EMBEDDER_KEYS of a recipe -> dict (what a checkpoint's embeddings depend on besides its weights)."""
    return {key: cfg[key] for key in EMBEDDER_KEYS}


def _is_kaldi(settings):
    """True for the Kaldi front end. Settings without ``front_end`` (checkpoints, caches and contracts made before
    the key existed) mean SpeechBrain's fbank, the only front end then."""
    front_end = settings.get("front_end", "speechbrain")
    if front_end not in FRONT_ENDS:
        raise ValueError(f"front_end: expected one of {', '.join(FRONT_ENDS)}, got {front_end!r}")
    return front_end == "kaldi"


def build_front_end(settings):
    """The feature Cell of ``settings`` (a recipe, ``embedder_settings``, or a checkpoint's or contract's stored
    settings: ``sample_rate``, ``n_mels``, ``front_end`` and, for "kaldi", the ``kaldi_*`` keys):
    (wav (B, S) float32, wav_lens (B,) int32 or None) -> (feats (B, T, n_mels) float32, frame_lens (B,) int32)."""
    sample_rate, n_mels = int(settings["sample_rate"]), int(settings["n_mels"])
    if _is_kaldi(settings):
        return KaldiFbank(sample_rate, n_mels, window=settings["kaldi_window"],
                          scale_16bit=bool(settings["kaldi_scale_16bit"]), mean_norm=bool(settings["kaldi_mean_norm"]),
                          snip_edges=_snip_edges(settings),
                          high_freq=float(_kaldi_setting(settings, "kaldi_high_freq")))
    return Fbank(sample_rate, n_mels)


def _kaldi_setting(settings, key):
    """A ``kaldi_*`` setting added later (KALDI_DEFAULTS): settings stored without it mean Kaldi's default."""
    return settings.get(key, KALDI_DEFAULTS[key])


def _snip_edges(settings):
    return bool(_kaldi_setting(settings, "kaldi_snip_edges"))


def front_end_frames(settings, num_samples):
    """Feature frames the front end of ``settings`` makes of ``num_samples`` samples (int)."""
    if _is_kaldi(settings):
        return kaldi_num_frames(num_samples, _snip_edges(settings))
    return num_frames(num_samples)


def output_names(num_blocks=len(KERNEL_SIZES) - 1):
    """The outputs an Embedder offers for a network of ``num_blocks`` blocks (blocks.0 and the SE-Res2Blocks)."""
    return tuple(f"block{i}" for i in range(num_blocks)) + ("pooled", "embedding")


def is_output_name(name):
    """True for "pooled", "embedding" and "blockN" (whether the network has block N is checked by the Embedder)."""
    return name in ("pooled", "embedding") or (name.startswith("block") and name[5:].isdigit())


def min_samples(settings):
    """Fewest samples that give the network its shortest input (``min_frames`` of the settings' kernel sizes and
    dilations: 5 frames at the defaults): at the defaults 640 with SpeechBrain's centred frames (the first frame
    needs no samples), 1040 with Kaldi's snip_edges (the first frame needs a whole 400-sample window), 720 with
    Kaldi's frames without snip_edges ((S + 80) // 160 frames)."""
    frames = min_frames(settings.get("kernel_sizes", KERNEL_SIZES), settings.get("dilations", DILATIONS))
    if not _is_kaldi(settings):
        return (frames - 1) * HOP_LENGTH
    if _snip_edges(settings):
        return WIN_LENGTH + (frames - 1) * HOP_LENGTH
    return frames * HOP_LENGTH - HOP_LENGTH // 2


class Embedder(nn.Cell):
    """Waveforms -> front end -> ECAPA-TDNN -> requested outputs, in one graph.

    ``construct(wav, wav_lens=None)``: wav (B, S) float32 at ``sample_rate``; wav_lens (B,) int32 valid samples per
    row, or None when every sample is valid (training crops, fixed-length export) -> (B, D) float32: the outputs named
    in ``outputs`` concatenated in network order (``output_names``). Sizes: "blockN" 2 * channels (mean, std),
    "pooled" 2 * mfa_channels, "embedding" embedding_size. With wav_lens the padding is masked throughout, so an
    utterance gets the same outputs in a padded batch as alone. ``spec_augment`` (a Cell on (B, T, n_mels)
    features) masks the features in training mode only. ``front_end``: the feature Cell (``build_front_end``), or
    None for SpeechBrain's Fbank at ``sample_rate`` (only then is ``sample_rate`` used).
    """

    def __init__(self, network, sample_rate=16000, outputs=("embedding",), spec_augment=None, front_end=None):
        super().__init__()
        offered = output_names(len(network.blocks))
        unknown = [name for name in outputs if name not in offered]
        if unknown or not outputs:
            raise ValueError(f"outputs: unknown names {unknown}; choose from {', '.join(offered)}")
        if front_end is None:
            front_end = build_front_end({"sample_rate": sample_rate, "n_mels": network.n_mels})
        if front_end.n_mels != network.n_mels:
            raise ValueError(f"n_mels: the front end gives {front_end.n_mels} bins, the network takes {network.n_mels}")
        self.fbank = front_end
        self.network = network
        self.spec_augment = spec_augment
        self.outputs = tuple(name for name in offered if name in outputs)
        self.block_ids = tuple(int(name[5:]) for name in self.outputs if name.startswith("block"))
        self.want_pooled = "pooled" in self.outputs
        self.want_embedding = "embedding" in self.outputs
        self.embedding_only = self.outputs == ("embedding",)

    def construct(self, wav, wav_lens=None):
        feats, frame_lens = self.fbank(wav, wav_lens)
        if self.training:
            if self.spec_augment is not None:
                feats = self.spec_augment(feats)
            # the front end has no parameters: without this the train step also ran the front end's backward
            feats = ops.stop_gradient(feats)
        lengths = None if wav_lens is None else frame_lens
        if self.embedding_only:
            return self.network(feats, lengths)
        blocks, pooled, embedding = self.network.forward_features(feats, lengths)
        mask = None if lengths is None else frame_mask(lengths, feats.shape[1], feats.dtype)
        parts = []
        for i in self.block_ids:
            mean, std = frame_mean_std(blocks[i], mask)
            parts.append(mean)
            parts.append(std)
        if self.want_pooled:
            parts.append(pooled)
        if self.want_embedding:
            parts.append(embedding)
        return ops.concat(parts, axis=-1)
