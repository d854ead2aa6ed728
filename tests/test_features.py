"""src/model/fbank.py: Fbank against SpeechBrain's Fbank, length masking, shapes, GRAPH mode and ONNX export.

Tolerance against SpeechBrain, FBANK_TOL_DB = 0.02 dB (max abs difference of the log-mel values):
both sides compute in float32, we with a DFT written as a matmul, torch with an FFT. A float32 sum of the 400
windowed samples of a frame with peak |x| = A has an absolute error of at most about 400 * 6e-8 * A = 2.4e-5 A per
bin, i.e. about 2.2e-7 of the frame's strongest bin amplitude (0.54 * 200 * A for a tone). A mel band P dB below
its frame's peak has amplitude ratio 10**(-P/20), so its power is off by up to 2 * 2.2e-7 * 10**(P/20) relative,
which is 10 / ln(10) times that in dB: 2e-5 dB at P = 20, 2e-3 dB at 60 and 0.019 dB at 80 dB, the deepest level
that survives the top_db=80 floor. Typical errors are far smaller (random rounding), so we also bound the mean abs
difference by FBANK_MEAN_TOL_DB = 1e-3 dB. Measured: max 9.5e-3 dB and mean 2.5e-4 dB on "tone + weak noise"
(60 dB range), at most 1e-3 dB max on the other signals. A wrong window (symmetric instead of periodic Hamming)
already moves the features by 4.3 dB max / 0.02 dB mean, a wrong filter shape or log base by far more.
"""
import numpy as np
import pytest
import mindspore as ms
from mindspore import nn, ops

from src.model.fbank import Fbank, num_frames, mel_filterbank
from tests.speechbrain_ref import speechbrain_module
from tests.modes import op_by_op

FBANK_TOL_DB = 0.02
FBANK_MEAN_TOL_DB = 1e-3
SAMPLE_RATE = 16000


def speechbrain_fbank(wav, mean_norm=True):
    """SpeechBrain's Fbank(n_mels=80) (+ sentence mean subtraction) on float32 (B, S) -> (B, T, 80) numpy."""
    import torch
    fbank = speechbrain_module("speechbrain.lobes.features").Fbank(n_mels=80)
    with torch.no_grad():
        feats = fbank(torch.from_numpy(wav)).numpy()
    if mean_norm:
        feats = feats - feats.mean(axis=1, keepdims=True)
    return feats


def reference_signals(seed=0):
    """Named float32 (1, S) test signals: loud, quiet, tonal, speech-like, partly silent; lengths with S % 160 of
    0, < 80 and > 80 (the three cases of the framing code)."""
    rng = np.random.default_rng(seed)
    t = np.arange(24050) / SAMPLE_RATE
    signals = {
        "white noise": 0.1 * rng.standard_normal(16000),
        "quiet noise (1e-4)": 1e-4 * rng.standard_normal(8123),
        "tone + weak noise": 0.5 * np.sin(2 * np.pi * 440 * t) + 1e-3 * rng.standard_normal(t.size),
        "random walk (low-pass)": 1e-3 * np.cumsum(rng.standard_normal(12345)),
        "silence then noise": np.concatenate([np.zeros(8000), 0.3 * rng.standard_normal(8000)]),
        "chirp": 0.9 * np.sin(2 * np.pi * (100 * t[:9000] + 2000 * t[:9000] ** 2)),
    }
    return {name: sig.astype(np.float32)[None] for name, sig in signals.items()}


@pytest.fixture(scope="module")
def fbank():
    return Fbank()


def test_num_frames():
    assert [num_frames(s) for s in (0, 159, 160, 16000, 16159, 32000)] == [1, 1, 2, 101, 101, 201]


def test_mel_filterbank_equals_speechbrain():
    import torch
    filterbank = speechbrain_module("speechbrain.processing.features").Filterbank(n_mels=80, log_mel=False)
    ref = filterbank(torch.eye(201)[None])[0].numpy()       # the (201, 80) matrix, applied to unit spectra
    ours = mel_filterbank()
    assert ours.shape == ref.shape == (201, 80)
    # SpeechBrain builds it in float32: frequencies up to 8000 Hz carry ~5e-4 Hz rounding, over bands >= 20 Hz.
    np.testing.assert_allclose(ours, ref, rtol=0, atol=5e-5)
    assert np.all(ours.sum(axis=0) > 0)                         # no empty filter


@pytest.mark.parametrize("mean_norm", [True, False])
def test_matches_speechbrain(fbank, mean_norm):
    """Every reference signal with mean normalisation; without it (absolute dB levels) two signals suffice."""
    cell = fbank if mean_norm else Fbank(mean_norm=False)
    signals = reference_signals()
    if not mean_norm:
        signals = {name: signals[name] for name in ("quiet noise (1e-4)", "tone + weak noise")}
    for name, wav in signals.items():
        ours, frame_lens = cell(ms.Tensor(wav))
        ours = ours.asnumpy()
        ref = speechbrain_fbank(wav, mean_norm)
        assert ours.shape == ref.shape == (1, num_frames(wav.shape[1]), 80), name
        assert ours.dtype == np.float32
        assert frame_lens.asnumpy().tolist() == [num_frames(wav.shape[1])]
        diff = np.abs(ours - ref)
        assert diff.max() < FBANK_TOL_DB, f"{name}: max diff {diff.max():.2e} dB"
        assert diff.mean() < FBANK_MEAN_TOL_DB, f"{name}: mean diff {diff.mean():.2e} dB"


def test_batch_of_equal_lengths_matches_speechbrain(fbank):
    rng = np.random.default_rng(1)
    wav = (rng.standard_normal((3, 16000)) * np.array([[1.0], [0.01], [1e-4]])).astype(np.float32)
    ours, frame_lens = fbank(ms.Tensor(wav))
    assert frame_lens.asnumpy().tolist() == [101, 101, 101]
    assert np.abs(ours.asnumpy() - speechbrain_fbank(wav)).max() < FBANK_TOL_DB


def check_padded_batch_equals_alone(lengths, atol, seed):
    """Utterances of ``lengths`` padded with loud noise into one batch (compiled, GRAPH mode): each one's valid
    frames match the utterance computed alone (PYNATIVE: no graph to compile per length) within ``atol`` dB, its
    padded frames are 0, and alone it matches SpeechBrain."""
    rng = np.random.default_rng(seed)
    wav = np.zeros((len(lengths), max(lengths)), np.float32)
    for i, n in enumerate(lengths):
        wav[i, :n] = rng.standard_normal(n) * 10.0 ** -i
        wav[i, n:] = rng.standard_normal(max(lengths) - n)        # garbage padding must not leak in
    # Utterance 1 gets a click on its last sample: the first padded frame (centred 40 samples before the click)
    # is louder than any valid frame, so a top_db maximum that included padded frames would move the floor.
    wav[1, :lengths[1]] *= 1e-4
    wav[1, lengths[1] - 1] = 1.0
    fbank = Fbank()
    feats, frame_lens = fbank(ms.Tensor(wav), ms.Tensor(np.array(lengths, np.int32)))
    feats, frame_lens = feats.asnumpy(), frame_lens.asnumpy()
    assert feats.shape == (len(lengths), num_frames(max(lengths)), 80)
    assert frame_lens.tolist() == [num_frames(n) for n in lengths]
    with op_by_op():
        alones = [fbank(ms.Tensor(wav[i:i + 1, :n]))[0].asnumpy()[0] for i, n in enumerate(lengths)]
    for i, (n, alone) in enumerate(zip(lengths, alones)):
        assert alone.shape[0] == frame_lens[i]
        np.testing.assert_allclose(feats[i, :frame_lens[i]], alone, rtol=0, atol=atol)
        assert np.all(feats[i, frame_lens[i]:] == 0)
        assert np.abs(alone - speechbrain_fbank(wav[i:i + 1, :n])[0]).max() < FBANK_TOL_DB


def test_padded_batch_equals_each_utterance_alone():
    """Masking is exact: on valid frames the padded batch reproduces each utterance alone within 1e-5 dB.

    All utterances have >= 128 frames: below 128 rows MindSpore's CPU MatMul takes another kernel whose float32
    rounding differs (see the next test)."""
    check_padded_batch_equals_alone([48000, 33439, 20480], atol=1e-5, seed=2)


def test_padded_batch_equals_short_utterances_alone():
    """Short utterances (< 128 frames alone, so a different CPU MatMul kernel than the batch) agree within 1e-4 dB:
    the kernels' float32 rounding differs by ~1e-6 relative in the DFT, which low-power mel bands (~30 dB below
    their frame's peak) amplify to at most ~4e-5 dB (measured)."""
    check_padded_batch_equals_alone([16000, 9919, 4321, 160], atol=1e-4, seed=3)


def test_full_lengths_equal_no_lengths(fbank):
    wav = np.random.default_rng(3).standard_normal((2, 8000)).astype(np.float32)
    with_lens, lens = fbank(ms.Tensor(wav), ms.Tensor(np.array([8000, 8000], np.int32)))
    without, lens_none = fbank(ms.Tensor(wav))
    np.testing.assert_array_equal(with_lens.asnumpy(), without.asnumpy())
    assert lens.asnumpy().tolist() == lens_none.asnumpy().tolist() == [51, 51]


def test_runs_inside_a_compiled_graph():
    """Fbank composes with other ops in one jit-compiled GRAPH-mode function (as in the train/eval graphs)."""
    assert ms.get_context("mode") == ms.GRAPH_MODE
    cell = Fbank()

    @ms.jit
    def pooled_features(wav, wav_lens):
        feats, frame_lens = cell(wav, wav_lens)
        return feats.sum(axis=1) / frame_lens.astype(ms.float32).reshape(-1, 1)

    wav = np.random.default_rng(4).standard_normal((2, 4000)).astype(np.float32)
    out = pooled_features(ms.Tensor(wav), ms.Tensor(np.array([4000, 2000], np.int32))).asnumpy()
    assert out.shape == (2, 80)
    np.testing.assert_allclose(out, 0.0, atol=1e-4)   # mean-normalised over exactly the valid frames


def test_trains_inside_a_compiled_train_step():
    """Fbank in front of a trainable layer in one nn.TrainOneStepCell graph: it compiles, differentiates, and adds
    no trainable parameters (its DFT and mel matrices are constants)."""

    class PooledClassifier(nn.Cell):
        def __init__(self):
            super().__init__()
            self.fbank = Fbank()
            self.dense = nn.Dense(80, 3)

        def construct(self, wav, wav_lens, labels):
            feats, frame_lens = self.fbank(wav, wav_lens)
            variance = (feats * feats).sum(axis=1) / frame_lens.astype(ms.float32).reshape(-1, 1)
            return ops.cross_entropy(self.dense(variance), labels)

    net = PooledClassifier()
    assert [p.name for p in net.trainable_params()] == ["dense.weight", "dense.bias"]
    step = nn.TrainOneStepCell(net, nn.SGD(net.trainable_params(), learning_rate=0.1))
    wav = ms.Tensor(np.random.default_rng(6).standard_normal((2, 4000)).astype(np.float32))
    before = net.dense.weight.asnumpy().copy()
    loss = step(wav, ms.Tensor(np.array([4000, 3000], np.int32)), ms.Tensor(np.array([0, 2], np.int32)))
    assert np.isfinite(loss.asnumpy())
    assert not np.allclose(net.dense.weight.asnumpy(), before)


def test_rejects_wrong_rank_and_sample_rate(fbank):
    with pytest.raises(ValueError, match="batch, samples"):
        fbank(ms.Tensor(np.zeros(1600, np.float32)))
    with pytest.raises(ValueError, match="sample_rate"):
        Fbank(sample_rate=8000)


def test_onnx_export_with_fixed_shape(tmp_path, fbank):
    ort = pytest.importorskip("onnxruntime")
    wav = (0.1 * np.random.default_rng(5).standard_normal((2, 4000))).astype(np.float32)
    wav_lens = np.array([4000, 2500], np.int32)
    path = str(tmp_path / "fbank.onnx")
    ms.onnx.export(fbank, ms.Tensor(wav), ms.Tensor(wav_lens), file_name=path)   # inputs named after construct's
    session = ort.InferenceSession(path)
    onnx_feats, onnx_lens = session.run(None, {"wav": wav, "wav_lens": wav_lens})
    feats, frame_lens = fbank(ms.Tensor(wav), ms.Tensor(wav_lens))
    np.testing.assert_array_equal(onnx_lens, frame_lens.asnumpy())
    # The two runtimes sum the 400-term DFT products in different orders: 1.3e-4 dB measured on this noise (float32
    # rounding, far inside FBANK_TOL_DB's analysis); a wrong window, filter or mask is off by whole dB.
    np.testing.assert_allclose(onnx_feats, feats.asnumpy(), rtol=0, atol=5e-4)


@pytest.mark.parametrize("front_end", ["speechbrain", "kaldi"])
def test_mindir_export_with_dynamic_length(tmp_path, fbank, front_end):
    """One MINDIR with a dynamic number of samples reproduces the Cell (either front end) for lengths on and off
    the 160-sample grid (the Cell as reference in PYNATIVE mode: no graph to compile per length)."""
    if front_end == "kaldi":
        from src.model.kaldi_fbank import KaldiFbank, num_frames as kaldi_frames
        fbank, frames_of = KaldiFbank(window="hamming", scale_16bit=True), kaldi_frames
    else:
        frames_of = num_frames
    path = str(tmp_path / "fbank")
    ms.export(fbank, ms.Tensor(shape=[1, None], dtype=ms.float32), file_name=path, file_format="MINDIR")
    loaded = nn.GraphCell(ms.load(path + ".mindir"))
    for num_samples in (4000, 2345):
        wav = ms.Tensor(np.random.default_rng(num_samples).standard_normal((1, num_samples)).astype(np.float32))
        feats, frame_lens = loaded(wav)
        assert feats.shape == (1, frames_of(num_samples), 80)
        with op_by_op():
            expected = fbank(wav)[0].asnumpy()
        np.testing.assert_allclose(feats.asnumpy(), expected, rtol=0, atol=1e-5)
        assert frame_lens.asnumpy().tolist() == [frames_of(num_samples)]
