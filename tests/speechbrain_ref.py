"""SpeechBrain's ECAPA-TDNN (PyTorch) as an independent reference for our MindSpore network.

``import speechbrain`` imports torchaudio, whose installed CUDA build does not load here; SpeechBrain's ECAPA_TDNN
and Fbank never call it, so an empty ``torchaudio`` module is registered first.

- :func:`speechbrain_module` imports a SpeechBrain module with that stub.
- :func:`make_speechbrain_ecapa` builds SpeechBrain's ECAPA_TDNN for our configuration (optionally with zero
  padding, the older zoo's choice, by switching its convolutions' padding mode).
- :func:`randomize_batchnorm` gives every batch norm realistic running statistics and affine parameters.
- :func:`copy_speechbrain_to_mindspore` copies all weights and statistics into our ECAPA_TDNN by name.
"""
import importlib
import sys
import types

import numpy as np


def speechbrain_module(name):
    """Import ``name`` (e.g. "speechbrain.lobes.models.ECAPA_TDNN") with an empty torchaudio stub."""
    sys.modules.setdefault("torchaudio", types.ModuleType("torchaudio"))
    return importlib.import_module(name)


def make_speechbrain_ecapa(channels=512, mfa_channels=1536, embedding_size=192, attention_channels=128,
                           se_channels=128, res2net_scale=8, global_context=True, padding="reflect", n_mels=80):
    """SpeechBrain ECAPA_TDNN in eval mode with the same hyper-parameters as ``src.model.ecapa_tdnn.ECAPA_TDNN``."""
    import torch
    ecapa = speechbrain_module("speechbrain.lobes.models.ECAPA_TDNN")
    model = ecapa.ECAPA_TDNN(n_mels, lin_neurons=embedding_size, channels=[channels] * 4 + [mfa_channels],
                             attention_channels=attention_channels, res2net_scale=res2net_scale,
                             se_channels=se_channels, global_context=global_context)
    if padding == "zeros":
        for module in model.modules():
            if hasattr(module, "padding_mode") and not isinstance(module, torch.nn.Conv1d):
                module.padding_mode = "constant"
    elif padding != "reflect":
        raise ValueError(f"padding: expected reflect or zeros, got '{padding}'")
    return model.eval()


def randomize_batchnorm(model, seed=0):
    """Random positive running variances, running means and affine parameters in every BatchNorm1d of ``model``,
    so that copying or ignoring a batch norm changes the output."""
    import torch
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                n = module.num_features
                module.running_mean.copy_(torch.from_numpy(rng.normal(0.0, 0.5, n).astype(np.float32)))
                module.running_var.copy_(torch.from_numpy(rng.uniform(0.3, 2.0, n).astype(np.float32)))
                module.weight.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, n).astype(np.float32)))
                module.bias.copy_(torch.from_numpy(rng.normal(0.0, 0.2, n).astype(np.float32)))
    return model


BATCHNORM_NAMES = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}


def mindspore_name(speechbrain_name):
    """SpeechBrain state-dict name -> our parameter name, or None for buffers we do not keep.

    SpeechBrain wraps torch's Conv1d/BatchNorm1d in modules whose inner layer is called ``conv``/``norm``:
    ``blocks.0.conv.conv.weight`` -> ``blocks.0.conv.weight``, ``blocks.0.norm.norm.running_var`` ->
    ``blocks.0.norm.moving_variance``, ``asp_bn.norm.weight`` -> ``asp_bn.gamma``.
    """
    prefix, leaf = speechbrain_name.rsplit(".", 1)
    if leaf == "num_batches_tracked":
        return None
    prefix, inner = prefix.rsplit(".", 1)
    if inner == "conv":
        return f"{prefix}.{leaf}"
    if inner == "norm":
        return f"{prefix}.{BATCHNORM_NAMES[leaf]}"
    raise KeyError(f"unexpected SpeechBrain parameter name '{speechbrain_name}'")


def copy_speechbrain_to_mindspore(model, net):
    """Copy every parameter and batch-norm statistic of SpeechBrain ``model`` into our ECAPA_TDNN ``net``.
    Raises if a name is missing on either side or a shape differs."""
    import mindspore as ms
    ours = {p.name: p for p in net.get_parameters()}
    copied = set()
    for name, value in model.state_dict().items():
        target = mindspore_name(name)
        if target is None:
            continue
        if target not in ours:
            raise KeyError(f"SpeechBrain '{name}' -> '{target}' has no counterpart in our network")
        array = value.detach().cpu().numpy().astype(np.float32)
        if tuple(ours[target].shape) != array.shape:
            raise ValueError(f"'{target}': ours {tuple(ours[target].shape)}, SpeechBrain {array.shape}")
        ours[target].set_data(ms.Tensor(array))
        copied.add(target)
    missing = sorted(set(ours) - copied)
    if missing:
        raise KeyError(f"parameters not set from SpeechBrain: {missing}")


def speechbrain_embed(model, feats, lengths=None):
    """feats (B, T, n_mels) numpy, lengths (B,) valid frames or None -> (B, E) numpy embeddings (eval, no grad).
    SpeechBrain takes relative lengths and keeps frames t < rel * T; (L - 0.5) / T keeps exactly L frames despite
    float rounding. Its convolutions pad the batch, not each utterance."""
    import torch
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32))
        rel = None
        if lengths is not None:
            rel = torch.from_numpy((np.asarray(lengths, np.float32) - 0.5) / feats.shape[1])
        return model(x, rel)[:, 0].numpy()
