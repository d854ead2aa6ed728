"""Score calibration: trial scores (and quality measures) -> log-likelihood ratios (NumPy/SciPy, no MindSpore).

The model is linear, as in BOSARIS's linear fusion and the quality-measure functions (QMF) of WeSpeaker and the IDLab
VoxSRC systems::

    llr = w_score * score + sum_j w_j * q_j + b                (natural-log likelihood ratio)

Quality measures ``q`` of a trial come from its two sides, as the smaller and the larger of the two values (the
order of enrolment and test does not matter):

- ``duration``: log of the seconds of audio each embedding saw -> ``min_log_seconds``, ``max_log_seconds``.
  Short sides give less reliable embeddings and lower target scores; the offset moves the threshold with length.
- ``norm``: log of the length of each raw embedding (before mean subtraction and length normalisation) ->
  ``min_log_norm``, ``max_log_norm``. The length of a margin-trained embedding grows with how confidently the
  network places the input (Kuzmin et al., "Magnitude-aware probabilistic speaker embeddings", Odyssey 2022).
- ``imposter_mean``: mean cosine score of each side against its ``asnorm_topk`` closest cohort speakers ->
  ``min_imposter_mean``, ``max_imposter_mean`` (Thienpondt et al., "The IDLab VoxSRC-20 submission: large margin
  fine-tuning and quality-aware score calibration", ICASSP 2021: a side that resembles many other speakers produces
  high nontarget scores). Needs a cohort (``cohort_source``).

Fitting (``fit_linear``) minimises the prior-weighted cross-entropy of BOSARIS / pyllr at the effective target prior
``P`` (recipe key ``calibration_prior``)::

    P * mean_targets log(1 + e^-(llr + logit P)) + (1 - P) * mean_nontargets log(1 + e^(llr + logit P))

with SciPy's L-BFGS on standardised features (a tiny ridge keeps the weights finite if the calibration trials
happen to be separable); the weights are mapped back to the raw features.

The calibration file (JSON, ``write_calibration`` / ``read_calibration``) holds the feature names and weights, the
scoring and checkpoint (sha256) it was fitted on, the calibration trials' counts and metrics (and how many of their
speakers the checkpoint trained on: 0 for held-out speakers), and the false-accept / false-reject rates measured on
those trials at the Bayes threshold of several priors: the rates it promises (what verify prints, and what eval.py
sets beside the rates measured on a trial list, ``compare_operating_points``).
"""
import dataclasses
import itertools
import json
import math
import os

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit

from src.data.lists import speaker_of_path
from src.evaluate.metrics import bayes_threshold, summarize
from src.evaluate.scoring import cohort_statistics, l2_normalize, scoring_name, speaker_means, transform
from src.files import write_atomically

FORMAT = "ecapa-tdnn calibration 1"
QUALITY_MEASURES = {"duration": "log_seconds", "norm": "log_norm", "imposter_mean": "imposter_mean"}
STORED_PRIORS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)   # operating points kept in the file
RIDGE = 1e-6


def feature_names(quality):
    """Feature names of a list of quality measures -> ["score", "min_log_seconds", "max_log_seconds", ...]."""
    unknown = [q for q in quality if q not in QUALITY_MEASURES]
    if unknown:
        raise ValueError(f"calibration_quality: unknown measures {unknown}; choose from "
                         f"{', '.join(QUALITY_MEASURES)}")
    return ["score"] + [f"{side}_{QUALITY_MEASURES[q]}" for q in quality for side in ("min", "max")]


def utterance_quality(embeddings, seconds, quality, cohort=None, mean=None, topk=300):
    """Per-utterance values of the quality measures -> dict measure -> dict key -> float.

    ``embeddings``: dict key -> (D,) raw embedding; ``seconds``: dict key -> seconds of audio embedded; ``cohort``:
    dict key -> (D,) raw cohort embeddings (only for ``imposter_mean``), ``mean`` the subtracted mean or None.
    """
    keys = list(embeddings)
    values = {}
    if "duration" in quality:
        values["duration"] = {k: math.log(seconds[k]) for k in keys}
    if "norm" in quality:
        values["norm"] = {k: math.log(max(float(np.linalg.norm(embeddings[k])), 1e-12)) for k in keys}
    if "imposter_mean" in quality:
        if cohort is None:
            raise ValueError("calibration_quality imposter_mean needs a cohort: set cohort_source")
        _, speakers = speaker_means(cohort, mean)
        speakers = l2_normalize(speakers)
        means, _ = cohort_statistics(transform(np.stack([embeddings[k] for k in keys]), mean), speakers,
                                     min(int(topk), speakers.shape[0]))
        values["imposter_mean"] = dict(zip(keys, means.tolist()))
    return values


def trial_features(trials, scores, quality, values):
    """Feature matrix of ``trials`` (list of (label, enroll, test)) -> (N, F) float64 in ``feature_names`` order.

    ``scores`` (N,) the trial scores; ``values`` from ``utterance_quality`` for the measures in ``quality``.
    """
    columns = [np.asarray(scores, dtype=np.float64)]
    for q in quality:
        pairs = np.array([[values[q][e], values[q][t]] for _, e, t in trials], dtype=np.float64).reshape(-1, 2)
        columns += [pairs.min(axis=1), pairs.max(axis=1)]
    return np.stack(columns, axis=1)


# ---------------------------------------------------------------- calibration trials
def choose_crops(keys, length_of, per_speaker, seconds, sample_rate, seed):
    """Random crops of training utterances -> list of ``(key, start, num_samples)``.

    ``keys``: utterance keys ``<speaker>/...``; ``length_of(key)`` -> samples (called for the chosen ones only). Up
    to ``per_speaker`` utterances of each speaker with at least two are chosen at random, one crop each; a crop's
    length is drawn log-uniformly in ``seconds`` (low, high), at most the utterance's, at a random start.
    """
    rng = np.random.default_rng(seed)
    groups = {}
    for key in sorted(keys):
        groups.setdefault(speaker_of_path(key), []).append(key)
    crops = []
    for speaker in sorted(groups):
        if len(groups[speaker]) < 2:
            continue
        for key in rng.permutation(groups[speaker])[:per_speaker]:
            length = length_of(str(key))
            n = min(int(round(math.exp(rng.uniform(math.log(seconds[0]), math.log(seconds[1]))) * sample_rate)),
                    length)
            crops.append((str(key), int(rng.integers(0, length - n + 1)), n))
    if len({speaker_of_path(k) for k, _, _ in crops}) < 2:
        raise ValueError("calibration_source: found fewer than 2 speakers with 2 or more utterances")
    return crops


def crop_key(key, start, num_samples):
    """The file name of a crop: ``spk/video/utt_<start>_<num_samples>.wav`` (same speaker folder)."""
    return f"{os.path.splitext(key)[0]}_{start}_{num_samples}.wav"


def calibration_pairs(keys, num_trials, seed):
    """Balanced trials over crops -> list of (label, a, b): up to ``num_trials // 2`` same-speaker pairs drawn
    from all of them, and as many different-speaker pairs drawn at random (no pair twice)."""
    rng = np.random.default_rng(seed)
    speakers = [speaker_of_path(k) for k in keys]
    groups = {}
    for i, speaker in enumerate(speakers):
        groups.setdefault(speaker, []).append(i)
    same = [pair for members in groups.values() for pair in itertools.combinations(members, 2)]
    half = min(num_trials // 2, len(same))
    targets = [same[i] for i in sorted(rng.choice(len(same), size=half, replace=False))]
    num_different = (len(keys) * (len(keys) - 1)) // 2 - len(same)
    half = min(half, num_different)
    nontargets = set()
    while len(nontargets) < half:
        i, j = sorted(rng.choice(len(keys), size=2, replace=False))
        if speakers[i] != speakers[j]:
            nontargets.add((int(i), int(j)))
    return [(1, keys[i], keys[j]) for i, j in targets] + [(0, keys[i], keys[j]) for i, j in sorted(nontargets)]


# ---------------------------------------------------------------- fitting
def fit_linear(features, labels, prior):
    """Prior-weighted logistic regression -> (weights (F,), bias) so that ``features @ weights + bias`` are LLRs.

    ``features`` (N, F) float; ``labels`` (N,) 1 target / 0 nontarget, both classes present; ``prior`` the
    effective target prior in (0, 1). Raises ValueError when the optimiser does not converge.
    """
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    if labels.all() or not labels.any():
        raise ValueError("calibration trials: need both target and nontarget trials")
    centre, scale = features.mean(axis=0), features.std(axis=0)
    scale[scale == 0] = 1.0
    x = (features - centre) / scale
    offset = math.log(prior) - math.log1p(-prior)
    # Per-trial weights: the targets share the prior's mass, the nontargets the rest.
    weight = np.where(labels, prior / labels.sum(), (1.0 - prior) / (~labels).sum())
    sign = np.where(labels, 1.0, -1.0)

    def objective(theta):
        z = sign * (x @ theta[:-1] + theta[-1] + offset)          # log-odds of the right answer
        loss = np.sum(weight * np.logaddexp(0.0, -z)) + RIDGE * theta[:-1] @ theta[:-1]
        dz = -weight * sign * expit(-z)
        grad = np.append(x.T @ dz + 2 * RIDGE * theta[:-1], dz.sum())
        return loss, grad

    result = minimize(objective, np.zeros(x.shape[1] + 1), jac=True, method="L-BFGS-B",
                      options={"maxiter": 1000, "gtol": 1e-10})
    if not result.success:
        raise ValueError(f"calibration: the logistic regression did not converge ({result.message})")
    weights = result.x[:-1] / scale
    return weights, float(result.x[-1] - centre @ weights)


def scoring_settings(cfg, quality=()):
    """What the scores of a recipe depend on besides the network -> dict: the scoring name, and the AS-norm and
    cohort settings when they are used (by the scoring, or by the ``imposter_mean`` quality measure)."""
    settings = {"scoring": scoring_name(cfg.score_norm, cfg.subtract_mean)}
    if cfg.score_norm == "asnorm" or "imposter_mean" in quality:
        settings["asnorm_topk"] = int(cfg.asnorm_topk)
    if cfg.score_norm != "none" or "imposter_mean" in quality or (cfg.subtract_mean and cfg.cohort_source):
        settings["cohort_source"] = os.path.abspath(cfg.cohort_source) if cfg.cohort_source else ""
        settings["cohort_utts_per_speaker"] = int(cfg.cohort_utts_per_speaker)
    return settings


def error_rates_at(llrs, labels, threshold):
    """(false-accept rate, false-reject rate) of accepting ``llr >= threshold``."""
    llrs, labels = np.asarray(llrs, dtype=np.float64), np.asarray(labels).astype(bool)
    return float(np.mean(llrs[~labels] >= threshold)), float(np.mean(llrs[labels] < threshold))


@dataclasses.dataclass
class Calibration:
    """A fitted calibration: ``llrs(features)`` maps ``trial_features`` of ``quality`` to LLRs.

    scoring: dict describing the scores it was fitted on (``scoring_settings``); checkpoint / checkpoint_sha256: the
    network; trials: counts and sources of the calibration trials; operating_points: list of dicts ``p_target``,
    ``threshold`` (LLR), ``false_accept``, ``false_reject`` measured on the calibration trials; fit_metrics:
    src.evaluate.metrics.summarize of the calibrated calibration trials.
    """
    quality: list
    weights: list
    bias: float
    prior: float
    scoring: dict
    checkpoint: str
    checkpoint_sha256: str
    trials: dict = dataclasses.field(default_factory=dict)
    operating_points: list = dataclasses.field(default_factory=list)
    fit_metrics: dict = dataclasses.field(default_factory=dict)

    @property
    def features(self):
        return feature_names(self.quality)

    def llrs(self, features):
        """(N, F) features -> (N,) float64 LLRs."""
        return np.asarray(features, dtype=np.float64) @ np.asarray(self.weights) + self.bias

    def operating_point(self, p_target):
        """The stored operating point of ``p_target`` -> dict, or None when the file has none for it."""
        return next((op for op in self.operating_points if math.isclose(op["p_target"], p_target)), None)

    def trial_speakers(self):
        """Whose trials the stated error rates come from -> a short phrase (``trials["training_speakers"]``: how
        many calibration speakers the checkpoint trained on; absent or None: not checked)."""
        seen = self.trials.get("training_speakers")
        if seen == 0:
            return "speakers the checkpoint never trained on"
        if seen:
            return f"{seen} speakers the checkpoint trained on: OPTIMISTIC for new speakers"
        return "speakers not checked against the checkpoint's training speakers"

    def check_fits(self, path, checkpoint_sha256, scoring):
        """Refuse to apply this calibration (read from ``path``) to another checkpoint or another scoring."""
        if checkpoint_sha256 != self.checkpoint_sha256:
            raise ValueError(f"{path}: the calibration was fitted for checkpoint {self.checkpoint} (sha256 "
                             f"{self.checkpoint_sha256[:12]}...), not this one (sha256 {checkpoint_sha256[:12]}...); "
                             f"run python -m src.calibrate for this checkpoint")
        if scoring != self.scoring:
            differ = sorted(k for k in set(scoring) | set(self.scoring) if scoring.get(k) != self.scoring.get(k))
            raise ValueError(f"{path}: the calibration was fitted on other scores: "
                             + ", ".join(f"{k} {self.scoring.get(k)!r} there, {scoring.get(k)!r} here" for k in differ)
                             + "; calibrate with the same scoring keys")


def fit_calibration(trials, scores, values, quality, prior, scoring, checkpoint, checkpoint_sha256, trial_info):
    """Fit a Calibration on scored calibration trials (``values`` from ``utterance_quality``)."""
    labels = np.array([label for label, _, _ in trials])
    features = trial_features(trials, scores, quality, values)
    weights, bias = fit_linear(features, labels, prior)
    calibration = Calibration(list(quality), weights.tolist(), bias, float(prior), dict(scoring), checkpoint,
                              checkpoint_sha256, dict(trial_info))
    llrs = calibration.llrs(features)
    for p in STORED_PRIORS:
        far, frr = error_rates_at(llrs, labels, bayes_threshold(p))
        calibration.operating_points.append({"p_target": p, "threshold": bayes_threshold(p), "false_accept": far,
                                             "false_reject": frr})
    calibration.fit_metrics = summarize(llrs, labels, llr=True)
    return calibration


def compare_operating_points(calibration, llrs, labels):
    """The error rates ``calibration`` promises at each stored Bayes threshold beside those measured on the trials
    of ``llrs`` (N,) with ``labels`` (N,) 1 target / 0 nontarget -> list of dicts ``p_target``, ``threshold``,
    ``promised_false_accept``, ``promised_false_reject``, ``measured_false_accept``, ``measured_false_reject``."""
    rows = []
    for point in calibration.operating_points:
        far, frr = error_rates_at(llrs, labels, point["threshold"])
        rows.append({"p_target": point["p_target"], "threshold": point["threshold"],
                     "promised_false_accept": point["false_accept"], "promised_false_reject": point["false_reject"],
                     "measured_false_accept": far, "measured_false_reject": frr})
    return rows


def write_calibration(path, calibration):
    """Write ``calibration`` as readable JSON (atomically)."""
    record = {"format": FORMAT, "features": calibration.features, **dataclasses.asdict(calibration)}
    write_atomically(path, "w", lambda f: json.dump(record, f, indent=2))
    return path


def read_calibration(path):
    """Read a file written by ``write_calibration`` -> Calibration; errors name the file and the field."""
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except OSError as err:
        raise ValueError(f"{path}: cannot read the calibration file ({err.strerror})") from None
    except ValueError as err:
        raise ValueError(f"{path}: not a JSON calibration file ({err})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ValueError(f"{path}: expected a calibration file written by python -m src.calibrate (format "
                         f"{FORMAT!r})")
    fields = {f.name for f in dataclasses.fields(Calibration)}
    missing = sorted(fields - set(record))
    if missing:
        raise ValueError(f"{path}: missing fields {', '.join(missing)}")
    calibration = Calibration(**{k: record[k] for k in fields})
    expected = feature_names(calibration.quality)
    if record.get("features") != expected or len(calibration.weights) != len(expected):
        raise ValueError(f"{path}: features/weights: expected {len(expected)} weights for {expected}, got "
                         f"{len(calibration.weights)} for {record.get('features')}")
    return calibration
