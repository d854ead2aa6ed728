"""Import another ECAPA-TDNN's weights into this project's layout: one tool, one function per source format.

Formats:

- ``mindspore_zoo``: the older MindSpore model zoo's released training checkpoint. It holds the embedding network
  under ``network.``, its conv weights 4-D (out, in, 1, k), its batch norms as
  ``*.norm.norm2d.{gamma,beta,moving_mean,moving_variance}``, the AAM-softmax class weights ``classifier.weight``
  (n_classes, 192), an ``output`` buffer and optimizer state. The zoo network is our ECAPA_TDNN with
  :data:`ZOO_MODEL_CONFIG` (channels 1024, MFA 3072, no global context, zero padding) on the same fbank input.
  Mapping: strip ``network.``; ``.norm2d.`` -> ``.``; (out, in, 1, k) -> (out, in, k); drop the optimizer state;
  keep ``classifier.weight`` (for fine-tuning).
- ``wespeaker``: a WeSpeaker ECAPA_TDNN state_dict (``avg_model.pt``, ``model_N.pt``; ``ECAPA_TDNN_c512``,
  ``_c1024``, ``_GLOB_*``, with or without ``emb_bn``), read with ``torch.load(..., weights_only=True)`` (PyTorch
  is needed for this format only). WeSpeaker's network is ours with :data:`WESPEAKER_MODEL_CONFIG` (zero padding,
  no batch norm after the MFA layer, attention hidden layer without ReLU + batch norm, WeSpeaker's ASTP statistics);
  channels, MFA channels (1536), embedding size, global context and ``embedding_norm`` are read off the tensors'
  shapes and names. Mapping (:func:`wespeaker_name`): ``layerN`` -> ``blocks.N-1``, ``se_res2block.{0,1,2,3}`` ->
  ``tdnn1``, ``res2net_block`` (``convs.i``/``bns.i`` -> ``blocks.i.conv``/``.norm``), ``tdnn2``, ``se_block``
  (``linear1/2`` -> ``conv1/2``); ``conv`` -> ``mfa.conv``; ``pool.linear1/2`` -> ``asp.tdnn.conv``/``asp.conv``;
  ``bn`` -> ``asp_bn``; ``linear`` -> ``fc``; ``bn2`` -> ``fc_bn``; batch norm ``weight, bias, running_mean,
  running_var`` -> ``gamma, beta, moving_mean, moving_variance`` (``num_batches_tracked`` dropped); Linear weights
  (out, in) -> (out, in, 1). ``projection.weight`` (the margin-product class weights) is kept as
  ``classifier.weight``; other training-head tensors (``projection.*``) are dropped.

  Res2Net split order, done here and not in the graph: WeSpeaker's Res2Net block feeds splits 0..s-2 through its
  sub-blocks and passes split s-1 through, concatenating [y_0 .. y_{s-2}, x_{s-1}]; ours passes split 0 through and
  concatenates [x_0, y_1 .. y_{s-1}], with our sub-block i-1 on split i. Rotating the channels by one split width
  w (our channel c = WeSpeaker channel (c - w) mod C) turns one into the other: it permutes the output channels of
  ``tdnn1`` (conv weight rows, bias, batch norm) and the input channels of ``tdnn2``'s conv, and leaves the
  sub-blocks in their order (WeSpeaker's ``convs.i`` is our ``blocks.i``). A permutation of weights is exact, so the
  graph needs no split-order switch.

- ``3dspeaker``: a 3D-Speaker ECAPA_TDNN state_dict (``embedding_model.ckpt`` of speakerlab's
  ``speakerlab.models.ecapa_tdnn.ECAPA_TDNN``), read like ``wespeaker``. 3D-Speaker's ECAPA-TDNN is SpeechBrain's
  (names, reflect padding, batch norm after the MFA layer, attention with ReLU + batch norm, Res2Net split 0 passed
  through), so it is our network at its defaults, sizes read off the tensors. Mapping (:func:`speakerlab_name`): the
  wrappers' inner ``conv``/``norm`` module is dropped (``blocks.0.conv.conv.weight`` -> ``blocks.0.conv.weight``,
  ``asp_bn.norm.running_var`` -> ``asp_bn.moving_variance``); ``num_batches_tracked`` dropped. Its classifier is
  saved in another file and is not imported.

Every format refuses a file that does not fit the network, listing all missing, unexpected and mis-shaped names at
once (:func:`fit_network`).

Command line::

    python -m src.import_weights --format mindspore_zoo ecapatdnn_ascend_v1100_voxceleb_official_audio_EER0.82.ckpt \\
        zoo_ecapa.ckpt
    python -m src.import_weights --format wespeaker avg_model.pt wespeaker_ecapa.ckpt
    python -m src.import_weights --format 3dspeaker embedding_model.ckpt 3dspeaker_ecapa.ckpt

The written checkpoint carries its model settings, so eval.py, ``python -m src.evaluate.verify`` and export.py need
no model keys for it.
In Python::

    net = ECAPA_TDNN(**ZOO_MODEL_CONFIG)
    classifier_weight = load_zoo_checkpoint("zoo.ckpt", net)     # numpy (n_classes, 192) or None
"""
import logging
import os
import re

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
# Each source's feature extraction in our front-end keys (src/model/embedder.py FRONTEND_KEYS): the older zoo used
# SpeechBrain's fbank; WeSpeaker computes Kaldi fbank with a hamming window on 16-bit-scaled samples and subtracts
# the utterance mean; 3D-Speaker's FBank is Kaldi fbank with its defaults (povey, [-1, 1] samples) and mean removal.
ZOO_FRONT_END = {"front_end": "speechbrain"}
WESPEAKER_FRONT_END = {"front_end": "kaldi", "kaldi_window": "hamming", "kaldi_scale_16bit": True,
                       "kaldi_mean_norm": True}
SPEAKERLAB_FRONT_END = {"front_end": "kaldi", "kaldi_window": "povey", "kaldi_scale_16bit": False,
                        "kaldi_mean_norm": True}
CLASSIFIER_NAME = "classifier.weight"
# Entries of a training checkpoint that are not weights: Adam moments, step counters, learning rate, loss scale,
# and the zoo's loss ``output`` buffer.
OPTIMIZER_PREFIXES = ("moment1.", "moment2.")
OPTIMIZER_NAMES = ("beta1_power", "beta2_power", "learning_rate", "global_step", "scale_sense", "output")
# WeSpeaker's ECAPA_TDNN as our network's switches (src/model/ecapa_tdnn.py); the sizes come from the file.
WESPEAKER_MODEL_CONFIG = dict(padding="zeros", mfa_norm=False, attention_norm=False, pooling_stats="wespeaker")


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
    """Source array -> our ``shape`` when the two differ only by axes of size 1 (the zoo's conv weights
    (out, in, 1, k) -> (out, in, k), PyTorch Linear weights (out, in) -> (out, in, 1)). None when it cannot fit."""
    if array.shape == tuple(shape):
        return array
    if [n for n in array.shape if n != 1] == [n for n in shape if n != 1]:
        return array.reshape(shape)
    return None


def fit_network(arrays, net, rename):
    """Map source ``{name: array}`` onto ``net``'s parameters, ``rename(source_name)`` giving our name (None: no
    counterpart). Returns ``{our_name: float32 array in our shape}`` covering every parameter of ``net``. Raises
    CheckpointError listing every missing (our names), unexpected and mis-shaped (source names) entry at once."""
    targets = {p.name: tuple(p.shape) for p in net.get_parameters()}
    ours, unexpected, misshaped, misshaped_names = {}, [], [], set()
    for source_name, value in arrays.items():
        array = np.asarray(value)
        name = rename(source_name)
        if name not in targets:
            unexpected.append(source_name)
            continue
        fitted = to_our_shape(array, targets[name])
        if fitted is None:
            misshaped.append(f"{source_name} {list(array.shape)} (network expects {list(targets[name])})")
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
    return ours


def convert_zoo_params(zoo_params, net):
    """Map zoo ``{name: array}`` onto ``net``'s parameters.

    Returns ``(ours, classifier_weight)``: ``{our_name: float32 array in our shape}`` covering every parameter of
    ``net``, and the ``classifier.weight`` array (or None). Raises CheckpointError listing every missing,
    unexpected and mis-shaped name at once.
    """
    weights = {name: value for name, value in zoo_params.items() if not is_optimizer_state(name)}
    classifier = [weights.pop(name) for name in list(weights) if our_name(name) == CLASSIFIER_NAME]
    classifier_weight = np.asarray(classifier[0]).astype(np.float32) if classifier else None
    return fit_network(weights, net, our_name), classifier_weight


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


def write_imported(net, classifier_weight, out_path, front_end):
    """Write ``net``'s parameters under our names (loadable with ``ms.load_param_into_net``), ``classifier.weight``
    when not None, and the settings (src/checkpoint.py ``read_settings``: the ``front_end`` dict of the source's
    feature options, 16 kHz, and the network's) to ``out_path``."""
    entries = [{"name": p.name, "data": p.value()} for p in net.get_parameters()]
    if classifier_weight is not None:
        entries.append({"name": CLASSIFIER_NAME, "data": ms.Tensor(classifier_weight)})
    entries.append(json_entry(SETTINGS_KEY, {"sample_rate": 16000, **front_end, **network_settings(net)}))
    write_checkpoint_file(entries, out_path)
    logger.info("wrote %s (%d tensors)", out_path, len(entries))
    return out_path


def import_zoo_checkpoint(zoo_path, out_path):
    """Write the zoo checkpoint at ``zoo_path`` in our layout (ECAPA_TDNN(**ZOO_MODEL_CONFIG)) to ``out_path``."""
    net = ECAPA_TDNN(**ZOO_MODEL_CONFIG)
    return write_imported(net, load_zoo_checkpoint(zoo_path, net), out_path, ZOO_FRONT_END)


# ---------------------------------------------------------------- PyTorch state_dicts (WeSpeaker, 3D-Speaker)
TORCH_BATCHNORM = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}


def read_torch_state_dict(path):
    """A PyTorch state_dict file -> {name: numpy array}, read with ``torch.load(weights_only=True)`` (no code in
    the file runs). Raises CheckpointError naming the file (or PyTorch, when it is not installed)."""
    try:
        import torch
    except ImportError:
        raise CheckpointError(f"{path}: reading a PyTorch checkpoint needs PyTorch (pip install torch)") from None
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:       # torch raises pickle, zip and RuntimeError errors alike for a bad file
        raise CheckpointError(f"{path}: not a PyTorch state_dict readable with weights_only=True ({err})") from None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointError(f"{path}: expected a state_dict (a mapping of names to tensors)")
    return {name: value.detach().cpu().float().numpy() for name, value in state.items()}


def torch_network_settings(state, names):
    """ECAPA_TDNN sizes read off a PyTorch state_dict ({name: array}). ``names`` gives the source's name of our
    first conv, first SE conv, MFA conv, attention hidden conv, fc weights and the pattern of the first Res2Net
    block's sub-convolutions. Where a tensor is absent the default size stays (fitting then reports it missing)."""
    def size(key, axis, default):
        return state[names[key]].shape[axis] if names[key] in state else default

    mfa_channels = size("mfa", 0, 1536)
    splits = [n for n in state if re.fullmatch(names["res2net_convs"], n)]
    return dict(n_mels=size("first", 1, 80), channels=size("first", 0, 512), mfa_channels=mfa_channels,
                embedding_size=size("fc", 0, 192), attention_channels=size("attention", 0, 128),
                se_channels=size("se", 0, 128), res2net_scale=len(splits) + 1 if splits else 8,
                global_context=size("attention", 1, mfa_channels) == 3 * mfa_channels)


def is_torch_counter(name):
    """True for batch norms' ``num_batches_tracked`` (a training counter, not a weight)."""
    return name.endswith(".num_batches_tracked")


# ---------------------------------------------------------------- WeSpeaker
# WeSpeaker module (after layerN -> blocks.N-1) -> ours; the first pattern that matches the whole module name wins.
WESPEAKER_MODULES = (
    (r"blocks\.0\.conv", r"blocks.0.conv"),
    (r"blocks\.0\.bn", r"blocks.0.norm"),
    (r"(blocks\.\d)\.se_res2block\.0\.conv", r"\1.tdnn1.conv"),
    (r"(blocks\.\d)\.se_res2block\.0\.bn", r"\1.tdnn1.norm"),
    (r"(blocks\.\d)\.se_res2block\.1\.convs\.(\d+)", r"\1.res2net_block.blocks.\2.conv"),
    (r"(blocks\.\d)\.se_res2block\.1\.bns\.(\d+)", r"\1.res2net_block.blocks.\2.norm"),
    (r"(blocks\.\d)\.se_res2block\.2\.conv", r"\1.tdnn2.conv"),
    (r"(blocks\.\d)\.se_res2block\.2\.bn", r"\1.tdnn2.norm"),
    (r"(blocks\.\d)\.se_res2block\.3\.linear([12])", r"\1.se_block.conv\2"),
    (r"conv", r"mfa.conv"),
    (r"pool\.linear1", r"asp.tdnn.conv"),
    (r"pool\.linear2", r"asp.conv"),
    (r"bn", r"asp_bn"),
    (r"linear", r"fc"),
    (r"bn2", r"fc_bn"),
)
WESPEAKER_SIZE_NAMES = dict(first="layer1.conv.weight", se="layer2.se_res2block.3.linear1.weight",
                            mfa="conv.weight", attention="pool.linear1.weight", fc="linear.weight",
                            res2net_convs=r"layer2\.se_res2block\.1\.convs\.\d+\.weight")
WESPEAKER_HEAD = "projection."           # the training head (margin product) WeSpeaker saves beside the model
WESPEAKER_CLASSIFIER = "projection.weight"


def wespeaker_name(name):
    """WeSpeaker state-dict name -> our parameter name, or None when it has no counterpart:
    'layer2.se_res2block.1.bns.3.running_var' -> 'blocks.1.res2net_block.blocks.3.norm.moving_variance'."""
    module, leaf = name.rsplit(".", 1) if "." in name else ("", name)
    module = re.sub(r"^layer(\d+)", lambda m: f"blocks.{int(m.group(1)) - 1}", module)
    for pattern, replacement in WESPEAKER_MODULES:
        if re.fullmatch(pattern, module):
            ours = re.sub(pattern, replacement, module)
            if ours.endswith(("norm", "_bn")):
                return f"{ours}.{TORCH_BATCHNORM[leaf]}" if leaf in TORCH_BATCHNORM else None
            return f"{ours}.{leaf}" if leaf in ("weight", "bias") else None
    return None


def wespeaker_settings(state):
    """The ECAPA_TDNN settings of a WeSpeaker state_dict ({name: array}): WESPEAKER_MODEL_CONFIG, ``embedding_norm``
    when the file has ``bn2``, and the sizes read off the tensors."""
    return dict(torch_network_settings(state, WESPEAKER_SIZE_NAMES), embedding_norm="bn2.weight" in state,
                **WESPEAKER_MODEL_CONFIG)


def rotate_res2net_splits(ours, net):
    """Fold WeSpeaker's Res2Net split order into ``ours`` ({our_name: array}, in place): in each SE-Res2Net block
    rotate tdnn1's output channels and tdnn2's input channels by one split width (module docstring)."""
    width = net.channels // net.res2net_scale
    order = np.roll(np.arange(net.channels), width)           # our channel c <- WeSpeaker channel order[c]
    for block in range(1, len(net.blocks)):
        tdnn1 = f"blocks.{block}.tdnn1."
        for name in [n for n in ours if n.startswith(tdnn1)]:
            ours[name] = ours[name][order]
        tdnn2 = f"blocks.{block}.tdnn2.conv.weight"
        ours[tdnn2] = ours[tdnn2][:, order]


def convert_wespeaker_params(state, net):
    """Map a WeSpeaker state_dict ({name: array}) onto ``net`` (built with :func:`wespeaker_settings`).
    Returns ``(ours, classifier_weight or None)``; raises CheckpointError listing what does not fit."""
    weights = {name: value for name, value in state.items()
               if not name.startswith(WESPEAKER_HEAD) and not is_torch_counter(name)}
    ours = fit_network(weights, net, wespeaker_name)
    rotate_res2net_splits(ours, net)
    classifier = state.get(WESPEAKER_CLASSIFIER)
    return ours, None if classifier is None else np.asarray(classifier, np.float32)


# ---------------------------------------------------------------- 3D-Speaker
# 3D-Speaker's ECAPA_TDNN (speakerlab/models/ecapa_tdnn/ECAPA_TDNN.py) is SpeechBrain's: our network at its defaults.
SPEAKERLAB_SIZE_NAMES = dict(first="blocks.0.conv.conv.weight", se="blocks.1.se_block.conv1.conv.weight",
                             mfa="mfa.conv.conv.weight", attention="asp.tdnn.conv.conv.weight", fc="fc.conv.weight",
                             res2net_convs=r"blocks\.1\.res2net_block\.blocks\.\d+\.conv\.conv\.weight")


def speakerlab_name(name):
    """3D-Speaker (SpeechBrain layout) name -> ours, or None: the wrappers' inner ``conv``/``norm`` module goes,
    'blocks.0.conv.conv.weight' -> 'blocks.0.conv.weight', 'asp_bn.norm.running_var' -> 'asp_bn.moving_variance'."""
    parts = name.rsplit(".", 2)
    if len(parts) != 3:
        return None
    prefix, inner, leaf = parts
    if inner == "conv" and leaf in ("weight", "bias"):
        return f"{prefix}.{leaf}"
    if inner == "norm" and leaf in TORCH_BATCHNORM:
        return f"{prefix}.{TORCH_BATCHNORM[leaf]}"
    return None


def speakerlab_settings(state):
    """The ECAPA_TDNN settings of a 3D-Speaker state_dict: our defaults with the sizes read off the tensors."""
    return torch_network_settings(state, SPEAKERLAB_SIZE_NAMES)


def convert_speakerlab_params(state, net):
    """Map a 3D-Speaker ECAPA_TDNN state_dict ({name: array}) onto ``net`` -> ``(ours, None)`` (3D-Speaker saves its
    classifier in another file); raises CheckpointError listing what does not fit."""
    weights = {name: value for name, value in state.items() if not is_torch_counter(name)}
    return fit_network(weights, net, speakerlab_name), None


# ---------------------------------------------------------------- importing a PyTorch state_dict
def import_torch_state_dict(source_path, out_path, settings_of, convert, front_end):
    """Write the PyTorch state_dict at ``source_path`` in our layout to ``out_path``: the network built with
    ``settings_of(state)``, weights from ``convert(state, net)`` -> (ours, classifier weight or None), and the
    source's ``front_end`` settings."""
    state = read_torch_state_dict(source_path)
    try:
        net = ECAPA_TDNN(**settings_of(state))
        ours, classifier_weight = convert(state, net)
    except ValueError as error:             # CheckpointError, or sizes ECAPA_TDNN refuses
        raise CheckpointError(f"{source_path}: {error}") from None
    for p in net.get_parameters():
        p.set_data(ms.Tensor(ours[p.name]))
    logger.info("loaded %d parameters from %s", len(ours), source_path)
    return write_imported(net, classifier_weight, out_path, front_end)


def import_wespeaker_checkpoint(source_path, out_path):
    """WeSpeaker's ECAPA_TDNN state_dict (``avg_model.pt``) -> our checkpoint at ``out_path``."""
    return import_torch_state_dict(source_path, out_path, wespeaker_settings, convert_wespeaker_params,
                                   WESPEAKER_FRONT_END)


def import_speakerlab_checkpoint(source_path, out_path):
    """3D-Speaker's ECAPA_TDNN state_dict (``embedding_model.ckpt``) -> our checkpoint at ``out_path``."""
    return import_torch_state_dict(source_path, out_path, speakerlab_settings, convert_speakerlab_params,
                                   SPEAKERLAB_FRONT_END)


FORMATS = {"mindspore_zoo": import_zoo_checkpoint, "wespeaker": import_wespeaker_checkpoint,
           "3dspeaker": import_speakerlab_checkpoint}


def main(argv=None):
    parser = ArgumentParser(description="Import another ECAPA-TDNN's weights as a checkpoint of this "
                                                 "project.")
    parser.add_argument("--format", required=True, choices=sorted(FORMATS), help="the source's format")
    parser.add_argument("source", help="the checkpoint to import (e.g. the older zoo's "
                                       "ecapatdnn_ascend_v1100_voxceleb_official_audio_EER0.82.ckpt, or "
                                       "WeSpeaker's avg_model.pt)")
    parser.add_argument("output", help="where to write the imported .ckpt")
    args = parser.parse_args(argv)
    FORMATS[args.format](args.source, args.output)
    print(f"wrote {args.output}; it carries its model settings: {read_settings(args.output)}")
    return 0


if __name__ == "__main__":
    run_command(main)
