"""Training checkpoints: atomic save, keep the last K, find the latest, restore everything needed to resume.

A checkpoint is one MindSpore ``.ckpt`` file holding

- the embedding network's parameters under their own names (``blocks.0.conv.weight``, ... as ``ECAPA_TDNN`` names
  them alone), so ``ms.load_param_into_net(ECAPA_TDNN(...), ms.load_checkpoint(path))`` loads it directly (extra
  entries are ignored);
- the classifier (``classifier.weight``, ``classifier.margin``), the optimizer state (``moment1.*``, ``moment2.*``,
  ``beta1_power``, ``beta2_power``, ``global_step``) and, with mixed precision, the loss scale;
- ``train_state``: a JSON document (stored as uint8 bytes) with the step, epoch, batch position inside the epoch and
  whatever else the trainer needs to continue at exactly the next batch.

Files are named ``ckpt_step<step:08d>.ckpt`` in one folder. Saving writes ``.partial_<name>`` in the same folder,
flushes it to disk and renames it into place, so a crash while saving never leaves a broken file under a
checkpoint name; ``latest_checkpoint`` only sees complete files.
"""
import json
import logging
import os
import re

import numpy as np
import mindspore as ms

logger = logging.getLogger(__name__)

NETWORK_PREFIX = "network."      # attribute name of the embedding network inside the training cell
STATE_KEY = "train_state"
NAME_PATTERN = re.compile(r"^ckpt_step(\d{8,})\.ckpt$")


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or does not fit the network; the message names the file."""


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


def resume_flag_to_value(argv):
    """Command-line arguments with a bare ``--resume`` (last, or followed by another option) made ``--resume
    latest``; the launch scripts and train.py both read their arguments through this."""
    argv = list(argv)
    for i, arg in enumerate(argv):
        if arg == "--resume" and (i + 1 == len(argv) or argv[i + 1].startswith("--")):
            argv.insert(i + 1, "latest")
            break
    return argv


def latest_checkpoint(folder):
    """Path of the newest complete checkpoint in ``folder``, or None."""
    found = list_checkpoints(folder)
    return found[-1][1] if found else None


def checkpoint_key(param_name):
    """Name a training-cell parameter gets in the file: the embedding network's own names lose their prefix."""
    return param_name[len(NETWORK_PREFIX):] if param_name.startswith(NETWORK_PREFIX) else param_name


def _fsync_path(path, directory=False):
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(train_cell, folder, step, state, keep=5):
    """Write all parameters of ``train_cell`` plus the JSON-able ``state`` dict as the checkpoint of ``step``.

    Atomic (temporary file in ``folder``, fsync, ``os.replace``); afterwards only the newest ``keep`` checkpoints
    are kept (``keep`` <= 0 keeps all). Returns the path written.
    """
    os.makedirs(folder, exist_ok=True)
    entries, seen = [], {}
    for param in train_cell.get_parameters():
        key = checkpoint_key(param.name)
        if key in seen:
            if seen[key] is not param:
                raise CheckpointError(f"two training parameters map to the checkpoint name '{key}'")
            continue
        seen[key] = param
        entries.append({"name": key, "data": param})
    payload = json.dumps(state, sort_keys=True).encode("utf-8")
    entries.append({"name": STATE_KEY, "data": ms.Tensor(np.frombuffer(payload, dtype=np.uint8).copy())})

    final = os.path.join(folder, checkpoint_name(step))
    partial = os.path.join(folder, ".partial_" + checkpoint_name(step))
    if os.path.exists(partial):
        os.remove(partial)
    ms.save_checkpoint(entries, partial)
    _fsync_path(partial)
    os.replace(partial, final)
    _fsync_path(folder, directory=True)
    if keep > 0:
        for _, old in list_checkpoints(folder)[:-keep]:
            os.remove(old)
    return final


def read_checkpoint(path):
    """Load a checkpoint file -> (param_dict, state dict or None). Errors name the file."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        params = ms.load_checkpoint(path)
    except (ValueError, RuntimeError, OSError) as err:
        raise CheckpointError(f"{path}: not a readable MindSpore checkpoint ({err})") from None
    state = None
    if STATE_KEY in params:
        state = json.loads(params.pop(STATE_KEY).asnumpy().astype(np.uint8).tobytes().decode("utf-8"))
    return params, state


def network_parameters(params):
    """The embedding network's entries of a checkpoint's param dict (classifier, optimizer and state dropped)."""
    other = ("classifier.", "moment1.", "moment2.", "beta1_power", "beta2_power", "global_step", "learning_rate",
             "scale_sense", STATE_KEY)
    return {k: v for k, v in params.items() if not k.startswith(other)}


def fitting_parameters(path, cell, stored, source_of=lambda name: name):
    """Take each parameter of ``cell`` from ``stored`` (a checkpoint's param dict) under ``source_of(name)``
    -> {name: value}. Raises CheckpointError naming ``path`` and every missing or misshapen parameter."""
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
                            f"checkpoint? The older zoo's checkpoint needs src/zoo_checkpoint.py): {misshapen[:8]}")
        raise CheckpointError(f"{path}: does not fit the network: " + "; ".join(problems))
    not_loaded, _ = ms.load_param_into_net(cell, wanted, strict_load=True)
    if not_loaded:
        raise CheckpointError(f"{path}: MindSpore did not load {not_loaded[:8]}")
    return wanted


def restore_checkpoint(train_cell, path):
    """Load every parameter of ``train_cell`` from ``path`` -> the saved state dict.

    Raises CheckpointError naming the file and the parameters that are missing or have another shape.
    """
    params, state = read_checkpoint(path)
    if state is None:
        raise CheckpointError(f"{path}: has no '{STATE_KEY}' entry; it is not a training checkpoint of this "
                              f"project (load network weights with ms.load_param_into_net instead)")
    fitting_parameters(path, train_cell, params, checkpoint_key)
    return state
