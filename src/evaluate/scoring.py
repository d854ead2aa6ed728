"""Trial scoring: cosine similarity, optional mean subtraction, s-norm and adaptive s-norm (NumPy only).

- Cosine: ``s(e, t) = <e, t> / (|e| |t|)``.
- Mean subtraction: a mean embedding ``m`` (of the cohort's training utterances) is subtracted from every
  embedding before length normalisation.
- S-norm: with a cohort of training speakers, each side's score against the cohort gives a mean and standard
  deviation, and
  ``s_norm = ((s - mu_e) / sd_e + (s - mu_t) / sd_t) / 2``.
- AS-norm (adaptive s-norm): the same, but ``mu`` and ``sd`` of each side come from its ``topk`` highest cohort
  scores only (Matejka et al., Interspeech 2017). Standard deviations are the unbiased estimate (ddof=1), as in
  SpeechBrain's scoring recipe.

Every embedding, trial and cohort alike, goes through the same transform before any score: ``x -> (x - m) / |x - m|``
(without ``m`` when mean subtraction is off). A cohort speaker is the mean of its transformed utterance embeddings,
length-normalised again; so with mean subtraction on, the cohort lives in the same space as the trials (as in
WeSpeaker's recipes, which subtract the training mean from enrolment, test and cohort embeddings alike before
AS-norm).
"""
import logging

import numpy as np

from src.data.lists import speaker_of_path
from src.data.trials import trial_utterances

SCORE_NORMS = ("none", "snorm", "asnorm")

logger = logging.getLogger(__name__)


def l2_normalize(x, eps=1e-12):
    """Rows of ``x`` (N, D) scaled to unit length -> (N, D) float64."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


def mean_embedding(embeddings):
    """The mean of a dict key -> (D,) of raw embeddings -> (D,) float64 (the ``m`` of mean subtraction)."""
    return np.mean(np.stack([np.asarray(e, dtype=np.float64) for e in embeddings.values()]), axis=0)


def transform(matrix, mean=None):
    """Rows (N, D) -> (N, D) float64 in scoring space: minus ``mean`` (when given), then length-normalised."""
    matrix = np.asarray(matrix, dtype=np.float64)
    return l2_normalize(matrix if mean is None else matrix - np.asarray(mean, dtype=np.float64))


def speaker_means(embeddings, mean=None):
    """Average each speaker's transformed embeddings (``transform``) -> ``(speakers, (S, D) float64)``.

    ``embeddings``: dict key -> (D,) array, keys VoxCeleb-style paths ``<speaker>/...`` (``speaker_of_path``).
    Speakers are sorted.
    """
    groups = {}
    for key, emb in embeddings.items():
        groups.setdefault(speaker_of_path(key), []).append(emb)
    speakers = sorted(groups)
    means = np.stack([transform(np.stack(groups[s]), mean).mean(axis=0) for s in speakers])
    return speakers, means


def cohort_statistics(embeddings, cohort, topk=None, chunk=4096):
    """Mean and std of each embedding's cosine scores against the cohort -> ``(mean (N,), std (N,))``.

    ``embeddings`` (N, D) and ``cohort`` (M, D) already length-normalised; ``topk`` None uses the whole cohort
    (s-norm), else the ``topk`` highest scores of each row (AS-norm; must be >= 2 and <= M).
    """
    num_cohort = cohort.shape[0]
    if topk is not None and not 2 <= topk <= num_cohort:
        raise ValueError(f"asnorm_topk must be between 2 and the cohort size ({num_cohort}), got {topk}")
    if topk is None and num_cohort < 2:
        raise ValueError(f"s-norm needs a cohort of at least 2 speakers, got {num_cohort}")
    means, stds = [], []
    for start in range(0, embeddings.shape[0], chunk):
        scores = embeddings[start:start + chunk] @ cohort.T                     # (n, M)
        if topk is not None and topk < num_cohort:
            scores = np.partition(scores, num_cohort - topk, axis=1)[:, num_cohort - topk:]
        means.append(scores.mean(axis=1))
        stds.append(scores.std(axis=1, ddof=1))
    return np.concatenate(means), np.maximum(np.concatenate(stds), 1e-12)


def pair_scores(matrix, first, second, chunk=16384):
    """Dot products of rows ``matrix[first[i]]`` and ``matrix[second[i]]`` -> (N,) float64, ``chunk`` pairs at a
    time: memory stays at 2 * chunk * D numbers however many pairs there are (CN-Celeb's 3.5 million trials)."""
    scores = np.empty(len(first), np.float64)
    for start in range(0, len(first), chunk):
        part = slice(start, start + chunk)
        scores[part] = np.einsum("ij,ij->i", matrix[first[part]], matrix[second[part]])
    return scores


def enrollment_means(embeddings, enrollment):
    """Multi-utterance enrolment: each enrolment speaker's embedding is the mean of its utterances' raw embeddings
    -> dict enroll_id -> (D,) float32. ``embeddings``: dict key -> (D,); ``enrollment``: dict enroll_id -> [keys].
    Scoring then transforms it like any embedding (mean subtraction, length normalisation)."""
    return {spk: np.mean([np.asarray(embeddings[k], np.float64) for k in keys], axis=0).astype(np.float32)
            for spk, keys in enrollment.items()}


def scoring_name(score_norm, subtract_mean):
    """The name of a scoring in summaries and calibration files: "cosine", "snorm" or "asnorm", prefixed "mean_"
    with mean subtraction."""
    return ("mean_" if subtract_mean else "") + ("cosine" if score_norm == "none" else score_norm)


def score_trials(embeddings, trials, score_norm="none", cohort=None, mean=None, topk=300):
    """Score every trial -> (N,) float64 in trial order.

    ``embeddings``: dict key -> (D,) array covering every utterance in ``trials`` (list of ``(label, enroll,
    test)``); ``score_norm``: "none", "snorm" or "asnorm" (the last two need ``cohort``: dict key -> (D,) raw
    embeddings of training utterances, keys ``<speaker>/...``); ``mean``: optional (D,) embedding subtracted from
    every embedding, cohort included, before normalisation; ``topk``: the AS-norm cohort size per side (clipped to the
    number of cohort speakers).
    """
    if score_norm not in SCORE_NORMS:
        raise ValueError(f"score_norm: expected one of {', '.join(SCORE_NORMS)}, got {score_norm!r}")
    keys = trial_utterances(trials)
    missing = [k for k in keys if k not in embeddings]
    if missing:
        raise ValueError(f"{len(missing)} trial utterances have no embedding, e.g. {missing[:3]}")
    index = {k: i for i, k in enumerate(keys)}
    matrix = transform(np.stack([embeddings[k] for k in keys]), mean)
    enroll = np.fromiter((index[e] for _, e, _ in trials), np.int64, len(trials))
    test = np.fromiter((index[t] for _, _, t in trials), np.int64, len(trials))
    scores = pair_scores(matrix, enroll, test)
    if score_norm == "none":
        return scores
    if cohort is None:
        raise ValueError(f"score_norm {score_norm} needs a cohort (set cohort_source)")
    _, cohort = speaker_means(cohort, mean)
    cohort = l2_normalize(cohort)
    k = min(int(topk), cohort.shape[0]) if score_norm == "asnorm" else None
    if k is not None and k < int(topk):
        logger.warning("asnorm_topk %d is larger than the cohort (%d speakers): using all of it (plain s-norm)",
                       int(topk), cohort.shape[0])
    mu, sd = cohort_statistics(matrix, cohort, k)
    return 0.5 * ((scores - mu[enroll]) / sd[enroll] + (scores - mu[test]) / sd[test])
