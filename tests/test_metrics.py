"""EER, minDCF and DET against independent computations (sklearn's ROC curve and a brute-force threshold sweep)."""
import numpy as np
import pytest
from sklearn.metrics import roc_curve

from src.evaluate.metrics import compute_eer, compute_min_dcf, det_curve, plot_det, summarize


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
