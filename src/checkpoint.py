"""All reading and writing of weights: training checkpoints (atomic, keep the last K, resume) and network weights.

A training checkpoint is one MindSpore ``.ckpt`` file holding

- the embedding network's parameters under their own names (``blocks.0.conv.weight``, ... as ``ECAPA_TDNN`` names
  them alone), so ``ms.load_param_into_net(ECAPA_TDNN(...), ms.load_checkpoint(path))`` loads it directly (extra
  entries are ignored);
- the classifier (``classifier.weight``, ``classifier.margin``), the optimizer state (``moment1.*``, ``moment2.*``,
  ``beta1_power``, ``beta2_power``, ``global_step``) and, with mixed precision, the loss scale;
- ``train_state``: a JSON document (stored as uint8 bytes) with the step, epoch, batch position inside the epoch and
  whatever else the trainer needs to continue at exactly the next batch.
- ``training_speakers``: a JSON list of the names of the speakers the network was trained on (a fine-tuned run adds
  those its starting checkpoint records), so calibration can refuse trials of those speakers
  (``read_training_speakers``; None for an imported checkpoint, which records none).

Files are named ``ckpt_step<step:08d>.ckpt`` in one folder. Saving writes ``.partial_<name>`` in the same folder,
flushes it to disk and renames it into place, so a crash while saving never leaves a broken file under a
checkpoint name; ``latest_checkpoint`` only sees complete files.

Network weights (``load_network_weights``) are read from any checkpoint by one rule: each network parameter under
its own name, or else under ``network.`` (the older zoo's files and other wrapper cells); every other entry is left
out. A checkpoint also carries the model settings it was made with (``read_settings``): ``recipe_for_checkpoint``
puts them into a recipe, ``load_embedder`` builds the waveform -> embedding Cell (src/model/embedder.py) with the
checkpoint's weights. Example::

    cfg = recipe_for_checkpoint(cfg, "runs/x/checkpoints/ckpt_step00001000.ckpt")
    embedder = load_embedder(cfg, "runs/x/checkpoints/ckpt_step00001000.ckpt")    # eval mode
"""
import hashlib
import json
import logging
import os
import re

import numpy as np
import mindspore as ms

from src.import_layout import read_layout
from src.model.ecapa_tdnn import build_ecapa, inference_network
from src.model.embedder import EMBEDDER_KEYS, Embedder, build_front_end, embedder_settings

logger = logging.getLogger(__name__)

NETWORK_PREFIX = "network."      # where a wrapper cell (the older zoo's training cell) keeps the embedding network
# The embedding network inside this project's training cell; with mixed precision MindSpore's AMP wrapper adds
# ``_backbone.``.
TRAIN_NETWORK_PATHS = ("embedder.network._backbone.", "embedder.network.")
STATE_KEY = "train_state"
SETTINGS_KEY = "model_settings"   # the embedder settings (src/model/embedder.py EMBEDDER_KEYS) the weights belong to
SPEAKERS_KEY = "training_speakers"  # JSON list of the speaker names the weights were trained on
# An imported model's mean embedding (D,), e.g. SpeechBrain's mean_var_norm_emb: what ``subtract_mean`` subtracts
# when no cohort is given (eval.py, postprocess.py through the export contract).
EMBEDDING_MEAN_KEY = "embedding_mean"
CLASSIFIER_WEIGHT = "classifier.weight"   # the AAM-softmax class weights (num_classes, embedding_size)
NAME_PATTERN = re.compile(r"^ckpt_step(\d{8,})\.ckpt$")


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or does not fit the network; the message names the file."""


# ---------------------------------------------------------------- files of a run
def checkpoint_name(step):
    """File name of the checkpoint taken after ``step`` global steps."""
    return f"ckpt_step{int(step):08d}.ckpt"


def list_checkpoints(folder):
    """Complete checkpoints in ``folder`` as [(step, path)], oldest first (partial files are not listed)."""
    if not os.path.isdir(folder):
        return []
    found = []
    for name in os.listdir(folder):
        match = NAME_PATTERN.match(name)
        if match:
            found.append((int(match.group(1)), os.path.join(folder, name)))
    return sorted(found)


def latest_checkpoint(folder):
    """Path of the newest complete checkpoint in ``folder``, or None."""
    found = list_checkpoints(folder)
    return found[-1][1] if found else None


# ---------------------------------------------------------------- hashes
def file_sha256(path, block=1 << 20):
    """SHA-256 hex digest of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(block), b""):
            digest.update(chunk)
    return digest.hexdigest()


def parameters_sha256(params):
    """SHA-256 over parameter names and values, in name order (``cell.get_parameters()``, ``trainable_params()``);
    None when there are none."""
    params = sorted(params, key=lambda p: p.name)
    if not params:
        return None
    digest = hashlib.sha256()
    for param in params:
        digest.update(param.name.encode("utf-8"))
        digest.update(np.ascontiguousarray(param.asnumpy()).tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------- reading
def json_entry(name, document):
    """A checkpoint entry holding a JSON document (as uint8 bytes)."""
    payload = json.dumps(document, sort_keys=True).encode("utf-8")
    return {"name": name, "data": ms.Tensor(np.frombuffer(payload, dtype=np.uint8).copy())}


def _json_value(param):
    return json.loads(param.asnumpy().astype(np.uint8).tobytes().decode("utf-8"))


def _load(path, choice_func=None):
    """ms.load_checkpoint with errors that name the file; {} when ``choice_func`` keeps no entry."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        return ms.load_checkpoint(path, choice_func=choice_func)
    except (ValueError, RuntimeError, OSError, TypeError) as err:
        if choice_func is not None and "empty after filter" in str(err):
            return {}
        raise CheckpointError(f"{path}: not a readable MindSpore checkpoint ({err})") from None


def read_checkpoint(path):
    """Load a checkpoint file -> (``{name: Parameter}``, state dict or None); the model settings entry is left
    out (``read_settings``). Errors name the file."""
    params = _load(path)
    params.pop(SETTINGS_KEY, None)
    params.pop(SPEAKERS_KEY, None)
    state = _json_value(params.pop(STATE_KEY)) if STATE_KEY in params else None
    return params, state


def read_settings(path):
    """The model settings stored in a checkpoint (dict), or None for a checkpoint without them (the older zoo's,
    or one written before checkpoints carried them). Reads only that entry."""
    stored = _load(path, choice_func=lambda name: name == SETTINGS_KEY)
    return _json_value(stored[SETTINGS_KEY]) if SETTINGS_KEY in stored else None


def read_training_speakers(path):
    """The names of the speakers a checkpoint was trained on (sorted list of str), or None when it records none.
    Reads only that entry."""
    stored = _load(path, choice_func=lambda name: name == SPEAKERS_KEY)
    return _json_value(stored[SPEAKERS_KEY]) if SPEAKERS_KEY in stored else None


def read_array(path, name):
    """Entry ``name`` of a checkpoint as a numpy array, or None when it has none. Reads only that entry."""
    stored = _load(path, choice_func=lambda key: key == name)
    return stored[name].asnumpy() if name in stored else None


def read_embedding_mean(path):
    """The mean embedding (D,) float64 numpy array an imported checkpoint carries (EMBEDDING_MEAN_KEY), or None."""
    mean = read_array(path, EMBEDDING_MEAN_KEY)
    return None if mean is None else mean.astype(np.float64)


def checkpoint_key(param_name):
    """Name a training-cell parameter gets in the file: the embedding network's own names lose their path."""
    for path in TRAIN_NETWORK_PATHS:
        if param_name.startswith(path):
            return param_name[len(path):]
    return param_name


def network_source(stored):
    """The one prefix rule: -> function network parameter name -> its name in ``stored`` (its own name if present,
    else ``network.`` + name)."""
    return lambda name: name if name in stored else NETWORK_PREFIX + name


def fitting_parameters(path, cell, stored, source_of=lambda name: name):
    """Take each parameter of ``cell`` from ``stored`` (a checkpoint's param dict) under ``source_of(name)`` and load
    it -> {name: Parameter}. Raises CheckpointError naming ``path`` and every missing or misshapen parameter."""
    wanted, missing, misshapen = {}, [], []
    for param in cell.get_parameters():
        key = source_of(param.name)
        if key not in stored:
            missing.append(key)
        elif tuple(stored[key].shape) != tuple(param.shape):
            misshapen.append(f"{key}: network {tuple(param.shape)}, checkpoint {tuple(stored[key].shape)}")
        else:
            wanted[param.name] = ms.Parameter(stored[key].value(), name=param.name)
    if missing or misshapen:
        problems = []
        if missing:
            problems.append(f"{len(missing)} network parameters missing from the checkpoint: {missing[:8]}")
        if misshapen:
            problems.append(f"{len(misshapen)} parameters with another shape (does the model config match the "
                            f"checkpoint? The older zoo's checkpoint needs python -m src.import_weights): "
                            f"{misshapen[:8]}")
        raise CheckpointError(f"{path}: does not fit the network: " + "; ".join(problems))
    not_loaded, _ = ms.load_param_into_net(cell, wanted, strict_load=True)
    if not_loaded:
        raise CheckpointError(f"{path}: MindSpore did not load {not_loaded[:8]}")
    return wanted


def load_network_weights(network, path):
    """Load the network weights of any checkpoint (see the module docstring) into ``network`` -> ``network``.

    Every network parameter must be found with the right shape; extra entries (classifier, optimizer state) are
    logged and left out. Raises CheckpointError naming the file and the missing or misshapen parameters.
    """
    stored, _ = read_checkpoint(path)
    source_of = network_source(stored)
    try:
        fitting_parameters(path, network, stored, source_of)
    except CheckpointError as error:      # say what the file holds and which model keys would fit it
        own = {name[len(NETWORK_PREFIX):] if name.startswith(NETWORK_PREFIX) else name: value
               for name, value in stored.items()}
        raise CheckpointError("\n".join([str(error)] + read_layout(own).summary())) from None
    used = {source_of(p.name) for p in network.get_parameters()}
    extra = sorted(set(stored) - used)
    if extra:
        logger.info("%s: %d entries are not network parameters and were left out, e.g. %s", path, len(extra),
                    extra[:4])
    logger.info("%s: loaded %d network parameters", path, len(used))
    return network


def restore_checkpoint(train_cell, path):
    """Load every parameter of ``train_cell`` from ``path`` -> the saved state dict.

    Raises CheckpointError naming the file and the parameters that are missing or have another shape.
    """
    params, state = read_checkpoint(path)
    if state is None:
        raise CheckpointError(f"{path}: has no '{STATE_KEY}' entry; it is not a training checkpoint of this "
                              f"project (load network weights with src.checkpoint.load_network_weights instead)")
    fitting_parameters(path, train_cell, params, checkpoint_key)
    return state


# ---------------------------------------------------------------- a checkpoint as a model
def recipe_for_checkpoint(cfg, checkpoint):
    """The recipe with the embedder settings ``checkpoint`` carries (``read_settings``), so the
    model keys need not be repeated for it. A model key given on the command line that contradicts the checkpoint is
    refused naming both values; one that only the recipe file sets gives way, with a log line. A checkpoint without
    settings leaves the recipe as it is."""
    stored = read_settings(checkpoint)
    if stored is None:
        return cfg
    contradicting = [key for key in EMBEDDER_KEYS if key in cfg.given and key in stored and cfg[key] != stored[key]]
    if contradicting:
        key = contradicting[0]
        raise ValueError(f"{key}: the command line gives {cfg[key]!r} but {checkpoint} was made with {stored[key]!r}; "
                         f"leave the model keys out (the checkpoint carries them)")
    changed = {key: stored[key] for key in EMBEDDER_KEYS if key in stored and cfg[key] != stored[key]}
    if changed:
        logger.info("%s carries its model settings; they replace the recipe's %s", checkpoint,
                    ", ".join(f"{k}={cfg[k]!r}->{v!r}" for k, v in changed.items()))
    return cfg.with_values(**changed)


def load_embedder(cfg, checkpoint, outputs=("embedding",)):
    """The inference embedder of a recipe with the network weights of ``checkpoint`` (any checkpoint
    ``load_network_weights`` reads), called as ``embedder(wav, wav_lens) -> (B, D)``.

    The recipe's ``runtime`` chooses what runs it: ``mindspore`` (the default), an Embedder of its EMBEDDER_KEYS on
    the folded ``inference_network`` in eval mode; ``onnxruntime`` (CPU only, the embedding only), an
    src/deploy/onnx_runtime.py OnnxEmbedder on the checkpoint's dynamic ONNX export, made once and kept in
    ``runtime_cache_dir`` (default ``<output_dir>/onnx_cache``)."""
    network = load_network_weights(build_ecapa(cfg), checkpoint)
    runtime = cfg.get("runtime", "mindspore")
    if runtime == "onnxruntime":
        from src.deploy.onnx_runtime import onnx_embedder
        if ms.get_context("device_target") != "CPU":
            raise ValueError(f"runtime onnxruntime runs on the CPU; device_target is "
                             f"{ms.get_context('device_target')}: set runtime mindspore")
        cache_dir = cfg.get("runtime_cache_dir") or os.path.join(cfg.get("output_dir") or ".", "onnx_cache")
        return onnx_embedder(network, embedder_settings(cfg), checkpoint, file_sha256(checkpoint),
                             parameters_sha256(network.get_parameters()), cache_dir, outputs)
    if runtime != "mindspore":
        raise ValueError(f"runtime: expected mindspore or onnxruntime, got {runtime!r}")
    embedder = Embedder(inference_network(network), outputs=outputs, front_end=build_front_end(cfg))
    embedder.set_train(False)
    return embedder


# ---------------------------------------------------------------- writing
def _fsync_path(path, directory=False):
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_checkpoint_file(entries, path):
    """Write ``[{"name", "data"}]`` to ``path`` atomically: a ``.partial_`` file in the same folder, fsync, rename.
    No partial file survives a failed write."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    partial = os.path.join(folder, ".partial_" + os.path.basename(path))
    try:
        ms.save_checkpoint(entries, partial)
        _fsync_path(partial)
        os.replace(partial, path)
    except RuntimeError as err:           # MindSpore reports a failed write (disk full, ...) as RuntimeError
        raise OSError(f"{path}: could not write the checkpoint ({str(err).splitlines()[0]})") from None
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    _fsync_path(folder, directory=True)
    return path


def save_checkpoint(train_cell, folder, step, state, keep=5, settings=None, speakers=None):
    """Write all parameters of ``train_cell`` plus the JSON-able ``state`` dict (and the model ``settings`` dict and
    the names of the training ``speakers``, when given) as the checkpoint of ``step``.

    Atomic (``write_checkpoint_file``); afterwards only the newest ``keep`` checkpoints are kept (``keep`` <= 0
    keeps all). Returns the path written.
    """
    entries, seen = [], {}
    for param in train_cell.get_parameters():
        key = checkpoint_key(param.name)
        if key in seen:
            if seen[key] is not param:
                raise CheckpointError(f"two training parameters map to the checkpoint name '{key}'")
            continue
        seen[key] = param
        entries.append({"name": key, "data": param})
    entries.append(json_entry(STATE_KEY, state))
    if settings is not None:
        entries.append(json_entry(SETTINGS_KEY, settings))
    if speakers is not None:
        entries.append(json_entry(SPEAKERS_KEY, sorted(speakers)))
    final = write_checkpoint_file(entries, os.path.join(folder, checkpoint_name(step)))
    if keep > 0:
        for _, old in list_checkpoints(folder)[:-keep]:
            os.remove(old)
    return final
