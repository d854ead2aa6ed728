"""Comparing our network and our whole waveform -> embedding pipeline with a peer toolkit's own PyTorch code.

- :func:`assert_same_pipeline`: our Embedder (front end + network) and the peer's own pipeline on the same
  waveforms (:func:`speech_waveforms`), alone and in one padded batch.
- :func:`kaldi_native_fbank`: k2-fsa's kaldi-native-fbank configured like ``torchaudio.compliance.kaldi.fbank``
  with given keywords; :func:`torchaudio_kaldi_standin` registers it as ``torchaudio.compliance.kaldi.fbank`` so a
  peer's front-end code runs unchanged. torchaudio itself cannot be installed beside the pinned torch (its builds
  want another torch), and kaldi-native-fbank reproduces Kaldi's ``compute-fbank-feats`` as torchaudio does.
"""
import sys
import types

import numpy as np
import mindspore as ms

TOLERANCE = 1e-4       # max abs difference of embeddings allowed (issue: "within 1e-4")
SAMPLE_RATE = 16000
# Two lengths: 2 s (a multiple of the 160-sample hop) and 53937 samples = 3.37 s + 17 samples (not a multiple).
PIPELINE_LENGTHS = (32000, 53937)
# torchaudio.compliance.kaldi.fbank's keywords and defaults (torchaudio 2.x, src/torchaudio/compliance/kaldi.py).
TORCHAUDIO_FBANK_DEFAULTS = dict(
    blackman_coeff=0.42, channel=-1, dither=0.0, energy_floor=1.0, frame_length=25.0, frame_shift=10.0,
    high_freq=0.0, htk_compat=False, low_freq=20.0, min_duration=0.0, num_mel_bins=23, preemphasis_coefficient=0.97,
    raw_energy=True, remove_dc_offset=True, round_to_power_of_two=True, sample_frequency=16000.0, snip_edges=True,
    subtract_mean=False, use_energy=False, use_log_fbank=True, use_power=True, vtln_high=-500.0, vtln_low=100.0,
    vtln_warp=1.0, window_type="povey")


# ---------------------------------------------------------------- Kaldi fbank without torchaudio
def kaldi_native_fbank(wav, window="povey", scale_16bit=False, **options):
    """kaldi-native-fbank's OnlineFbank on a float32 (S,) waveform (times 32768 when ``scale_16bit``) with
    torchaudio.compliance.kaldi.fbank's ``options`` (its keywords; unset ones take its defaults, except 80 mel bins
    and ``window_type`` = ``window``) -> (T, bins) float32 ln mel energies. Options it cannot mirror are refused."""
    opts = dict(TORCHAUDIO_FBANK_DEFAULTS, num_mel_bins=80, window_type=window)
    unknown = set(options) - set(opts)
    if unknown:
        raise TypeError(f"fbank: unexpected keywords {sorted(unknown)}")
    opts.update(options)
    for key in ("channel", "min_duration", "subtract_mean", "vtln_warp"):
        if opts[key] != TORCHAUDIO_FBANK_DEFAULTS[key]:
            raise ValueError(f"the kaldi-native-fbank stand-in does not support {key}={opts[key]!r}")
    if opts["dither"] != 0.0:
        raise ValueError("the kaldi-native-fbank stand-in computes without dither only (dither=0, as at evaluation)")
    import kaldi_native_fbank as knf
    fbank_opts = knf.FbankOptions()
    frame = fbank_opts.frame_opts
    frame.samp_freq = float(opts["sample_frequency"])
    frame.frame_length_ms = float(opts["frame_length"])
    frame.frame_shift_ms = float(opts["frame_shift"])
    frame.dither = 0.0                                          # knf's default is 3e-5
    frame.preemph_coeff = float(opts["preemphasis_coefficient"])
    frame.remove_dc_offset = bool(opts["remove_dc_offset"])
    frame.window_type = opts["window_type"]
    frame.round_to_power_of_two = bool(opts["round_to_power_of_two"])
    frame.blackman_coeff = float(opts["blackman_coeff"])
    frame.snip_edges = bool(opts["snip_edges"])
    mel = fbank_opts.mel_opts
    mel.num_bins = int(opts["num_mel_bins"])
    mel.low_freq = float(opts["low_freq"])
    mel.high_freq = float(opts["high_freq"])
    mel.vtln_low = float(opts["vtln_low"])
    mel.vtln_high = float(opts["vtln_high"])
    fbank_opts.use_energy = bool(opts["use_energy"])
    fbank_opts.energy_floor = float(opts["energy_floor"])   # knf's default is 0, torchaudio's 1
    fbank_opts.raw_energy = bool(opts["raw_energy"])
    fbank_opts.htk_compat = bool(opts["htk_compat"])
    fbank_opts.use_log_fbank = bool(opts["use_log_fbank"])
    fbank_opts.use_power = bool(opts["use_power"])
    samples = np.asarray(wav, np.float32) * np.float32(32768.0 if scale_16bit else 1.0)
    online = knf.OnlineFbank(fbank_opts)
    online.accept_waveform(float(opts["sample_frequency"]), samples.tolist())
    online.input_finished()
    return np.stack([online.get_frame(i) for i in range(online.num_frames_ready)]).astype(np.float32)


def standin_fbank(waveform, **options):
    """``torchaudio.compliance.kaldi.fbank(waveform, **options)`` computed by :func:`kaldi_native_fbank`:
    waveform a (1, S) torch tensor (mono, as the peers pass it) -> (T, num_mel_bins) float32 torch tensor."""
    import torch
    samples = waveform.detach().cpu().float().numpy()
    if samples.ndim != 2 or samples.shape[0] != 1:
        raise ValueError(f"the stand-in takes a (1, S) mono waveform, got shape {tuple(samples.shape)}")
    options = dict(options)
    window = options.pop("window_type", TORCHAUDIO_FBANK_DEFAULTS["window_type"])
    options.setdefault("num_mel_bins", TORCHAUDIO_FBANK_DEFAULTS["num_mel_bins"])
    return torch.from_numpy(kaldi_native_fbank(samples[0], window, **options))


def torchaudio_kaldi_standin():
    """Register :func:`standin_fbank` as ``torchaudio.compliance.kaldi.fbank`` (in the empty ``torchaudio`` module
    that tests/speechbrain_ref.py also uses), so that peer code doing ``import torchaudio.compliance.kaldi as Kaldi``
    imports and calls it -> that ``kaldi`` module."""
    torchaudio = sys.modules.setdefault("torchaudio", types.ModuleType("torchaudio"))
    compliance = sys.modules.setdefault("torchaudio.compliance", types.ModuleType("torchaudio.compliance"))
    kaldi = sys.modules.setdefault("torchaudio.compliance.kaldi", types.ModuleType("torchaudio.compliance.kaldi"))
    kaldi.fbank = standin_fbank
    compliance.kaldi = kaldi
    torchaudio.compliance = compliance
    return kaldi


# ---------------------------------------------------------------- whole pipeline
def speech_waveforms(lengths=PIPELINE_LENGTHS, seed=0):
    """Synthetic speech (src/data/synthetic.py: voiced syllables, fricatives, pauses, 18-35 dB SNR noise) of
    ``lengths`` samples from different speakers, peak about 0.3, rounded to 16-bit values -> list of float32 (S,)."""
    from src.data.synthetic import random_speaker, synthesize_utterance
    rng = np.random.default_rng(seed)
    waveforms = []
    for n in lengths:
        wav = synthesize_utterance(random_speaker(rng), n / SAMPLE_RATE, rng, channel=(rng.uniform(-0.3, 0.3), 0.3))
        assert wav.shape == (n,)
        waveforms.append((np.round(wav * 32768.0) / 32768.0).astype(np.float32))
    return waveforms


def assert_same_pipeline(peer_embed, embedder, waveforms):
    """Our ``embedder`` (src/model/embedder.py, eval mode) gives ``peer_embed``'s embedding of each waveform, alone
    and in one batch padded with loud noise (with wav_lens), within TOLERANCE.

    ``peer_embed``: float32 (S,) numpy waveform -> (E,) numpy embedding by the peer's own front end and model.
    Returns ``(diffs, ours)``: ``{"<S> samples": max abs diff, "padded batch": max abs diff over its rows}`` for
    printing, and our embedding of each waveform alone."""
    references = [np.asarray(peer_embed(wav), np.float32).reshape(-1) for wav in waveforms]
    diffs, alone = {}, []
    for wav, reference in zip(waveforms, references):
        ours = embedder(ms.Tensor(wav[None])).asnumpy()[0]
        assert ours.shape == reference.shape
        assert np.abs(reference).max() > 0.1, "the peer's embedding is too small to tell anything"
        diffs[f"{wav.size} samples"] = float(np.abs(ours - reference).max())
        alone.append(ours)
    lengths = np.array([wav.size for wav in waveforms], np.int32)
    batch = (0.5 * np.random.default_rng(1).standard_normal((len(waveforms), lengths.max()))).astype(np.float32)
    for row, wav in zip(batch, waveforms):
        row[:wav.size] = wav
    ours = embedder(ms.Tensor(batch), ms.Tensor(lengths)).asnumpy()
    diffs["padded batch"] = float(max(np.abs(o - r).max() for o, r in zip(ours, references)))
    assert all(d <= TOLERANCE for d in diffs.values()), f"max abs differences {diffs} exceed {TOLERANCE}"
    return diffs, alone


def format_diffs(diffs):
    """``{"32000 samples": 1.2e-6, ...}`` -> "32000 samples 1.2e-06, ..." for a printed line."""
    return ", ".join(f"{name} {value:.1e}" for name, value in diffs.items())
