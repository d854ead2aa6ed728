"""The tiny training run that test files start as ``python train.py``: one model, crop, batch and schedule, so that
every such run builds the same train-step graph and loads it from one compile cache (``--compile_cache_dir``: the
session fixture ``train_compile_cache`` in conftest.py) instead of compiling it again (about 20 s per run on a
2-core machine).

Keys a test adds on top (max_steps, num_epochs, resume, output and list folders, log and checkpoint cadence, data
folders and workers) are not in the graph. A run that changes anything else gets a cache folder of its own below
the same directory (src/train/compile_cache.py keys the folder by what builds the graph), so it compiles."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY_MODEL = dict(channels=32, mfa_channels=96, embedding_size=16, attention_channels=16, se_channels=16,
                  res2net_scale=2)
TINY_ARGS = [a for key, value in TINY_MODEL.items() for a in (f"--{key}", str(value))]


def tiny_train_args(corpus, output_dir, list_dir):
    """A tiny model and crop; waveform augmentation always on (noise/music/babble/reverb), speed perturbation (3
    classes per speaker), 2 data workers; checkpoints and logs every 2 steps."""
    return TINY_ARGS + [
        "--crop_seconds", "0.5", "--batch_size", "4", "--num_workers", "2", "--train_dir", corpus["train_dir"],
        "--musan_dir", corpus["musan_dir"], "--rir_dir", corpus["rir_dir"], "--train_list_dir", str(list_dir),
        "--aug_prob", "1.0", "--speed_perturb", "true", "--specaugment", "false", "--margin_warmup_steps", "4",
        "--lr_step_size", "3", "--max_lr", "0.001", "--checkpoint_every_steps", "2", "--keep_checkpoints", "2",
        "--log_every_steps", "2", "--num_epochs", "3", "--output_dir", str(output_dir)]


def run_train(args, cache_dir):
    """``python train.py ARGS --compile_cache_dir CACHE_DIR`` in its own process -> its stderr (the log); the run
    must succeed."""
    done = subprocess.run([sys.executable, os.path.join(ROOT, "train.py")] + args
                          + ["--compile_cache_dir", str(cache_dir)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr
