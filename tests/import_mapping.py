"""Checking that an imported checkpoint fills our network completely from a peer toolkit's state_dict, without
running either network (the importer tests run their waveform comparisons at small sizes and this check at the
published sizes)."""
import numpy as np

from src.checkpoint import load_network_weights, read_settings
from src.config import load_config
from src.model.ecapa_tdnn import build_ecapa


def load_recipe_network(recipe):
    """Our network built from an importer's recipe file and loaded from the checkpoint it names (which refuses a
    checkpoint that leaves a parameter out) -> (network, the checkpoint's settings, the recipe config)."""
    cfg = load_config(["--config", str(recipe)])
    return load_network_weights(build_ecapa(cfg), cfg.checkpoint), read_settings(cfg.checkpoint), cfg


def assert_complete_mapping(network, state, rename, reordered=()):
    """Every tensor of the peer's ``state`` ({name: torch tensor}; ``rename`` -> our name, None for counters) lands
    in exactly one parameter of ``network``, in its shape (axes of size 1 aside), and every parameter gets one.
    Values are equal, except in parameters whose name contains one of ``reordered`` (channels the import reorders,
    e.g. WeSpeaker's Res2Net split): there the same values in another order."""
    ours = {p.name: p.asnumpy() for p in network.get_parameters()}
    mapped = {}
    for name, tensor in state.items():
        target = rename(name)
        if target is None:
            assert name.endswith("num_batches_tracked"), f"{name} has no counterpart"
            continue
        assert target in ours and target not in mapped, f"{name} -> {target}"
        mapped[target] = name
        value = tensor.detach().numpy()
        got = ours[target]
        assert [n for n in got.shape if n != 1] == [n for n in value.shape if n != 1], name
        if any(part in target for part in reordered):
            np.testing.assert_array_equal(np.sort(got.reshape(-1)), np.sort(value.reshape(-1)), err_msg=name)
        else:
            np.testing.assert_array_equal(got.reshape(value.shape), value, err_msg=name)
    assert sorted(mapped) == sorted(ours), sorted(set(ours) - set(mapped))
