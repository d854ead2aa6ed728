"""EER, minDCF, DET, Cllr, minCllr and actDCF against independent computations (sklearn's ROC curve, brute-force
threshold sweeps, trial-by-trial BOSARIS definitions and a textbook pool-adjacent-violators)."""
import math

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from src.evaluate.metrics import (bayes_threshold, compute_act_dcf, compute_cllr, compute_eer, compute_min_cllr,
                                  compute_min_dcf, det_curve, plot_det, summarize)


def sklearn_eer(scores, labels):
    """EER where the ROC polyline (in FAR, FRR) crosses FAR = FRR, from sklearn's roc_curve."""
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    fnr = 1.0 - tpr                                   # fpr rising, fnr falling
    d = fnr - fpr
    j = int(np.argmax(d <= 0))
    t = d[j - 1] / (d[j - 1] - d[j])
    return fpr[j - 1] + t * (fpr[j] - fpr[j - 1])


def brute_force_rates(scores, labels, threshold):
    tar, non = scores[labels == 1], scores[labels == 0]
    return np.mean(non >= threshold), np.mean(tar < threshold)


def brute_force_min_dcf(scores, labels, p):
    thresholds = np.append(np.unique(scores), np.inf)
    costs = [p * frr + (1 - p) * far
             for far, frr in (brute_force_rates(scores, labels, t) for t in thresholds)]
    return min(costs) / min(p, 1 - p)


def random_trials(seed, n=2000, tied=False):
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.3).astype(int)
    scores = rng.normal(size=n) + 1.5 * labels
    if tied:
        scores = np.round(scores * 2) / 2           # about a dozen distinct values
    return scores, labels


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_eer_and_min_dcf_match_independent_references(seed, tied):
    scores, labels = random_trials(seed, tied=tied)
    eer, threshold = compute_eer(scores, labels)
    assert eer == pytest.approx(sklearn_eer(scores, labels), abs=1e-12)
    # The EER lies between the two error rates at the threshold reported (both error rates are monotonic).
    far, frr = brute_force_rates(scores, labels, threshold)
    if not tied:
        assert abs(far - eer) < 5e-3 and abs(frr - eer) < 5e-3
    for p in (0.01, 0.05):
        dcf, dcf_threshold = compute_min_dcf(scores, labels, p)
        assert dcf == pytest.approx(brute_force_min_dcf(scores, labels, p), abs=1e-12)
        far, frr = brute_force_rates(scores, labels, dcf_threshold)
        assert (p * frr + (1 - p) * far) / p == pytest.approx(dcf, abs=1e-12)


def test_hand_computed_cases():
    assert compute_eer([0.1, 0.2, 0.3, 0.4], [0, 0, 1, 1]) == (0.0, 0.3)
    assert compute_min_dcf([0.1, 0.2, 0.3, 0.4], [0, 0, 1, 1], 0.01) == (0.0, 0.3)
    assert compute_eer([0.1, 0.2], [1, 0])[0] == 1.0
    # One target among three nontargets, ranked third: (FAR, FRR) = (2/3, 0) at 0.2 and (2/3, 1) at 0.3;
    # FRR - FAR goes -2/3 -> 1/3, crossing 2/3 of the way along: EER 2/3 at threshold 0.2 + 2/3 * 0.1.
    eer, threshold = compute_eer([0.1, 0.2, 0.3, 0.4], [0, 1, 0, 0])
    assert eer == pytest.approx(2 / 3) and threshold == pytest.approx(0.2 + 0.2 / 3)


def test_degenerate_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="all 3 trials are target trials"):
        compute_eer([0.1, 0.2, 0.3], [1, 1, 1])
    with pytest.raises(ValueError, match="nontarget trials"):
        compute_min_dcf([0.1, 0.2], [0, 0], 0.01)
    with pytest.raises(ValueError, match="differ in length"):
        compute_eer([0.1, 0.2], [0, 1, 1])
    with pytest.raises(ValueError, match="NaN"):
        compute_eer([0.1, np.nan], [0, 1])
    with pytest.raises(ValueError, match="labels must be"):
        compute_eer([0.1, 0.2], [0, 2])
    with pytest.raises(ValueError, match="empty"):
        summarize([], [])


def test_det_curve_summary_and_plot(tmp_path):
    scores, labels = random_trials(3, n=500)
    far, frr, thresholds = det_curve(scores, labels)
    assert far[0] == 1.0 and frr[0] == 0.0 and far[-1] == 0.0 and frr[-1] == 1.0
    assert np.all(np.diff(far) <= 0) and np.all(np.diff(frr) >= 0) and np.all(np.diff(thresholds) > 0)
    summary = summarize(scores, labels)
    assert set(summary) == {"eer", "eer_percent", "eer_threshold", "min_dcf_p0.01", "min_dcf_p0.01_threshold",
                            "min_dcf_p0.05", "min_dcf_p0.05_threshold", "num_trials", "num_target",
                            "num_nontarget"}
    assert summary["num_target"] == labels.sum() and summary["num_trials"] == 500
    assert summary["eer_percent"] == pytest.approx(100 * summary["eer"])
    path = plot_det({"random": (scores, labels)}, str(tmp_path / "det.png"))
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- Cllr, minCllr, actDCF (BOSARIS definitions)
def bits(x):
    """log2(1 + e^x), for any x including +-inf."""
    return math.log2(1 + math.exp(x)) if x < 700 else x / math.log(2)


def brute_force_cllr(llrs, labels):
    """BOSARIS Cllr, one trial at a time: mean log2(1 + e^-llr) / 2 over targets + mean log2(1 + e^llr) / 2 over
    nontargets."""
    tar = [bits(-x) for x, y in zip(llrs, labels) if y == 1]
    non = [bits(x) for x, y in zip(llrs, labels) if y == 0]
    return sum(tar) / len(tar) / 2 + sum(non) / len(non) / 2


def textbook_pav(scores, labels):
    """Pool-adjacent-violators on a stack, tied scores pooled first -> target posterior per trial."""
    order = np.argsort(scores, kind="mergesort")
    blocks = []                                     # [sum of labels, count, first score]
    for i in order:
        if blocks and blocks[-1][2] == scores[i]:
            blocks[-1][0] += labels[i]
            blocks[-1][1] += 1
        else:
            blocks.append([labels[i], 1, scores[i]])
    pooled = []                                     # [sum, count, number of tie blocks]
    for total, count, _ in blocks:
        pooled.append([total, count, 1])
        while len(pooled) > 1 and pooled[-2][0] / pooled[-2][1] > pooled[-1][0] / pooled[-1][1]:
            total, count, n = pooled.pop()
            pooled[-1] = [pooled[-1][0] + total, pooled[-1][1] + count, pooled[-1][2] + n]
    posterior_of_block = [b[0] / b[1] for b in pooled for _ in range(b[2])]
    posterior = np.empty(len(scores))
    position = 0
    for block, (_, count, _) in zip(posterior_of_block, blocks):
        posterior[order[position:position + count]] = block
        position += count
    return posterior


def brute_force_min_cllr(scores, labels):
    """Cllr of the PAV posteriors turned into LLRs (the trials' own target proportion divided out)."""
    posterior = textbook_pav(scores, labels)
    prior = np.mean(labels)
    with np.errstate(divide="ignore"):
        llrs = np.log(posterior) - np.log(1 - posterior) - math.log(prior / (1 - prior))
    return brute_force_cllr(llrs, labels)


def brute_force_act_dcf(llrs, labels, p):
    threshold = -math.log(p / (1 - p))
    misses = sum(1 for x, y in zip(llrs, labels) if y == 1 and not x >= threshold)
    false_alarms = sum(1 for x, y in zip(llrs, labels) if y == 0 and x >= threshold)
    cost = p * misses / sum(labels) + (1 - p) * false_alarms / (len(labels) - sum(labels))
    return cost / min(p, 1 - p)


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_cllr_min_cllr_and_act_dcf_match_brute_force(seed, tied):
    scores, labels = random_trials(seed, n=1500, tied=tied)
    llrs = 1.7 * scores - 2.0                        # some (mis)calibration
    assert compute_cllr(llrs, labels) == pytest.approx(brute_force_cllr(llrs, labels), rel=1e-12)
    assert compute_min_cllr(llrs, labels) == pytest.approx(brute_force_min_cllr(llrs, labels), rel=1e-9)
    # minCllr depends on the order of the scores only, and no monotone calibration beats it.
    assert compute_min_cllr(np.exp(scores), labels) == pytest.approx(compute_min_cllr(llrs, labels), rel=1e-12)
    assert compute_min_cllr(llrs, labels) < compute_cllr(llrs, labels)
    for p in (0.01, 0.05, 0.5):
        act = compute_act_dcf(llrs, labels, p)[0]
        assert act == pytest.approx(brute_force_act_dcf(llrs, labels, p), abs=1e-12)
        assert act >= compute_min_dcf(llrs, labels, p)[0] - 1e-12
    summary = summarize(llrs, labels, llr=True)
    assert summary["cllr"] == compute_cllr(llrs, labels) and summary["min_cllr"] == compute_min_cllr(llrs, labels)
    assert summary["act_dcf_p0.01"] == compute_act_dcf(llrs, labels, 0.01)[0]


def test_calibration_metrics_hand_computed_and_well_calibrated_cases():
    # PAV pools (0), (1, 0), (1): posteriors 0, 1/2, 1/2, 1 -> LLRs -inf, 0, 0, +inf -> minCllr 1/2.
    assert compute_min_cllr([1.0, 2.0, 3.0, 4.0], [0, 1, 0, 1]) == pytest.approx(0.5)
    assert compute_cllr([0.0, 0.0], [1, 0]) == pytest.approx(1.0)          # "don't know" costs 1 bit
    assert bayes_threshold(0.01) == pytest.approx(math.log(99))
    # LLRs of two Gaussians N(+-d^2/2, d^2) are exactly calibrated: actDCF ~ minDCF and Cllr ~ minCllr; the same
    # LLRs shifted by +3 (over-confident for targets) lose on both.
    rng = np.random.default_rng(7)
    d, n = 2.5, 40000
    labels = np.repeat([1, 0], n)
    llrs = np.concatenate([rng.normal(d * d / 2, d, n), rng.normal(-d * d / 2, d, n)])
    m = summarize(llrs, labels, llr=True)
    assert m["cllr"] - m["min_cllr"] < 0.01
    for p in (0.01, 0.05):
        assert m[f"act_dcf_p{p:g}"] < 1.1 * m[f"min_dcf_p{p:g}"]
    shifted = summarize(llrs + 3.0, labels, llr=True)
    assert shifted["cllr"] > m["cllr"] + 0.1 and shifted["act_dcf_p0.01"] > 1.5 * m["act_dcf_p0.01"]
