"""Loading the older zoo's checkpoint layout (names and shapes from tests/data/mindspore_zoo_ecapa_tdnn_params.json,
a copy of the project's reference listing) into our ECAPA_TDNN."""
import json
import os

import numpy as np
import pytest
import mindspore as ms

from src.model.ecapa_tdnn import ECAPA_TDNN
from src.checkpoint import CheckpointError
from src.import_weights import ZOO_MODEL_CONFIG, convert_zoo_params, load_zoo_checkpoint, main

REFERENCE = os.path.join(os.path.dirname(__file__), "data", "mindspore_zoo_ecapa_tdnn_params.json")
N_CLASSES = 7205


@pytest.fixture(scope="module")
def zoo_reference():
    with open(REFERENCE) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def zoo_net():
    return ECAPA_TDNN(**ZOO_MODEL_CONFIG)


def zoo_arrays(reference, seed=0):
    """{'network.<zoo name>': array} with distinct random values in every tensor, in the zoo's (4-D) shapes."""
    rng = np.random.default_rng(seed)
    return {"network." + p["name"]: rng.standard_normal(p["shape"], dtype=np.float32)
            for p in reference["parameters"]}


def test_our_network_has_the_zoo_parameters(zoo_reference, zoo_net):
    count = sum(int(np.prod(p.shape)) for p in zoo_net.trainable_params())
    assert count == zoo_reference["trainable_parameter_count"]
    assert len(list(zoo_net.get_parameters())) == len(zoo_reference["parameters"])


def test_load_zoo_checkpoint_puts_each_tensor_in_place(zoo_reference, zoo_net, tmp_path):
    arrays = zoo_arrays(zoo_reference)
    rng = np.random.default_rng(1)
    classifier = rng.standard_normal((N_CLASSES, 192), dtype=np.float32)
    entries = [{"name": name, "data": ms.Tensor(a)} for name, a in arrays.items()]
    entries.append({"name": "classifier.weight", "data": ms.Tensor(classifier)})
    # optimizer and loss-scale state the training checkpoint also holds (dropped on load)
    moments = {name: arrays[name] for name in ("network.blocks.0.conv.weight", "network.fc.bias")}
    moments["classifier.weight"] = classifier
    for name, a in moments.items():
        entries.append({"name": "moment1." + name, "data": ms.Tensor(np.ones_like(a))})
        entries.append({"name": "moment2." + name, "data": ms.Tensor(np.ones_like(a))})
    for name in ("beta1_power", "beta2_power", "learning_rate", "scale_sense"):
        entries.append({"name": name, "data": ms.Tensor(np.array([0.5], np.float32))})
    entries.append({"name": "global_step", "data": ms.Tensor(np.array([1000], np.int32))})
    entries.append({"name": "output", "data": ms.Tensor(np.zeros((2, N_CLASSES), np.float32))})
    path = str(tmp_path / "zoo.ckpt")
    ms.save_checkpoint(entries, path)

    loaded_classifier = load_zoo_checkpoint(path, zoo_net)
    np.testing.assert_array_equal(loaded_classifier, classifier)
    ours = {p.name: p.asnumpy() for p in zoo_net.get_parameters()}
    expected_names = {
        "network.blocks.0.norm.norm2d.moving_variance": "blocks.0.norm.moving_variance",
        "network.blocks.3.res2net_block.blocks.6.norm.norm2d.gamma": "blocks.3.res2net_block.blocks.6.norm.gamma",
        "network.asp_bn.norm2d.beta": "asp_bn.beta",
        "network.fc.weight": "fc.weight",
    }
    for zoo_name, name in expected_names.items():
        np.testing.assert_array_equal(ours[name].reshape(-1), arrays[zoo_name].reshape(-1))
    for zoo_name, a in arrays.items():
        name = zoo_name[len("network."):].replace(".norm2d.", ".")
        if a.ndim == 4:     # (out, in, 1, k) -> (out, in, k): tap j of weight[o, i] stays tap j
            assert ours[name].shape == (a.shape[0], a.shape[1], a.shape[3])
            np.testing.assert_array_equal(ours[name], a[:, :, 0, :])
        else:
            np.testing.assert_array_equal(ours[name], a)

    out = str(tmp_path / "ours.ckpt")      # the command-line conversion writes our names
    assert main(["--format", "mindspore_zoo", "--recipe", str(tmp_path / "recipe.yaml"), path, out]) == 0
    converted = ms.load_checkpoint(out)
    np.testing.assert_array_equal(converted["blocks.1.res2net_block.blocks.0.conv.weight"].asnumpy(),
                                  arrays["network.blocks.1.res2net_block.blocks.0.conv.weight"][:, :, 0, :])
    np.testing.assert_array_equal(converted["classifier.weight"].asnumpy(), classifier)
    fresh = ECAPA_TDNN(**ZOO_MODEL_CONFIG)
    not_loaded, _ = ms.load_param_into_net(fresh, {k: v for k, v in converted.items() if k != "classifier.weight"})
    assert not not_loaded


def test_checkpoint_that_does_not_fit_is_refused_with_all_problems(zoo_reference, zoo_net):
    arrays = {name: np.zeros(a.shape, np.float32) for name, a in zoo_arrays(zoo_reference).items()}
    del arrays["network.mfa.conv.bias"]                                       # missing
    arrays["network.blocks.4.conv.weight"] = np.zeros((3,), np.float32)       # unexpected
    arrays["network.blocks.0.conv.weight"] = np.zeros((512, 80, 1, 5), np.float32)   # mis-shaped
    with pytest.raises(CheckpointError) as error:
        convert_zoo_params(arrays, zoo_net)
    message = str(error.value)
    assert "missing: mfa.conv.bias" in message
    assert "unexpected: network.blocks.4.conv.weight" in message
    assert "mis-shaped: network.blocks.0.conv.weight [512, 80, 1, 5] (network expects [1024, 80, 5])" in message

    small = ECAPA_TDNN(channels=32, mfa_channels=96)       # a checkpoint for another configuration
    with pytest.raises(CheckpointError, match="mis-shaped"):
        convert_zoo_params(zoo_arrays(zoo_reference), small)


def test_unreadable_checkpoint_names_the_file(tmp_path, zoo_net):
    with pytest.raises(CheckpointError, match="not found"):
        load_zoo_checkpoint(str(tmp_path / "absent.ckpt"), zoo_net)
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt.ckpt"):
        load_zoo_checkpoint(str(corrupt), zoo_net)
