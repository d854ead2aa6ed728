"""Data parallel on CPU: two msrun ranks over loopback agree exactly and match one process on both shards; the run
fine-tunes from an imported-format checkpoint (init_checkpoint, network frozen for the first update)."""
import os
import re
import socket
import subprocess

import numpy as np
import pytest
from mindspore import nn, ops

from src.checkpoint import checkpoint_key, read_checkpoint, restore_checkpoint
from src.config import load_config
from src.data.dataset import create_train_dataset, train_list_from_config
from src.data.synthetic import make_corpus
from src.import_weights import SPEECHBRAIN_FRONT_END, write_imported
from src.model.ecapa_tdnn import ECAPA_TDNN
from src.train.launch import absolute_paths
from src.train.step import build_train_step

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SummedGradients(nn.Cell):
    """Gradients of the training loss of one batch w.r.t. ``weights`` (what one rank computes)."""

    def __init__(self, train_net, weights):
        super().__init__(auto_prefix=False)
        self.train_net, self.weights = train_net, weights
        self.grad = ops.GradOperation(get_by_list=True, sens_param=True)

    def construct(self, wav, labels):
        loss, correct = self.train_net(wav, labels)
        return self.grad(self.train_net, self.weights)(wav, labels, (ops.ones_like(loss), ops.zeros_like(correct)))


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("dp")
    corpus = make_corpus(str(root / "corpus"), num_train_speakers=4, num_test_speakers=0, utts_per_speaker=4,
                         seconds=(0.6, 1.0), seed=5, augment_folders=False, progress=False)
    # The ranks start from the weights of a checkpoint written as src/import_weights.py writes imported ones, with
    # a classifier for the 4 speakers (kept), and train only the classifier in the first update.
    init = root / "init.ckpt"
    model = dict(channels=32, mfa_channels=96, embedding_size=16, attention_channels=16, se_channels=16,
                 res2net_scale=2)
    write_imported(ECAPA_TDNN(**model), str(init), SPEECHBRAIN_FRONT_END,
                   classifier_weight=np.random.default_rng(2).standard_normal((4, 16)).astype(np.float32))
    args = [a for key, value in model.items() for a in (f"--{key}", str(value))] + [
            "--init_checkpoint", str(init), "--freeze_network_steps", "1",
            "--crop_seconds", "0.5", "--batch_size", "2", "--num_workers", "1", "--train_dir", corpus["train_dir"],
            "--musan_dir", "", "--rir_dir", "",
            "--aug_prob", "0.0", "--speed_perturb", "false", "--specaugment", "false",
            "--train_list_dir", str(root / "lists"), "--output_dir", str(root / "run"),
            "--checkpoint_every_steps", "1", "--keep_checkpoints", "0", "--lr_step_size", "2", "--max_lr", "0.001"]
    logs = {r: (root / "run" / "distribute" / f"worker_{r}.log") for r in (0, 1)}
    # Two steps, then a resumed run (bare --resume: the latest checkpoint) for the third. Each launch rewrites the
    # worker logs. Both launches build the same train-step graph: the second reads it from the run's compile cache
    # (<output_dir>/compile_cache, src/train/compile_cache.py; one folder per rank below it).
    launched = []
    for extra in (["--max_steps", "2"], ["--max_steps", "3", "--resume"]):
        env = dict(os.environ, MASTER_PORT=str(free_port()))
        env["PATH"] = os.path.join(ROOT, ".venv", "bin") + os.pathsep + env.get("PATH", "")
        done = subprocess.run(["bash", os.path.join(ROOT, "scripts", "run_distribute_train_cpu.sh"), "2"] + args
                              + extra, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        tails = "\n".join(p.read_text()[-3000:] for p in logs.values() if p.exists())
        assert done.returncode == 0, f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}\n{tails}"
        launched.append([p.read_text() for p in logs.values()])
    first, resumed = launched
    assert all("network weights loaded; classifier kept: 4 classes" in text for text in first)
    assert all("resumed from" in text and f"init_checkpoint {init} is not used" in text for text in resumed)
    return root, args, logs


def test_ranks_end_with_identical_parameters(two_rank_run):
    _, _, logs = two_rank_run
    digests = []
    for rank, path in logs.items():
        found = re.findall(rf"rank {rank}: sha256 of the trainable parameters ([0-9a-f]{{64}})", path.read_text())
        assert found, f"no parameter digest in {path}"
        digests.append(found[-1])
    assert digests[0] == digests[1]


def test_ranks_start_from_the_init_checkpoint_with_the_network_frozen(two_rank_run):
    root, _, _ = two_rank_run
    init, _ = read_checkpoint(str(root / "init.ckpt"))
    first, state = read_checkpoint(str(root / "run" / "checkpoints" / "ckpt_step00000001.ckpt"))
    assert state["global_step"] == 1
    weights = [k for k in init if k != "classifier.weight" and k in first and "moving_" not in k]
    assert len(weights) > 50
    for name in weights:
        np.testing.assert_array_equal(first[name].asnumpy(), init[name].asnumpy(), err_msg=name)
    moved = first["classifier.weight"].asnumpy() - init["classifier.weight"].asnumpy()
    assert 0 < np.abs(moved).max() < 0.01            # the kept classifier took one small step


def test_data_parallel_steps_equal_one_process_on_both_shards(two_rank_run):
    """Steps 2 and 3 (the second after the resume) redone in one process: from the step-1 checkpoint, each step
    averages the gradients of the batch each rank read. (Batch norm normalises each rank's batch by itself, so
    the mean of per-rank gradients, not one batch of both, is what data parallelism computes.)"""
    root, args, _ = two_rank_run
    cfg = load_config(args)
    folder = root / "run" / "checkpoints"
    saved = {s: read_checkpoint(str(folder / f"ckpt_step{s:08d}.ckpt")) for s in (1, 2, 3)}
    assert saved[1][1]["world_size"] == 2 and (saved[3][1]["epoch"], saved[3][1]["step_in_epoch"]) == (0, 3)

    train_list = train_list_from_config(cfg)
    step_cell, train_net = build_train_step(cfg, train_list.num_speakers, "CPU")
    restore_checkpoint(step_cell, str(folder / "ckpt_step00000001.ckpt"))
    train_net.set_train()
    gradients = SummedGradients(train_net, step_cell.weights)
    for step in (2, 3):
        per_rank = []
        for shard in (0, 1):
            dataset, _ = create_train_dataset(cfg, train_list, 0, num_shards=2, shard_id=shard, start_step=step - 1)
            wav, labels = next(dataset.create_tuple_iterator(num_epochs=1))
            per_rank.append(gradients(wav, labels))
        mean = tuple((a + b) / 2 for a, b in zip(*per_rank))
        step_cell.optimizer(ops.clip_by_global_norm(mean, cfg.grad_clip_norm))

        before, after = saved[step - 1][0], saved[step][0]
        compared = 0
        for param in step_cell.get_parameters():
            key = checkpoint_key(param.name)
            if "moving_" in key:          # batch-norm running statistics are per rank
                continue
            np.testing.assert_allclose(param.asnumpy(), after[key].asnumpy(), rtol=0, atol=1e-6,
                                       err_msg=f"step {step}: {key}")
            compared += not np.array_equal(before[key].asnumpy(), after[key].asnumpy())
        assert compared > 50        # weights, biases and Adam moments really moved in that step


def test_relative_paths_are_made_absolute(tmp_path):
    # The ranks of run_distribute_train_ascend.sh run in their own folders: every path of the frozen recipe must
    # be absolute, also output folders that do not exist yet and the entries of list-valued keys.
    (tmp_path / "trials.txt").write_text("1 a/b/1.wav c/d/2.wav\n")
    cfg = load_config(["--output_dir", "runs/x", "--train_list_dir", "runs/x/lists", "--resume", "latest",
                       "--exclude_trials", "[trials.txt]", "--trials", "[trials.txt, /abs/t.txt]"])
    out = absolute_paths(cfg, str(tmp_path))
    assert out.output_dir == str(tmp_path / "runs" / "x")
    assert out.train_list_dir == str(tmp_path / "runs" / "x" / "lists")
    assert out.exclude_trials == [str(tmp_path / "trials.txt")]
    assert out.trials == [str(tmp_path / "trials.txt"), "/abs/t.txt"]
    assert out.resume == "latest" and out.device_target == cfg.device_target and out.lr_mode == cfg.lr_mode
