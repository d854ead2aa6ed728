"""Trial lists in VoxCeleb and Kaldi format; malformed lines named by file and line."""
import pytest

from src.data.trials import TrialFileError, read_trials, trial_utterances, write_trials

VOX = """1 id10270/x6uYqmx31kE/00001.wav id10270/8jEAjG6SegY/00008.wav
0 id10270/x6uYqmx31kE/00001.wav id10300/ize_eiCFEg0/00003.wav

1 id10309/0cYFdtyWVds/00005.wav id10309/Zx-zA-D_DvI/00001.wav
"""


def test_voxceleb_and_kaldi_formats_read_the_same(tmp_path):
    vox = tmp_path / "veri_test2.txt"
    vox.write_text(VOX)
    trials = read_trials(str(vox))
    assert trials == [(1, "id10270/x6uYqmx31kE/00001.wav", "id10270/8jEAjG6SegY/00008.wav"),
                      (0, "id10270/x6uYqmx31kE/00001.wav", "id10300/ize_eiCFEg0/00003.wav"),
                      (1, "id10309/0cYFdtyWVds/00005.wav", "id10309/Zx-zA-D_DvI/00001.wav")]
    kaldi = write_trials(trials, str(tmp_path / "trials.kaldi"), "kaldi")
    assert open(kaldi).readline() == "id10270/x6uYqmx31kE/00001.wav id10270/8jEAjG6SegY/00008.wav target\n"
    assert read_trials(kaldi) == trials
    assert read_trials(write_trials(trials, str(tmp_path / "again.txt"))) == trials
    assert len(trial_utterances(trials)) == 5


@pytest.mark.parametrize("bad_line", ["2 a.wav b.wav", "1 a.wav", "a.wav b.wav maybe", "1 a.wav b.wav extra"])
def test_malformed_line_names_file_and_line(tmp_path, bad_line):
    path = tmp_path / "trials.txt"
    path.write_text("1 a.wav b.wav\n\n" + bad_line + "\n")
    with pytest.raises(TrialFileError, match=f"trials.txt:3: expected .*{bad_line.split()[0]}"):
        read_trials(str(path))


def test_mixed_empty_and_missing_files(tmp_path):
    mixed = tmp_path / "mixed.txt"
    mixed.write_text("1 a.wav b.wav\na.wav c.wav nontarget\n")
    with pytest.raises(TrialFileError, match="mixed.txt:2: a kaldi-format line in a voxceleb-format"):
        read_trials(str(mixed))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n# nothing\n")
    with pytest.raises(TrialFileError, match="empty.txt: no trials"):
        read_trials(str(empty))
    with pytest.raises(TrialFileError, match="nope.txt: trial list not found"):
        read_trials(str(tmp_path / "nope.txt"))
