"""src/data/lists.py and the data-check command, on a real synthetic folder with bad files in it."""
import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from src.config import load_config
from src.data.audio import AudioError, write_wav
from src.data.check import run_check
from src.data.lists import ListFileError, build_train_list, read_speakers, read_train_list
from src.data.synthetic import make_corpus

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def clean_corpus(tmp_path_factory):
    return make_corpus(str(tmp_path_factory.mktemp("lists")), 4, 2, 3, (1.0, 1.5), seed=1, progress=False)


@pytest.fixture
def corpus(clean_corpus, tmp_path):
    """A private copy of the corpus that a test may damage."""
    root = str(tmp_path / "corpus")
    shutil.copytree(os.path.dirname(clean_corpus["train_dir"]), root)
    return {k: (v.replace(os.path.dirname(clean_corpus["train_dir"]), root) if isinstance(v, str) else v)
            for k, v in clean_corpus.items()}


def _add_bad_files(train_dir):
    """A corrupt, an empty and a wrong-rate WAV in one extra speaker's folder -> their relative paths."""
    folder = os.path.join(train_dir, "id00099", "badvideo123")
    os.makedirs(folder)
    with open(os.path.join(folder, "00001.wav"), "wb") as f:
        f.write(b"RIFF\x24\x00\x00\x00WAVEfmt garbage")
    sf.write(os.path.join(folder, "00002.wav"), np.zeros(0, np.float32), 16000)
    write_wav(os.path.join(folder, "00003.wav"), np.zeros(8000), 8000)
    return [f"id00099/badvideo123/0000{i}.wav" for i in (1, 2, 3)]


def test_build_writes_readable_lists(corpus, tmp_path):
    lists = str(tmp_path / "lists")
    tl = build_train_list(corpus["train_dir"], lists, progress=False)
    assert len(tl) == 12 and tl.speakers == ["id00001", "id00002", "id00003", "id00004"]
    with open(os.path.join(lists, "train_list.txt")) as f:
        rows = [line.split() for line in f if not line.startswith("#")]
    assert len(rows) == 12
    for (path, label, num), p, lab, n in zip(rows, tl.paths, tl.labels, tl.num_samples):
        assert (path, int(label), int(num)) == (p, lab, n)
        assert tl.speakers[lab] == path.split("/")[0]
        assert sf.info(os.path.join(corpus["train_dir"], path)).frames == n
    assert read_speakers(os.path.join(lists, "speakers.txt")) == tl.speakers
    again = read_train_list(os.path.join(lists, "train_list.txt"))
    assert again == tl


def test_reuse_and_rebuild(corpus, tmp_path, caplog):
    lists = str(tmp_path / "lists")
    build_train_list(corpus["train_dir"], lists, progress=False)
    with caplog.at_level(logging.INFO, logger="src.data.lists"):
        tl = build_train_list(corpus["train_dir"], lists, progress=False)
    assert "reusing" in caplog.text and len(tl) == 12
    caplog.clear()
    write_wav(os.path.join(corpus["train_dir"], "id00005", "newvideo000", "00001.wav"), np.zeros(16000) + 0.1)
    with caplog.at_level(logging.INFO, logger="src.data.lists"):
        tl = build_train_list(corpus["train_dir"], lists, progress=False)
    assert "files under" in caplog.text and len(tl) == 13 and tl.num_speakers == 5
    caplog.clear()
    trials = tmp_path / "trials.txt"
    trials.write_text("1 id00005/a/00001.wav id00005/b/00002.wav\n")
    with caplog.at_level(logging.INFO, logger="src.data.lists"):
        tl = build_train_list(corpus["train_dir"], lists, [str(trials)], progress=False)
    assert "other settings" in caplog.text and len(tl) == 12 and tl.num_speakers == 4


def test_exclude_trial_speakers(corpus, tmp_path):
    trials = tmp_path / "trials.txt"
    trials.write_text("1 id00002/a/00001.wav id00002/b/00002.wav\n0 id00002/a/00001.wav id00004/c/00001.wav\n")
    tl = build_train_list(corpus["train_dir"], str(tmp_path / "lists"), [str(trials)], progress=False)
    assert tl.speakers == ["id00001", "id00003"] and len(tl) == 6
    assert sorted(set(tl.labels)) == [0, 1]


def test_bad_files_are_left_out_and_recorded(corpus, tmp_path, caplog):
    bad = _add_bad_files(corpus["train_dir"])
    lists = str(tmp_path / "lists")
    with caplog.at_level(logging.WARNING, logger="src.data.lists"):
        tl = build_train_list(corpus["train_dir"], lists, progress=False)
    assert len(tl) == 12 and "id00099" not in tl.speakers
    for rel in bad:
        assert rel in caplog.text
    with open(os.path.join(lists, "skipped.txt")) as f:
        assert sorted(line.split("\t")[0] for line in f) == bad
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="src.data.lists"):
        build_train_list(corpus["train_dir"], lists, progress=False)
    assert "reusing" in caplog.text                     # skipped files do not force a rebuild


def test_m4a_without_ffmpeg_fails_up_front(corpus, tmp_path, monkeypatch):
    path = os.path.join(corpus["train_dir"], "id00001", "m4avideo000", "00001.m4a")
    os.makedirs(os.path.dirname(path))
    with open(path, "wb") as f:
        f.write(b"\x00\x00\x00\x18ftypM4A ")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(AudioError, match="ffmpeg is not installed.*convert"):
        build_train_list(corpus["train_dir"], str(tmp_path / "lists"), progress=False)


@pytest.mark.parametrize("line, message", [
    ("id00001/v/00001.wav 0", "expected '<speaker/video/utt.wav> <label> <num_samples>'"),
    ("id00001/v/00001.wav zero 16000", "expected"),
    ("id00001/v/00001.wav 7 16000", "label 7 but speakers.txt has 2 speakers"),
])
def test_malformed_train_list_names_file_and_line(tmp_path, line, message):
    (tmp_path / "speakers.txt").write_text("id00001 0\nid00002 1\n")
    (tmp_path / "train_list.txt").write_text(f"# train_dir: /x\nid00001/v/00002.wav 0 16000\n{line}\n")
    with pytest.raises(ListFileError, match=f"train_list.txt:3: {message}"):
        read_train_list(str(tmp_path / "train_list.txt"))


def test_malformed_speakers_file(tmp_path):
    (tmp_path / "speakers.txt").write_text("id00001 0\nid00002\n")
    with pytest.raises(ListFileError, match=r"speakers.txt:2: expected '<speaker> <label>'"):
        read_speakers(str(tmp_path / "speakers.txt"))
    (tmp_path / "speakers.txt").write_text("id00001 0\nid00002 2\n")
    with pytest.raises(ListFileError, match="without gaps"):
        read_speakers(str(tmp_path / "speakers.txt"))


def _check_args(corpus):
    return ["--train_dir", corpus["train_dir"], "--musan_dir", corpus["musan_dir"], "--rir_dir", corpus["rir_dir"],
            "--num_workers", "1"]


def test_data_check_lists_every_bad_file(corpus, capsys):
    assert run_check(load_config(_check_args(corpus))) == 0
    assert "no problems found" in capsys.readouterr().out
    # Near-silent or very short speech is usable, but reported as warnings (MUSAN/RIR files are not judged so).
    quiet = os.path.join(corpus["train_dir"], "id00001", "quietvideo0", "00001.wav")
    os.makedirs(os.path.dirname(quiet))
    write_wav(quiet, np.full(16000, 1e-5, np.float32))
    assert run_check(load_config(_check_args(corpus))) == 0
    out = capsys.readouterr().out
    assert f"WARNING      {quiet}: near-silent (RMS" in out and "1 near-silent or very short (warnings)" in out
    shutil.rmtree(os.path.dirname(quiet))
    bad = _add_bad_files(corpus["train_dir"])
    noise_file = os.path.join(corpus["musan_dir"], "noise", "free-sound", "noise-free-sound-0000.wav")
    write_wav(noise_file, np.zeros(100), 22050)
    assert run_check(load_config(_check_args(corpus))) == 4
    out = capsys.readouterr().out
    for rel in bad:
        assert os.path.join(corpus["train_dir"], rel) in out
    assert "EMPTY" in out and "UNREADABLE" in out and "SAMPLE_RATE" in out and noise_file in out
    assert "3 bad (1 empty, 1 sample_rate, 1 unreadable)" in out


def test_data_check_command_exit_status(corpus):
    shutil.rmtree(os.path.join(corpus["rir_dir"]))
    result = subprocess.run([sys.executable, "-m", "src.data.check"] + _check_args(corpus), cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert f"RIR folder not found: '{corpus['rir_dir']}'" in result.stdout


def test_flac_files_are_listed(corpus, tmp_path):
    wav = np.random.default_rng(0).uniform(-0.5, 0.5, 12345).astype(np.float32)
    folder = os.path.join(corpus["train_dir"], "id00001", "flacvideo00")
    os.makedirs(folder)
    sf.write(os.path.join(folder, "00001.flac"), wav, 16000)
    tl = build_train_list(corpus["train_dir"], str(tmp_path / "lists"), progress=False)
    k = tl.paths.index("id00001/flacvideo00/00001.flac")
    assert tl.num_samples[k] == 12345 and tl.labels[k] == 0
