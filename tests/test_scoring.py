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


def correlated_set(seed=0, dim=32, speakers=40, utts=6, offset=3.0, channels=6):
    """Embeddings with what mean subtraction fixes (a large offset shared by everyone) and what AS-norm fixes
    (recording channels shared across speakers; each cohort speaker is recorded on one channel)."""
    rng = np.random.default_rng(seed)
    common = rng.normal(size=dim) * offset
    channel = rng.normal(size=(channels, dim))
    trial_emb, cohort = {}, {}
    for s in range(speakers):
        voice = rng.normal(size=dim)
        for u in range(utts):
            trial_emb[f"t{s:03d}/v/{u}.wav"] = (common + voice + channel[rng.integers(channels)] * rng.uniform(0.3, 1.7)
                                                + 0.7 * rng.normal(size=dim))
    for s in range(60):
        voice = rng.normal(size=dim)
        for u in range(4):
            cohort[f"c{s:03d}/v/{u}.wav"] = (common + voice + channel[s % channels] * rng.uniform(0.3, 1.7)
                                             + 0.7 * rng.normal(size=dim))
    keys = sorted(trial_emb)
    targets = [(1, a, b) for a in keys for b in keys if a < b and a.split("/")[0] == b.split("/")[0]]
    nontargets = []
    while len(nontargets) < 2 * len(targets):
        a, b = keys[rng.integers(len(keys))], keys[rng.integers(len(keys))]
        if a.split("/")[0] != b.split("/")[0]:
            nontargets.append((0, a, b))
    return trial_emb, cohort, targets + nontargets


def test_mean_subtraction_and_asnorm_combine_like_each_alone():
    """On data where each helps, both together are at least as good as the weaker of the two alone (before the
    cohort and the trials were put in one space, the combination was worse than either)."""
    from src.evaluate.metrics import compute_eer
    from src.evaluate.scoring import mean_embedding
    embeddings, cohort, trials = correlated_set()
    labels = np.array([t[0] for t in trials])
    mean = mean_embedding(cohort)
    eer = {name: compute_eer(score_trials(embeddings, trials, norm, cohort if norm != "none" else None, m, 20),
                             labels)[0]
           for name, norm, m in (("cosine", "none", None), ("mean", "none", mean), ("asnorm", "asnorm", None),
                                 ("both", "asnorm", mean))}
    assert eer["mean"] < eer["cosine"] and eer["asnorm"] < eer["cosine"]
    assert eer["both"] <= max(eer["mean"], eer["asnorm"])
