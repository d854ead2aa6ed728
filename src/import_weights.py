"""Import another ECAPA-TDNN's weights into this project's layout: one tool, one function per source format.

Formats:

- ``mindspore_zoo``: the older MindSpore model zoo's released training checkpoint. It holds the embedding network
  under ``network.``, its conv weights 4-D (out, in, 1, k), its batch norms as
  ``*.norm.norm2d.{gamma,beta,moving_mean,moving_variance}``, the AAM-softmax class weights ``classifier.weight``
  (n_classes, 192), an ``output`` buffer and optimizer state. The zoo network is our ECAPA_TDNN with
  :data:`ZOO_MODEL_CONFIG` (channels 1024, MFA 3072, no global context, zero padding) on the same fbank input.
  Mapping: strip ``network.``; ``.norm2d.`` -> ``.``; (out, in, 1, k) -> (out, in, k); drop the optimizer state;
  keep ``classifier.weight`` (for fine-tuning).

Command line::

    python -m src.import_weights --format mindspore_zoo ecapatdnn_ascend_v1100_voxceleb_official_audio_EER0.82.ckpt \\
        zoo_ecapa.ckpt

``zoo_ecapa.ckpt`` carries its model settings, so eval.py, ``python -m src.evaluate.verify`` and export.py need no
model keys for it.
In Python::

    net = ECAPA_TDNN(**ZOO_MODEL_CONFIG)
    classifier_weight = load_zoo_checkpoint("zoo.ckpt", net)     # numpy (n_classes, 192) or None
"""
import logging

import numpy as np
import mindspore as ms

from src.checkpoint import (NETWORK_PREFIX, SETTINGS_KEY, CheckpointError, json_entry, read_checkpoint,
                            read_settings, write_checkpoint_file)
from src.cli import run_command
from src.config import ArgumentParser
from src.model.ecapa_tdnn import ECAPA_TDNN, network_settings

logger = logging.getLogger(__name__)

# The zoo network's settings where they differ from ECAPA_TDNN's defaults (80 mels, embedding 192, attention 128,
# SE 128, Res2Net scale 8).
ZOO_MODEL_CONFIG = dict(channels=1024, mfa_channels=3072, global_context=False, padding="zeros")
CLASSIFIER_NAME = "classifier.weight"
# Entries of a training checkpoint that are not weights: Adam moments, step counters, learning rate, loss scale,
# and the zoo's loss ``output`` buffer.
OPTIMIZER_PREFIXES = ("moment1.", "moment2.")
OPTIMIZER_NAMES = ("beta1_power", "beta2_power", "learning_rate", "global_step", "scale_sense", "output")


def strip_network_prefix(name):
    """'network.blocks.0.conv.weight' -> 'blocks.0.conv.weight' (any number of leading 'network.')."""
    while name.startswith(NETWORK_PREFIX):
        name = name[len(NETWORK_PREFIX):]
    return name


def is_optimizer_state(name):
    """True for Adam moments, step counters, learning rate, loss scale and the loss 'output' buffer."""
    name = strip_network_prefix(name)
    return name.startswith(OPTIMIZER_PREFIXES) or name in OPTIMIZER_NAMES


def our_name(zoo_name):
    """Zoo parameter name -> our parameter name: 'network.mfa.norm.norm2d.gamma' -> 'mfa.norm.gamma'."""
    return strip_network_prefix(zoo_name).replace(".norm2d.", ".")


def to_our_shape(array, shape):
    """Zoo array -> our shape: a 4-D conv weight (out, in, 1, k) becomes (out, in, k); anything else must match.
    Returns None when it cannot fit."""
    if array.shape == tuple(shape):
        return array
    if array.ndim == 4 and array.shape[2] == 1 and (array.shape[0], array.shape[1], array.shape[3]) == tuple(shape):
        return array.reshape(shape)
    return None


def convert_zoo_params(zoo_params, net):
    """Map zoo ``{name: array}`` onto ``net``'s parameters.

    Returns ``(ours, classifier_weight)``: ``{our_name: float32 array in our shape}`` covering every parameter of
    ``net``, and the ``classifier.weight`` array (or None). Raises CheckpointError listing every missing,
    unexpected and mis-shaped name at once.
    """
    targets = {p.name: tuple(p.shape) for p in net.get_parameters()}
    ours, unexpected, misshaped, misshaped_names = {}, [], [], set()
    classifier_weight = None
    for zoo_name, value in zoo_params.items():
        if is_optimizer_state(zoo_name):
            continue
        array = np.asarray(value)
        name = our_name(zoo_name)
        if name == CLASSIFIER_NAME:
            classifier_weight = array.astype(np.float32)
        elif name not in targets:
            unexpected.append(zoo_name)
        else:
            fitted = to_our_shape(array, targets[name])
            if fitted is None:
                misshaped.append(f"{zoo_name} {list(array.shape)} (network expects {list(targets[name])})")
                misshaped_names.add(name)
            else:
                ours[name] = fitted.astype(np.float32)
    missing = sorted(set(targets) - set(ours) - misshaped_names)
    if missing or unexpected or misshaped:
        problems = []
        if missing:
            problems.append(f"missing: {', '.join(missing)}")
        if unexpected:
            problems.append(f"unexpected: {', '.join(sorted(unexpected))}")
        if misshaped:
            problems.append(f"mis-shaped: {'; '.join(misshaped)}")
        raise CheckpointError("checkpoint does not fit the network: " + " | ".join(problems))
    return ours, classifier_weight


def load_zoo_checkpoint(path, net):
    """Load the zoo checkpoint at ``path`` into ``net`` (an ECAPA_TDNN built with ZOO_MODEL_CONFIG).
    Returns the classifier weight (n_classes, embedding_size) numpy array, or None if the file has none."""
    stored, _ = read_checkpoint(path)
    try:
        ours, classifier_weight = convert_zoo_params({k: p.asnumpy() for k, p in stored.items()}, net)
    except CheckpointError as error:
        raise CheckpointError(f"{path}: {error}") from None
    for p in net.get_parameters():
        p.set_data(ms.Tensor(ours[p.name]))
    logger.info("loaded %d parameters from %s%s", len(ours), path,
                "" if classifier_weight is None else f" and classifier weight {list(classifier_weight.shape)}")
    return classifier_weight


def import_zoo_checkpoint(zoo_path, out_path):
    """Write the zoo checkpoint at ``zoo_path`` in our layout to ``out_path``: our parameter names (loadable with
    ``ms.load_param_into_net(ECAPA_TDNN(**ZOO_MODEL_CONFIG), ...)``), ``classifier.weight`` when present, and the
    model settings (src/checkpoint.py ``read_settings``)."""
    net = ECAPA_TDNN(**ZOO_MODEL_CONFIG)
    classifier_weight = load_zoo_checkpoint(zoo_path, net)
    entries = [{"name": p.name, "data": p.value()} for p in net.get_parameters()]
    if classifier_weight is not None:
        entries.append({"name": CLASSIFIER_NAME, "data": ms.Tensor(classifier_weight)})
    entries.append(json_entry(SETTINGS_KEY, {"sample_rate": 16000, **network_settings(net)}))
    write_checkpoint_file(entries, out_path)
    logger.info("wrote %s (%d tensors)", out_path, len(entries))
    return out_path


FORMATS = {"mindspore_zoo": import_zoo_checkpoint}


def main(argv=None):
    parser = ArgumentParser(description="Import another ECAPA-TDNN's weights as a checkpoint of this "
                                                 "project.")
    parser.add_argument("--format", required=True, choices=sorted(FORMATS), help="the source's format")
    parser.add_argument("source", help="the checkpoint to import (e.g. the older zoo's "
                                       "ecapatdnn_ascend_v1100_voxceleb_official_audio_EER0.82.ckpt)")
    parser.add_argument("output", help="where to write the imported .ckpt")
    args = parser.parse_args(argv)
    FORMATS[args.format](args.source, args.output)
    print(f"wrote {args.output}; it carries its model settings: {read_settings(args.output)}")
    return 0


if __name__ == "__main__":
    run_command(main)
