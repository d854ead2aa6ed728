"""train.py end to end on CPU: resuming mid-epoch gives exactly the uninterrupted run; logs and files written."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import train
from src.checkpoint import read_checkpoint
from src.config import load_config
from src.data.lists import build_train_list
from src.data.synthetic import make_corpus
from tests.tiny_training import ROOT, run_train, tiny_train_args


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    return make_corpus(str(root), num_train_speakers=5, num_test_speakers=0, utts_per_speaker=4,
                       seconds=(0.6, 1.2), seed=3, progress=False)


def final_params(output_dir, step):
    params, state = read_checkpoint(os.path.join(output_dir, "checkpoints", f"ckpt_step{step:08d}.ckpt"))
    return {k: v.asnumpy() for k, v in params.items()}, state


def logged_steps(output_dir):
    with open(os.path.join(output_dir, "train_log.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_resume_mid_epoch_equals_uninterrupted_run(corpus, train_compile_cache, tmp_path):
    # 20 utterances / batch 4 = 5 steps per epoch: stop at step 3 (mid-epoch 0), run on to 7 (mid-epoch 1).
    straight, split = tmp_path / "straight", tmp_path / "split"
    # One training file turns unreadable after the list was made: both runs meet it, skip it the same way and
    # count it in the epoch summary.
    train_list = build_train_list(corpus["train_dir"], str(tmp_path / "lists"), progress=False)
    bad = train_list.paths[5]
    with open(os.path.join(corpus["train_dir"], bad), "wb") as f:
        f.write(b"RIFF....WAVEdamaged after the list was made")
    run_train(tiny_train_args(corpus, straight, tmp_path / "lists") + ["--max_steps", "7"], train_compile_cache)
    run_train(tiny_train_args(corpus, split, tmp_path / "lists") + ["--max_steps", "3"], train_compile_cache)
    halfway, state = final_params(split, 3)
    assert (state["epoch"], state["step_in_epoch"]) == (0, 3)
    run_train(tiny_train_args(corpus, split, tmp_path / "lists") + ["--max_steps", "7", "--resume"], train_compile_cache)

    want, _ = final_params(straight, 7)
    got, state = final_params(split, 7)
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (1, 2, 7)
    assert set(got) == set(want)
    changed = 0
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=1e-6, err_msg=name)
        changed += not np.array_equal(halfway[name], want[name])
    assert changed > len(want) // 2          # the second half really trained
    # 15 classes: 5 speakers x 3 speeds; the classifier row count shows speed perturbation was wired in.
    assert want["classifier.weight"].shape == (15, 16)

    # The resumed process ran steps 4..7 only (it did not start over): logged every 2 steps of a process, at
    # the epoch end (step 5) and where it stopped.
    assert [r["global_step"] for r in logged_steps(split) if "loss" in r] == [2, 3, 5, 7]
    # Files of a run: newest 2 checkpoints, resolved config, text and JSON logs (every 2 steps, the window
    # restarting at each epoch end).
    assert sorted(os.listdir(straight / "checkpoints")) == ["ckpt_step00000006.ckpt", "ckpt_step00000007.ckpt"]
    records = [r for r in logged_steps(straight) if "loss" in r]
    assert [r["global_step"] for r in records] == [2, 4, 5, 7]
    for r in records:
        assert np.isfinite(r["loss"]) and 0 <= r["accuracy"] <= 1 and r["samples_per_second"] > 0
        assert 1e-6 <= r["lr"] <= 1e-3
    epoch_ends = [r for r in logged_steps(straight) if r.get("event") == "epoch_end"]
    assert [(r["epoch"], r["unreadable_files"]) for r in epoch_ends] == [(0, 1)]   # epoch 0 reads every file
    run_end = [r for r in logged_steps(straight) if r.get("event") == "run_end"][-1]     # where the time went
    assert run_end["global_step"] == 7 and run_end["steps"] == 7 and run_end["seconds"]["first_step"] > 0
    assert run_end["seconds"]["step"] > 0 and min(run_end["seconds"].values()) >= 0
    text_log = (straight / "train.log").read_text()
    assert "epoch 0 done at global step 5: 1 unreadable audio file(s) skipped" in text_log
    assert bad in (straight / "unreadable_audio.txt").read_text()
    again = load_config(["--config", str(straight / "config.yaml")])     # the run's recipe reproduces it
    assert (again.max_steps, again.channels, again.output_dir) == (7, 32, str(straight))


def test_bare_resume_flag_means_latest():
    assert train.resume_flag_to_value(["--resume"]) == ["--resume", "latest"]
    assert train.resume_flag_to_value(["--resume", "--seed", "1"]) == ["--resume", "latest", "--seed", "1"]
    assert train.resume_flag_to_value(["--resume", "a.ckpt"]) == ["--resume", "a.ckpt"]


def test_fresh_run_refuses_an_output_dir_with_checkpoints(corpus, tmp_path):
    out = tmp_path / "used"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "ckpt_step00000009.ckpt").write_bytes(b"earlier run")
    with pytest.raises(ValueError, match="already holds checkpoints"):
        train.main(tiny_train_args(corpus, out, tmp_path / "lists") + ["--max_steps", "1"])


def test_missing_or_empty_augmentation_folder_fails_before_the_training_list(corpus, tmp_path):
    empty = tmp_path / "RIRS_NOISES" / "simulated_rirs"
    empty.mkdir(parents=True)
    args = tiny_train_args(corpus, tmp_path / "run", tmp_path / "lists")
    with pytest.raises(FileNotFoundError, match=f"RIR folder {empty} holds no audio"):
        train.main(args + ["--rir_dir", str(empty)])
    with pytest.raises(FileNotFoundError, match="MUSAN folder not found: '/no/musan'"):
        train.main(args + ["--musan_dir", "/no/musan"])
    assert not (tmp_path / "lists").exists()            # failed before any audio header was read


def wait_for(predicate, seconds, process):
    """Poll ``predicate`` until it holds (or the process ended / time ran out)."""
    import time
    end = time.time() + seconds
    while time.time() < end and process.poll() is None:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


def folder_bytes(folder):
    """{relative path: bytes} of the files a refused or failed run must leave alone."""
    return {name: (folder / name).read_bytes() for name in ("config.yaml", "train.log", "train_log.jsonl")}


def test_sigint_saves_and_resumes_exactly_and_refused_runs_change_nothing(corpus, train_compile_cache, tmp_path):
    import signal
    from src.train.run_folder import OutputDirBusy
    run, straight = tmp_path / "run", tmp_path / "straight"
    args = tiny_train_args(corpus, run, tmp_path / "lists") + ["--log_every_steps", "1", "--num_epochs", "20",
                                                          "--checkpoint_every_steps", "1000"]
    process = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py")] + args
                               + ["--compile_cache_dir", str(train_compile_cache)], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = run / "train_log.jsonl"
    assert wait_for(lambda: log.exists() and len(log.read_text().splitlines()) >= 2, 300, process)
    assert (run / "train.lock").read_text().split()[0] == str(process.pid)       # the folder is locked
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr and "interrupted: stopped on request" in stderr, stderr[-3000:]
    stopped_at = int(stderr.split("interrupted: stopped on request")[1].split("at global step ")[1].split(":")[0])
    assert (run / "checkpoints" / f"ckpt_step{stopped_at:08d}.ckpt").is_file()
    assert not (run / "train.lock").exists()

    # Refused and failed runs leave the run's record byte for byte as it was.
    before = folder_bytes(run)
    with pytest.raises(ValueError, match="already holds checkpoints"):
        train.main(args)                                                         # fresh run into a used folder
    with pytest.raises(ValueError, match="channels: the command line gives 64 but .* was made with 32"):
        train.main(args + ["--resume", "--channels", "64"])                     # resume with another model
    with pytest.raises(ValueError, match="batch_size: got 0"):
        train.main(args + ["--resume", "--batch_size", "0"])                    # an invalid value
    (run / "train.lock").write_text(f"{os.getpid()} {__import__('socket').gethostname()}\n")
    with pytest.raises(OutputDirBusy, match=f"another training run \\(pid {os.getpid()}\\)"):
        train.main(args + ["--resume"])                                          # a second run into the folder
    (run / "train.lock").unlink()
    assert folder_bytes(run) == before
    fresh_logs_only = tmp_path / "logs_only"
    fresh_logs_only.mkdir()
    (fresh_logs_only / "train_log.jsonl").write_text('{"global_step": 1}\n')
    with pytest.raises(ValueError, match="already holds the logs of an earlier run"):
        train.main(tiny_train_args(corpus, fresh_logs_only, tmp_path / "lists"))
    in_the_way = tmp_path / "a_file"
    in_the_way.write_text("not a folder")
    with pytest.raises(NotADirectoryError, match=f"{in_the_way} is a file"):
        train.main(tiny_train_args(corpus, in_the_way, tmp_path / "lists"))

    # Resumed to two steps past the interruption, the run equals one that was never interrupted.
    target = str(stopped_at + 2)
    run_train(args + ["--resume", "--max_steps", target], train_compile_cache)
    run_train(tiny_train_args(corpus, straight, tmp_path / "lists") + ["--log_every_steps", "1", "--num_epochs", "20",
                                                                 "--checkpoint_every_steps", "1000",
                                                                 "--max_steps", target], train_compile_cache)
    got, _ = final_params(run, int(target))
    want, _ = final_params(straight, int(target))
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=1e-6, err_msg=name)
