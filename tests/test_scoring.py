"""Cosine, mean subtraction, s-norm and AS-norm against a direct per-trial computation."""
import numpy as np
import pytest

from src.evaluate.scoring import score_trials, speaker_means


def cos(a, b):
    return float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b))


def direct_norm(e, t, cohort, topk):
    """Straightforward per-trial (adaptive) s-norm with Python sorting."""
    s = cos(e, t)
    out = 0.0
    for side in (e, t):
        c = sorted((cos(side, row) for row in cohort), reverse=True)[:topk]
        out += (s - np.mean(c)) / np.std(c, ddof=1)
    return out / 2


@pytest.fixture
def setup():
    rng = np.random.default_rng(0)
    keys = [f"spk{i % 7}/v/{i}.wav" for i in range(30)]
    embeddings = {k: rng.normal(size=16) + 3.0 for k in keys}      # offset: mean subtraction matters
    trials = [(int(rng.random() < 0.5), keys[rng.integers(30)], keys[rng.integers(30)]) for _ in range(60)]
    cohort = rng.normal(size=(40, 16)) + 3.0          # 40 cohort speakers of one utterance each
    return embeddings, trials, cohort


def as_utterances(cohort):
    return {f"c{i:02d}/v/0.wav": row for i, row in enumerate(cohort)}


def test_cosine_and_mean_subtraction(setup):
    embeddings, trials, _ = setup
    scores = score_trials(embeddings, trials)
    assert np.allclose(scores, [cos(embeddings[e], embeddings[t]) for _, e, t in trials], atol=1e-12)
    mean = np.mean(list(embeddings.values()), axis=0)
    scores = score_trials(embeddings, trials, mean=mean)
    assert np.allclose(scores, [cos(embeddings[e] - mean, embeddings[t] - mean) for _, e, t in trials], atol=1e-12)


@pytest.mark.parametrize("norm,topk", [("snorm", 40), ("asnorm", 10), ("asnorm", 300)])
def test_snorm_and_asnorm(setup, norm, topk):
    embeddings, trials, cohort = setup
    mean = cohort.mean(axis=0)
    scores = score_trials(embeddings, trials, score_norm=norm, cohort=as_utterances(cohort), mean=mean, topk=topk)
    k = 40 if norm == "snorm" else min(topk, 40)
    expected = [direct_norm(embeddings[e] - mean, embeddings[t] - mean, cohort - mean, k) for _, e, t in trials]
    assert np.allclose(scores, expected, atol=1e-10)


def test_speaker_means_and_errors(setup):
    embeddings, trials, _ = setup
    speakers, means = speaker_means(embeddings)
    assert speakers == [f"spk{i}" for i in range(7)] and means.shape == (7, 16)
    rows = [embeddings[k] / np.linalg.norm(embeddings[k]) for k in embeddings if k.startswith("spk3/")]
    assert np.allclose(means[3], np.mean(rows, axis=0))
    with pytest.raises(ValueError, match="needs a cohort"):
        score_trials(embeddings, trials, score_norm="asnorm")
    with pytest.raises(ValueError, match="score_norm: expected"):
        score_trials(embeddings, trials, score_norm="znorm")
    with pytest.raises(ValueError, match="no embedding"):
        score_trials({}, trials)
