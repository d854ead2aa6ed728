"""The CN-Celeb protocol: its lists read from a generated corpus in CN-Celeb1's layout, multi-utterance enrolment
scored by eval.py against a direct per-trial computation, training lists of <speaker>/<utt>.flac folders."""
import os

import mindspore as ms
import numpy as np
import pytest

import eval as eval_script
from src.config import load_config
from src.data.cnceleb import (EnrollmentError, cnceleb_speaker, read_enrollment, read_enrollment_map,
                              resolve_audio_keys)
from src.data.lists import build_train_list, trial_speakers
from src.data.synthetic import make_cnceleb_corpus
from src.data.trials import TrialFileError, read_trial_list
from src.evaluate.extract import Batching, extract_embeddings
from src.evaluate.scoring import pair_scores
from src.model.ecapa_tdnn import ECAPA_TDNN
from src.model.embedder import Embedder

SMALL = dict(channels=32, mfa_channels=96, embedding_size=16, attention_channels=16, se_channels=16,
             res2net_scale=2)
# One graph shape: every file (joined enrolments are 2-3.6 s) padded to 4 s.
OVERRIDES = [a for k, v in SMALL.items() for a in (f"--{k}", str(v))] + [
    "--bucket_seconds", "[]", "--max_eval_seconds", "4.0", "--eval_batch_size", "4"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_cnceleb_corpus(str(tmp_path_factory.mktemp("cnceleb")), num_dev_speakers=3, num_eval_speakers=3,
                               utts_per_speaker=4, seconds=(1.0, 1.8), seed=4, progress=False)


def test_lists_are_read_in_cnceleb_format(corpus):
    file_format, trials = read_trial_list(corpus["trials"])
    assert file_format == "cnceleb" and len(trials) == corpus["num_trials"] == 3 * 6
    assert trials[0] == (1, "id00003-enroll", trials[0][2]) and trials[0][2].startswith("test/id00003-")
    assert sum(label for label, _, _ in trials) == 6
    mean = read_enrollment(corpus["trials"], "mean")
    assert list(mean) == ["id00003-enroll", "id00004-enroll", "id00005-enroll"]
    assert all(len(utts) == 2 and utts[0].startswith(spk[:7] + "/") for spk, utts in mean.items())
    assert read_enrollment(corpus["trials"], "concat")["id00004-enroll"] == ["enroll/id00004-enroll.wav"]
    # the lists say .wav, the files are .flac
    assert resolve_audio_keys(corpus["eval_dir"], ["enroll/id00004-enroll.wav", "test/none.wav"]) == {
        "enroll/id00004-enroll.wav": "enroll/id00004-enroll.flac", "test/none.wav": "test/none.wav"}
    assert {cnceleb_speaker(k) for k in ("id00800-enroll", "test/id00800-singing-01-002.wav",
                                          "id00800/singing-01-001.wav")} == {"id00800"}
    assert trial_speakers([corpus["trials"]]) == {"id00003", "id00004", "id00005"}


def test_bad_lists_are_named(corpus, tmp_path):
    bad = tmp_path / "enroll.map"
    bad.write_text("id00001-enroll\n")
    with pytest.raises(EnrollmentError, match=r"enroll.map:1: expected '<enroll_id> <utterance>"):
        read_enrollment_map(str(bad))
    trials = tmp_path / "trials.lst"
    trials.write_text("id00001-enroll test/a.wav 1\nid00001-enroll test/b.wav 2\n")
    with pytest.raises(TrialFileError, match=r"trials.lst:2: expected .*\(CN-Celeb\)"):
        read_trial_list(str(trials))
    with pytest.raises(EnrollmentError, match="enroll.lst: enrolment list not found"):
        read_enrollment(str(trials), "concat")
    with pytest.raises(ValueError, match="cnceleb_enrollment: expected one of mean, concat"):
        read_enrollment(str(trials), "sum")
    bad.write_text("id00002-enroll id00002/a.wav\n")
    trials.write_text("id00001-enroll test/a.wav 1\n")
    cfg = load_config(OVERRIDES + ["--checkpoint", "x.ckpt", "--trials", str(trials), "--test_dir", str(tmp_path)])
    with pytest.raises(EnrollmentError, match="1 enrolment speaker.*not in the mean enrolment list.*id00001-enroll"):
        eval_script.read_lists(cfg)


def test_pair_scores_in_chunks_equal_a_loop():
    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((50, 8))
    first, second = rng.integers(0, 50, 1000), rng.integers(0, 50, 1000)
    expected = [matrix[a] @ matrix[b] for a, b in zip(first, second)]
    np.testing.assert_allclose(pair_scores(matrix, first, second, chunk=64), expected, rtol=1e-12)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    ms.set_seed(0)
    path = str(tmp_path_factory.mktemp("ckpt") / "random.ckpt")
    network = ECAPA_TDNN(**SMALL)
    ms.save_checkpoint(network, path)
    network.set_train(False)
    return path, Embedder(network)


def cosine(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.mark.parametrize("mode", ["mean", "concat"])
def test_eval_scores_enrolment_speakers_like_a_direct_computation(corpus, checkpoint, tmp_path, mode):
    path, embedder = checkpoint
    out = str(tmp_path / "eval")
    summary = eval_script.evaluate(load_config(OVERRIDES + [
        "--checkpoint", path, "--test_dir", corpus["eval_dir"], "--trials", corpus["trials"],
        "--cnceleb_enrollment", mode, "--eval_output_dir", out]))
    entry = summary["trial_lists"]["trials"]
    assert entry["metrics"]["cosine"]["num_target"] == 6 and entry["metrics"]["cosine"]["num_nontarget"] == 12
    rows = [line.split() for line in open(entry["score_file"], encoding="utf-8")]
    assert len(rows) == 18
    # Direct: every file embedded by itself (in its own call), the enrolment as the mean of the raw embeddings of
    # its enroll.map utterances (their .flac files below data/) or as its enroll.lst file.
    batching = Batching(bucket_seconds=(), max_seconds=4.0, batch_size=4)

    done = {}

    def embed(root, key):
        key = os.path.splitext(key)[0] + ".flac"
        if (root, key) not in done:
            done[root, key] = extract_embeddings(embedder, [key], root, batching, progress=False)[key]
        return done[root, key].astype(np.float64)
    enrollment = read_enrollment(corpus["trials"], mode)
    for enroll, test, score, label in rows:
        if mode == "mean":
            reference = np.mean([embed(corpus["data_dir"], k) for k in enrollment[enroll]], axis=0)
        else:
            reference = embed(corpus["eval_dir"], enrollment[enroll][0])
        expected = cosine(reference, embed(corpus["eval_dir"], test))
        assert float(score) == pytest.approx(expected, abs=2e-5), (enroll, test)
        assert int(label) == int(test.startswith(f"test/{enroll[:7]}-"))


def test_training_lists_take_cnceleb_speaker_folders_and_links(corpus, tmp_path):
    gathered = tmp_path / "cnceleb_train"           # CN-Celeb1 dev speakers linked into one folder, as documented
    gathered.mkdir()
    for speaker in open(os.path.join(corpus["root"], "dev", "dev.lst"), encoding="utf-8").read().split():
        os.symlink(os.path.join(corpus["data_dir"], speaker), gathered / speaker)
    train_list = build_train_list(str(gathered), str(tmp_path / "lists"), progress=False)
    assert train_list.speakers == ["id00000", "id00001", "id00002"] and len(train_list) == 12
    assert all(p.count("/") == 1 and p.endswith(".flac") for p in train_list.paths)
    excluded = build_train_list(corpus["data_dir"], str(tmp_path / "lists2"), exclude_trials=[corpus["trials"]],
                                progress=False)
    assert excluded.speakers == ["id00000", "id00001", "id00002"]
