"""Speaker-identification metrics (NumPy only, no MindSpore), as NIST's 1:N evaluations and ISO/IEC 19795-1 define them.

A *search* is one test utterance compared with every enrolled speaker; it returns candidates ranked by score. A
search is *mated* when its true speaker is enrolled, *non-mated* when the speaker was never enrolled ("unknown" in
the identification list).

- Closed-set rank-k identification rate (top-k accuracy), over mated searches only: the fraction whose true speaker
  is among the first k candidates.
- Open-set, at a threshold T on the score of the candidates (rank 1 here: the command returns one decision):
  - FNIR(T), the false-negative identification rate: the fraction of mated searches whose first candidate is not
    the true speaker, or is but scores below T (the mate is not returned).
  - FPIR(T), the false-positive identification rate: the fraction of non-mated searches whose first candidate
    scores at least T (someone is returned although nobody should be).
- FNIR at a stated FPIR ``f``: T is the lowest threshold at which FPIR(T) <= f (set on the non-mated searches'
  best scores), and FNIR is read at that T. With few non-mated searches FPIR moves in steps of 1 / (their number);
  the FPIR reached is reported beside the stated one.

Identification list (``read_identification_list``): one search per line, ``<test utterance> <true speaker>``, the
speaker being the name it is enrolled under or ``unknown``; blank lines and lines starting with ``#`` are skipped::

    id10001/v0/00001.wav alice
    id10009/v2/00004.wav unknown

Example (two mated searches, one non-mated)::

    >>> ranked = [["alice", "bob"], ["alice", "bob"], ["bob", "alice"]]
    >>> scores = [[0.9, 0.2], [0.7, 0.6], [0.4, 0.1]]
    >>> m = identification_metrics(ranked, scores, ["alice", "bob", "unknown"], fpir=0.0, ranks=(1, 2))
    >>> m["top1_accuracy"], m["top2_accuracy"], m["fnir"], m["threshold"]
    (0.5, 1.0, 0.5, 0.4000000000000001)
"""
import numpy as np

UNKNOWN = "unknown"          # the true speaker of a non-mated search in an identification list


def read_identification_list(path):
    """An identification list (module docstring) -> list of (utterance, speaker); errors name the file and line."""
    searches = []
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as err:
        raise ValueError(f"{path}: cannot read the identification list ({err.strerror})") from None
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) != 2:
            raise ValueError(f"{path}, line {number}: expected '<test utterance> <true speaker or {UNKNOWN}>', "
                             f"got {line.strip()!r}")
        searches.append((fields[0], fields[1]))
    if not searches:
        raise ValueError(f"{path}: the identification list holds no searches")
    return searches


def mate_ranks(ranked, truths):
    """Rank (1-based) of the true speaker among each search's candidates -> (N,) int, 0 where it is not among them
    (non-mated searches, or a mate ranked below the candidates kept)."""
    return np.array([names.index(truth) + 1 if truth in names else 0 for names, truth in zip(ranked, truths)],
                    dtype=np.int64)


def open_set_rates(ranked, scores, truths, threshold):
    """(FNIR, FPIR) at ``threshold`` on the first candidate's score (module docstring); a rate is NaN when there
    is no search of its kind."""
    best = np.array([s[0] for s in scores], dtype=np.float64)
    mated = np.array([t != UNKNOWN for t in truths])
    hit = (mate_ranks(ranked, truths) == 1) & (best >= threshold)
    fnir = float(np.mean(~hit[mated])) if mated.any() else float("nan")
    fpir = float(np.mean(best[~mated] >= threshold)) if (~mated).any() else float("nan")
    return fnir, fpir


def threshold_at_fpir(nonmated_best, fpir):
    """The lowest threshold whose FPIR on these non-mated best scores is at most ``fpir`` -> float.

    With ``m = floor(fpir * n)`` false positives allowed among ``n`` searches, it is the smallest float above the
    (m + 1)-th highest score (every score above ``max`` when m = 0), so ties never exceed the allowance.
    """
    if not 0.0 <= fpir < 1.0:
        raise ValueError(f"fpir: expected a rate in [0, 1), got {fpir}")
    best = np.sort(np.asarray(nonmated_best, dtype=np.float64))[::-1]
    allowed = int(np.floor(fpir * best.size + 1e-9))
    return float(np.nextafter(best[allowed], np.inf))


def identification_metrics(ranked, scores, truths, fpir=0.01, ranks=(1, 5)):
    """Closed-set and open-set metrics of scored searches -> JSON-ready dict.

    Args:
        ranked: per search, the candidate names best first (list of lists, at least max(ranks) long when that many
            speakers are enrolled).
        scores: per search, the candidates' scores in the same order (higher: more alike).
        truths: per search, the true speaker or ``UNKNOWN``.
        fpir: the stated false-positive identification rate the open-set threshold is set at.
        ranks: the k of the top-k accuracies reported.

    Keys: ``num_searches``, ``num_mated``, ``num_nonmated``, ``top{k}_accuracy`` (over mated searches; absent
    without any), and with both kinds of search ``fpir_stated``, ``threshold``, ``fnir``, ``fpir`` (reached).
    """
    if not (len(ranked) == len(scores) == len(truths)) or not truths:
        raise ValueError(f"identification metrics: expected as many candidate lists, score lists and true speakers, "
                         f"at least one, got {len(ranked)}, {len(scores)}, {len(truths)}")
    mated = np.array([t != UNKNOWN for t in truths])
    result = {"num_searches": len(truths), "num_mated": int(mated.sum()), "num_nonmated": int((~mated).sum())}
    found = mate_ranks(ranked, truths)[mated]
    if mated.any():
        for k in ranks:
            result[f"top{k}_accuracy"] = float(np.mean((found >= 1) & (found <= k)))
    if mated.any() and (~mated).any():
        threshold = threshold_at_fpir([s[0] for s, m in zip(scores, mated) if not m], fpir)
        fnir, reached = open_set_rates(ranked, scores, truths, threshold)
        result.update(fpir_stated=float(fpir), threshold=threshold, fnir=fnir, fpir=reached)
    return result
