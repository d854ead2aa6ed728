"""Importing WeSpeaker's ECAPA_TDNN weights (``python -m src.import_weights --format wespeaker``), checked against
WeSpeaker's own model and front end.

The reference is the PyPI copy of WeSpeaker's code, ``wespeaker-nuaazs==0.0.5`` (installed with ``--no-deps`` by
scripts/setup_env.sh). Its ``wespeaker_nuaazs/models/ecapa_tdnn.py`` and the ``ASTP`` class of
``pooling_layers.py`` were compared with upstream wenet-e2e/wespeaker (``wespeaker/models/ecapa_tdnn.py`` at
commit dc3c3bfd1b36, ``pooling_layers.py`` at 6b149b3afe6b, read through the code-search corpus on 2026-12-02):
the ECAPA file is identical except for the package name in its one import (same length, 9021 characters, once
``wespeaker_nuaazs.`` reads ``wespeaker.``), ASTP is identical (global-context ``torch.var + 1e-7``, pooled
``var.clamp(min=1e-7)``, MFA output fixed at 512 * 3, ``emb_bn``).

The package's ``__init__`` imports its command line (torchaudio, silero_vad, ...), so :func:`wespeaker_models`
registers an empty stand-in package pointing at the installed folder and imports only the model modules, which
import torch alone.

The whole pipeline is compared, waveform in (:func:`test_imported_model_embeds_waveforms_as_wespeaker`): WeSpeaker's
model with random weights and random batch-norm statistics is saved as ``avg_model.pt``, imported with the command
line, and our Embedder built from the recipe file written must give WeSpeaker's embedding of the same synthetic
speech (tests/torch_ref.py ``speech_waveforms``) within 1e-4 max abs, alone and in one padded batch. WeSpeaker's
front end (:func:`wespeaker_embed`) follows upstream ``wespeaker/dataset/processor.py`` (commit 03620b7718df, read
through the code-search corpus; the PyPI copy does not ship ``dataset/``): ``compute_fbank`` scales the waveform by
``1 << 15`` and calls ``torchaudio.compliance.kaldi.fbank(num_mel_bins=80, frame_length=25, frame_shift=10,
dither, sample_frequency=16000, window_type='hamming', use_energy=False)`` with dither 0.0 as
``wespeaker/bin/extract.py`` sets it for extraction, then ``apply_cmvn`` subtracts the mean over frames. torchaudio
cannot be installed beside the pinned torch, so ``kaldi.fbank`` is a stand-in: kaldi-native-fbank configured with
the same options and torchaudio's defaults for the rest (tests/torch_ref.py ``torchaudio_kaldi_standin``); both
re-implement Kaldi's ``compute-fbank-feats`` in float32 (tests/test_kaldi_fbank.py compares ours with it).

The published sizes (ECAPA_TDNN_c512, ECAPA_TDNN_GLOB_c1024 with emb_bn) are imported and checked for a complete
mapping: the settings, and every tensor of avg_model.pt in our network, in place
(:func:`test_full_size_import_maps_every_tensor`). The waveform-in comparison runs the same import code with the same
options at C=32 and C=64 (the MFA layer stays at WeSpeaker's fixed 1536; the C=64 case sends it through MatMulNT,
which the published sizes use there; tests/test_ecapa_tdnn.py compares full-size networks with SpeechBrain's):
max abs differences are printed under ``-s``; the test allows 1e-4. The PyPI copy's own command line
(``cli/speaker.py`` ``Speaker.compute_fbank``, like upstream's at 00c0a269f535) calls kaldi.fbank without
``window_type``, i.e. torchaudio's povey window, unlike the recipe's training and extraction; with that window the
embedding moves by far more than the tolerance, which the test also checks (the window is visible through the
pipeline). We follow
the recipe (hamming).
"""
import importlib
import importlib.util
import sys
import types

import numpy as np
import pytest
import mindspore as ms

from src.checkpoint import CheckpointError, load_embedder, read_settings
from src.config import load_config
from src.import_weights import (WESPEAKER_MODEL_CONFIG, convert_wespeaker_params, main, wespeaker_name,
                                wespeaker_settings)
import src.model.layers
from src.model.ecapa_tdnn import ECAPA_TDNN
from tests.import_mapping import assert_complete_mapping, load_recipe_network
from tests.speechbrain_ref import randomize_batchnorm
from tests.torch_ref import (TOLERANCE, assert_same_pipeline, format_diffs, speech_waveforms,
                             torchaudio_kaldi_standin)

PACKAGE = "wespeaker_nuaazs"
INSTALL = "pip install --no-deps wespeaker-nuaazs==0.0.5 (scripts/setup_env.sh)"


def wespeaker_models():
    """WeSpeaker's ``models.ecapa_tdnn`` module, without running the package's ``__init__``; skips the test when
    torch or the package is missing."""
    pytest.importorskip("torch", reason="the WeSpeaker reference needs PyTorch")
    if PACKAGE not in sys.modules:
        spec = importlib.util.find_spec(PACKAGE)
        if spec is None:
            pytest.skip(f"WeSpeaker's model code is not installed: {INSTALL}")
        package = types.ModuleType(PACKAGE)
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules[PACKAGE] = package
    return importlib.import_module(f"{PACKAGE}.models.ecapa_tdnn")


def make_wespeaker_ecapa(channels, global_context, emb_bn, seed):
    """WeSpeaker's ECAPA_TDNN (80 mels, embedding 192, ASTP) in eval mode, random weights and batch norms."""
    import torch
    torch.manual_seed(seed)
    model = wespeaker_models().ECAPA_TDNN(channels=channels, feat_dim=80, embed_dim=192, pooling_func="ASTP",
                                          global_context_att=global_context, emb_bn=emb_bn)
    return randomize_batchnorm(model, seed=seed).eval()


def save_avg_model(model, path, num_classes=0):
    """torch.save of the state_dict, as WeSpeaker's average_model.py writes avg_model.pt; with ``num_classes``
    also the training head's ``projection.weight`` (ArcMarginProduct, (classes, 192))."""
    import torch
    state = model.state_dict()
    if num_classes:
        state["projection.weight"] = torch.randn(num_classes, 192)
    torch.save(state, path)
    return state


def wespeaker_args(folder, source, out):
    """The importer's command line for ``source`` -> ``out``, its recipe file in ``folder``."""
    return ["--format", "wespeaker", "--recipe", str(folder / "recipe.yaml"), str(source), str(out)]


def wespeaker_embed(model, wav):
    """WeSpeaker's own extraction of one float32 (S,) waveform in [-1, 1] (module docstring: processor.py's
    compute_fbank with dither 0 and apply_cmvn, then the model) -> (192,) numpy. ``torchaudio.compliance.kaldi``
    is the kaldi-native-fbank stand-in (tests/torch_ref.py)."""
    import torch
    kaldi = torchaudio_kaldi_standin()
    waveform = torch.from_numpy(wav)[None] * (1 << 15)
    mat = kaldi.fbank(waveform, num_mel_bins=80, frame_length=25, frame_shift=10, dither=0.0,
                      sample_frequency=16000, window_type="hamming", use_energy=False)
    mat = mat - torch.mean(mat, dim=0)
    with torch.no_grad():
        return model(mat[None])[0].numpy()


def import_avg_model(path, folder):
    """Import ``path`` with the command line -> (its settings, our Embedder built from the recipe file written)."""
    out = folder / "ours.ckpt"
    assert main(wespeaker_args(folder, path, out)) == 0
    cfg = load_config(["--config", str(folder / "recipe.yaml")])
    assert cfg.checkpoint == str(out)
    return read_settings(str(out)), load_embedder(cfg, cfg.checkpoint)


def expected_settings(channels, global_context, emb_bn):
    """What the importer derives from WeSpeaker's ECAPA_TDNN of these options."""
    return dict(sample_rate=16000, front_end="kaldi", kaldi_window="hamming", kaldi_scale_16bit=True,
                kaldi_mean_norm=True, n_mels=80, channels=channels, mfa_channels=1536, embedding_size=192,
                attention_channels=128, se_channels=128, res2net_scale=8, global_context=global_context,
                embedding_norm=emb_bn, **WESPEAKER_MODEL_CONFIG, kernel_sizes=[5, 3, 3, 3, 1],
                dilations=[1, 2, 3, 4, 1])


@pytest.mark.parametrize("channels, global_context, emb_bn", [
    (512, False, False),       # ECAPA_TDNN_c512
    (1024, True, True),        # ECAPA_TDNN_GLOB_c1024 with emb_bn
])
def test_full_size_import_maps_every_tensor(channels, global_context, emb_bn, tmp_path):
    """The published sizes imported with the command line: the settings, and every tensor of avg_model.pt in our
    network (tdnn1's and tdnn2's channels reordered by the Res2Net split, test_split_order_is_folded_into_tdnn1_and_
    tdnn2)."""
    model = make_wespeaker_ecapa(channels, global_context, emb_bn, seed=channels)
    save_avg_model(model, tmp_path / "avg_model.pt")
    assert main(wespeaker_args(tmp_path, tmp_path / "avg_model.pt", tmp_path / "ours.ckpt")) == 0
    network, settings, cfg = load_recipe_network(tmp_path / "recipe.yaml")
    assert cfg.checkpoint == str(tmp_path / "ours.ckpt")
    assert settings == expected_settings(channels, global_context, emb_bn)
    assert_complete_mapping(network, model.state_dict(), wespeaker_name, reordered=(".tdnn1.", ".tdnn2."))


@pytest.mark.parametrize("channels, global_context, emb_bn", [
    (32, False, False),        # ECAPA_TDNN_c512's options
    (64, True, True),          # ECAPA_TDNN_GLOB_c1024's options with emb_bn
])
def test_imported_model_embeds_waveforms_as_wespeaker(channels, global_context, emb_bn, tmp_path, pynative,
                                                      monkeypatch):
    """Waveform in: our Embedder of the imported avg_model.pt equals WeSpeaker's front end + model, for two lengths
    alone and in a padded batch."""
    if channels == 64:                  # the MFA layer through MatMulNT, as at the published sizes
        monkeypatch.setattr(src.model.layers, "LARGE_MATMUL", 3 * channels)
    model = make_wespeaker_ecapa(channels, global_context, emb_bn, seed=channels)
    save_avg_model(model, tmp_path / "avg_model.pt")
    settings, embedder = import_avg_model(tmp_path / "avg_model.pt", tmp_path)
    assert settings == expected_settings(channels, global_context, emb_bn)
    assert (embedder.network.mfa.conv.large_matmul is not None) == (channels == 64)
    waveforms = speech_waveforms(seed=channels)
    diffs, _ = assert_same_pipeline(lambda wav: wespeaker_embed(model, wav), embedder, waveforms)
    print(f"\nWeSpeaker C={channels}: max abs diff {format_diffs(diffs)}")
    if channels == 32:
        # the window matters: the PyPI copy's cli/speaker.py (torchaudio's default povey window) is far off
        import torch
        feats = torchaudio_kaldi_standin().fbank(torch.from_numpy(waveforms[0])[None] * (1 << 15),
                                                 num_mel_bins=80)
        with torch.no_grad():
            povey = model((feats - feats.mean(dim=0))[None])[0].numpy()
        moved = float(np.abs(povey - wespeaker_embed(model, waveforms[0])).max())
        print(f"WeSpeaker C={channels} with the povey window instead: moved by {moved:.2e}")
        assert moved > 10 * TOLERANCE


def test_classifier_kept_and_names_mapped(tmp_path):
    model = make_wespeaker_ecapa(64, False, False, seed=1)
    state = save_avg_model(model, tmp_path / "avg_model.pt", num_classes=7)
    out = tmp_path / "ours.ckpt"
    assert main(wespeaker_args(tmp_path, str(tmp_path / "avg_model.pt"), str(out))) == 0
    converted = ms.load_checkpoint(str(out))
    np.testing.assert_array_equal(converted["classifier.weight"].asnumpy(), state["projection.weight"].numpy())
    np.testing.assert_array_equal(converted["blocks.2.se_block.conv1.weight"].asnumpy()[:, :, 0],
                                  state["layer3.se_res2block.3.linear1.weight"].numpy())
    np.testing.assert_array_equal(converted["asp_bn.moving_variance"].asnumpy(), state["bn.running_var"].numpy())
    assert wespeaker_name("layer2.se_res2block.1.bns.3.running_var") == \
        "blocks.1.res2net_block.blocks.3.norm.moving_variance"
    assert wespeaker_name("bn2.weight") == "fc_bn.gamma" and wespeaker_name("linear.bias") == "fc.bias"
    assert wespeaker_name("layer9.something.weight") is None


def test_split_order_is_folded_into_tdnn1_and_tdnn2():
    """Our tdnn1 output channel c is WeSpeaker's (c - width) mod C; tdnn2's input channels likewise; the Res2Net
    sub-blocks keep their order."""
    model = make_wespeaker_ecapa(64, False, False, seed=2)
    state = {name: value.numpy() for name, value in model.state_dict().items()}
    net = ECAPA_TDNN(**wespeaker_settings(state))
    ours, classifier = convert_wespeaker_params(state, net)
    assert classifier is None
    width = 64 // 8
    order = np.concatenate([np.arange(64 - width, 64), np.arange(64 - width)])
    np.testing.assert_array_equal(ours["blocks.1.tdnn1.conv.weight"], state["layer2.se_res2block.0.conv.weight"][order])
    np.testing.assert_array_equal(ours["blocks.3.tdnn1.norm.moving_mean"],
                                  state["layer4.se_res2block.0.bn.running_mean"][order])
    np.testing.assert_array_equal(ours["blocks.2.tdnn2.conv.weight"],
                                  state["layer3.se_res2block.2.conv.weight"][:, order])
    np.testing.assert_array_equal(ours["blocks.1.res2net_block.blocks.0.conv.weight"],
                                  state["layer2.se_res2block.1.convs.0.weight"])


def test_file_that_does_not_fit_is_refused_naming_the_problems(tmp_path):
    import torch
    model = make_wespeaker_ecapa(64, False, False, seed=3)
    state = model.state_dict()
    del state["conv.bias"]                                                # missing
    state["layer5.conv.weight"] = torch.zeros(3)                          # unexpected
    state["layer2.se_res2block.0.conv.weight"] = torch.zeros(64, 32, 1)   # mis-shaped
    path = tmp_path / "avg_model.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as error:
        main(wespeaker_args(tmp_path, str(path), str(tmp_path / "out.ckpt")))
    message = str(error.value)
    assert str(path) in message
    assert "missing: mfa.conv.bias" in message
    assert "unexpected: layer5.conv.weight" in message
    assert "mis-shaped: layer2.se_res2block.0.conv.weight [64, 32, 1] (network expects [64, 64, 1])" in message
    assert "layout: 3 SE-Res2Blocks (kernels 3, 3, 3), channels 64" in message
    assert not (tmp_path / "out.ckpt").exists()

    torch.save([1, 2, 3], path)                                           # not a state_dict
    with pytest.raises(CheckpointError, match="expected a state_dict"):
        main(wespeaker_args(tmp_path, str(path), str(tmp_path / "out.ckpt")))
    path.write_bytes(b"import os; os.system('echo no')")                 # not a torch file at all
    with pytest.raises(CheckpointError, match="weights_only"):
        main(wespeaker_args(tmp_path, str(path), str(tmp_path / "out.ckpt")))


def test_missing_pytorch_is_named(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)          # import torch now raises ImportError
    with pytest.raises(CheckpointError, match="needs PyTorch"):
        main(wespeaker_args(tmp_path, str(tmp_path / "avg_model.pt"), str(tmp_path / "out.ckpt")))
