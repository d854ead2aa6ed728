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

- ``speechbrain``: SpeechBrain's ``embedding_model.ckpt`` (``speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN``'s
  state_dict, e.g. of ``speechbrain/spkrec-ecapa-voxceleb``), read like ``wespeaker``. It is our network at its
  defaults (reflect padding, batch norm after the MFA layer, attention with ReLU + batch norm, Res2Net split 0 passed
  through), sizes read off the tensors, on our "speechbrain" front end (Fbank + sentence mean removal, as its
  hyperparams.yaml). Mapping (:func:`speechbrain_name`): the wrappers' inner ``conv``/``norm`` module is dropped
  (``blocks.0.conv.conv.weight`` -> ``blocks.0.conv.weight``, ``asp_bn.norm.running_var`` ->
  ``asp_bn.moving_variance``); ``num_batches_tracked`` dropped. When ``mean_var_norm_emb.ckpt`` lies beside the
  file, its ``glob_mean`` (SpeechBrain's ``InputNormalization(norm_type="global", std_norm=False)`` of embeddings)
  is kept as the checkpoint's ``embedding_mean``, which ``subtract_mean: true`` subtracts when no cohort is given.
  SpeechBrain's verification does not apply it, so the recipe file leaves ``subtract_mean`` off.
- ``3dspeaker``: a 3D-Speaker ECAPA_TDNN state_dict (``embedding_model.ckpt`` or ModelScope's ``ecapa-tdnn.ckpt``
  of speakerlab's ``speakerlab.models.ecapa_tdnn.ECAPA_TDNN``). 3D-Speaker's ECAPA-TDNN is a copy of SpeechBrain's
  (same names and switches), imported as ``speechbrain`` but on the Kaldi front end of its ``FBank`` (povey window,
  samples in [-1, 1], utterance mean removed). Its classifier is saved in another file and is not imported.

Every format refuses a file that does not fit the network, listing all missing, unexpected and mis-shaped names at
once (:func:`fit_network`).

Command line (each writes the checkpoint and the recipe file ``configs/pretrained/<name>.yaml``, or ``--recipe``)::

    python -m src.import_weights --format mindspore_zoo ecapatdnn_ascend_v1100_voxceleb_official_audio_EER0.82.ckpt \\
        pretrained/zoo_ecapa.ckpt
    python -m src.import_weights --format speechbrain spkrec-ecapa-voxceleb/embedding_model.ckpt pretrained/sb.ckpt
    python -m src.import_weights --format wespeaker voxceleb_ECAPA512/avg_model.pt pretrained/wespeaker_ecapa512.ckpt
    python -m src.import_weights --format 3dspeaker ecapa-tdnn.ckpt pretrained/3dspeaker_ecapa.ckpt

The written checkpoint carries its model settings, so eval.py, ``python -m src.evaluate.verify`` and export.py need
no model keys for it; the recipe file names the checkpoint and repeats those settings for a reader
(``python eval.py --config configs/pretrained/sb.yaml --test_dir ... --trials ...``).
In Python::

    net = ECAPA_TDNN(**ZOO_MODEL_CONFIG)
    classifier_weight = load_zoo_checkpoint("zoo.ckpt", net)     # numpy (n_classes, 192) or None
"""
from src.mindspore_log import route_mindspore_log

if __name__ == "__main__":
    route_mindspore_log()       # first: MindSpore's C++ logger reads its settings when the imports below load it

import json
import logging
import os
import re

import numpy as np
import mindspore as ms
import yaml

from src.checkpoint import (CLASSIFIER_WEIGHT, EMBEDDING_MEAN_KEY, NETWORK_PREFIX, SETTINGS_KEY, CheckpointError,
                            json_entry, read_checkpoint, read_embedding_mean, write_checkpoint_file)
from src.cli import run_command
from src.config import ArgumentParser
from src.files import write_atomically
from src.model.ecapa_tdnn import ECAPA_TDNN, network_settings

logger = logging.getLogger(__name__)

# The zoo network's settings where they differ from ECAPA_TDNN's defaults (80 mels, embedding 192, attention 128,
# SE 128, Res2Net scale 8).
ZOO_MODEL_CONFIG = dict(channels=1024, mfa_channels=3072, global_context=False, padding="zeros")
# Each source's feature extraction in our front-end keys (src/model/embedder.py FRONTEND_KEYS): SpeechBrain's models
# and the older zoo use SpeechBrain's fbank with sentence mean removal (our "speechbrain" front end); WeSpeaker computes Kaldi fbank with a hamming window on 16-bit-scaled samples and subtracts
# the utterance mean; 3D-Speaker's FBank is Kaldi fbank with its defaults (povey, [-1, 1] samples) and mean removal.
ZOO_FRONT_END = SPEECHBRAIN_FRONT_END = {"front_end": "speechbrain"}
WESPEAKER_FRONT_END = {"front_end": "kaldi", "kaldi_window": "hamming", "kaldi_scale_16bit": True,
                       "kaldi_mean_norm": True}
SPEAKERLAB_FRONT_END = {"front_end": "kaldi", "kaldi_window": "povey", "kaldi_scale_16bit": False,
                        "kaldi_mean_norm": True}
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
    classifier = [weights.pop(name) for name in list(weights) if our_name(name) == CLASSIFIER_WEIGHT]
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


def imported_settings(net, front_end):
    """The embedder settings of an imported network: 16 kHz, the source's ``front_end`` dict, ``net``'s settings."""
    return {"sample_rate": 16000, **front_end, **network_settings(net)}


def write_imported(net, out_path, front_end, classifier_weight=None, embedding_mean=None):
    """Write ``net``'s parameters under our names (loadable with ``ms.load_param_into_net``), ``classifier.weight``
    and ``embedding_mean`` (src/checkpoint.py EMBEDDING_MEAN_KEY) when not None, and the settings (src/checkpoint.py
    ``read_settings``: the ``front_end`` dict of the source's feature options, 16 kHz, and the network's) to
    ``out_path`` -> the settings."""
    settings = imported_settings(net, front_end)
    entries = [{"name": p.name, "data": p.value()} for p in net.get_parameters()]
    if classifier_weight is not None:
        entries.append({"name": CLASSIFIER_WEIGHT, "data": ms.Tensor(classifier_weight)})
    if embedding_mean is not None:
        entries.append({"name": EMBEDDING_MEAN_KEY, "data": ms.Tensor(embedding_mean.astype(np.float32))})
    entries.append(json_entry(SETTINGS_KEY, settings))
    write_checkpoint_file(entries, out_path)
    logger.info("wrote %s (%d tensors)", out_path, len(entries))
    return settings


def import_zoo_checkpoint(zoo_path, out_path):
    """Write the zoo checkpoint at ``zoo_path`` in our layout (ECAPA_TDNN(**ZOO_MODEL_CONFIG)) to ``out_path``."""
    net = ECAPA_TDNN(**ZOO_MODEL_CONFIG)
    return write_imported(net, out_path, ZOO_FRONT_END, classifier_weight=load_zoo_checkpoint(zoo_path, net))


# ---------------------------------------------------------------- PyTorch state_dicts (WeSpeaker, 3D-Speaker)
TORCH_BATCHNORM = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}


def read_torch_file(path):
    """The object in a PyTorch file, read with ``torch.load(weights_only=True)`` (no code in the file runs: only
    tensors, numbers, strings and containers load). Raises CheckpointError naming the file (or PyTorch, when it is
    not installed)."""
    try:
        import torch
    except ImportError:
        raise CheckpointError(f"{path}: reading a PyTorch checkpoint needs PyTorch (pip install torch)") from None
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:       # torch raises pickle, zip and RuntimeError errors alike for a bad file
        raise CheckpointError(f"{path}: not a PyTorch file readable with weights_only=True ({err})") from None


def read_torch_state_dict(path):
    """A PyTorch state_dict file -> {name: float32 numpy array} (:func:`read_torch_file`)."""
    state = read_torch_file(path)
    import torch
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


# ---------------------------------------------------------------- SpeechBrain's layout (SpeechBrain, 3D-Speaker)
# SpeechBrain's ECAPA_TDNN, and 3D-Speaker's copy of it (speakerlab/models/ecapa_tdnn/ECAPA_TDNN.py): our network at
# its defaults, with the same module names.
SPEECHBRAIN_SIZE_NAMES = dict(first="blocks.0.conv.conv.weight", se="blocks.1.se_block.conv1.conv.weight",
                              mfa="mfa.conv.conv.weight", attention="asp.tdnn.conv.conv.weight", fc="fc.conv.weight",
                              res2net_convs=r"blocks\.1\.res2net_block\.blocks\.\d+\.conv\.conv\.weight")
SPEECHBRAIN_EMBEDDING_MEAN = "mean_var_norm_emb.ckpt"     # looked for beside embedding_model.ckpt


def speechbrain_name(name):
    """SpeechBrain-layout name -> ours, or None: the wrappers' inner ``conv``/``norm`` module goes,
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


def speechbrain_settings(state):
    """The ECAPA_TDNN settings of a SpeechBrain-layout state_dict: our defaults with the sizes read off the tensors."""
    return torch_network_settings(state, SPEECHBRAIN_SIZE_NAMES)


def convert_speechbrain_params(state, net):
    """Map a SpeechBrain-layout ECAPA_TDNN state_dict ({name: array}) onto ``net`` -> ``(ours, None)`` (both toolkits
    save the classifier in another file); raises CheckpointError listing what does not fit."""
    weights = {name: value for name, value in state.items() if not is_torch_counter(name)}
    return fit_network(weights, net, speechbrain_name), None


def read_speechbrain_embedding_mean(path, embedding_size):
    """SpeechBrain's ``mean_var_norm_emb.ckpt`` (``InputNormalization(norm_type="global", std_norm=False)``'s
    statistics: a dict with ``glob_mean`` (D,)) -> (D,) float64 array. Raises CheckpointError naming the file."""
    stats = read_torch_file(path)
    import torch
    mean = stats.get("glob_mean") if isinstance(stats, dict) else None
    if not torch.is_tensor(mean) or tuple(mean.shape) not in ((embedding_size,), (1, embedding_size)):
        raise CheckpointError(f"{path}: expected SpeechBrain InputNormalization statistics with 'glob_mean' of "
                              f"{embedding_size} values (the embedding size)")
    return mean.detach().cpu().double().numpy().reshape(embedding_size)


# ---------------------------------------------------------------- importing a PyTorch state_dict
def import_torch_state_dict(source_path, out_path, settings_of, convert, front_end, embedding_mean_path=None):
    """Write the PyTorch state_dict at ``source_path`` in our layout to ``out_path``: the network built with
    ``settings_of(state)``, weights from ``convert(state, net)`` -> (ours, classifier weight or None), the
    source's ``front_end`` settings and, from ``embedding_mean_path``, SpeechBrain's mean embedding -> the settings."""
    state = read_torch_state_dict(source_path)
    try:
        net = ECAPA_TDNN(**settings_of(state))
        ours, classifier_weight = convert(state, net)
    except ValueError as error:             # CheckpointError, or sizes ECAPA_TDNN refuses
        raise CheckpointError(f"{source_path}: {error}") from None
    embedding_mean = None
    if embedding_mean_path:
        embedding_mean = read_speechbrain_embedding_mean(embedding_mean_path, net.embedding_size)
        logger.info("mean embedding from %s (subtract_mean: true subtracts it)", embedding_mean_path)
    for p in net.get_parameters():
        p.set_data(ms.Tensor(ours[p.name]))
    logger.info("loaded %d parameters from %s", len(ours), source_path)
    return write_imported(net, out_path, front_end, classifier_weight, embedding_mean)


def import_wespeaker_checkpoint(source_path, out_path):
    """WeSpeaker's ECAPA_TDNN state_dict (``avg_model.pt``) -> our checkpoint at ``out_path``."""
    return import_torch_state_dict(source_path, out_path, wespeaker_settings, convert_wespeaker_params,
                                   WESPEAKER_FRONT_END)


def import_speakerlab_checkpoint(source_path, out_path):
    """3D-Speaker's ECAPA_TDNN state_dict (``embedding_model.ckpt``) -> our checkpoint at ``out_path``."""
    return import_torch_state_dict(source_path, out_path, speechbrain_settings, convert_speechbrain_params,
                                   SPEAKERLAB_FRONT_END)


def import_speechbrain_checkpoint(source_path, out_path):
    """SpeechBrain's ``embedding_model.ckpt`` (with ``mean_var_norm_emb.ckpt`` when it lies beside it) -> our
    checkpoint at ``out_path``."""
    mean_path = os.path.join(os.path.dirname(source_path), SPEECHBRAIN_EMBEDDING_MEAN)
    return import_torch_state_dict(source_path, out_path, speechbrain_settings, convert_speechbrain_params,
                                   SPEECHBRAIN_FRONT_END, mean_path if os.path.isfile(mean_path) else None)


FORMATS = {"mindspore_zoo": import_zoo_checkpoint, "speechbrain": import_speechbrain_checkpoint,
           "wespeaker": import_wespeaker_checkpoint, "3dspeaker": import_speakerlab_checkpoint}


# ---------------------------------------------------------------- the recipe file
PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE_DIR = os.path.join(PROJECT_ROOT, "configs", "pretrained")
BASE_RECIPE = os.path.join(PROJECT_ROOT, "configs", "ecapa-tdnn_config.yaml")


def default_recipe_path(out_path):
    """configs/pretrained/<name>.yaml for the imported checkpoint <name>.ckpt."""
    return os.path.join(RECIPE_DIR, os.path.splitext(os.path.basename(out_path))[0] + ".yaml")


def project_path(path):
    """``path`` as the recipe names it: relative to the project root (where the commands run) when inside it."""
    path = os.path.abspath(path)
    return os.path.relpath(path, PROJECT_ROOT) if path.startswith(PROJECT_ROOT + os.sep) else path


def recipe_body(out_path, recipe_path, settings, has_mean):
    """The YAML lines of an imported checkpoint's recipe: based on the full recipe, naming the checkpoint and every
    embedder setting it carries (the scripts take them from the checkpoint anyway; here they are for reading, and
    they must agree)."""
    recipe_dir = os.path.dirname(os.path.abspath(recipe_path))
    inside = (recipe_dir + os.sep).startswith(PROJECT_ROOT + os.sep)
    lines = [f"base: {os.path.relpath(BASE_RECIPE, recipe_dir) if inside else BASE_RECIPE}",
             f"checkpoint: {project_path(out_path)}"]
    lines += [f"{key}: {json.dumps(value)}" for key, value in settings.items()]
    if has_mean:
        lines.append("subtract_mean: false  # true subtracts the imported mean embedding (SpeechBrain's "
                     "mean_var_norm_emb; its verification scores without it)")
    return lines


def write_recipe(fmt, source_path, out_path, recipe_path, settings, has_mean):
    """Write the recipe file of an imported checkpoint (:func:`recipe_body` under a header naming the source). A
    recipe that already says the same (e.g. one shipped in configs/pretrained/) is left as it is."""
    body = recipe_body(out_path, recipe_path, settings, has_mean)
    if os.path.isfile(recipe_path):
        with open(recipe_path, encoding="utf-8") as f:
            if yaml.safe_load(f) == yaml.safe_load("\n".join(body)):
                logger.info("%s already names this checkpoint and its settings; left as it is", recipe_path)
                return recipe_path
    header = [f"# {fmt} ECAPA-TDNN imported from {os.path.abspath(source_path)} by",
              f"#   python -m src.import_weights --format {fmt} {source_path} {out_path}",
              "# Use: python eval.py --config <this file> --test_dir ... --trials ...;  "
              "python export.py --config <this file>"]
    os.makedirs(os.path.dirname(os.path.abspath(recipe_path)), exist_ok=True)
    write_atomically(recipe_path, "w", lambda f: f.write("\n".join(header + body) + "\n"))
    return recipe_path


def main(argv=None):
    parser = ArgumentParser(description="Import another ECAPA-TDNN's weights as a checkpoint of this "
                                        "project, with a recipe file naming it.")
    parser.add_argument("--format", required=True, choices=sorted(FORMATS), help="the source's format")
    parser.add_argument("--recipe", default="", help="where to write the recipe file (default "
                                                     "configs/pretrained/<output name>.yaml)")
    parser.add_argument("source", help="the checkpoint to import (SpeechBrain's or 3D-Speaker's "
                                       "embedding_model.ckpt, WeSpeaker's avg_model.pt, the older zoo's "
                                       "ecapatdnn_ascend_v1100_voxceleb_official_audio_EER0.82.ckpt)")
    parser.add_argument("output", help="where to write the imported .ckpt")
    args = parser.parse_args(argv)
    recipe_path = args.recipe or default_recipe_path(args.output)
    settings = FORMATS[args.format](args.source, args.output)
    write_recipe(args.format, args.source, args.output, recipe_path, settings,
                 read_embedding_mean(args.output) is not None)
    print(f"wrote {args.output} and its recipe {recipe_path}; they carry the model settings {settings}")
    return 0


if __name__ == "__main__":
    run_command(main)
