"""Embedding through onnxruntime on the CPU (recipe key ``runtime: onnxruntime``): the dynamic waveform-input ONNX
export of a checkpoint, made once and cached, behind the Embedder's call interface.

``onnx_embedder`` is what src/checkpoint.py ``load_embedder`` returns for ``runtime onnxruntime``, so every
command that embeds audio through src/evaluate/extract.py (eval.py, ``python -m src.evaluate.verify``,
``python -m src.calibrate``, and any later one) runs onnxruntime without a change of its own.

The export (src/deploy/verified_export.py ``export_model``: ONNX, waveform input with the recipe's front end in the graph,
dynamic batch and time axes, verified against the MindSpore network within ``EXPORT_TOLERANCE``) is kept in the
cache folder as ``ecapa_<key>.onnx`` with its contract ``ecapa_<key>.onnx.json``. ``<key>`` is a hash of the
checkpoint file's sha256, the embedder settings (front end and model keys) and ``GRAPH_VERSION``; the contract
records all three, and a file whose contract does not match them exactly is made again. So a changed checkpoint or
setting gets its own export and an unchanged one is never exported twice.

Example::

    from src.deploy.onnx_runtime import onnx_embedder
    embedder = onnx_embedder(network, embedder_settings(cfg), "ecapa.ckpt", file_sha256("ecapa.ckpt"),
                             parameters_sha256(network.get_parameters()), "runs/x/onnx_cache")
    emb = embedder(wav, wav_lens)        # (B, E) numpy, as Embedder(wav, wav_lens).asnumpy()
"""
import hashlib
import json
import logging
import os

import numpy as np

from src.deploy.contract import contract_path, read_contract

logger = logging.getLogger(__name__)

GRAPH_VERSION = 1            # src/deploy/onnx_graph.py's graph form; a change here remakes every cached export
EXPORT_TOLERANCE = 1e-4      # largest max-abs difference from the MindSpore network the cached export may have
EXPORT_SECONDS = 2.0         # the export's check length (also 5/3 and 2/3 + 77 samples of it)


class OnnxEmbedder:
    """A waveform-input ONNX export in onnxruntime, called as src/model/embedder.py's Embedder:
    ``(wav (B, S) float32, wav_lens (B,) int32 or None) -> (B, E) float32 numpy``, each row embedded from its first
    ``wav_lens`` samples only (the export has no lengths input: every sample it sees is valid), so an utterance gets
    the same embedding in a padded batch as alone. Rows of equal length run as one batch.

    ``model_id`` identifies what the embeddings come from (src/evaluate/extract.py's cache fingerprint);
    ``fixed_batch_shapes`` False tells the extraction that batches need no dummy rows (onnxruntime compiles
    nothing per shape)."""

    outputs = ("embedding",)
    fixed_batch_shapes = False

    def __init__(self, path, model_id, threads=0):
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads)
        self.path, self.model_id = path, model_id
        try:
            self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        except Exception as err:          # onnxruntime raises its own exception types for missing or bad files
            raise ValueError(f"{path}: not a readable ONNX model ({str(err).splitlines()[0]})") from None
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, wav, wav_lens=None):
        wav = np.asarray(wav.asnumpy() if hasattr(wav, "asnumpy") else wav, np.float32)
        if wav_lens is None:
            lengths = np.full(wav.shape[0], wav.shape[1])
        else:
            lengths = np.asarray(wav_lens.asnumpy() if hasattr(wav_lens, "asnumpy") else wav_lens).astype(np.int64)
        out = None
        for length in np.unique(lengths):
            rows = np.nonzero(lengths == length)[0]
            got = self.session.run(None, {self.input_name: np.ascontiguousarray(wav[rows, :length])})[0]
            if out is None:
                out = np.empty((wav.shape[0], got.shape[1]), np.float32)
            out[rows] = got
        return out


def export_key(checkpoint_sha256, settings):
    """What a cached export depends on -> (dict, 16-hex-digit hash of it)."""
    document = {"checkpoint_sha256": checkpoint_sha256, "settings": dict(settings), "graph_version": GRAPH_VERSION}
    document = json.loads(json.dumps(document))
    digest = hashlib.sha256(json.dumps(document, sort_keys=True).encode("utf-8")).hexdigest()[:16]
    return document, digest


def cached_export(network, settings, checkpoint, checkpoint_sha256, cache_dir):
    """The path of the dynamic waveform-input ONNX export of ``network`` (the unfolded ECAPA_TDNN loaded from
    ``checkpoint``, whose file has ``checkpoint_sha256``, with the embedder ``settings``) in ``cache_dir``: reused
    when its contract records the same checkpoint sha256, settings and graph version, else written (and verified)
    now."""
    from src.deploy.verified_export import export_model
    document, digest = export_key(checkpoint_sha256, settings)
    base = os.path.join(cache_dir, f"ecapa_{digest}")
    path = base + ".onnx"
    if os.path.isfile(path) and os.path.isfile(contract_path(path)):
        try:
            stored = read_contract(contract_path(path)).get("network", {}).get("runtime_cache")
        except ValueError:
            stored = None
        if stored == document:
            logger.info("runtime onnxruntime: reusing %s (made from %s)", path, checkpoint)
            return path
    logger.info("runtime onnxruntime: exporting %s to %s (once per checkpoint and settings)", checkpoint, path)
    network.set_train(False)
    export_model(network, base, "ONNX", "waveform", batch_size=1, seconds=EXPORT_SECONDS, dynamic=True,
                 tolerance=EXPORT_TOLERANCE, sample_rate=int(settings["sample_rate"]),
                 settings=dict(settings, checkpoint=checkpoint, runtime_cache=document))
    return path


def onnx_embedder(network, settings, checkpoint, checkpoint_sha256, network_sha256, cache_dir,
                  outputs=("embedding",)):
    """An OnnxEmbedder on the cached export of ``network`` (``cached_export``; ``network_sha256``: the hash of its
    parameters, which identifies its embeddings). Only the embedding is exported: other ``outputs`` raise
    ValueError."""
    if tuple(outputs) != ("embedding",):
        raise ValueError(f"runtime onnxruntime: the ONNX export gives the embedding only, not {list(outputs)}; "
                         f"use runtime mindspore for these outputs")
    path = cached_export(network, settings, checkpoint, checkpoint_sha256, cache_dir)
    model_id = f"{network_sha256} onnxruntime {os.path.basename(path)}"
    return OnnxEmbedder(path, model_id)
