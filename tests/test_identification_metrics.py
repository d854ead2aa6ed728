"""Identification metrics (src/speakers/metrics.py) against a hand computation, and the identification list."""
import doctest

import numpy as np
import pytest

from src.speakers import metrics
from src.speakers.metrics import (identification_metrics, open_set_rates, read_identification_list,
                                  threshold_at_fpir)

# Eight searches against speakers a..f. Mated: 1-5 (true speaker at rank 1, 1, 3, 6, 1); non-mated: 6-8.
RANKED = [["a", "b", "c", "d", "e", "f"],
          ["b", "a", "c", "d", "e", "f"],
          ["a", "c", "b", "d", "e", "f"],
          ["a", "b", "c", "d", "e", "f"],
          ["e", "a", "b", "c", "d", "f"],
          ["a", "b", "c", "d", "e", "f"],
          ["b", "a", "c", "d", "e", "f"],
          ["c", "a", "b", "d", "e", "f"]]
SCORES = [[0.80, 0.3, 0.2, 0.1, 0.0, -0.1],
          [0.55, 0.3, 0.2, 0.1, 0.0, -0.1],
          [0.70, 0.6, 0.2, 0.1, 0.0, -0.1],
          [0.65, 0.3, 0.2, 0.1, 0.0, -0.1],
          [0.40, 0.3, 0.2, 0.1, 0.0, -0.1],
          [0.60, 0.3, 0.2, 0.1, 0.0, -0.1],
          [0.50, 0.3, 0.2, 0.1, 0.0, -0.1],
          [0.35, 0.3, 0.2, 0.1, 0.0, -0.1]]
TRUTHS = ["a", "b", "b", "f", "e", "unknown", "unknown", "unknown"]


def test_closed_and_open_set_metrics_match_a_hand_computation():
    m = identification_metrics(RANKED, SCORES, TRUTHS, fpir=0.34, ranks=(1, 2, 3, 5))
    assert (m["num_searches"], m["num_mated"], m["num_nonmated"]) == (8, 5, 3)
    # Mates at ranks 1, 1, 3, 6, 1: top-1 3/5, top-2 3/5, top-3 4/5, top-5 4/5 (rank 6 is outside).
    assert m["top1_accuracy"] == pytest.approx(3 / 5)
    assert m["top2_accuracy"] == pytest.approx(3 / 5)
    assert m["top3_accuracy"] == pytest.approx(4 / 5)
    assert m["top5_accuracy"] == pytest.approx(4 / 5)
    # Non-mated best scores 0.60, 0.50, 0.35: FPIR <= 0.34 allows floor(0.34 * 3) = 1 false positive, so the
    # threshold is just above the second highest (0.50): only 0.60 reaches it, FPIR 1/3.
    assert m["threshold"] == np.nextafter(0.50, 1.0)
    assert m["fpir"] == pytest.approx(1 / 3)
    # Mated rank-1 hits with score >= 0.50...: search 1 (0.80) and 2 (0.55); search 5 (0.40) is too low; searches
    # 3 and 4 are not rank-1 hits. FNIR = 3/5.
    assert m["fnir"] == pytest.approx(3 / 5)
    # At FPIR 0 the threshold passes every non-mated score: only search 1 (0.80) remains a hit.
    m0 = identification_metrics(RANKED, SCORES, TRUTHS, fpir=0.0)
    assert m0["threshold"] == np.nextafter(0.60, 1.0) and m0["fpir"] == 0.0 and m0["fnir"] == pytest.approx(4 / 5)
    # Fixed thresholds, counted by hand.
    assert open_set_rates(RANKED, SCORES, TRUTHS, 0.45) == pytest.approx((3 / 5, 2 / 3))
    assert open_set_rates(RANKED, SCORES, TRUTHS, -1.0) == pytest.approx((2 / 5, 1.0))


def test_threshold_at_fpir_never_lets_ties_exceed_the_allowance():
    best = [0.9, 0.7, 0.7, 0.7, 0.1]
    t = threshold_at_fpir(best, 0.2)                  # one false positive allowed of 5: above the tied 0.7s
    assert np.mean(np.array(best) >= t) == pytest.approx(0.2)
    assert np.mean(np.array(best) >= threshold_at_fpir(best, 0.79)) == pytest.approx(0.2)   # 3 allowed, ties stop at 1
    assert np.mean(np.array(best) >= threshold_at_fpir(best, 0.8)) == pytest.approx(0.8)
    with pytest.raises(ValueError, match="fpir: expected a rate in"):
        threshold_at_fpir(best, 1.0)


def test_only_one_kind_of_search_reports_what_it_can():
    closed = identification_metrics(RANKED[:5], SCORES[:5], TRUTHS[:5])
    assert "fnir" not in closed and closed["top1_accuracy"] == pytest.approx(3 / 5)
    nonmated = identification_metrics(RANKED[5:], SCORES[5:], TRUTHS[5:])
    assert "top1_accuracy" not in nonmated and nonmated["num_nonmated"] == 3
    with pytest.raises(ValueError, match="expected as many candidate lists"):
        identification_metrics(RANKED, SCORES[:2], TRUTHS)


def test_identification_list_is_read_and_bad_lines_are_named(tmp_path):
    path = tmp_path / "ident.txt"
    path.write_text("# test utterance, true speaker\nid1/v/1.wav alice\n\nid9/v/2.wav unknown\n")
    assert read_identification_list(str(path)) == [("id1/v/1.wav", "alice"), ("id9/v/2.wav", "unknown")]
    path.write_text("id1/v/1.wav alice\nid1/v/2.wav\n")
    with pytest.raises(ValueError, match=r"ident.txt, line 2: expected '<test utterance> <true speaker"):
        read_identification_list(str(path))
    path.write_text("# nothing\n")
    with pytest.raises(ValueError, match="ident.txt: the identification list holds no searches"):
        read_identification_list(str(path))
    with pytest.raises(ValueError, match="missing.txt: cannot read the identification list"):
        read_identification_list(str(tmp_path / "missing.txt"))


def test_docstring_example_runs():
    assert doctest.testmod(metrics).failed == 0
