"""Fine-tuning (init_checkpoint, freeze_network_steps) and the large-margin recipe configs/ecapa-tdnn_lm.yaml."""
import json
import os

import numpy as np
import pytest
import yaml
import mindspore as ms

from src.checkpoint import CheckpointError, checkpoint_key, read_checkpoint
from src.config import load_config
from src.data.synthetic import make_corpus
from src.import_weights import WESPEAKER_FRONT_END, write_imported
from src.model.ecapa_tdnn import ECAPA_TDNN
from src.train import launch
from src.train.loop import starting_point
from src.train.step import build_train_step, initial_classifier
from tests.tiny_training import ROOT, TINY_ARGS, TINY_MODEL, run_train, tiny_train_args

LM_RECIPE = os.path.join(ROOT, "configs", "ecapa-tdnn_lm.yaml")


def test_classifier_is_kept_only_when_the_classes_match():
    rng = np.random.default_rng(0)
    zoo = rng.standard_normal((7205, 192)).astype(np.float32)      # the older zoo's class count
    assert initial_classifier(zoo, 7205, 192, speed_perturb=True)[0] is zoo
    weight, why = initial_classifier(zoo, 5994, 192, speed_perturb=False)
    assert weight is None and "(7205, 192)" in why and "(5994, 192)" in why
    # A speed-perturbed run's classifier (3 x speakers rows) fine-tuned without speed perturbation: the first rows,
    # the original-speed speakers, are kept; with speed perturbation the row counts must match.
    speed = rng.standard_normal((3 * 5, 16)).astype(np.float32)
    weight, why = initial_classifier(speed, 5, 16, speed_perturb=False)
    np.testing.assert_array_equal(weight, speed[:5])
    assert "first 5 of its 15 rows" in why
    assert initial_classifier(speed, 5, 16, speed_perturb=True)[0] is None
    assert initial_classifier(None, 5, 16, speed_perturb=False) == (None, "the checkpoint has no classifier: a "
                                                                         "fresh classifier")


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """A WeSpeaker-style network (zero padding, its pooling, emb_bn) written as src.import_weights writes it, with
    7 classes of margin-product weights (``projection.weight`` becomes ``classifier.weight``)."""
    folder = tmp_path_factory.mktemp("imported")
    ms.set_seed(7)
    net = ECAPA_TDNN(**TINY_MODEL, padding="zeros", mfa_norm=False, attention_norm=False, pooling_stats="wespeaker",
                     embedding_norm=True)
    classes = np.random.default_rng(1).standard_normal((7, 16)).astype(np.float32)
    path = str(folder / "wespeaker.ckpt")
    write_imported(net, path, WESPEAKER_FRONT_END, classifier_weight=classes)
    return path, {p.name: p.asnumpy() for p in net.get_parameters()}, classes


def test_an_imported_checkpoint_starts_a_run_with_its_model_and_weights(imported, tmp_path):
    path, weights, classes = imported
    base = ["--output_dir", str(tmp_path / "run"), "--init_checkpoint", path, "--specaugment", "false"]
    cfg, resume, init = starting_point(load_config(base))
    assert (resume, init) == (None, path)
    # The run adopts the checkpoint's model and front end over the recipe file's (C=1024, SpeechBrain fbank).
    assert (cfg.channels, cfg.padding, cfg.pooling_stats, cfg.embedding_norm) == (32, "zeros", "wespeaker", True)
    assert (cfg.front_end, cfg.kaldi_window, cfg.kaldi_scale_16bit) == ("kaldi", "hamming", True)

    _, train_net = build_train_step(cfg, 7, "CPU", init_checkpoint=path)
    loaded = {checkpoint_key(p.name): p.asnumpy() for p in train_net.get_parameters()}
    for name, value in weights.items():
        np.testing.assert_array_equal(loaded[name], value, err_msg=name)
    np.testing.assert_array_equal(loaded["classifier.weight"], classes)          # 7 classes: kept
    _, other_speakers = build_train_step(cfg, 5, "CPU", init_checkpoint=path)
    assert other_speakers.classifier.weight.shape == (5, 16)                      # 5 classes: a fresh one

    # A model key on the command line that contradicts the checkpoint is refused, here and before any rank starts.
    with pytest.raises(ValueError, match="padding: the command line gives 'reflect' but .*wespeaker.ckpt"):
        starting_point(load_config(base + ["--padding", "reflect"]))
    with pytest.raises(ValueError, match="padding: the command line gives 'reflect'"):
        launch.main(["freeze_config", str(tmp_path / "frozen.yaml")] + base + ["--padding", "reflect"])
    launch.main(["freeze_config", str(tmp_path / "frozen.yaml")] + base)
    frozen = load_config(["--config", str(tmp_path / "frozen.yaml")])
    assert (frozen.front_end, frozen.channels, frozen.init_checkpoint) == ("kaldi", 32, path)


def test_a_checkpoint_that_does_not_fit_is_refused_naming_the_parameters(imported, tmp_path):
    # Without stored model settings (e.g. a file saved by plain MindSpore) the recipe's model is built and checked.
    path, _, _ = imported
    bare = str(tmp_path / "bare.ckpt")
    ms.save_checkpoint(ECAPA_TDNN(**TINY_MODEL), bare)
    cfg, _, _ = starting_point(load_config(TINY_ARGS + ["--channels", "64", "--init_checkpoint", bare,
                                                        "--output_dir", str(tmp_path / "run")]))
    with pytest.raises(CheckpointError, match=r"bare.ckpt: does not fit the network: .*blocks\.0\.conv\.weight"):
        build_train_step(cfg, 5, "CPU", init_checkpoint=cfg.init_checkpoint)
    with pytest.raises(FileNotFoundError, match="init_checkpoint: no checkpoint in"):
        starting_point(load_config(["--init_checkpoint", str(tmp_path), "--output_dir", str(tmp_path / "run")]))


# ---------------------------------------------------------------- end to end: a normal stage, then the LM recipe
@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    return make_corpus(str(root), num_train_speakers=5, num_test_speakers=0, utts_per_speaker=4,
                       seconds=(0.6, 1.2), seed=3, progress=False)


def data_args(corpus, lists):
    return ["--train_dir", corpus["train_dir"], "--musan_dir", corpus["musan_dir"], "--rir_dir", corpus["rir_dir"],
            "--train_list_dir", str(lists), "--batch_size", "4", "--num_workers", "2", "--specaugment", "false",
            "--checkpoint_every_steps", "1", "--keep_checkpoints", "0", "--log_every_steps", "1"]


def checkpoint(run, step):
    params, state = read_checkpoint(str(run / "checkpoints" / f"ckpt_step{step:08d}.ckpt"))
    return {k: v.asnumpy() for k, v in params.items()}, state


def test_large_margin_stage_after_a_normal_stage(corpus, train_compile_cache, tmp_path):
    normal, lm, resumed = tmp_path / "normal", tmp_path / "lm", tmp_path / "lm_resumed"
    # One compile cache directory for all runs: the normal stage is the tiny run of tests/tiny_training.py (its
    # graph is compiled once per session); the LM stage's graph differs (margin, crop), so it gets a folder of its
    # own there, compiled by its first run and loaded by the resumed one.
    # Normal stage: 3 steps with speed perturbation (5 speakers -> 15 classes), margin warming up towards 0.2.
    run_train(tiny_train_args(corpus, normal, tmp_path / "lists") + ["--max_steps", "3"], train_compile_cache)
    start, _ = checkpoint(normal, 3)
    assert start["classifier.weight"].shape == (15, 16)

    # LM stage: the recipe as it is (6 s crops, no speed perturbation, margin 0.2 -> 0.5), its warm-ups shortened to
    # 2 steps, the network frozen for the first update; no model keys given (the checkpoint carries them).
    lm_args = ["--config", LM_RECIPE, "--init_checkpoint", str(normal), "--margin_warmup_steps", "2",
               "--lr_warmup_steps", "2", "--freeze_network_steps", "1"] + data_args(corpus, tmp_path / "lists")
    log = run_train(lm_args + ["--max_steps", "3", "--output_dir", str(lm)], train_compile_cache)
    assert "ckpt_step00000003.ckpt: network weights loaded; classifier kept: the first 5 of its 15 rows" in log
    with open(lm / "config.yaml", encoding="utf-8") as f:
        cfg = yaml.safe_load(f)                     # the run's resolved recipe
    assert [cfg[k] for k in ("crop_seconds", "speed_perturb", "aam_margin", "channels")] == [6.0, False, 0.5, 32]

    # The margin the loss used in steps 1, 2, 3 (the classifier's margin Parameter, logged after each step and
    # saved in each checkpoint): linear from 0.2 to 0.5 over 2 steps, then 0.5.
    with open(lm / "train_log.jsonl", encoding="utf-8") as f:
        records = [json.loads(line) for line in f if '"loss"' in line]
    assert [r["global_step"] for r in records] == [1, 2, 3] and all(np.isfinite(r["loss"]) for r in records)
    np.testing.assert_allclose([r["margin"] for r in records], [0.2, 0.35, 0.5], rtol=1e-6)
    steps = {s: checkpoint(lm, s) for s in (1, 2, 3)}
    np.testing.assert_allclose([float(steps[s][0]["classifier.margin"]) for s in (1, 2, 3)], [0.2, 0.35, 0.5],
                               rtol=1e-6)
    # Learning rate: the log after update k records the rate of update k + 1 (schedule index k). A warm-up over 2
    # updates scales index i by min(1, (i + 1) / 2), so only update 1 ran at half the rate (1e-5, never logged):
    # the records after updates 1, 2, 3 all read the full 2e-5.
    np.testing.assert_allclose([r["lr"] for r in records], [2e-5, 2e-5, 2e-5], rtol=1e-5)

    # A new run: fresh step count, data position and optimizer.
    first, state = steps[1]
    assert (state["global_step"], state["epoch"], state["step_in_epoch"]) == (1, 0, 1)
    # Update 1 moved the kept classifier a little (a fresh one would be far away) and left the network's weights
    # exactly as the normal stage ended; batch-norm running statistics follow the new batches.
    head = first["classifier.weight"]
    assert head.shape == (5, 16) and 0 < np.abs(head - start["classifier.weight"][:5]).max() < 1e-3
    network = [k for k in start if k in first and not k.startswith(("classifier.", "moment", "beta", "global_step"))]
    weights = [k for k in network if "moving_" not in k]
    assert len(weights) > 50
    for name in weights:
        np.testing.assert_array_equal(first[name], start[name], err_msg=name)
    assert any(not np.array_equal(first[k], start[k]) for k in network if "moving_" in k)
    third = steps[3][0]
    assert sum(not np.array_equal(third[k], start[k]) for k in weights) > len(weights) // 2

    # Resuming the fine-tuning run continues it (same init_checkpoint on the command line): from its step-2
    # checkpoint, step 3 equals the uninterrupted run's.
    log = run_train(lm_args + ["--max_steps", "3", "--output_dir", str(resumed),
                               "--resume", str(lm / "checkpoints" / "ckpt_step00000002.ckpt")], train_compile_cache)
    assert "init_checkpoint" in log and "is not used" in log and "resumed from" in log
    again, state = checkpoint(resumed, 3)
    assert state["global_step"] == 3
    for name, value in third.items():
        np.testing.assert_allclose(again[name], value, rtol=0, atol=1e-6, err_msg=name)
