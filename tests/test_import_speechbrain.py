"""Importing SpeechBrain's ECAPA-TDNN (``python -m src.import_weights --format speechbrain``), checked against
SpeechBrain's own inference code, waveform in.

Reference: speechbrain 1.1.2 (installed with ``--no-deps``), its ``EncoderClassifier.encode_batch``
(speechbrain/inference/classifiers.py) built directly from modules as ``speechbrain/spkrec-ecapa-voxceleb``'s
hyperparams.yaml declares them: ``compute_features`` = ``lobes.features.Fbank(n_mels=80)``, ``mean_var_norm`` =
``InputNormalization(norm_type="sentence", std_norm=False)``, ``embedding_model`` =
``lobes.models.ECAPA_TDNN(80, channels=[C] * 4 + [3 C], lin_neurons=192)`` (global context on, its default) with
random weights and random batch-norm statistics, ``mean_var_norm_emb`` = ``InputNormalization(norm_type="global",
std_norm=False)``. encode_batch runs Fbank -> sentence mean removal -> ECAPA_TDNN; with ``normalize=True`` it
also subtracts mean_var_norm_emb's ``glob_mean``. No stand-in is needed: SpeechBrain's Fbank is plain torch
(``import speechbrain`` only needs an empty ``torchaudio`` module, tests/speechbrain_ref.py).

The files are written by SpeechBrain's own savers: ``utils.checkpoints.torch_save`` (the state_dict, as its
Checkpointer writes ``embedding_model.ckpt``) and ``InputNormalization._save`` after a training-mode forward over
random embeddings (``mean_var_norm_emb.ckpt``); the reference encoder reads the latter back with ``_load``.

The published sizes (C=512 MFA 1536 and C=1024 MFA 3072) are imported and checked for a complete mapping: the
settings the importer derives, the mean embedding, and every parameter of our network filled from the file
(:func:`test_full_size_import_maps_every_parameter`). The waveform-in comparison with encode_batch runs the same
import code on C=32 and C=64 networks (:func:`test_imported_checkpoint_embeds_waveforms_as_speechbrain`; the size
changes no code path of the import, and the C=64 case sends the MFA layer through MatMulNT, which the published
sizes use there): our embedding of 2.0 s / 3.37 s + 17 samples of synthetic speech, alone and in one padded batch,
equals encode_batch of each alone within 1e-4 max abs (differences printed under ``-s``; tests/test_ecapa_tdnn.py
compares the full-size networks themselves with SpeechBrain's). The imported ``embedding_mean`` equals glob_mean
exactly, and our embedding minus it equals ``encode_batch(normalize=True)`` within the same tolerance.
"""
import numpy as np
import pytest

import src.model.layers
from src.checkpoint import CheckpointError, load_embedder, read_embedding_mean, read_settings
from src.config import load_config
from src.import_weights import main, speechbrain_name
from src.model.embedder import embedder_settings
from tests.import_mapping import assert_complete_mapping, load_recipe_network
from tests.speechbrain_ref import randomize_batchnorm, speechbrain_module
from tests.torch_ref import TOLERANCE, assert_same_pipeline, format_diffs, speech_waveforms

torch = pytest.importorskip("torch", reason="the SpeechBrain reference needs PyTorch")


def make_speechbrain_ecapa(channels, seed):
    """SpeechBrain's ECAPA_TDNN as spkrec-ecapa-voxceleb builds it (MFA 3 C), random weights and batch norms."""
    ecapa = speechbrain_module("speechbrain.lobes.models.ECAPA_TDNN")
    torch.manual_seed(seed)
    model = ecapa.ECAPA_TDNN(80, channels=[channels] * 4 + [3 * channels], lin_neurons=192)
    return randomize_batchnorm(model, seed=seed).eval()


def save_speechbrain_files(model, folder, seed):
    """Write ``embedding_model.ckpt`` and ``mean_var_norm_emb.ckpt`` with SpeechBrain's savers -> the embedding
    statistics' glob_mean (192,)."""
    features = speechbrain_module("speechbrain.processing.features")
    speechbrain_module("speechbrain.utils.checkpoints").torch_save(model, folder / "embedding_model.ckpt")
    norm = features.InputNormalization(norm_type="global", std_norm=False)
    norm.train()
    generator = torch.Generator().manual_seed(seed)
    embeddings = 5.0 * torch.randn(12, 1, 192, generator=generator) + torch.linspace(-3.0, 3.0, 192)
    norm(embeddings, torch.ones(12))
    norm._save(folder / "mean_var_norm_emb.ckpt")
    return norm.glob_mean.clone()


def speechbrain_encoder(model, mean_path):
    """SpeechBrain's EncoderClassifier from the modules of spkrec-ecapa-voxceleb (module docstring), the mean
    embedding read back from ``mean_path`` with InputNormalization._load."""
    features = speechbrain_module("speechbrain.processing.features")
    lobes = speechbrain_module("speechbrain.lobes.features")
    classifiers = speechbrain_module("speechbrain.inference.classifiers")
    norm_emb = features.InputNormalization(norm_type="global", std_norm=False)
    norm_emb._load(mean_path)
    modules = dict(compute_features=lobes.Fbank(n_mels=80),
                   mean_var_norm=features.InputNormalization(norm_type="sentence", std_norm=False),
                   embedding_model=model, mean_var_norm_emb=norm_emb)
    return classifiers.EncoderClassifier(modules=modules, hparams=dict(mean_var_norm_emb=norm_emb),
                                         run_opts={"device": "cpu"})


def encode(encoder, wav, normalize=False):
    """encode_batch of one float32 (S,) waveform -> (192,) numpy."""
    with torch.no_grad():
        return encoder.encode_batch(torch.from_numpy(wav)[None], normalize=normalize)[0, 0].numpy()


def import_speechbrain_files(channels, tmp_path):
    """SpeechBrain's model of ``channels`` and its statistics written by SpeechBrain's savers, imported with the
    command line; the settings, mean embedding and recipe checked -> (model, glob_mean, recipe config)."""
    model = make_speechbrain_ecapa(channels, seed=channels)
    glob_mean = save_speechbrain_files(model, tmp_path, seed=channels)
    out, recipe = tmp_path / "sb.ckpt", tmp_path / "sb.yaml"
    assert main(["--format", "speechbrain", "--recipe", str(recipe), str(tmp_path / "embedding_model.ckpt"),
                 str(out)]) == 0

    settings = read_settings(str(out))
    assert settings == dict(sample_rate=16000, front_end="speechbrain", n_mels=80, channels=channels,
                            mfa_channels=3 * channels, embedding_size=192, attention_channels=128, se_channels=128,
                            res2net_scale=8, global_context=True, padding="reflect", mfa_norm=True,
                            attention_norm=True, pooling_stats="speechbrain", embedding_norm=False,
                            kernel_sizes=[5, 3, 3, 3, 1], dilations=[1, 2, 3, 4, 1])
    np.testing.assert_array_equal(read_embedding_mean(str(out)), glob_mean.numpy().astype(np.float64))
    cfg = load_config(["--config", str(recipe)])               # the recipe names the checkpoint and its settings
    assert cfg.checkpoint == str(out) and cfg.subtract_mean is False
    assert {key: value for key, value in embedder_settings(cfg).items() if key in settings} == settings
    return model, glob_mean, cfg


@pytest.mark.parametrize("channels", [512, 1024])
def test_full_size_import_maps_every_parameter(channels, tmp_path):
    """The published sizes: the import's settings (above) and our network built from the recipe file holding
    every tensor of SpeechBrain's state_dict, value for value."""
    model, _, _ = import_speechbrain_files(channels, tmp_path)
    network, _, _ = load_recipe_network(tmp_path / "sb.yaml")
    assert_complete_mapping(network, model.state_dict(), speechbrain_name)


@pytest.mark.parametrize("channels", [32, 64])
def test_imported_checkpoint_embeds_waveforms_as_speechbrain(channels, tmp_path, pynative, monkeypatch):
    if channels == 64:                  # the MFA layer through MatMulNT, as at the published sizes
        monkeypatch.setattr(src.model.layers, "LARGE_MATMUL", 3 * channels)
    model, _, cfg = import_speechbrain_files(channels, tmp_path)
    encoder = speechbrain_encoder(model, tmp_path / "mean_var_norm_emb.ckpt")
    embedder = load_embedder(cfg, cfg.checkpoint)
    assert (embedder.network.mfa.conv.large_matmul is not None) == (channels == 64)
    waveforms = speech_waveforms(seed=channels)
    diffs, ours = assert_same_pipeline(lambda wav: encode(encoder, wav), embedder, waveforms)
    print(f"\nSpeechBrain C={channels}: max abs diff {format_diffs(diffs)}")
    # encode_batch(normalize=True) subtracts the statistics SpeechBrain read back: ours minus embedding_mean
    normalized = encode(encoder, waveforms[0], normalize=True)
    assert np.abs(ours[0] - read_embedding_mean(str(cfg.checkpoint)) - normalized).max() <= TOLERANCE


def test_a_mean_file_that_is_not_inputnormalization_statistics_is_refused(tmp_path):
    model = make_speechbrain_ecapa(64, seed=1)
    torch.save(model.state_dict(), tmp_path / "embedding_model.ckpt")
    mean_path = tmp_path / "mean_var_norm_emb.ckpt"
    args = ["--format", "speechbrain", "--recipe", str(tmp_path / "r.yaml"), str(tmp_path / "embedding_model.ckpt"),
            str(tmp_path / "out.ckpt")]
    for stats in ({"mean": torch.zeros(192)},                                        # no glob_mean
                  {"glob_mean": torch.zeros(100), "glob_std": torch.ones(100), "count": 3},   # not 192 values
                  torch.zeros(192)):                                                 # not a dict
        torch.save(stats, mean_path)
        with pytest.raises(CheckpointError) as error:
            main(args)
        assert str(mean_path) in str(error.value) and "InputNormalization" in str(error.value)
        assert not (tmp_path / "out.ckpt").exists()

    mean_path.unlink()                                                    # no mean file: no embedding_mean
    assert main(args) == 0
    assert read_embedding_mean(str(tmp_path / "out.ckpt")) is None
    assert "subtract_mean" not in (tmp_path / "r.yaml").read_text()


def test_speechbrain_names_map_to_ours():
    assert speechbrain_name("blocks.0.conv.conv.weight") == "blocks.0.conv.weight"
    assert speechbrain_name("blocks.2.se_block.conv1.conv.bias") == "blocks.2.se_block.conv1.bias"
    assert speechbrain_name("blocks.1.tdnn1.norm.norm.running_mean") == "blocks.1.tdnn1.norm.moving_mean"
    assert speechbrain_name("mfa.conv.conv.weight") == "mfa.conv.weight"
    assert speechbrain_name("asp_bn.norm.running_var") == "asp_bn.moving_variance"
    assert speechbrain_name("asp_bn.norm.weight") == "asp_bn.gamma"
    assert speechbrain_name("asp_bn.norm.num_batches_tracked") is None
    assert speechbrain_name("fc.conv.bias") == "fc.bias"
    assert speechbrain_name("weight") is None
