"""DER and JER through pyannote.metrics (src/diarize/scoring.py) on hand-made RTTMs whose errors are known."""
import pytest

from src.diarize.rttm import read_references, write_rttm
from src.diarize.scoring import TOTAL, format_table, score_recordings
from src.diarize.segments import Segment

# Reference: A 0-10 s, B 10-20 s. Hypothesis: S1 0-8 (A), S2 8-18 (2 s confused with A, then B), silence 18-20
# (2 s missed), S2 again 25-26 (1 s false alarm).
REFERENCE = [Segment(0, 10, "A"), Segment(10, 20, "B")]
HYPOTHESIS = [Segment(0, 8, "S1"), Segment(8, 18, "S2"), Segment(25, 26, "S2")]


@pytest.fixture
def files(tmp_path):
    (tmp_path / "ref").mkdir()
    write_rttm(str(tmp_path / "ref" / "talk.rttm"), "talk", REFERENCE)
    write_rttm(str(tmp_path / "talk.rttm"), "talk", HYPOTHESIS)
    return read_references(str(tmp_path / "ref")), read_references(str(tmp_path / "talk.rttm"))


def test_der_parts_without_collar(files):
    references, hypotheses = files
    row = score_recordings(references, hypotheses)["no collar, overlap scored"]["talk"]
    assert row["speech"] == pytest.approx(20.0)
    assert row["missed"] == pytest.approx(2 / 20)
    assert row["false_alarm"] == pytest.approx(1 / 20)
    assert row["confusion"] == pytest.approx(2 / 20)
    assert row["der"] == pytest.approx(5 / 20)
    # JER: A against S1 misses 8-10 (2 of 10 s); B against S2 misses 18-20 and adds 8-10 and 25-26 (5 of 13 s).
    assert row["jer"] == pytest.approx((2 / 10 + 5 / 13) / 2)


def test_collar_removes_a_quarter_second_each_side_of_every_reference_boundary(files):
    references, hypotheses = files
    row = score_recordings(references, hypotheses)["collar 0.25 s, overlap scored"]["talk"]
    # boundaries at 0, 10 and 20 s: 0.25 + 0.5 + 0.25 s leave 19 s scored; 1.75 s missed (18-19.75), 1.75 s
    # confused (8-9.75), 1 s false alarm
    assert row["speech"] == pytest.approx(19.0)
    assert (row["missed"], row["confusion"], row["false_alarm"]) == pytest.approx((1.75 / 19, 1.75 / 19, 1 / 19))
    assert row["der"] == pytest.approx(4.5 / 19)


def test_overlapped_speech_scored_and_skipped():
    references = {"talk": [Segment(0, 10, "A"), Segment(8, 20, "B")]}         # both talk from 8 to 10 s
    hypotheses = {"talk": [Segment(0, 10, "x"), Segment(10, 20, "y")]}       # one speaker at a time
    table = score_recordings(references, hypotheses)
    scored, skipped = table["no collar, overlap scored"]["talk"], table["no collar, overlap skipped"]["talk"]
    assert (scored["speech"], scored["missed"], scored["der"]) == pytest.approx((22.0, 2 / 22, 2 / 22))
    assert (skipped["speech"], skipped["der"]) == pytest.approx((18.0, 0.0))


def test_totals_pool_the_seconds_of_all_recordings_and_uem_limits_the_scored_part():
    references = {"a": REFERENCE, "b": [Segment(0, 30, "C")]}
    hypotheses = {"a": HYPOTHESIS, "b": [Segment(0, 30, "z")]}
    table = score_recordings(references, hypotheses)
    total = table["no collar, overlap scored"][TOTAL]
    assert total["speech"] == pytest.approx(50.0)
    assert total["der"] == pytest.approx(5 / 50)
    limited = score_recordings(references, hypotheses, uem={"a": [(0, 9)], "b": [(0, 30)]})
    row = limited["no collar, overlap scored"]["a"]                           # 0-9 s: 1 s confused (8-9)
    assert (row["speech"], row["der"]) == pytest.approx((9.0, 1 / 9))
    assert "talk" not in format_table(table) and "a " in format_table(table)


def test_a_recording_without_reference_or_uem_is_refused():
    with pytest.raises(ValueError, match="reference: no reference turns for recording.s. b"):
        score_recordings({"a": REFERENCE}, {"a": HYPOTHESIS, "b": HYPOTHESIS})
    with pytest.raises(ValueError, match="uem: no scored regions for recording.s. a"):
        score_recordings({"a": REFERENCE}, {"a": HYPOTHESIS}, uem={"b": [(0, 1)]})


def test_breakdown_pools_recordings_by_speakers_and_overlap():
    from src.diarize.breakdown import breakdown
    references = {"a": REFERENCE,                                                       # 2 speakers, no overlap
                  "b": [Segment(0, 30, "C")],                                           # 1 speaker
                  "c": [Segment(0, 10, "A"), Segment(8, 20, "B")]}                      # 2 speakers, 2/20 overlap
    hypotheses = {"a": HYPOTHESIS, "b": [Segment(0, 30, "z")], "c": [Segment(0, 10, "x"), Segment(10, 20, "y")]}
    rows = score_recordings(references, hypotheses)["no collar, overlap scored"]
    groups = {name: (count, rates) for name, count, rates in breakdown(rows, references)}
    assert groups["1 speakers"][0] == 1 and groups["1 speakers"][1]["der"] == pytest.approx(0.0)
    # a: 5 of 20 s wrong, c: 2 of 22 s missed -> 7 of 42 s
    assert groups["2 speakers"][0] == 2 and groups["2 speakers"][1]["der"] == pytest.approx(7 / 42)
    assert groups["overlap 10-15 %"][0] == 1 and groups["overlap 0-5 %"][0] == 2
    assert groups["all"][1]["der"] == pytest.approx(rows[TOTAL]["der"])
