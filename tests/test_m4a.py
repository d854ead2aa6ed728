"""VoxCeleb2's M4A files: read through ffmpeg (random parts, lists) and converted to WAV by src.data.convert.

The tests that decode need ffmpeg on PATH (apt-get install ffmpeg) and are skipped without it."""
import os
import shutil
import subprocess

import numpy as np
import pytest

from src.data import convert
from src.data.audio import audio_info, read_audio, write_wav
from src.data.lists import build_train_list

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")


def tone(seconds, freq):
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * freq * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


@pytest.fixture(scope="module")
def m4a_tree(tmp_path_factory):
    """<root>/aac/<speaker>/<video>/<utt>.m4a from known WAV signals -> (root, {rel path: signal})."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    root = tmp_path_factory.mktemp("m4a")
    signals = {}
    for k, (rel, seconds, freq) in enumerate([("id00001/vidA/00001", 3.0, 220), ("id00001/vidA/00002", 1.5, 330),
                                              ("id00002/vidB/00001", 2.5, 440)]):
        wav = root / "src" / f"{k}.wav"
        write_wav(wav, tone(seconds, freq))
        out = root / "aac" / f"{rel}.m4a"
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(wav), "-c:a", "aac", "-b:a", "128k",
                        str(out)], check=True)
        signals[f"{rel}.m4a"] = tone(seconds, freq)
    return root, signals


def _aligned_error(decoded, signal):
    """Smallest RMS difference over the small delays an AAC encoder adds (relative to the signal's RMS)."""
    best = np.inf
    for delay in range(0, 2200):
        part = decoded[delay:delay + len(signal) - 2200]
        best = min(best, np.sqrt(np.mean((part - signal[:len(part)]) ** 2)))
        if best < 1e-3:
            break
    return best / np.sqrt(np.mean(signal ** 2))


@needs_ffmpeg
def test_m4a_reads_whole_and_in_parts(m4a_tree):
    root, signals = m4a_tree
    path = str(root / "aac" / "id00001/vidA/00001.m4a")
    full = read_audio(path)
    num, rate, channels = audio_info(path)
    assert (num, rate, channels) == (len(full), 16000, 1) and abs(num - 48000) < 2200
    assert _aligned_error(full, signals["id00001/vidA/00001.m4a"]) < 0.05
    part = read_audio(path, start=16000, num_samples=8000)      # a random crop reads that part, not the start
    np.testing.assert_array_equal(part, full[16000:24000])
    assert len(read_audio(path, start=num + 10, num_samples=8000)) == 0


@needs_ffmpeg
def test_m4a_tree_is_listed(m4a_tree, tmp_path):
    root, signals = m4a_tree
    tl = build_train_list(str(root / "aac"), str(tmp_path / "lists"), progress=False, num_workers=2)
    assert tl.paths == sorted(signals) and tl.speakers == ["id00001", "id00002"]
    assert all(abs(n - len(signals[p])) < 2200 for p, n in zip(tl.paths, tl.num_samples))


@needs_ffmpeg
def test_convert_tree_to_wav(m4a_tree, tmp_path, capsys):
    root, signals = m4a_tree
    dst = tmp_path / "wav"
    assert convert.main(["--src", str(root / "aac"), "--dst", str(dst), "--num_workers", "2"]) == 0
    assert "3 of 3 files are WAV" in capsys.readouterr().out
    for rel, signal in signals.items():
        wav = read_audio(str(dst / rel.replace(".m4a", ".wav")))
        assert _aligned_error(wav, signal) < 0.05
    assert not [n for _, _, names in os.walk(dst) for n in names if n.endswith(".partial")]
    # Re-running skips what is there; a broken source is reported and fails the run.
    stamp = os.path.getmtime(dst / "id00001/vidA/00001.wav")
    bad = root / "aac" / "id00003" / "vidC" / "00001.m4a"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"\x00\x00\x00\x18ftypM4A broken")
    try:
        assert convert.main(["--src", str(root / "aac"), "--dst", str(dst), "--num_workers", "1"]) == 1
    finally:
        shutil.rmtree(root / "aac" / "id00003")
    out = capsys.readouterr()
    assert "id00003/vidC/00001.m4a: ffmpeg failed" in out.err and "3 of 4 files are WAV" in out.out
    assert os.path.getmtime(dst / "id00001/vidA/00001.wav") == stamp
    assert not (dst / "id00003" / "vidC" / "00001.wav").exists()


def test_convert_without_ffmpeg_says_so(tmp_path, monkeypatch):
    (tmp_path / "id00001" / "vidA").mkdir(parents=True)
    (tmp_path / "id00001" / "vidA" / "00001.m4a").write_bytes(b"")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="ffmpeg is not installed"):
        convert.main(["--src", str(tmp_path), "--dst", str(tmp_path / "wav")])
