"""What a checkpoint file holds, for the importer (src/import_weights.py): the network's state dict inside it, the
network's layout read off its tensors' names and shapes, and a short report when the file does not fit.

- :func:`find_network`: a checkpoint is often not the bare state dict but a dict holding it under a key
  (``state_dict``, ``model``, ``ecapa_state_dict``, ...) beside other modules, optimizer state and counters, and
  DataParallel / DDP prefix every name with ``module.``. The usual keys are tried first, then every nested mapping of
  tensors (and every ``prefix.`` group of names); exactly one that holds an ECAPA-TDNN is taken, several are refused
  with their names and sizes.
- :class:`Layout` (:func:`read_layout`): what the tensors, under our names (src/model/ecapa_tdnn.py), say about the
  network: its SE-Res2Blocks, channels, kernel sizes, MFA layer, embedding size, which batch norms it has; the model
  keys that build it (:meth:`Layout.model_settings`), or why this project's network cannot (:meth:`Layout.problems`).
  Dilations leave no trace in a tensor; :func:`assumed_dilations` gives SpeechBrain's rule.
- :func:`front_end_hints`: settings stored beside the weights that name features (``n_mels``, ``hop_length``, ...).

Example::

    layout = read_layout({"blocks.0.conv.weight": np.zeros((512, 80, 5)), ...})
    layout.num_se_blocks, layout.kernel_sizes        # 1, [5, 3, 3]
    print("\\n".join(layout.lines()))
"""
import collections
import dataclasses
import re

import numpy as np

# Keys under which training scripts commonly save the network's state dict, tried first.
USUAL_KEYS = ("state_dict", "model", "model_state_dict", "ecapa_state_dict", "embedding_model", "model_state",
              "net", "network", "ecapa", "encoder", "module")
PARALLEL_PREFIX = "module."          # DataParallel / DistributedDataParallel
# Words in a stored setting's name that describe features (a front-end hint).
FRONT_END_WORDS = ("mel", "hop", "win", "fft", "sample_rate", "sampling_rate", "feat", "fbank", "spectrogram",
                   "frame", "shift")
FIRST_CONV = "blocks.0.conv.weight"
BLOCK_NAME = re.compile(r"^blocks\.(\d+)\.")


def is_tensor(value):
    """True for a torch tensor or numpy array (anything with a shape and a dtype)."""
    return hasattr(value, "shape") and hasattr(value, "dtype") and not isinstance(value, type)


def is_tensor_mapping(value):
    """True for a non-empty mapping whose values are all tensors (a state dict)."""
    return isinstance(value, collections.abc.Mapping) and bool(value) and all(is_tensor(v) for v in value.values())


def strip_parallel_prefix(state):
    """{name: tensor} with DataParallel's leading ``module.`` removed from every name that has it."""
    stripped = {}
    for name, value in state.items():
        while name.startswith(PARALLEL_PREFIX):
            name = name[len(PARALLEL_PREFIX):]
        stripped[name] = value
    return stripped


def size_of(mapping):
    """'94 tensors, 2.31 M values' of a state dict."""
    values = sum(int(np.prod(tuple(v.shape))) for v in mapping.values())
    return f"{len(mapping)} tensors, {values / 1e6:.2f} M values"


def candidates(obj, path=(), depth=3):
    """Every state dict inside ``obj`` -> [(path tuple, {name: tensor}, grouped)]: nested mappings of tensors (to
    ``depth`` levels of dicts) and, in a state dict, each group of names sharing a first component
    (``embedding_model.``), marked ``grouped``."""
    found = []
    if is_tensor_mapping(obj):
        state = strip_parallel_prefix(obj)
        found.append((path, state, False))
        groups = collections.defaultdict(dict)
        for name, value in state.items():
            if "." in name:
                head, rest = name.split(".", 1)
                groups[head][rest] = value
        if len(groups) > 1:
            found += [(path + (head,), group, True) for head, group in groups.items()]
    elif isinstance(obj, collections.abc.Mapping):
        tensors = {key: value for key, value in obj.items() if is_tensor(value)}
        if tensors:                                    # tensors mixed with counters: the tensors alone
            found += candidates(tensors, path, depth)
        for key, value in obj.items():
            if depth > 0 and not is_tensor(value):
                found += candidates(value, path + (str(key),), depth - 1)
    return found


def path_name(path):
    """('model', 'state_dict') -> 'model/state_dict'; () -> '' (the file itself)."""
    return "/".join(path)


def holdings(found):
    """What a file holds, for a person: "'a' (94 tensors, 2.31 M values); 'b' (...)" (groups of names left out)."""
    return "; ".join(f"'{path_name(p) or '(the file itself)'}' ({size_of(s)})" for p, s, grouped in found
                     if not grouped)


def find_network(obj, fits, key="", source="checkpoint"):
    """The state dict of the network inside ``obj`` (a loaded checkpoint) -> (path name, {name: tensor}, note).

    ``fits(state)``: True when a state dict holds the network (its first TDNN, for a format). ``key`` (a path like
    ``model/state_dict``, or a group of names like ``embedding_model``) picks one explicitly. Otherwise the file
    itself if it fits, else the first of USUAL_KEYS that fits, else the only nested state dict that fits. ``note``
    says where the network was found (None for the file itself). Raises ValueError naming ``source`` and listing
    what the file holds when no or several state dicts fit, or ``key`` is not in it."""
    found = candidates(obj)
    if not found:
        raise ValueError(f"{source}: expected a state_dict (a mapping of names to tensors) or a dict holding one; "
                         f"found {type(obj).__name__}")
    if key:
        for path, state, _ in found:
            if path_name(path) == key:
                return key, state, f"took the state dict under '{key}' (--key)"
        raise ValueError(f"{source}: no state dict under '{key}'; it holds: {holdings(found)}")
    if found[0][0] == () and fits(found[0][1]):
        return "", found[0][1], None
    fitting = [(path, state) for path, state, _ in found if path and fits(state)]
    for usual in USUAL_KEYS:
        for path, state in fitting:
            if path[-1] == usual:
                return path_name(path), state, f"took the network's state dict under '{path_name(path)}'"
    if len(fitting) == 1:
        path, state = fitting[0]
        return path_name(path), state, f"took the only state dict that holds the network, '{path_name(path)}'"
    if fitting:
        names = "; ".join(f"'{path_name(p)}' ({size_of(s)})" for p, s in fitting)
        raise ValueError(f"{source}: several state dicts hold an ECAPA-TDNN: {names}; choose one with --key NAME")
    raise ValueError(f"{source}: no state dict in it holds this format's ECAPA-TDNN; it holds: {holdings(found)}. "
                     f"See python -m src.import_weights --inspect {source}")


# ---------------------------------------------------------------- the layout
def kernel_of(shape):
    """A convolution's kernel size from its weight shape: (out, in, k), the zoo's (out, in, 1, k), Linear (out, in)."""
    return int(shape[-1]) if len(shape) >= 3 else 1


def assumed_dilations(kernel_sizes):
    """Dilations for layers whose weights do not record them, by SpeechBrain's rule: layer i has dilation i + 1
    (its defaults [1, 2, 3, 4, 1] with the 1x1 MFA layer at 1), a 1-tap layer 1."""
    return [i + 1 if k > 1 else 1 for i, k in enumerate(kernel_sizes)]


@dataclasses.dataclass
class Layout:
    """An ECAPA-TDNN's layout as read off its tensors (our names). Sizes are None where the tensor is absent."""
    n_mels: int = None
    layer_channels: list = dataclasses.field(default_factory=list)   # output channels of blocks.0, blocks.1, ...
    kernel_sizes: list = dataclasses.field(default_factory=list)     # blocks.0, each SE-Res2Block, the MFA layer
    mfa_in: int = None
    mfa_channels: int = None
    embedding_size: int = None
    fc_in: int = None
    attention_channels: int = None
    attention_in: int = None
    se_channels: int = None
    res2net_scale: int = None
    mfa_norm: bool = False
    attention_norm: bool = False
    embedding_norm: bool = False
    shortcuts: list = dataclasses.field(default_factory=list)        # blocks with a shortcut convolution
    parameters: int = 0                                              # trainable values (no running statistics)

    @property
    def found(self):
        return self.n_mels is not None

    @property
    def num_se_blocks(self):
        return max(len(self.layer_channels) - 1, 0)

    @property
    def channels(self):
        """The most common channel count of the layers (the one a single-width network would have)."""
        counts = collections.Counter(c for c in self.layer_channels if c is not None)
        return counts.most_common(1)[0][0] if counts else None

    @property
    def global_context(self):
        return self.attention_in is not None and self.mfa_channels is not None and \
            self.attention_in == 3 * self.mfa_channels

    def model_settings(self, dilations=None):
        """The MODEL_KEYS (src/model/ecapa_tdnn.py) of this layout; ``dilations`` default to
        :func:`assumed_dilations`. Absent sizes keep ECAPA_TDNN's defaults (fitting then reports them missing)."""
        known = dict(n_mels=self.n_mels, channels=self.channels, mfa_channels=self.mfa_channels,
                     embedding_size=self.embedding_size, attention_channels=self.attention_channels,
                     se_channels=self.se_channels, res2net_scale=self.res2net_scale)
        settings = {key: value for key, value in known.items() if value is not None}
        settings.update(global_context=self.global_context, mfa_norm=self.mfa_norm,
                        attention_norm=self.attention_norm, embedding_norm=self.embedding_norm)
        if len(self.kernel_sizes) >= 3 and None not in self.kernel_sizes:
            settings["kernel_sizes"] = list(self.kernel_sizes)
            settings["dilations"] = list(dilations) if dilations else assumed_dilations(self.kernel_sizes)
        return settings

    def summary(self):
        """What a person needs to build a network for this layout: its lines, then the model keys that fit it (as
        command-line options) or why none can -> list of lines."""
        problems = self.problems()
        if problems:
            return self.lines() + ["no model keys can fit it:"] + [f"  - {problem}" for problem in problems]
        settings = self.model_settings()
        keys = ("n_mels", "channels", "mfa_channels", "embedding_size", "kernel_sizes", "global_context", "mfa_norm",
                "embedding_norm")
        options = " ".join(f"--{key} {str(settings[key]).replace(' ', '').lower()}" for key in keys if key in settings)
        return self.lines() + [f"model keys that fit its layout: {options} (dilations not recorded in weights)"]

    def problems(self):
        """Why this project's ECAPA_TDNN cannot have this layout -> list of sentences ([] when it can)."""
        if not self.found:
            return [f"no first TDNN layer ({FIRST_CONV}) found"]
        found = []
        if self.num_se_blocks < 1:
            found.append("no SE-Res2Block found")
        if len(set(c for c in self.layer_channels if c is not None)) > 1:
            found.append(f"the layers have different channel counts ({', '.join(map(str, self.layer_channels))}); "
                         f"this network gives every layer the same count")
        if self.shortcuts:
            found.append(f"SE-Res2Block(s) {', '.join(map(str, self.shortcuts))} have a shortcut convolution "
                         f"(their input and output channels differ); this network has none")
        if self.channels and self.mfa_in is not None and self.mfa_in != self.num_se_blocks * self.channels:
            found.append(f"the MFA layer takes {self.mfa_in} channels, not the {self.num_se_blocks} SE-Res2Blocks' "
                         f"{self.num_se_blocks} x {self.channels}")
        if self.mfa_channels and self.fc_in is not None and self.fc_in != 2 * self.mfa_channels:
            found.append(f"the embedding layer takes {self.fc_in} inputs, not 2 x the MFA's {self.mfa_channels}")
        if self.attention_in is not None and self.mfa_channels and \
                self.attention_in not in (self.mfa_channels, 3 * self.mfa_channels):
            found.append(f"the attention takes {self.attention_in} inputs, neither the MFA's {self.mfa_channels} "
                         f"nor 3 x that (global context)")
        if any(k is not None and k % 2 == 0 for k in self.kernel_sizes):
            found.append(f"even kernel sizes {self.kernel_sizes}; this network's 'same' convolutions need odd ones")
        if self.res2net_scale and self.channels and self.channels % self.res2net_scale:
            found.append(f"{self.channels} channels do not split into {self.res2net_scale} Res2Net groups")
        return found

    def lines(self):
        """The layout in a few lines for a person (the mismatch report and --inspect)."""
        if not self.found:
            return [f"layout: no ECAPA-TDNN found ({FIRST_CONV} absent after renaming)"]
        kernels = ", ".join("?" if k is None else str(k) for k in self.kernel_sizes[1:-1])
        channels = sorted(set(c for c in self.layer_channels if c is not None))
        channel_text = "/".join(map(str, channels)) if channels else "?"
        yes = {True: "yes", False: "no"}
        return [
            f"layout: {self.num_se_blocks} SE-Res2Block{'s' if self.num_se_blocks != 1 else ''} "
            f"(kernels {kernels or '-'}), channels {channel_text}, first TDNN {self.n_mels} -> {channel_text} kernel "
            f"{self.kernel_sizes[0] if self.kernel_sizes else '?'}",
            f"  MFA {self.mfa_in} -> {self.mfa_channels} kernel "
            f"{self.kernel_sizes[-1] if len(self.kernel_sizes) > 1 else '?'}, embedding {self.embedding_size}, "
            f"batch norm after MFA: {yes[self.mfa_norm]}, after embedding: {yes[self.embedding_norm]}",
            f"  attention {self.attention_channels} (global context: {yes[self.global_context]}, batch norm: "
            f"{yes[self.attention_norm]}), SE {self.se_channels}, Res2Net scale {self.res2net_scale}, "
            f"{self.parameters:,} trainable values"]


def read_layout(arrays):
    """{our name: array or tensor} -> Layout, from the shapes of the first TDNN, each SE-Res2Block's 1x1 and Res2Net
    convolutions, the MFA layer, the attention, the embedding layer, and which batch norms exist."""
    shapes = {name: tuple(int(n) for n in value.shape) for name, value in arrays.items()}
    layout = Layout()
    layout.parameters = sum(int(np.prod(s)) for n, s in shapes.items()
                            if n.rsplit(".", 1)[-1] in ("weight", "bias", "gamma", "beta"))
    first = shapes.get(FIRST_CONV)
    if first is None or len(first) < 2:
        return layout
    layout.n_mels = first[1]
    blocks = sorted({int(m.group(1)) for m in map(BLOCK_NAME.match, shapes) if m})
    layout.layer_channels = [first[0]]
    layout.kernel_sizes = [kernel_of(first)]
    for i in [b for b in blocks if b >= 1]:
        conv = shapes.get(f"blocks.{i}.tdnn2.conv.weight") or shapes.get(f"blocks.{i}.tdnn1.conv.weight")
        layout.layer_channels.append(conv[0] if conv else None)
        split = shapes.get(f"blocks.{i}.res2net_block.blocks.0.conv.weight")
        layout.kernel_sizes.append(kernel_of(split) if split else None)
        if any(n.startswith(f"blocks.{i}.shortcut.") for n in shapes):
            layout.shortcuts.append(i)
    splits = [n for n in shapes if re.fullmatch(r"blocks\.1\.res2net_block\.blocks\.\d+\.conv\.weight", n)]
    layout.res2net_scale = len(splits) + 1 if splits else None
    se = shapes.get("blocks.1.se_block.conv1.weight")
    layout.se_channels = se[0] if se else None
    mfa = shapes.get("mfa.conv.weight")
    if mfa:
        layout.mfa_channels, layout.mfa_in = mfa[0], mfa[1]
    layout.kernel_sizes.append(kernel_of(mfa) if mfa else None)
    attention = shapes.get("asp.tdnn.conv.weight")
    if attention:
        layout.attention_channels, layout.attention_in = attention[0], attention[1]
    fc = shapes.get("fc.weight")
    if fc:
        layout.embedding_size, layout.fc_in = fc[0], fc[1]
    layout.mfa_norm = "mfa.norm.gamma" in shapes
    layout.attention_norm = "asp.tdnn.norm.gamma" in shapes
    layout.embedding_norm = "fc_bn.gamma" in shapes
    return layout


def front_end_hints(obj, limit=6):
    """Settings stored in a checkpoint beside the weights whose names speak of features (``n_mels``,
    ``hop_length``, ``sample_rate``, ...) -> ['path=value', ...] (at most ``limit``)."""
    hints = []

    def walk(value, path, depth):
        if len(hints) >= limit or depth < 0:
            return
        if isinstance(value, collections.abc.Mapping) and not is_tensor_mapping(value):
            for key, item in value.items():
                walk(item, path + (str(key),), depth - 1)
        elif isinstance(value, (int, float, str, bool)) and path and \
                any(word in path[-1].lower() for word in FRONT_END_WORDS):
            hints.append(f"{path_name(path)}={value!r}")
        elif hasattr(value, "__dict__") and not is_tensor(value) and path:     # an argparse Namespace
            walk(vars(value), path, depth - 1)

    walk(obj, (), 4)
    return hints
