"""Window labels to segments (src/diarize/segments.py) and RTTM/UEM files (src/diarize/rttm.py)."""
import numpy as np
import pytest

from src.diarize.rttm import read_references, read_rttm, read_uem, write_rttm
from src.diarize.segments import Segment, overlap_fraction, owned_spans, window_segments


def test_overlapping_windows_are_split_at_midpoints():
    windows = np.array([[0.0, 1.5], [0.75, 2.25], [1.5, 3.0], [5.0, 6.5]])
    np.testing.assert_allclose(owned_spans(windows), [[0.0, 1.125], [1.125, 1.875], [1.875, 3.0], [5.0, 6.5]])
    assert window_segments(windows, [0, 0, 1, 1]) == [Segment(0.0, 1.875, "0"), Segment(1.875, 3.0, "1"),
                                                      Segment(5.0, 6.5, "1")]


def test_short_gaps_of_one_speaker_are_merged_and_long_ones_kept():
    windows = np.array([[0.0, 1.5], [1.8, 3.3], [5.0, 6.5], [6.7, 8.2]])
    assert window_segments(windows, [2, 2, 2, 7], merge_gap=0.5, names={2: "A", 7: "B"}) == [
        Segment(0.0, 3.3, "A"), Segment(5.0, 6.5, "A"), Segment(6.7, 8.2, "B")]
    assert window_segments(windows, [2, 2, 2, 7], merge_gap=2.0)[0] == Segment(0.0, 6.5, "2")
    # windows given out of order are sorted first; no windows, no segments
    assert window_segments(windows[::-1], [7, 2, 2, 2], merge_gap=0.5)[-1] == Segment(6.7, 8.2, "7")
    assert window_segments(np.zeros((0, 2)), []) == []


def test_overlap_fraction_of_speech():
    segments = [Segment(0, 4, "A"), Segment(3, 6, "B"), Segment(8, 10, "A")]
    assert overlap_fraction(segments) == pytest.approx(1 / 8)
    assert overlap_fraction([]) == 0.0


def test_rttm_round_trip(tmp_path):
    segments = [Segment(0.0, 2.5, "spk_A"), Segment(2.25, 4.0, "spk_B"), Segment(10.125, 12.0, "spk_A")]
    path = write_rttm(str(tmp_path / "meeting.rttm"), "meeting", segments[::-1])
    lines = open(path).read().splitlines()
    assert lines[0] == "SPEAKER meeting 1 0.000 2.500 <NA> <NA> spk_A <NA> <NA>"
    assert read_rttm(path) == {"meeting": segments}
    other = write_rttm(str(tmp_path / "call.rttm"), "call", [Segment(1.0, 2.0, "x")])
    assert read_references(str(tmp_path)) == {"meeting": segments, "call": [Segment(1.0, 2.0, "x")]}
    assert read_references(other) == {"call": [Segment(1.0, 2.0, "x")]}


def test_rttm_reader_skips_comments_and_other_line_types(tmp_path):
    path = tmp_path / "ref.rttm"
    path.write_text(";; a comment\nSPKR-INFO rec 1 <NA> <NA> <NA> unknown A <NA>\n\n"
                    "SPEAKER rec 1 1.5 2.0 <NA> <NA> A <NA> <NA>\n")
    assert read_rttm(str(path)) == {"rec": [Segment(1.5, 3.5, "A")]}


@pytest.mark.parametrize("line,message", [
    ("SPEAKER rec 1 1.5 <NA> <NA> <NA> A <NA> <NA>", "ref.rttm:2: start and duration must be numbers"),
    ("SPEAKER rec 1 1.5", "ref.rttm:2: an RTTM SPEAKER line has 10 fields"),
    ("rec 1 1.5 2.0 A", "ref.rttm:2: not an RTTM line"),
    ("SPEAKER rec 1 1.5 -2.0 <NA> <NA> A <NA> <NA>", "ref.rttm:2: negative start or duration"),
])
def test_malformed_rttm_names_the_file_and_line(tmp_path, line, message):
    path = tmp_path / "ref.rttm"
    path.write_text("SPEAKER rec 1 0.0 1.0 <NA> <NA> A <NA> <NA>\n" + line + "\n")
    with pytest.raises(ValueError, match=message):
        read_rttm(str(path))


def test_uem_reading_and_errors(tmp_path):
    path = tmp_path / "all.uem"
    path.write_text("rec 1 0.00 30.00\nrec 1 40 60\nother 1 0 5\n")
    assert read_uem(str(path)) == {"rec": [(0.0, 30.0), (40.0, 60.0)], "other": [(0.0, 5.0)]}
    path.write_text("rec 1 0.00\n")
    with pytest.raises(ValueError, match="all.uem:1: expected '<recording> <channel> <start> <end>'"):
        read_uem(str(path))
    with pytest.raises(FileNotFoundError, match="reference RTTM not found"):
        read_references(str(tmp_path / "missing.rttm"))
    with pytest.raises(ValueError, match="holds no .rttm files"):
        read_references(str(tmp_path))
