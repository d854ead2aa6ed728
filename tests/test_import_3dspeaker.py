"""Importing 3D-Speaker's ECAPA_TDNN weights (``python -m src.import_weights --format 3dspeaker``), checked against
3D-Speaker's own code.

The reference is the PyPI copy of 3D-Speaker's code, ``speakerlab==0.0.6`` (installed with ``--no-deps`` by
scripts/setup_env.sh). Its ``speakerlab/models/ecapa_tdnn/ECAPA_TDNN.py`` was compared with upstream
modelscope/3D-Speaker (same path, commit 158c5954a5c0, read through the code-search corpus on 2026-12-02): the two
files are identical (13218 characters each, read side by side). The module imports torch only, and speakerlab's
package ``__init__`` files are empty.

The whole pipeline is compared, waveform in (:func:`test_imported_model_embeds_waveforms_as_3dspeaker`): the model
with random weights and random batch-norm statistics is saved as ``embedding_model.ckpt`` by speakerlab's own
Checkpointer, imported with the command line, and our Embedder built from the recipe file written must give
3D-Speaker's embedding of the same synthetic speech (tests/torch_ref.py ``speech_waveforms``) within 1e-4 max abs,
alone and in one padded batch. 3D-Speaker's side is its own code as ``speakerlab/bin/infer_sv.py`` runs it:
``speakerlab.process.processor.FBank(80, sample_rate=16000, mean_nor=True)`` on the waveform in [-1, 1]
(``torchaudio.compliance.kaldi.fbank`` with num_mel_bins, sample_frequency, dither 0 and torchaudio's defaults
otherwise, i.e. the povey window; then the mean over frames is subtracted), then the model. torchaudio cannot be
installed beside the pinned torch, so ``kaldi.fbank`` is a stand-in: kaldi-native-fbank configured with the options
FBank passes and torchaudio's defaults for the rest (tests/torch_ref.py ``torchaudio_kaldi_standin``); both
re-implement Kaldi's ``compute-fbank-feats`` in float32.

The published sizes (C=512 MFA 1536 with global context, C=1024 MFA 3072 without) are imported and checked for a
complete mapping: the settings, and every tensor of embedding_model.ckpt in our network, value for value
(:func:`test_full_size_import_maps_every_tensor`). The waveform-in comparison runs the same import code with the
same options at C=32 MFA 96 and C=64 MFA 192 (the C=64 case sends the MFA layer through MatMulNT, which the
published sizes use there; tests/test_ecapa_tdnn.py compares full-size networks with SpeechBrain's, whose layout
3D-Speaker's copies): max abs differences printed under ``-s``; the test allows 1e-4.
"""
import pytest

import src.model.layers
from src.checkpoint import CheckpointError, load_embedder, read_settings
from src.config import load_config
from src.import_weights import main, speechbrain_name
from tests.import_mapping import assert_complete_mapping, load_recipe_network
from tests.speechbrain_ref import randomize_batchnorm
from tests.torch_ref import assert_same_pipeline, format_diffs, speech_waveforms, torchaudio_kaldi_standin


def make_speakerlab_ecapa(channels, mfa_channels, global_context, seed):
    """3D-Speaker's ECAPA_TDNN (80 mels, embedding 192) in eval mode, random weights and batch norms; skips the
    test when torch or speakerlab is missing."""
    torch = pytest.importorskip("torch", reason="the 3D-Speaker reference needs PyTorch")
    module = pytest.importorskip("speakerlab.models.ecapa_tdnn.ECAPA_TDNN",
                                 reason="3D-Speaker's model code is not installed: pip install --no-deps "
                                        "speakerlab==0.0.6 (scripts/setup_env.sh)")
    torch.manual_seed(seed)
    model = module.ECAPA_TDNN(80, channels=[channels] * 4 + [mfa_channels], global_context=global_context)
    return randomize_batchnorm(model, seed=seed).eval()


def save_with_speakerlab(model, folder):
    """Save ``model`` with speakerlab's own Checkpointer (speakerlab/utils/checkpoint.py) as the recoverable
    ``embedding_model`` (the name its bin/extract.py loads) -> the ``embedding_model.ckpt`` it wrote."""
    checkpoint = pytest.importorskip("speakerlab.utils.checkpoint", reason="3D-Speaker's code is not installed")
    checkpoint.Checkpointer(folder, recoverables={"embedding_model": model}).save_checkpoint(epoch=1)
    (path,) = folder.glob("*/embedding_model.ckpt")
    return path


def speakerlab_fbank():
    """3D-Speaker's own front end as its bin/infer_sv.py builds it, ``FBank(80, sample_rate=16000, mean_nor=True)``
    (speakerlab/process/processor.py), its ``torchaudio.compliance.kaldi`` the kaldi-native-fbank stand-in."""
    torchaudio_kaldi_standin()
    processor = pytest.importorskip("speakerlab.process.processor", reason="3D-Speaker's code is not installed")
    return processor.FBank(80, sample_rate=16000, mean_nor=True)


def import_speakerlab_file(channels, mfa_channels, global_context, tmp_path):
    """3D-Speaker's model of these sizes saved by speakerlab's Checkpointer and imported with the command line; the
    settings and recipe checked -> (model, recipe config)."""
    model = make_speakerlab_ecapa(channels, mfa_channels, global_context, seed=channels)
    source = save_with_speakerlab(model, tmp_path / "checkpoints")
    out, recipe = tmp_path / "ours.ckpt", tmp_path / "recipe.yaml"
    assert main(["--format", "3dspeaker", "--recipe", str(recipe), str(source), str(out)]) == 0
    settings = read_settings(str(out))
    assert settings == dict(sample_rate=16000, front_end="kaldi", kaldi_window="povey", kaldi_scale_16bit=False,
                            kaldi_mean_norm=True, n_mels=80, channels=channels, mfa_channels=mfa_channels,
                            embedding_size=192, attention_channels=128, se_channels=128, res2net_scale=8,
                            global_context=global_context, padding="reflect", mfa_norm=True, attention_norm=True,
                            pooling_stats="speechbrain", embedding_norm=False,
                            kernel_sizes=[5, 3, 3, 3, 1], dilations=[1, 2, 3, 4, 1])
    cfg = load_config(["--config", str(recipe)])
    assert cfg.checkpoint == str(out)
    return model, cfg


@pytest.mark.parametrize("channels, mfa_channels, global_context", [
    (512, 1536, True),
    (1024, 3072, False),
])
def test_full_size_import_maps_every_tensor(channels, mfa_channels, global_context, tmp_path):
    """The published sizes: the settings (above), and every tensor of 3D-Speaker's state_dict in our network built
    from the recipe file, value for value."""
    model, cfg = import_speakerlab_file(channels, mfa_channels, global_context, tmp_path)
    network, _, _ = load_recipe_network(tmp_path / "recipe.yaml")
    assert_complete_mapping(network, model.state_dict(), speechbrain_name)


@pytest.mark.parametrize("channels, mfa_channels, global_context", [
    (32, 96, True),
    (64, 192, False),
])
def test_imported_model_embeds_waveforms_as_3dspeaker(channels, mfa_channels, global_context, tmp_path, pynative,
                                                      monkeypatch):
    """Waveform in: our Embedder of the imported embedding_model.ckpt equals infer_sv.py's compute_embedding
    (FBank, then the model), for two lengths alone and in a padded batch."""
    import torch
    if channels == 64:                  # the MFA layer through MatMulNT, as at the published sizes
        monkeypatch.setattr(src.model.layers, "LARGE_MATMUL", mfa_channels)
    model, cfg = import_speakerlab_file(channels, mfa_channels, global_context, tmp_path)
    embedder = load_embedder(cfg, cfg.checkpoint)
    assert (embedder.network.mfa.conv.large_matmul is not None) == (channels == 64)
    fbank = speakerlab_fbank()

    def peer_embed(wav):
        with torch.no_grad():
            return model(fbank(torch.from_numpy(wav)).unsqueeze(0)).squeeze(0).numpy()

    diffs, _ = assert_same_pipeline(peer_embed, embedder, speech_waveforms(seed=channels))
    print(f"\n3D-Speaker C={channels} MFA {mfa_channels}: max abs diff {format_diffs(diffs)}")


def test_names_and_a_file_that_does_not_fit(tmp_path):
    import torch
    assert speechbrain_name("blocks.0.conv.conv.weight") == "blocks.0.conv.weight"
    assert speechbrain_name("blocks.3.res2net_block.blocks.6.norm.norm.running_var") == \
        "blocks.3.res2net_block.blocks.6.norm.moving_variance"
    assert speechbrain_name("asp_bn.norm.weight") == "asp_bn.gamma"
    assert speechbrain_name("fc.conv.bias") == "fc.bias"
    state = make_speakerlab_ecapa(64, 192, True, seed=1).state_dict()
    del state["asp.conv.conv.bias"]                                      # missing
    state["blocks.1.shortcut.conv.weight"] = torch.zeros(64, 64, 1)      # unexpected
    state["fc.conv.weight"] = torch.zeros(192, 100, 1)                   # mis-shaped
    path = tmp_path / "embedding_model.ckpt"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as error:
        main(["--format", "3dspeaker", "--recipe", str(tmp_path / "recipe.yaml"), str(path),
              str(tmp_path / "out.ckpt")])
    message = str(error.value)
    assert "1 missing, 1 unexpected, 1 mis-shaped tensors" in message
    assert "missing: asp.conv.bias" in message
    assert "unexpected: blocks.1.shortcut.conv.weight" in message
    assert "mis-shaped: fc.conv.weight [192, 100, 1] (network expects [192, 384, 1])" in message
    assert "shortcut convolution" in message and "takes 100 inputs, not 2 x the MFA's 192" in message
    full_list = (tmp_path / "out.mismatch.txt").read_text()
    assert "missing asp.conv.bias" in full_list and "unexpected blocks.1.shortcut.conv.weight" in full_list
