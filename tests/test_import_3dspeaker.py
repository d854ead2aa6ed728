"""Importing 3D-Speaker's ECAPA_TDNN weights (``python -m src.import_weights --format 3dspeaker``), checked against
3D-Speaker's own PyTorch model.

The reference is the PyPI copy of 3D-Speaker's code, ``speakerlab==0.0.6`` (installed with ``--no-deps`` by
scripts/setup_env.sh). Its ``speakerlab/models/ecapa_tdnn/ECAPA_TDNN.py`` was compared with upstream
modelscope/3D-Speaker (same path, commit 158c5954a5c0, read through the code-search corpus on 2026-12-02): the two
files are identical (13218 characters each, read side by side). The module imports torch only, and speakerlab's
package ``__init__`` files are empty.

Both networks get the same fbank tensor and run in eval mode with random weights and batch-norm statistics.
Measured max abs differences (50 / 123 frames): C=512 with global context 7.2e-7 / 7.2e-7, C=1024 MFA 3072 without
7.5e-7 / 8.9e-7; the test allows 1e-4.
"""
import pytest
import mindspore as ms

from src.checkpoint import CheckpointError, read_settings
from src.import_weights import main, speakerlab_name
from src.model.ecapa_tdnn import ECAPA_TDNN, model_settings
from tests.speechbrain_ref import randomize_batchnorm
from tests.torch_ref import assert_same_embeddings


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


@pytest.mark.parametrize("channels, mfa_channels, global_context", [
    (512, 1536, True),
    (1024, 3072, False),
])
def test_imported_weights_give_3dspeakers_embeddings(channels, mfa_channels, global_context, tmp_path, pynative):
    import torch
    model = make_speakerlab_ecapa(channels, mfa_channels, global_context, seed=channels)
    torch.save(model.state_dict(), tmp_path / "embedding_model.ckpt")
    out = tmp_path / "ours.ckpt"
    assert main(["--format", "3dspeaker", str(tmp_path / "embedding_model.ckpt"), str(out)]) == 0
    settings = read_settings(str(out))
    assert settings == dict(sample_rate=16000, front_end="kaldi", kaldi_window="povey", kaldi_scale_16bit=False,
                            kaldi_mean_norm=True, n_mels=80, channels=channels, mfa_channels=mfa_channels,
                            embedding_size=192, attention_channels=128, se_channels=128, res2net_scale=8,
                            global_context=global_context, padding="reflect", mfa_norm=True, attention_norm=True,
                            pooling_stats="speechbrain", embedding_norm=False)
    net = ECAPA_TDNN(**model_settings(settings))
    not_loaded, _ = ms.load_param_into_net(net, ms.load_checkpoint(str(out)))
    assert not not_loaded
    net.set_train(False)
    assert_same_embeddings(model, net, seed=channels)


def test_names_and_a_file_that_does_not_fit(tmp_path):
    import torch
    assert speakerlab_name("blocks.0.conv.conv.weight") == "blocks.0.conv.weight"
    assert speakerlab_name("blocks.3.res2net_block.blocks.6.norm.norm.running_var") == \
        "blocks.3.res2net_block.blocks.6.norm.moving_variance"
    assert speakerlab_name("asp_bn.norm.weight") == "asp_bn.gamma"
    assert speakerlab_name("fc.conv.bias") == "fc.bias"
    state = make_speakerlab_ecapa(64, 192, True, seed=1).state_dict()
    del state["asp.conv.conv.bias"]                                      # missing
    state["blocks.1.shortcut.conv.weight"] = torch.zeros(64, 64, 1)      # unexpected
    state["fc.conv.weight"] = torch.zeros(192, 100, 1)                   # mis-shaped
    path = tmp_path / "embedding_model.ckpt"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as error:
        main(["--format", "3dspeaker", str(path), str(tmp_path / "out.ckpt")])
    message = str(error.value)
    assert "missing: asp.conv.bias" in message
    assert "unexpected: blocks.1.shortcut.conv.weight" in message
    assert "mis-shaped: fc.conv.weight [192, 100, 1] (network expects [192, 384, 1])" in message
