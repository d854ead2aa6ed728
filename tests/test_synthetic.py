"""src/data/synthetic.py: the corpus layout, its determinism, and that speakers are learnable but not trivial."""
import filecmp
import os
import re

import librosa
import numpy as np
import pytest
import soundfile as sf
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

from src.data.audio import read_audio
from src.data.lists import speaker_of_path
from src.data.synthetic import main, make_corpus, make_trials
from src.evaluate.metrics import compute_eer
from src.data.trials import read_trials


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(str(tmp_path_factory.mktemp("syn")), 20, 8, 8, (1.5, 2.5), seed=3, progress=False)


def _wavs(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs
                  if f.endswith(".wav"))


def test_voxceleb_layout_and_files(corpus):
    train = _wavs(corpus["train_dir"])
    assert len(train) == 20 * 8
    for rel in train:
        speaker, video, utt = rel.split(os.sep)
        assert re.fullmatch(r"id000\d\d", speaker) and re.fullmatch(r"[A-Za-z0-9_-]{11}", video)
        assert re.fullmatch(r"\d{5}\.wav", utt)
    speakers = {r.split(os.sep)[0] for r in train}
    assert len(speakers) == 20
    assert all(len({r.split(os.sep)[1] for r in train if r.startswith(s)}) == 3 for s in speakers)
    info = sf.info(os.path.join(corpus["train_dir"], train[0]))
    assert info.samplerate == 16000 and info.channels == 1 and info.subtype == "PCM_16"
    lengths = [sf.info(os.path.join(corpus["train_dir"], r)).frames / 16000 for r in train]
    assert 1.5 <= min(lengths) and max(lengths) <= 2.5
    test_speakers = {r.split(os.sep)[0] for r in _wavs(corpus["test_dir"])}
    assert len(test_speakers) == 8 and not test_speakers & speakers


def test_trials_are_balanced_and_point_at_test_files(corpus):
    trials = read_trials(corpus["trials"])
    assert len(trials) == corpus["num_trials"] == 2 * 8 * 8
    assert sum(label for label, _, _ in trials) == len(trials) // 2
    for label, enroll, test in trials:
        assert os.path.isfile(os.path.join(corpus["test_dir"], enroll))
        assert os.path.isfile(os.path.join(corpus["test_dir"], test))
        assert enroll != test
        assert (enroll.split("/")[0] == test.split("/")[0]) == bool(label)


def test_musan_and_rir_folders(corpus):
    for category in ("noise", "music", "speech"):
        files = _wavs(os.path.join(corpus["musan_dir"], category))
        assert len(files) >= 4
        wav = read_audio(os.path.join(corpus["musan_dir"], category, files[0]))
        assert np.sqrt(np.mean(wav ** 2)) > 0.01
    rirs = _wavs(corpus["rir_dir"])
    assert any(r.startswith(os.path.join("smallroom", "Room001", "Room001-00001.wav")) for r in rirs)
    for rel in rirs:
        h = read_audio(os.path.join(corpus["rir_dir"], rel))
        peak = int(np.argmax(np.abs(h)))
        assert peak < 0.03 * 16000 and np.all(h[:peak] == 0)    # direct path comes first
        energy = np.cumsum(h[peak:] ** 2)
        assert energy[len(energy) // 2] > 0.9 * energy[-1]      # and the tail decays


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    a = make_corpus(str(tmp_path / "a"), 2, 2, 2, (1.0, 1.2), seed=7, augment_folders=False, progress=False)
    b = make_corpus(str(tmp_path / "b"), 2, 2, 2, (1.0, 1.2), seed=7, augment_folders=False, progress=False)
    c = make_corpus(str(tmp_path / "c"), 2, 2, 2, (1.0, 1.2), seed=8, augment_folders=False, progress=False)
    files = _wavs(a["train_dir"])
    assert files == _wavs(b["train_dir"])
    assert all(filecmp.cmp(os.path.join(a["train_dir"], f), os.path.join(b["train_dir"], f), shallow=False)
               for f in files)
    assert filecmp.cmp(a["trials"], b["trials"], shallow=False)
    assert files != _wavs(c["train_dir"])


def test_command_line(tmp_path, capsys):
    main(["--out", str(tmp_path), "--train_speakers", "2", "--test_speakers", "2", "--utts", "2",
          "--min_seconds", "1", "--max_seconds", "1", "--no_augment_folders"])
    assert '"trials"' in capsys.readouterr().out
    assert len(_wavs(str(tmp_path / "train"))) == 4 and os.path.isfile(tmp_path / "trials.txt")
    assert not os.path.exists(tmp_path / "musan")


def _log_mel_stats(path, mel):
    """Mean and std of 40 log-mel bands over the louder 60 % of frames (80,)."""
    power = np.abs(librosa.stft(read_audio(path), n_fft=512, hop_length=160)) ** 2
    log_mel = np.log(mel @ power + 1e-8)
    loud = log_mel.mean(0) > np.percentile(log_mel.mean(0), 40)
    return np.concatenate([log_mel[:, loud].mean(1), log_mel[:, loud].std(1)])


def _eer(embed, trials, feats):
    emb = {u: embed(f) for u, f in feats.items()}
    mean = np.mean(list(emb.values()), axis=0)
    unit = {u: (e - mean) / np.linalg.norm(e - mean) for u, e in emb.items()}
    scores = np.array([unit[a] @ unit[b] for _, a, b in trials])
    return compute_eer(scores, np.array([lab for lab, _, _ in trials]))[0]


def test_speakers_are_learnable_from_training_speakers_but_not_trivial(corpus):
    """A linear model fitted on the training speakers separates held-out speakers much better than the raw
    spectrum does, and neither is perfect."""
    mel = librosa.filters.mel(sr=16000, n_fft=512, n_mels=40)
    train = _wavs(corpus["train_dir"])
    x = np.array([_log_mel_stats(os.path.join(corpus["train_dir"], r), mel) for r in train])
    y = [r.split(os.sep)[0] for r in train]
    lda = LinearDiscriminantAnalysis(n_components=19).fit(x, y)
    trials = read_trials(corpus["trials"])
    feats = {u: _log_mel_stats(os.path.join(corpus["test_dir"], u), mel)
             for u in {u for _, a, b in trials for u in (a, b)}}
    raw_eer = _eer(lambda f: f[:40], trials, feats)
    learned_eer = _eer(lambda f: lda.transform(f[None])[0], trials, feats)
    assert raw_eer > 0.15                      # not trivially separable by the average spectrum
    assert learned_eer < 0.35 and learned_eer < raw_eer - 0.05


def test_make_trials_per_utterance():
    """More trials per utterance: balanced, labelled right, no pair twice, the first ones unchanged."""
    utterances = {f"id{s:05d}": [f"id{s:05d}/{'ABC'[u % 3] * 11}/{u + 1:05d}.wav" for u in range(6)]
                  for s in range(4)}
    one = make_trials(utterances, seed=3)
    assert len(one) == 48 and sum(label for label, _, _ in one) == 24
    many = make_trials(utterances, seed=3, per_utterance=4)
    assert len(set(many)) == len(many) and many[:2] == one[:2]
    for trials in (one, many):
        assert all((speaker_of_path(a) == speaker_of_path(b)) == bool(label) and a != b for label, a, b in trials)
    assert all(a.split("/")[1] != b.split("/")[1] for label, a, b in many if label)   # another video preferred
    targets = sum(label for label, _, _ in many)
    assert 24 < targets <= 24 * 4 and len(many) - targets > 24
