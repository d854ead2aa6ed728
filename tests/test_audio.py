"""src/data/audio.py: reading real files of every supported kind, and clear errors for bad ones."""
import os
import pickle

import numpy as np
import pytest
import soundfile as sf

from src.data.audio import AudioError, audio_info, read_audio, write_wav


def _tone(freq, seconds, rate, amp=0.5):
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(wav, rate):
    spectrum = np.abs(np.fft.rfft(wav * np.hanning(len(wav))))
    return np.argmax(spectrum) * rate / len(wav)


def test_wav_roundtrip_pcm16_and_float(tmp_path):
    wav = np.random.default_rng(0).uniform(-0.9, 0.9, 16000).astype(np.float32)
    write_wav(tmp_path / "a" / "pcm.wav", wav)                       # parent folder is created
    write_wav(tmp_path / "float.wav", wav, subtype="FLOAT")
    pcm = read_audio(str(tmp_path / "a" / "pcm.wav"))
    assert pcm.dtype == np.float32 and pcm.shape == (16000,)
    assert np.max(np.abs(pcm - wav)) <= 1.0 / 32768 + 1e-7
    np.testing.assert_array_equal(read_audio(str(tmp_path / "float.wav")), wav)
    assert audio_info(str(tmp_path / "float.wav")) == (16000, 16000, 1)


def test_stereo_flac_is_mixed_down(tmp_path):
    left, right = _tone(300, 0.5, 16000), _tone(700, 0.5, 16000, 0.3)
    path = str(tmp_path / "stereo.flac")
    sf.write(path, np.stack([left, right], axis=1), 16000, subtype="PCM_24")
    wav = read_audio(path)
    assert wav.shape == left.shape
    np.testing.assert_allclose(wav, (left + right) / 2, atol=1e-6)


def test_partial_read_equals_slice(tmp_path):
    wav = np.random.default_rng(1).uniform(-0.5, 0.5, 20000).astype(np.float32)
    path = str(tmp_path / "x.wav")
    write_wav(path, wav, subtype="FLOAT")
    np.testing.assert_array_equal(read_audio(path, start=1234, num_samples=5000), wav[1234:6234])
    np.testing.assert_array_equal(read_audio(path, start=19000), wav[19000:])


def test_wrong_rate_is_an_error_unless_resampling(tmp_path):
    path = str(tmp_path / "tone44k.wav")
    write_wav(path, _tone(1000, 1.0, 44100), 44100)
    with pytest.raises(AudioError, match=r"tone44k\.wav: sample rate is 44100 Hz, expected 16000 Hz") as info:
        read_audio(path)
    assert info.value.kind == "sample_rate"
    wav = read_audio(path, 16000, resample=True)
    assert abs(len(wav) - 16000) <= 1
    assert abs(_peak_hz(wav, 16000) - 1000) < 3            # the tone keeps its pitch
    part = read_audio(path, 16000, resample=True, start=8000, num_samples=4000)
    np.testing.assert_array_equal(part, wav[8000:12000])


def test_bad_files_raise_audio_error_naming_the_file(tmp_path):
    missing = str(tmp_path / "missing.wav")
    corrupt = str(tmp_path / "corrupt.wav")
    with open(corrupt, "wb") as f:
        f.write(b"RIFF\x00\x00\x00\x00WAVEjunk" + os.urandom(200))
    empty = str(tmp_path / "empty.wav")
    sf.write(empty, np.zeros(0, np.float32), 16000)
    not_audio = str(tmp_path / "text.flac")
    with open(not_audio, "w") as f:
        f.write("this is not audio")
    for path, kind in ((missing, "missing"), (corrupt, "unreadable"), (empty, "empty"), (not_audio, "unreadable")):
        with pytest.raises(AudioError) as info:
            read_audio(path)
        assert str(info.value).startswith(path) and info.value.kind == kind
        assert isinstance(info.value, ValueError)
    with pytest.raises(AudioError, match="not found"):
        audio_info(missing)


def test_m4a_without_ffmpeg_says_how_to_convert(tmp_path, monkeypatch):
    path = str(tmp_path / "clip.m4a")
    with open(path, "wb") as f:
        f.write(b"\x00\x00\x00\x18ftypM4A ")
    monkeypatch.setenv("PATH", str(tmp_path))             # no ffmpeg on PATH
    with pytest.raises(AudioError, match=r"clip\.m4a: \.m4a files need ffmpeg.*ffmpeg -i") as info:
        read_audio(path)
    assert info.value.kind == "needs_ffmpeg"


def test_audio_error_survives_pickling():
    err = pickle.loads(pickle.dumps(AudioError("x.wav: empty", "empty")))
    assert isinstance(err, AudioError) and err.kind == "empty" and str(err) == "x.wav: empty"


def test_write_wav_rejects_multichannel(tmp_path):
    with pytest.raises(ValueError, match="mono"):
        write_wav(tmp_path / "s.wav", np.zeros((10, 2)))
