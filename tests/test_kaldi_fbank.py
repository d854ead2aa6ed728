"""src/model/kaldi_fbank.py: KaldiFbank against kaldi-native-fbank, length masking, the recipe's front_end through
the Embedder, training, export and checkpoints.

Reference: k2-fsa's ``kaldi-native-fbank`` (``OnlineFbank``), a C++ re-implementation of Kaldi's
``compute-fbank-feats`` that torchaudio.compliance.kaldi.fbank also reproduces, with dither 0, 80 bins, low_freq 20,
high_freq 0 (Nyquist), snip_edges and the window under test; its output is ln of the mel energies floored at the
float32 epsilon. Also with sherpa-onnx's framing: snip_edges false (mirrored edges) and high_freq -400 (7600 Hz).

Tolerance, level-aware: |ours - ref| <= LEVEL_TOL * sqrt(E_peak / E) for a band of energy E in a frame whose
strongest band has energy E_peak, with LEVEL_TOL = 1e-4 (under mean_norm the frame mean of that bound is added).
Both sides compute in float32, we with the DFT as a (400, 512) matmul, kaldi-native-fbank with a split-radix FFT.
A spectral value is a sum of 400 float32 products, so its rounding error is at most about 400 * 6e-8 = 2.4e-5 of
the frame's amplitude scale, which the strongest band's amplitude sqrt(E_peak) reaches or exceeds. A band's
amplitude is thus off by up to 2.4e-5 * sqrt(E_peak / E) of itself and its energy by twice that, which is the error
of its log: 4.8e-5 * sqrt(E_peak / E) per side, about 1e-4 for both. The bound is 1e-4 on the peak band, 1e-3 20 dB
below it, 1e-2 at 40 dB, 0.1 at 60 dB. One absolute bound cannot fit both: it would be loose near the peak or
fail on a pure chirp, whose deepest unfloored bands lie 128 dB down (measured difference 0.27 there). Bands at the
eps floor agree exactly (both clamp). Measured: |ours - ref| / sqrt(E_peak / E) stays below 1.9e-5 for every
signal and option, 5x inside LEVEL_TOL; the plain max / mean abs differences per option are printed (``-s``). A
wrong option moves the features far more: hamming instead of povey by 0.46 max, 0.019 median on white noise, a
missing 16-bit scaling by ln(2**30) = 20.8.
"""
import numpy as np
import pytest
import mindspore as ms
from mindspore import nn

from src.checkpoint import load_embedder, recipe_for_checkpoint, save_checkpoint
from src.config import load_config
from src.deploy.verified_export import export_model, window_featurizer
from src.evaluate.extract import Batching
from src.model.ecapa_tdnn import ECAPA_TDNN
from src.model.embedder import Embedder, build_front_end, embedder_settings, front_end_frames, min_samples
from src.model.fbank import Fbank
from src.model.kaldi_fbank import KaldiFbank, kaldi_mel_banks, num_frames
from src.train.step import build_train_step
from tests.test_features import reference_signals
from tests.torch_ref import kaldi_native_fbank
from tests.modes import op_by_op

knf = pytest.importorskip("kaldi_native_fbank")

LEVEL_TOL = 1e-4
SMALL = dict(channels=16, mfa_channels=48, embedding_size=24, attention_channels=8, se_channels=8,
             res2net_scale=2)                 # scale 2: the fewest ops to compile (the front end is what is tested)
KALDI_KEYS = dict(front_end="kaldi", kaldi_window="hamming", kaldi_scale_16bit=True, kaldi_mean_norm=True)
SHERPA_KEYS = dict(front_end="kaldi", kaldi_window="povey", kaldi_scale_16bit=False, kaldi_mean_norm=True,
                   kaldi_snip_edges=False, kaldi_high_freq=-400)           # sherpa-onnx's fbank, 3D-Speaker's scaling
# Without snip_edges: lengths below one frame's 400 samples (mirrored more than once), around 200 (the shortest
# mirrored once at each end), not multiples of the shift.
SHORT_LENGTHS = (80, 150, 199, 200, 399, 719, 1041)


def kaldi_difference(ours, ref, mean_norm=False):
    """Check ours (T, 80) against kaldi-native-fbank's ``ref`` (T, 80; minus its frame mean when ``mean_norm``)
    within the level-aware tolerance of the module docstring -> (max abs diff, mean abs diff)."""
    bound = LEVEL_TOL * np.exp((ref.max(axis=1, keepdims=True) - ref) / 2.0)     # sqrt(E_peak / E)
    if mean_norm:
        ref, bound = ref - ref.mean(axis=0), bound + bound.mean(axis=0)
    diff = np.abs(ours - ref)
    worst = np.unravel_index(np.argmax(diff - bound), diff.shape)
    assert np.all(diff <= bound), f"frame, band {worst}: diff {diff[worst]:.2e} > bound {bound[worst]:.2e}"
    return float(diff.max()), float(diff.mean())


def kaldi_signals():
    """tests/test_features.py's signals (lengths 8123 to 24050: multiples of the hop and not) plus a DC offset."""
    signals = reference_signals()
    rng = np.random.default_rng(7)
    signals["DC offset 0.3 + noise"] = (0.3 + 0.01 * rng.standard_normal(9000)).astype(np.float32)[None]
    return signals


@pytest.mark.parametrize("window", ["povey", "hamming"])
@pytest.mark.parametrize("scale_16bit,snip_edges", [(False, True), (True, True), (True, False)],
                         ids=["snip", "snip-16bit", "mirrored-7600hz-16bit"])
def test_matches_kaldi_native_fbank(window, scale_16bit, snip_edges, pynative):
    """Kaldi's framing (snip_edges, filters to Nyquist) on the reference signals; sherpa-onnx's (snip_edges false,
    high_freq -400: T = (S + 80) // 160 frames with the edges mirrored) on them and on short lengths too."""
    high_freq = 0.0 if snip_edges else -400.0
    cell = KaldiFbank(window=window, scale_16bit=scale_16bit, mean_norm=False, snip_edges=snip_edges,
                      high_freq=high_freq)
    signals = kaldi_signals()
    if not snip_edges:
        rng = np.random.default_rng(13)
        signals.update({f"noise of {n}": 0.1 * rng.standard_normal((1, n)).astype(np.float32) for n in SHORT_LENGTHS})
    worst, means = 0.0, []
    for name, wav in signals.items():
        ours, frame_lens = cell(ms.Tensor(wav))
        ref = kaldi_native_fbank(wav[0], window, scale_16bit, snip_edges=snip_edges, high_freq=high_freq)
        assert ours.shape == (1,) + ref.shape and ref.shape == (num_frames(wav.shape[1], snip_edges), 80), name
        assert frame_lens.asnumpy().tolist() == [ref.shape[0]]
        largest, mean = kaldi_difference(ours.asnumpy()[0], ref)
        worst = max(worst, largest)
        means.append(mean)
    print(f"\n{window} scale_16bit={scale_16bit} snip_edges={snip_edges} high_freq={high_freq:g}: max abs diff "
          f"{worst:.2e}, mean abs diff {np.mean(means):.2e} (worst signal {max(means):.2e})")


@pytest.mark.parametrize("window,scale_16bit", [("hamming", True), ("povey", False)])   # WeSpeaker, 3D-Speaker
def test_mean_norm_matches_reference_minus_its_mean(window, scale_16bit, pynative):
    """With mean_norm (the importers' CMN) the features are the reference minus its mean over frames."""
    cell = KaldiFbank(window=window, scale_16bit=scale_16bit, mean_norm=True)
    for name in ("white noise", "chirp"):
        wav = reference_signals()[name]
        kaldi_difference(cell(ms.Tensor(wav))[0].asnumpy()[0], kaldi_native_fbank(wav[0], window, scale_16bit), True)


def test_options_change_the_features(pynative):
    """Another window or scaling moves the features far more than any tolerance here."""
    wav = ms.Tensor(reference_signals()["white noise"])
    povey, hamming, scaled = (KaldiFbank(window=w, scale_16bit=s, mean_norm=False)(wav)[0].asnumpy()
                              for w, s in (("povey", False), ("hamming", False), ("povey", True)))
    assert np.abs(povey - hamming).max() > 0.2 and np.median(np.abs(povey - hamming)) > 50 * LEVEL_TOL
    np.testing.assert_allclose(scaled - povey, np.log(2.0 ** 30), atol=1e-3)     # no band is at the floor here
    with pytest.raises(ValueError, match="window: expected one of povey, hamming"):
        KaldiFbank(window="hann")


def test_high_freq_moves_the_top_filter_edge():
    """Kaldi's high_freq: 0 is Nyquist, -400 is 7600 Hz like 7600; edges at or below low_freq are refused."""
    np.testing.assert_array_equal(kaldi_mel_banks(high_freq=-400), kaldi_mel_banks(high_freq=7600))
    assert not np.array_equal(kaldi_mel_banks(high_freq=-400), kaldi_mel_banks())
    assert kaldi_mel_banks(high_freq=-400)[int(7600 / 31.25) + 1:].sum() == 0          # no weight above 7600 Hz
    with pytest.raises(ValueError, match="high_freq: 10 puts the top mel filter edge at 10 Hz"):
        KaldiFbank(high_freq=10)
    with pytest.raises(ValueError, match="high_freq: -8000 puts the top mel filter edge at 0 Hz"):
        KaldiFbank(high_freq=-8000)


def test_num_frames_and_frame_lens():
    assert [num_frames(s) for s in (0, 399, 400, 559, 560, 16000)] == [0, 0, 1, 1, 2, 98]
    wav = np.zeros((5, 2000), np.float32)
    lens = np.array([2000, 1999, 560, 400, 300], np.int32)
    feats, frame_lens = KaldiFbank()(ms.Tensor(wav), ms.Tensor(lens))
    assert feats.shape == (5, 11, 80)
    assert frame_lens.asnumpy().tolist() == [num_frames(n) for n in lens] == [11, 10, 2, 1, 0]
    assert np.all(np.isfinite(feats.asnumpy())) and np.all(feats.asnumpy()[4] == 0)    # no frame: zeros, no NaN

    assert [num_frames(s, False) for s in (0, 79, 80, 239, 240, 16000, 16079, 16080)] == [0, 0, 1, 1, 2, 100, 100, 101]
    lens = np.array([2000, 1999, 560, 79, 80], np.int32)
    feats, frame_lens = KaldiFbank(snip_edges=False)(ms.Tensor(wav), ms.Tensor(lens))
    assert feats.shape == (5, 13, 80)
    assert frame_lens.asnumpy().tolist() == [num_frames(n, False) for n in lens] == [13, 12, 4, 0, 1]
    assert np.all(np.isfinite(feats.asnumpy())) and np.all(feats.asnumpy()[3] == 0)


@pytest.mark.parametrize("lengths,atol", [([48000, 33439, 20480], 1e-5), ([16000, 9919, 4321, 1040], 1e-4)])
def test_padded_batch_equals_each_utterance_alone(lengths, atol):
    """Utterances padded with loud noise into one batch: on valid frames each matches itself alone (and
    kaldi-native-fbank), its padded frames are 0. Short utterances (< 128 frames alone) run another CPU MatMul
    kernel than the batch, whose float32 rounding differs (see tests/test_features.py), hence the wider atol. The
    batch runs compiled (GRAPH), each utterance alone in PYNATIVE (no graph to compile per length)."""
    rng = np.random.default_rng(11)
    wav = rng.standard_normal((len(lengths), max(lengths))).astype(np.float32)         # padding: loud noise
    for i, n in enumerate(lengths):
        wav[i, :n] *= 0.1 * 10.0 ** -i
    cell = KaldiFbank(window="hamming", scale_16bit=True, mean_norm=True)
    feats, frame_lens = cell(ms.Tensor(wav), ms.Tensor(np.array(lengths, np.int32)))
    feats, frame_lens = feats.asnumpy(), frame_lens.asnumpy()
    assert frame_lens.tolist() == [num_frames(n) for n in lengths]
    with op_by_op():
        alones = [cell(ms.Tensor(wav[i:i + 1, :n]))[0].asnumpy()[0] for i, n in enumerate(lengths)]
    for i, (n, alone) in enumerate(zip(lengths, alones)):
        np.testing.assert_allclose(feats[i, :frame_lens[i]], alone, rtol=0, atol=atol)
        assert np.all(feats[i, frame_lens[i]:] == 0)
        kaldi_difference(alone, kaldi_native_fbank(wav[i, :n], "hamming", True), mean_norm=True)


def test_padded_batch_without_snip_edges_equals_each_utterance_alone():
    """snip_edges false in GRAPH mode: each utterance of a batch padded with loud noise is mirrored at its own
    length, so on its (len + 80) // 160 valid frames it gets its features alone (computed in PYNATIVE mode, and
    kaldi-native-fbank's), its padded frames are 0."""
    assert ms.get_context("mode") == ms.GRAPH_MODE
    lengths = [16000, 9919, 4321, 1041, 250, 150]
    rng = np.random.default_rng(17)
    wav = rng.standard_normal((len(lengths), max(lengths))).astype(np.float32)         # padding: loud noise
    for i, n in enumerate(lengths):
        wav[i, :n] *= 0.1 * 10.0 ** -(i % 3)
    cell = KaldiFbank(window="povey", mean_norm=True, snip_edges=False, high_freq=-400)
    feats, frame_lens = cell(ms.Tensor(wav), ms.Tensor(np.array(lengths, np.int32)))
    feats, frame_lens = feats.asnumpy(), frame_lens.asnumpy()
    assert frame_lens.tolist() == [(n + 80) // 160 for n in lengths]
    with op_by_op():
        alone = [cell(ms.Tensor(wav[i:i + 1, :n]))[0].asnumpy()[0] for i, n in enumerate(lengths)]
    worst = 0.0
    for i, n in enumerate(lengths):
        worst = max(worst, float(np.abs(feats[i, :frame_lens[i]] - alone[i]).max()))
        np.testing.assert_allclose(feats[i, :frame_lens[i]], alone[i], rtol=0, atol=1e-4)
        assert np.all(feats[i, frame_lens[i]:] == 0)
        ref = kaldi_native_fbank(wav[i, :n], "povey", snip_edges=False, high_freq=-400.0)
        kaldi_difference(feats[i, :frame_lens[i]], ref, mean_norm=True)
    print(f"\nsnip_edges=False, padded batch vs alone: max abs diff {worst:.2e}")


@pytest.mark.parametrize("snip_edges", [True, False])
def test_onnx_export_with_fixed_shape(tmp_path, snip_edges):
    """Only ONNX-translatable ops (no FFT, PadV3 or clamp(min=); without snip_edges a Gather): onnxruntime
    reproduces the Cell, each utterance mirrored at its own length."""
    ort = pytest.importorskip("onnxruntime")
    cell = KaldiFbank(snip_edges=snip_edges, high_freq=0 if snip_edges else -400)
    wav = (0.1 * np.random.default_rng(5).standard_normal((2, 4000))).astype(np.float32)
    wav_lens = np.array([4000, 2537], np.int32)
    path = str(tmp_path / "kaldi_fbank.onnx")
    ms.onnx.export(cell, ms.Tensor(wav), ms.Tensor(wav_lens), file_name=path)
    onnx_feats, onnx_lens = ort.InferenceSession(path).run(None, {"wav": wav, "wav_lens": wav_lens})
    feats, frame_lens = cell(ms.Tensor(wav), ms.Tensor(wav_lens))
    np.testing.assert_array_equal(onnx_lens, frame_lens.asnumpy())
    np.testing.assert_allclose(onnx_feats, feats.asnumpy(), rtol=0, atol=1e-4)


def test_dynamic_mindir_without_snip_edges_and_its_featurizer(tmp_path):
    """Without snip_edges the front end exports to a MINDIR with dynamic batch and length that reproduces the Cell
    (wav_lens given: each row mirrored at its own length), and an fbank-input contract of such a model featurizes
    with it (sherpa-onnx's framing)."""
    cell = KaldiFbank(snip_edges=False, high_freq=-400)
    ms.export(cell, ms.Tensor(shape=[None, None], dtype=ms.float32), ms.Tensor(shape=[None], dtype=ms.int32),
              file_name=str(tmp_path / "kaldi_fbank"), file_format="MINDIR")
    loaded = nn.GraphCell(ms.load(str(tmp_path / "kaldi_fbank.mindir")))
    rng = np.random.default_rng(19)
    for n in (4000, 5410):
        wav = (0.1 * rng.standard_normal((2, n))).astype(np.float32)
        lens = ms.Tensor(np.array([n, n * 2 // 3 + 7], np.int32))
        for got, expected in zip(loaded(ms.Tensor(wav), lens), cell(ms.Tensor(wav), lens)):
            np.testing.assert_allclose(got.asnumpy(), expected.asnumpy(), rtol=0, atol=1e-5)
    contract = {"input": {"kind": "fbank"}, "sample_rate": 16000, "n_mels": 80, "network": SHERPA_KEYS}
    wav = (0.1 * rng.standard_normal((1, 8000))).astype(np.float32)
    feats = window_featurizer(contract)(wav)
    assert feats.shape == (1, num_frames(8000, False), 80) == (1, 50, 80)
    np.testing.assert_array_equal(feats, cell(ms.Tensor(wav))[0].asnumpy())


def small_network(seed=0):
    np.random.seed(seed)
    ms.set_seed(seed)
    net = ECAPA_TDNN(**SMALL)
    net.set_train(False)
    return net


def test_build_front_end_follows_the_settings():
    assert type(build_front_end({"sample_rate": 16000, "n_mels": 80})) is Fbank          # settings without the key
    assert type(build_front_end({"sample_rate": 16000, "n_mels": 80, "front_end": "speechbrain"})) is Fbank
    kaldi = build_front_end({"sample_rate": 16000, "n_mels": 40, **KALDI_KEYS})
    assert isinstance(kaldi, KaldiFbank) and (kaldi.n_mels, kaldi.window, kaldi.scale_16bit) == (40, "hamming", True)
    assert min_samples({}) == 640 and min_samples(KALDI_KEYS) == 1040 and num_frames(1040) == 5
    assert (kaldi.snip_edges, kaldi.high_freq) == (True, 0.0)                # settings stored without the keys
    sherpa = build_front_end({"sample_rate": 16000, "n_mels": 80, **SHERPA_KEYS})
    assert (sherpa.window, sherpa.snip_edges, sherpa.high_freq) == ("povey", False, -400.0)
    assert min_samples(SHERPA_KEYS) == 720 and front_end_frames(SHERPA_KEYS, 720) == 5 == num_frames(720, False)
    assert front_end_frames(SHERPA_KEYS, 719) == 4 and front_end_frames(KALDI_KEYS, 16000) == 98
    with pytest.raises(ValueError, match="n_mels: the front end gives 40 bins, the network takes 80"):
        Embedder(small_network(), front_end=kaldi)


def test_embedder_with_kaldi_front_end_masks_padding_in_graph_mode():
    """front_end kaldi through the Embedder (GRAPH mode): a padded batch gives each utterance its embedding alone
    (run in PYNATIVE mode: no graph to compile per length)."""
    assert ms.get_context("mode") == ms.GRAPH_MODE
    embedder = Embedder(small_network(), front_end=KaldiFbank(window="hamming", scale_16bit=True))
    embedder.set_train(False)
    rng = np.random.default_rng(3)
    lengths = [12000, 7777]
    wav = (0.1 * rng.standard_normal((2, 12000))).astype(np.float32)
    batch = embedder(ms.Tensor(wav), ms.Tensor(np.array(lengths, np.int32))).asnumpy()
    with op_by_op():
        alones = [embedder(ms.Tensor(wav[i:i + 1, :n]), ms.Tensor(np.array([n], np.int32))).asnumpy()[0]
                  for i, n in enumerate(lengths)]
    for i, alone in enumerate(alones):
        np.testing.assert_allclose(batch[i], alone, rtol=0, atol=1e-4)


def test_mindir_round_trip_and_fbank_featurizer(tmp_path):
    """A waveform MINDIR with the Kaldi front end inside reproduces the Embedder on a fresh input; its contract
    records the Kaldi frame count; an fbank-input contract's featurizer computes the Kaldi features."""
    settings = {"sample_rate": 16000, **SMALL, "n_mels": 80, **KALDI_KEYS}
    net = small_network()
    contract = export_model(net, str(tmp_path / "ecapa"), "MINDIR", "waveform", batch_size=1, seconds=0.5,
                            settings=settings)
    assert contract["verification"]["max_abs_diff"] <= 1e-4 and contract["frames_per_window"] == num_frames(8000)
    assert contract["network"]["front_end"] == "kaldi"
    loaded = nn.GraphCell(ms.load(str(tmp_path / "ecapa.mindir")))
    wav = (0.1 * np.random.default_rng(9).standard_normal((1, 8000))).astype(np.float32)
    exported = loaded(ms.Tensor(wav)).asnumpy()
    with op_by_op():      # the reference runs op by op: no graph of the whole network to compile
        expected = Embedder(net, front_end=build_front_end(settings))(ms.Tensor(wav)).asnumpy()
    np.testing.assert_allclose(exported, expected, rtol=0, atol=1e-4)

    featurize = window_featurizer(dict(contract, input={"kind": "fbank"}))
    np.testing.assert_array_equal(featurize(wav), build_front_end(settings)(ms.Tensor(wav))[0].asnumpy())


def test_checkpoint_settings_bring_the_front_end_along(tmp_path):
    """A checkpoint trained with front_end kaldi carries it: a recipe without the keys gets them back (and with
    them the front end of load_embedder), a contradicting command line is refused, and evaluation's shortest input
    follows (720 samples without snip_edges)."""
    small = [a for k, v in SMALL.items() for a in (f"--{k}", str(v))]
    kaldi_args = ["--front_end", "kaldi", "--kaldi_window", "hamming", "--kaldi_scale_16bit", "true",
                  "--kaldi_snip_edges", "false", "--kaldi_high_freq", "-400"]
    cfg = load_config(small + kaldi_args)
    step, train_net = build_train_step(cfg, 3, "CPU")
    assert isinstance(train_net.embedder.fbank, KaldiFbank) and train_net.embedder.fbank.window == "hamming"
    checkpoint = save_checkpoint(step, str(tmp_path / "run"), 1, {"global_step": 1}, settings=embedder_settings(cfg))

    plain = recipe_for_checkpoint(load_config(small), checkpoint)
    assert (plain.front_end, plain.kaldi_window, plain.kaldi_scale_16bit) == ("kaldi", "hamming", True)
    assert (plain.kaldi_snip_edges, plain.kaldi_high_freq) == (False, -400)
    front_end = load_embedder(plain, checkpoint).fbank
    assert isinstance(front_end, KaldiFbank)
    assert (front_end.window, front_end.scale_16bit, front_end.mean_norm) == ("hamming", True, True)
    assert (front_end.snip_edges, front_end.high_freq) == (False, -400.0)
    assert Batching.from_recipe(plain).min_samples == 720
    with pytest.raises(ValueError, match="front_end: the command line gives 'speechbrain'"):
        recipe_for_checkpoint(load_config(small + ["--front_end", "speechbrain"]), checkpoint)
    with pytest.raises(ValueError, match="kaldi_snip_edges: the command line gives True"):
        recipe_for_checkpoint(load_config(small + ["--kaldi_snip_edges", "true"]), checkpoint)
    with pytest.raises(ValueError, match="kaldi_high_freq: the command line gives 0"):
        recipe_for_checkpoint(load_config(small + ["--kaldi_high_freq", "0"]), checkpoint)
