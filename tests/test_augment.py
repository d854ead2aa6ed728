"""src/data/augment.py: achieved SNRs, aligned reverberation, determinism, folder errors, SpecAugment."""
import os

import mindspore as ms
import numpy as np
import pytest
from scipy.signal import correlate, resample_poly

from src.data.audio import read_audio, write_wav
from src.data.augment import SpecAugment, WaveAugment, add_at_snr, reverberate, speed_perturb
from src.data.synthetic import make_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(str(tmp_path_factory.mktemp("aug")), 2, 0, 2, (2.0, 2.0), seed=5, progress=False)


@pytest.fixture(scope="module")
def speech(corpus):
    folder = os.path.join(corpus["train_dir"], "id00001")
    video = sorted(os.listdir(folder))[0]
    return read_audio(os.path.join(folder, video, os.listdir(os.path.join(folder, video))[0]))


def _snr_db(clean, noisy):
    return 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean((noisy - clean).astype(np.float64) ** 2))


def _only(corpus, **probs):
    """A WaveAugment that always applies exactly the given kinds."""
    kw = dict(aug_prob=1.0, reverb_prob=0.0, noise_prob=0.0, music_prob=0.0, babble_prob=0.0)
    kw.update(probs)
    return WaveAugment(corpus["musan_dir"], corpus["rir_dir"], **kw)


def test_add_at_snr_is_exact():
    rng = np.random.default_rng(0)
    clean = rng.standard_normal(16000).astype(np.float32) * 0.1
    noise = rng.standard_normal(4000).astype(np.float32)
    noise = np.tile(noise, 4)
    for snr in (0.0, 7.5, 20.0):
        assert abs(_snr_db(clean, add_at_snr(clean, noise, snr)) - snr) < 0.01
    np.testing.assert_array_equal(add_at_snr(clean, np.zeros(16000), 5.0), clean)


@pytest.mark.parametrize("kind, snr_key", [("noise", "noise_snr"), ("music", "music_snr"), ("babble", "babble_snr")])
def test_musan_snr_achieved_within_half_a_db(corpus, speech, kind, snr_key):
    augment = WaveAugment(corpus["musan_dir"], corpus["rir_dir"], aug_prob=1.0, reverb_prob=0.0,
                          **{f"{k}_prob": float(k == kind) for k in ("noise", "music", "babble")},
                          **{snr_key: (9.0, 9.0)})
    for seed in range(3):
        noisy = augment(speech, np.random.default_rng(seed))
        assert noisy.shape == speech.shape and noisy.dtype == np.float32
        assert abs(_snr_db(speech, noisy) - 9.0) < 0.5


def test_babble_sums_several_speech_files(corpus, speech):
    one = _only(corpus, babble_prob=1.0)
    one.babble_count = (1, 1)
    many = _only(corpus, babble_prob=1.0)
    many.babble_count = (6, 6)
    # A sum of several voices is less peaky (closer to Gaussian) than one voice at the same level.
    kurt = [np.mean(x ** 4) / np.mean(x ** 2) ** 2 for x in
            ((a(speech, np.random.default_rng(1)) - speech) for a in (one, many))]
    assert kurt[1] < kurt[0]


def test_reverberation_stays_aligned(corpus, speech):
    augment = _only(corpus, reverb_prob=1.0)
    for seed in range(8):
        wet = augment(speech, np.random.default_rng(seed))
        assert wet.shape == speech.shape
        assert np.max(np.abs(wet - speech)) > 0.01               # it really is reverberant
        xcorr = correlate(wet, speech, mode="full", method="fft")
        lags = np.arange(-len(speech) + 1, len(wet))
        window = np.abs(lags) <= 1600
        assert lags[window][np.argmax(xcorr[window])] == 0


def test_reverberate_with_delayed_impulse_is_identity_and_energy_normalised(speech):
    rir = np.zeros(800)
    rir[123] = 0.25
    np.testing.assert_allclose(reverberate(speech, rir), speech, atol=1e-6)
    rir[400] = 0.1
    np.testing.assert_allclose(reverberate(speech, rir * 10), reverberate(speech, rir), atol=1e-6)


def test_same_generator_same_output(corpus, speech):
    augment = WaveAugment(corpus["musan_dir"], corpus["rir_dir"], aug_prob=1.0, reverb_prob=0.5)
    outs = [augment(speech, np.random.default_rng([1234, 3, k])) for k in range(6)]
    again = [augment(speech, np.random.default_rng([1234, 3, k])) for k in range(6)]
    for a, b in zip(outs, again):
        np.testing.assert_array_equal(a, b)
    assert len({a.tobytes() for a in outs}) == 6


def test_probabilities_zero_leaves_speech_alone(corpus, speech):
    augment = WaveAugment(None, None, aug_prob=0.0)
    assert augment(speech, np.random.default_rng(0)) is speech
    with pytest.raises(ValueError, match="must be within"):
        WaveAugment(corpus["musan_dir"], corpus["rir_dir"], noise_prob=0.6, music_prob=0.6)


def test_missing_or_empty_folders_fail_up_front(corpus, tmp_path):
    with pytest.raises(FileNotFoundError, match="MUSAN folder not found: '/no/such/musan'"):
        WaveAugment("/no/such/musan", corpus["rir_dir"])
    os.makedirs(tmp_path / "musan" / "noise")
    for category in ("music", "speech"):
        write_wav(tmp_path / "musan" / category / "a.wav", np.ones(1600) * 0.1)
    with pytest.raises(FileNotFoundError, match=f"MUSAN noise folder {tmp_path}/musan/noise holds no audio"):
        WaveAugment(str(tmp_path / "musan"), corpus["rir_dir"])
    os.makedirs(tmp_path / "rirs")
    with pytest.raises(FileNotFoundError, match=f"RIR folder {tmp_path}/rirs holds no audio"):
        WaveAugment(corpus["musan_dir"], str(tmp_path / "rirs"))


def test_speed_perturb_changes_length_and_pitch():
    t = np.arange(16000) / 16000
    tone = np.sin(2 * np.pi * 1000 * t).astype(np.float32)
    for factor, (up, down) in ((0.9, (10, 9)), (1.1, (10, 11)), (0.9, (10, 9))):   # cached filter reused
        out = speed_perturb(tone, factor)
        np.testing.assert_allclose(out, resample_poly(tone, up, down), atol=1e-5)
        assert abs(len(out) - 16000 / factor) <= 1
        spectrum = np.abs(np.fft.rfft(out[:14000] * np.hanning(14000)))
        assert abs(np.argmax(spectrum) * 16000 / 14000 - 1000 * factor) < 3


def test_specaugment_masks_bands_in_graph_mode():
    ms.set_seed(0)
    feats = ms.Tensor(np.random.default_rng(0).standard_normal((8, 200, 80)).astype(np.float32) + 5.0)
    out = SpecAugment(max_time=20, max_freq=10)(feats).asnumpy()
    assert out.shape == (8, 200, 80)
    x = feats.asnumpy()
    masked = out == 0
    assert np.all(out[~masked] == x[~masked])
    masked_frames, masked_bins = masked.all(axis=2), masked.all(axis=1)
    assert np.all(masked == (masked_frames[:, :, None] | masked_bins[:, None, :]))
    assert masked_frames.sum(axis=1).max() <= 20 and masked_bins.sum(axis=1).max() <= 10
    assert masked_frames.sum() > 0 and masked_bins.sum() > 0
    for row in masked_frames:                              # one contiguous band per utterance
        idx = np.flatnonzero(row)
        assert len(idx) == 0 or idx[-1] - idx[0] + 1 == len(idx)
    np.testing.assert_array_equal(SpecAugment(max_time=0, max_freq=0)(feats).asnumpy(), x)


def test_unreadable_noise_file_is_logged_and_left_out(corpus, speech, tmp_path, caplog):
    musan = tmp_path / "musan"
    write_wav(musan / "noise" / "n.wav", np.ones(16000) * 0.1)
    augment = WaveAugment(str(musan), None, aug_prob=1.0, reverb_prob=0.0, noise_prob=1.0, music_prob=0.0,
                          babble_prob=0.0)
    with open(musan / "noise" / "n.wav", "wb") as f:             # damaged after the start-up check
        f.write(b"RIFF....WAVEbroken")
    out = augment(speech, np.random.default_rng(0))
    np.testing.assert_array_equal(out, speech)
    assert "MUSAN noise left out" in caplog.text and "n.wav" in caplog.text
