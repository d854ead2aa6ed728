"""Load the older MindSpore model zoo's ECAPA-TDNN checkpoint into our network.

The zoo's released training checkpoint holds the embedding network under a ``network.`` prefix, its conv weights
4-D (out, in, 1, k), its batch norms as ``*.norm.norm2d.{gamma,beta,moving_mean,moving_variance}``, the
AAM-softmax class weights ``classifier.weight`` (n_classes, 192), an ``output`` buffer and optimizer state.
The zoo network is our ECAPA_TDNN with channels 1024, MFA 3072, no global context and zero padding
(:data:`ZOO_MODEL_CONFIG`); it takes the same (batch, frames, 80) fbank input.

Mapping: strip ``network.``; ``.norm2d.`` -> ``.``; 4-D (out, in, 1, k) conv weights -> (out, in, k); drop the
optimizer state; return ``classifier.weight`` (the ``weight`` of src.loss.AAMSoftmax, for fine-tuning).

Convert a zoo checkpoint to our layout (our network's parameter names, plus ``classifier.weight``)::

    python -m src.zoo_checkpoint ecapatdnn_ascend_v1100_voxceleb_official_audio_EER0.82.ckpt zoo_ecapa.ckpt

and use it with ``--channels 1024 --mfa_channels 3072 --global_context false --padding zeros``.
In Python::

    net = ECAPA_TDNN(**ZOO_MODEL_CONFIG)
    classifier_weight = load_zoo_checkpoint("zoo.ckpt", net)     # numpy (n_classes, 192) or None
"""
import argparse
import logging
import os

import numpy as np
import mindspore as ms

from src.ecapa_tdnn import ECAPA_TDNN

logger = logging.getLogger(__name__)

ZOO_MODEL_CONFIG = dict(n_mels=80, channels=1024, mfa_channels=3072, embedding_size=192, attention_channels=128,
                        se_channels=128, res2net_scale=8, global_context=False, padding="zeros")
NETWORK_PREFIX = "network."
CLASSIFIER_NAME = "classifier.weight"
OPTIMIZER_PREFIXES = ("moment1.", "moment2.")
OPTIMIZER_NAMES = ("beta1_power", "beta2_power", "learning_rate", "global_step", "scale_sense", "output")


class ZooCheckpointError(ValueError):
    """The checkpoint does not fit the network (missing, unexpected or mis-shaped parameters) or is unreadable."""


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
    ``net``, and the ``classifier.weight`` array (or None). Raises ZooCheckpointError listing every missing,
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
        raise ZooCheckpointError("checkpoint does not fit the network: " + " | ".join(problems))
    return ours, classifier_weight


def read_checkpoint(path):
    """Checkpoint file -> {name: numpy array}; ZooCheckpointError naming the file if it is missing or unreadable."""
    if not os.path.isfile(path):
        raise ZooCheckpointError(f"{path}: checkpoint file not found")
    try:
        params = ms.load_checkpoint(path)
    except Exception as error:     # MindSpore raises ValueError/RuntimeError for corrupt files
        raise ZooCheckpointError(f"{path}: not a readable MindSpore checkpoint ({error})") from error
    return {name: p.asnumpy() for name, p in params.items()}


def load_zoo_checkpoint(path, net):
    """Load the zoo checkpoint at ``path`` into ``net`` (an ECAPA_TDNN built with ZOO_MODEL_CONFIG).
    Returns the classifier weight (n_classes, embedding_size) numpy array, or None if the file has none."""
    zoo_params = read_checkpoint(path)
    try:
        ours, classifier_weight = convert_zoo_params(zoo_params, net)
    except ZooCheckpointError as error:
        raise ZooCheckpointError(f"{path}: {error}") from None
    for p in net.get_parameters():
        p.set_data(ms.Tensor(ours[p.name]))
    logger.info("loaded %d parameters from %s%s", len(ours), path,
                "" if classifier_weight is None else f" and classifier weight {list(classifier_weight.shape)}")
    return classifier_weight


def convert_zoo_checkpoint(zoo_path, out_path):
    """Write the zoo checkpoint at ``zoo_path`` in our layout to ``out_path``: our parameter names (loadable with
    ``ms.load_param_into_net(ECAPA_TDNN(**ZOO_MODEL_CONFIG), ...)``) plus ``classifier.weight`` when present."""
    net = ECAPA_TDNN(**ZOO_MODEL_CONFIG)
    classifier_weight = load_zoo_checkpoint(zoo_path, net)
    entries = [{"name": p.name, "data": p.value()} for p in net.get_parameters()]
    if classifier_weight is not None:
        entries.append({"name": CLASSIFIER_NAME, "data": ms.Tensor(classifier_weight)})
    ms.save_checkpoint(entries, out_path)
    logger.info("wrote %s (%d tensors)", out_path, len(entries))
    return out_path


def main(argv=None):
    parser = argparse.ArgumentParser(description="Convert the older MindSpore zoo's ECAPA-TDNN checkpoint to this "
                                                 "project's layout (channels 1024, MFA 3072, no global context, "
                                                 "zero padding).")
    parser.add_argument("zoo_checkpoint", help="the zoo's .ckpt (e.g. ecapatdnn_ascend_v1100_voxceleb_official_audio_"
                                               "EER0.82.ckpt)")
    parser.add_argument("output", help="where to write the converted .ckpt")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    convert_zoo_checkpoint(args.zoo_checkpoint, args.output)
    print(f"wrote {args.output}; use it with --channels 1024 --mfa_channels 3072 --global_context false "
          f"--padding zeros")


if __name__ == "__main__":
    main()
