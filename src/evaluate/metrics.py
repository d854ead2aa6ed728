"""Speaker-verification metrics: EER, normalised minDCF, DET curve, Cllr, minCllr, actDCF (NumPy/SciPy, no MindSpore).

Conventions used throughout:

- ``scores`` (N,) float: higher means "more likely the same speaker"; ``labels`` (N,) int: 1 target, 0 nontarget.
- A trial is accepted when ``score >= threshold``.
- FRR (miss rate) = fraction of target trials rejected; FAR (false-alarm rate) = fraction of nontarget trials
  accepted. Both are evaluated at every distinct score and above the highest one (reject everything).
- EER is where the piecewise-linear (FAR, FRR) curve crosses FAR = FRR, interpolated between the two operating
  points around the crossing; its threshold is interpolated the same way.
- minDCF for a target prior ``p_target`` is ``min_t (c_miss * p_target * FRR(t) + c_fa * (1 - p_target) * FAR(t))``
  divided by ``min(c_miss * p_target, c_fa * (1 - p_target))`` (the cost of the best trivial decision), as in the
  NIST SRE and VoxSRC evaluations.

Calibration metrics read the scores as log-likelihood ratios ``llr = log p(score | target) / p(score | nontarget)``
(natural log), as the BOSARIS toolkit defines them:

- Cllr = mean over targets of ``log2(1 + e^-llr) / 2`` + mean over nontargets of ``log2(1 + e^llr) / 2``, in bits:
  0 is perfect, 1 is what a system that always says llr = 0 costs.
- minCllr: Cllr after the best monotone recalibration of the same scores (pool-adjacent-violators, PAV), so it
  measures discrimination only; Cllr - minCllr is what miscalibration costs.
- actDCF at ``p_target``: the normalised cost of the decisions ``llr >= -log(p_target / (1 - p_target))`` (the Bayes
  threshold); actDCF - minDCF is what the threshold choice costs.

Example: six trials, one nontarget (0.6) scoring above one target (0.3).

>>> scores, labels = [0.9, 0.8, 0.3, 0.6, 0.2, 0.1], [1, 1, 1, 0, 0, 0]
>>> eer, threshold = compute_eer(scores, labels)
>>> round(eer, 4), round(threshold, 4)
(0.3333, 0.6)
>>> round(compute_min_dcf(scores, labels, p_target=0.05)[0], 4)
0.3333
>>> s = summarize(scores, labels)
>>> s["eer_percent"], s["num_target"], s["num_nontarget"]
(33.33333333333333, 3, 3)
"""
import numpy as np
from scipy.optimize import isotonic_regression

DCF_TARGET_PRIORS = (0.01, 0.05)


def _check(scores, labels):
    """Validate and convert -> (scores float64 (N,), labels bool (N,)); clear errors for bad input."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    if scores.shape != labels.shape:
        raise ValueError(f"scores and labels differ in length: {scores.size} vs {labels.size}")
    if scores.size == 0:
        raise ValueError("no trials: scores and labels are empty")
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"scores contain {int(np.sum(~np.isfinite(scores)))} NaN or infinite values")
    if not np.all((labels == 0) | (labels == 1)):
        raise ValueError("labels must be 1 (target) or 0 (nontarget)")
    labels = labels.astype(bool)
    n_target = int(labels.sum())
    if n_target == 0 or n_target == labels.size:
        kind = "nontarget" if n_target == 0 else "target"
        raise ValueError(f"all {labels.size} trials are {kind} trials: EER and minDCF need both target and "
                         f"nontarget trials")
    return scores, labels


def error_rates(scores, labels):
    """Operating points -> (thresholds, far, frr), each (K + 1,) for K distinct scores.

    ``thresholds`` ascending: the K distinct scores, then the next float above the highest (reject everything).
    ``far[i]`` / ``frr[i]``: false-alarm and miss rates when accepting ``score >= thresholds[i]``.
    """
    scores, labels = _check(scores, labels)
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    sorted_labels = labels[order]
    distinct, first = np.unique(sorted_scores, return_index=True)
    # Trials below distinct[i] are those before index first[i] in ascending order.
    targets_below = np.concatenate([[0], np.cumsum(sorted_labels)])[first]
    nontargets_below = np.concatenate([[0], np.cumsum(~sorted_labels)])[first]
    n_target = labels.sum()
    n_nontarget = labels.size - n_target
    frr = np.append(targets_below / n_target, 1.0)
    far = np.append(1.0 - nontargets_below / n_nontarget, 0.0)
    thresholds = np.append(distinct, np.nextafter(distinct[-1], np.inf))
    return thresholds, far, frr


def compute_eer(scores, labels):
    """Equal error rate -> ``(eer, threshold)``: eer a fraction in [0, 1]; accept ``score >= threshold``."""
    thresholds, far, frr = error_rates(scores, labels)
    diff = frr - far                       # rises from -1 (accept all) to +1 (reject all)
    i = int(np.argmax(diff >= 0))          # first operating point with FRR >= FAR (i >= 1)
    lo, hi = diff[i - 1], diff[i]
    alpha = -lo / (hi - lo)
    eer = frr[i - 1] + alpha * (frr[i] - frr[i - 1])
    threshold = thresholds[i - 1] + alpha * (thresholds[i] - thresholds[i - 1])
    return float(eer), float(threshold)


def compute_min_dcf(scores, labels, p_target, c_miss=1.0, c_fa=1.0):
    """Normalised minimum detection cost -> ``(min_dcf, threshold)`` at target prior ``p_target``."""
    if not 0.0 < p_target < 1.0:
        raise ValueError(f"p_target must be in (0, 1), got {p_target}")
    thresholds, far, frr = error_rates(scores, labels)
    cost = c_miss * p_target * frr + c_fa * (1.0 - p_target) * far
    best = int(np.argmin(cost))
    return float(cost[best] / min(c_miss * p_target, c_fa * (1.0 - p_target))), float(thresholds[best])


def bayes_threshold(p_target, c_miss=1.0, c_fa=1.0):
    """The LLR threshold of minimum expected cost at target prior ``p_target``: ``log(c_fa (1 - p) / (c_miss p))``.

    >>> round(bayes_threshold(0.01), 3), bayes_threshold(0.5)
    (4.595, 0.0)
    """
    if not 0.0 < p_target < 1.0:
        raise ValueError(f"p_target must be in (0, 1), got {p_target}")
    return float(np.log(c_fa * (1.0 - p_target)) - np.log(c_miss * p_target))


def compute_act_dcf(llrs, labels, p_target, c_miss=1.0, c_fa=1.0):
    """Normalised detection cost of deciding at the Bayes threshold -> ``(act_dcf, threshold)``.

    ``llrs`` (N,) natural-log likelihood ratios; accept ``llr >= bayes_threshold(p_target)``.
    """
    llrs, labels = _check(llrs, labels)
    threshold = bayes_threshold(p_target, c_miss, c_fa)
    frr = np.mean(llrs[labels] < threshold)
    far = np.mean(llrs[~labels] >= threshold)
    cost = c_miss * p_target * frr + c_fa * (1.0 - p_target) * far
    return float(cost / min(c_miss * p_target, c_fa * (1.0 - p_target))), threshold


def compute_cllr(llrs, labels):
    """Log-likelihood-ratio cost in bits (see the module docstring): ``llrs`` (N,) natural-log LLRs, +-inf allowed.

    >>> compute_cllr([0.0, 0.0], [1, 0])            # no information: 1 bit
    1.0
    >>> round(compute_cllr([5.0, -5.0], [1, 0]), 4)  # confident and right: close to 0
    0.0097
    """
    llrs = np.asarray(llrs, dtype=np.float64).reshape(-1)
    _check(np.where(np.isinf(llrs), 0.0, llrs), labels)
    labels = np.asarray(labels).reshape(-1).astype(bool)
    miss = np.logaddexp(0.0, -llrs[labels]).mean()
    false_alarm = np.logaddexp(0.0, llrs[~labels]).mean()
    return float((miss + false_alarm) / (2.0 * np.log(2.0)))


def pav_llrs(scores, labels):
    """The best monotone (non-decreasing) map of ``scores`` to LLRs on these trials -> (N,) LLRs, +-inf where a pool
    holds only one class.

    Pool-adjacent-violators on the labels sorted by score (tied scores form one pool) gives the posterior
    probability of a target; dividing out the trials' own target proportion turns it into an LLR.
    """
    scores, labels = _check(scores, labels)
    distinct, index = np.unique(scores, return_inverse=True)
    counts = np.bincount(index, minlength=distinct.size)
    targets = np.bincount(index, weights=labels, minlength=distinct.size)
    posterior = np.clip(isotonic_regression(targets / counts, weights=counts).x, 0.0, 1.0)[index]
    prior_log_odds = np.log(labels.mean()) - np.log1p(-labels.mean())
    with np.errstate(divide="ignore"):
        return np.log(posterior) - np.log1p(-posterior) - prior_log_odds


def compute_min_cllr(scores, labels):
    """Cllr of ``pav_llrs``: the Cllr these scores reach with the best monotone calibration, in bits."""
    return compute_cllr(pav_llrs(scores, labels), labels)


def det_curve(scores, labels):
    """DET curve points -> ``(far, frr, thresholds)``, ordered by ascending threshold (FAR falling, FRR rising)."""
    thresholds, far, frr = error_rates(scores, labels)
    return far, frr, thresholds


def summarize(scores, labels, p_targets=DCF_TARGET_PRIORS, llr=False):
    """All metrics of one trial list as a JSON-ready dict.

    Keys: ``eer`` (fraction), ``eer_percent``, ``eer_threshold``, ``min_dcf_p{p}`` and ``min_dcf_p{p}_threshold``
    for each prior (e.g. ``min_dcf_p0.01``), ``num_trials``, ``num_target``, ``num_nontarget``. With ``llr`` (the
    scores are log-likelihood ratios) also ``cllr``, ``min_cllr`` and ``act_dcf_p{p}`` for each prior.
    """
    scores, labels = _check(scores, labels)
    eer, eer_threshold = compute_eer(scores, labels)
    summary = {"eer": eer, "eer_percent": 100.0 * eer, "eer_threshold": eer_threshold}
    for p in p_targets:
        dcf, threshold = compute_min_dcf(scores, labels, p)
        summary[f"min_dcf_p{p:g}"] = dcf
        summary[f"min_dcf_p{p:g}_threshold"] = threshold
    if llr:
        summary.update(cllr=compute_cllr(scores, labels), min_cllr=compute_min_cllr(scores, labels))
        for p in p_targets:
            summary[f"act_dcf_p{p:g}"] = compute_act_dcf(scores, labels, p)[0]
    summary.update(num_trials=int(labels.size), num_target=int(labels.sum()),
                   num_nontarget=int(labels.size - labels.sum()))
    return summary


def _deviate(rate):
    """Probability -> standard normal deviate; rates of 0 and 1 are clipped just inside the plotted range."""
    from scipy.stats import norm
    return norm.ppf(np.clip(rate, 1e-6, 1 - 1e-6))


def plot_det(curves, path, title="DET curve"):
    """Write a DET plot PNG: miss vs false-alarm rate on normal-deviate axes.

    ``curves``: dict name -> (scores, labels); each gets one line and its EER point. Returns ``path``.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import norm

    ticks = np.array([0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4])
    lo, hi = norm.ppf(5e-4), norm.ppf(0.5)
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    for name, (scores, labels) in curves.items():
        far, frr, _ = det_curve(scores, labels)
        eer, _ = compute_eer(scores, labels)
        ax.plot(_deviate(far), _deviate(frr), label=f"{name} (EER {100 * eer:.2f}%)")
        ax.plot(_deviate(eer), _deviate(eer), "o", color=ax.lines[-1].get_color())
    ax.plot([lo, hi], [lo, hi], ":", color="grey", linewidth=0.8)
    ax.set_xticks(norm.ppf(ticks))
    ax.set_xticklabels([f"{100 * t:g}" for t in ticks])
    ax.set_yticks(norm.ppf(ticks))
    ax.set_yticklabels([f"{100 * t:g}" for t in ticks])
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("False alarm rate (%)")
    ax.set_ylabel("Miss rate (%)")
    ax.set_title(title)
    ax.grid(True, linewidth=0.4)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
