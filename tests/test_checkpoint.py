"""Checkpoints: atomic writes, keep-last-K, network weights loadable by name, clear errors for misfits."""
import os

import numpy as np
import pytest
import mindspore as ms

import src.checkpoint as checkpoint
from src.checkpoint import (CheckpointError, latest_checkpoint, list_checkpoints, load_network_weights,
                            read_checkpoint, restore_checkpoint, save_checkpoint)
from src.config import load_config
from src.model.ecapa_tdnn import build_ecapa
from src.train.step import build_train_step

TINY = ["--channels", "16", "--mfa_channels", "48", "--embedding_size", "8", "--attention_channels", "8",
        "--se_channels", "8", "--res2net_scale", "2", "--specaugment", "false"]


def tiny_step(num_classes=5, extra=()):
    cfg = load_config(TINY + list(extra))
    step, _ = build_train_step(cfg, num_classes, "CPU")
    return cfg, step


def randomize(cell, seed):
    rng = np.random.default_rng(seed)
    for param in cell.get_parameters():
        values = rng.standard_normal(param.shape).astype(ms.dtype_to_nptype(param.dtype))
        param.set_data(ms.Tensor(values))


def test_save_restore_round_trip_keeps_every_parameter_and_state(tmp_path):
    _, step = tiny_step()
    randomize(step, 1)
    state = {"global_step": 7, "epoch": 1, "step_in_epoch": 2, "batch_size": 4, "world_size": 1}
    path = save_checkpoint(step, str(tmp_path), 7, state)
    assert os.path.basename(path) == "ckpt_step00000007.ckpt"
    _, fresh = tiny_step()
    assert restore_checkpoint(fresh, path) == state
    saved = {p.name: p.asnumpy() for p in step.get_parameters()}
    for param in fresh.get_parameters():
        np.testing.assert_array_equal(param.asnumpy(), saved[param.name], err_msg=param.name)
    names = set(read_checkpoint(path)[0])
    assert {"classifier.weight", "global_step", "beta1_power"} <= names
    assert any(n.startswith("moment1.") for n in names) and any(n.startswith("moment2.") for n in names)


def test_network_weights_load_into_a_bare_network_by_name(tmp_path):
    cfg, step = tiny_step()
    randomize(step, 2)
    path = save_checkpoint(step, str(tmp_path), 1, {"global_step": 1})
    params, _ = read_checkpoint(path)
    network = build_ecapa(cfg)
    not_loaded, _ = ms.load_param_into_net(network, params)
    assert not_loaded == []
    prefix = "embedder.network."
    trained = {p.name[len(prefix):]: p.asnumpy() for p in step.get_parameters() if p.name.startswith(prefix)}
    assert set(trained) == {p.name for p in network.get_parameters()}
    for param in network.get_parameters():
        np.testing.assert_array_equal(param.asnumpy(), trained[param.name])
    again = load_network_weights(build_ecapa(cfg), path)      # the classifier and optimizer state are left out
    for param in again.get_parameters():
        np.testing.assert_array_equal(param.asnumpy(), trained[param.name])
    # With mixed precision (Ascend/GPU) the network sits inside MindSpore's AMP wrapper: same names in the file.
    cfg, mixed = tiny_step(extra=["--mixed_precision", "true"])
    randomize(mixed, 3)
    path = save_checkpoint(mixed, str(tmp_path / "mixed"), 1, {"global_step": 1})
    loaded = load_network_weights(build_ecapa(cfg), path)
    wrapped = {p.name.split("_backbone.")[-1]: p.asnumpy() for p in mixed.get_parameters()
               if p.name.startswith("embedder.network.")}
    for param in loaded.get_parameters():
        np.testing.assert_array_equal(param.asnumpy(), wrapped[param.name])


def test_keeps_only_the_last_k(tmp_path):
    _, step = tiny_step()
    for s in (2, 4, 6, 8):
        save_checkpoint(step, str(tmp_path), s, {"global_step": s}, keep=2)
    assert [s for s, _ in list_checkpoints(str(tmp_path))] == [6, 8]
    assert latest_checkpoint(str(tmp_path)).endswith("ckpt_step00000008.ckpt")


def test_crash_while_saving_leaves_the_latest_checkpoint_intact(tmp_path, monkeypatch):
    _, step = tiny_step()
    good = save_checkpoint(step, str(tmp_path), 3, {"global_step": 3})
    real_save = ms.save_checkpoint

    def crash_half_way(entries, path, *args, **kwargs):
        real_save(entries, path, *args, **kwargs)
        with open(path, "r+b") as f:           # the process dies with half a file on disk
            f.truncate(os.path.getsize(path) // 2)
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(checkpoint.ms, "save_checkpoint", crash_half_way)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(step, str(tmp_path), 6, {"global_step": 6})
    monkeypatch.undo()
    assert latest_checkpoint(str(tmp_path)) == good
    assert not os.path.exists(os.path.join(str(tmp_path), "ckpt_step00000006.ckpt"))
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".partial_")]      # no partial file survives

    def disk_full(entries, path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"half")
        raise RuntimeError("Failed to save the checkpoint file: No space left on device")
    monkeypatch.setattr(checkpoint.ms, "save_checkpoint", disk_full)
    with pytest.raises(OSError, match="ckpt_step00000007.ckpt: could not write the checkpoint .*No space left"):
        save_checkpoint(step, str(tmp_path), 7, {"global_step": 7})
    monkeypatch.undo()
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".partial_")]
    _, fresh = tiny_step()
    assert restore_checkpoint(fresh, latest_checkpoint(str(tmp_path)))["global_step"] == 3
    # the next save of that step replaces the partial file
    save_checkpoint(step, str(tmp_path), 6, {"global_step": 6})
    assert [s for s, _ in list_checkpoints(str(tmp_path))] == [3, 6]


def test_misfit_and_corrupt_checkpoints_name_the_file(tmp_path):
    _, step = tiny_step(num_classes=5)
    path = save_checkpoint(step, str(tmp_path), 1, {"global_step": 1})
    _, other = tiny_step(num_classes=9)
    with pytest.raises(CheckpointError, match=r"ckpt_step00000001\.ckpt: does not fit.*classifier\.weight: network \(9, 8\), checkpoint \(5, 8\)"):
        restore_checkpoint(other, path)
    _, wider = tiny_step(extra=["--channels", "24"])
    with pytest.raises(CheckpointError, match="does not fit"):
        restore_checkpoint(wider, path)
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="broken.ckpt"):
        read_checkpoint(str(broken))
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(str(tmp_path / "missing.ckpt"))
