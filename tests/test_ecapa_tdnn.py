"""ECAPA-TDNN: parameter counts, shapes, length masking, and equality with SpeechBrain's PyTorch ECAPA_TDNN.

A GRAPH-mode compile takes 10-25 s here, so only the tests of the compiled paths (no lengths, lengths with both
padding modes) compile; the comparisons with SpeechBrain run the same Cells in PYNATIVE mode (``pynative``).
"""
import numpy as np
import pytest
import mindspore as ms

from src.config import load_config
import src.model.layers
from src.model.ecapa_tdnn import ECAPA_TDNN, TDNNBlock, build_ecapa, inference_network, network_settings
from src.model.layers import (BN_EPS, LARGE_MATMUL, BatchNorm, BatchNormTrain, Conv1d, MatMulNT, frame_mask,
                               frame_mean_std)
from tests.modes import op_by_op
from tests.speechbrain_ref import (copy_speechbrain_to_mindspore, make_speechbrain_ecapa, mindspore_name,
                                   randomize_batchnorm, speechbrain_embed)

TOLERANCE = 1e-5


def trainable_count(net):
    return sum(int(np.prod(p.shape)) for p in net.trainable_params())


def randomize_our_batchnorm(net, seed=0):
    """Realistic running statistics and affine parameters for every batch norm of our network."""
    rng = np.random.default_rng(seed)
    for p in net.get_parameters():
        n = p.shape[0]
        leaf = p.name.rsplit(".", 1)[1]
        values = {"moving_mean": lambda: rng.normal(0.0, 0.5, n), "moving_variance": lambda: rng.uniform(0.3, 2.0, n),
                  "gamma": lambda: rng.uniform(0.5, 1.5, n), "beta": lambda: rng.normal(0.0, 0.2, n)}
        if leaf in values:
            p.set_data(ms.Tensor(values[leaf]().astype(np.float32)))
    return net


@pytest.mark.parametrize("channels, mfa_channels, global_context, expected", [
    (512, 1536, True, 6_194_048),
    (1024, 3072, True, 20_767_552),
    (1024, 1536, True, 14_660_416),
    (1024, 3072, False, 19_981_120),     # the older zoo's configuration
])
def test_trainable_parameter_count(channels, mfa_channels, global_context, expected):
    net = ECAPA_TDNN(channels=channels, mfa_channels=mfa_channels, global_context=global_context)
    assert trainable_count(net) == expected


def test_forward_features_shapes_and_embedding(pynative):
    net = ECAPA_TDNN(channels=32, mfa_channels=96, embedding_size=24, attention_channels=16, se_channels=8)
    net.set_train(False)
    feats = ms.Tensor(np.random.default_rng(0).normal(size=(2, 37, 80)).astype(np.float32))
    blocks, pooled, embedding = net.forward_features(feats)
    assert len(blocks) == 4 and all(tuple(b.shape) == (2, 37, 32) for b in blocks)
    assert tuple(pooled.shape) == (2, 192)
    assert tuple(embedding.shape) == (2, 24)


def assert_padded_equal_alone(net, lengths, seed):
    """Each utterance of a padded batch (padding filled with large garbage), run compiled (GRAPH), equals the
    utterance run alone (PYNATIVE) -> (feats, batched embeddings)."""
    net.set_train(False)
    rng = np.random.default_rng(seed)
    frames = int(max(lengths))
    feats = rng.normal(size=(len(lengths), frames, 80)).astype(np.float32)
    for i, n in enumerate(lengths):
        feats[i, n:] = 100.0 * rng.normal(size=(frames - n, 80))
    batched = net(ms.Tensor(feats), ms.Tensor(np.array(lengths, np.int32))).asnumpy()
    with op_by_op():
        for i, n in enumerate(lengths):
            alone = net(ms.Tensor(feats[i:i + 1, :n])).asnumpy()[0]
            assert np.abs(batched[i] - alone).max() <= TOLERANCE, f"utterance {i} ({n} of {frames} frames)"
    return feats, batched


@pytest.mark.parametrize("padding", ["reflect", "zeros"])
def test_padded_utterance_gets_its_embedding_alone(padding):
    net = randomize_our_batchnorm(ECAPA_TDNN(channels=32, mfa_channels=96, attention_channels=16, se_channels=8,
                                             padding=padding))
    feats, batched = assert_padded_equal_alone(net, [50, 31, 9], seed=1)
    # the padding does change the embedding when no lengths are given (the masking is what removes it); op by op
    with op_by_op():
        unmasked = net(ms.Tensor(feats)).asnumpy()
    assert np.abs(unmasked[2] - batched[2]).max() > 1e-2


@pytest.mark.parametrize("channels, mfa_channels, global_context, padding, batch, frames", [
    (512, 1536, True, "reflect", 3, 60),
    (512, 1536, False, "reflect", 3, 60),
    (1024, 3072, True, "reflect", 2, 40),
    (1024, 3072, False, "reflect", 2, 40),
    (64, 192, False, "zeros", 3, 60),     # zero padding (older zoo) against SpeechBrain with constant padding
])
def test_matches_speechbrain(channels, mfa_channels, global_context, padding, batch, frames, pynative):
    sb = randomize_batchnorm(make_speechbrain_ecapa(channels, mfa_channels, global_context=global_context,
                                                    padding=padding), seed=channels)
    net = ECAPA_TDNN(channels=channels, mfa_channels=mfa_channels, global_context=global_context, padding=padding)
    copy_speechbrain_to_mindspore(sb, net)
    net.set_train(False)
    rng = np.random.default_rng(2)
    feats = rng.normal(size=(batch, frames, 80)).astype(np.float32)
    lengths = np.array([frames] + [frames - 9 * (i + 1) for i in range(batch - 1)], np.int32)

    ours = net(ms.Tensor(feats)).asnumpy()
    reference = speechbrain_embed(sb, feats)
    assert np.abs(reference).max() > 0.1
    assert np.abs(ours - reference).max() <= TOLERANCE

    ours_masked = net(ms.Tensor(feats), ms.Tensor(lengths)).asnumpy()
    for i, n in enumerate(lengths):      # SpeechBrain on each utterance cropped to its length, alone
        alone = speechbrain_embed(sb, feats[i:i + 1, :n])[0]
        assert np.abs(ours_masked[i] - alone).max() <= TOLERANCE, f"utterance {i} ({n} frames)"
    # SpeechBrain batched with lengths pads at the batch's end: it agrees on the full-length row only
    reference_masked = speechbrain_embed(sb, feats, lengths)
    assert np.abs(ours_masked[0] - reference_masked[0]).max() <= TOLERANCE


@pytest.mark.parametrize("large_matmul", [LARGE_MATMUL, 1])
def test_training_gradients_match_speechbrain(large_matmul, pynative, monkeypatch):
    """Train mode (batch statistics in every batch norm): gradients of a random projection of the embeddings, and
    the batch norms' moving statistics after that one forward pass. With ``large_matmul`` 1 every convolution
    uses MatMulNT and its hand-written backward (at the default only layers of >= 1536 channels do).

    The gradients are compared with SpeechBrain run in float64 (the exact answer for these weights): train-mode
    batch norm on 120 frames amplifies float32 rounding, so two float32 implementations differ by more than either
    differs from float64. Measured over 8 weight seeds: ours <= 1e-4, PyTorch float32 <= 3e-5 (relative)."""
    import copy
    import torch
    torch.manual_seed(0)        # fixed weights: the suite's earlier tests must not change the instance
    sb = randomize_batchnorm(make_speechbrain_ecapa(64, 192, attention_channels=16, se_channels=16), seed=3)
    sb.train()
    sb64 = copy.deepcopy(sb).double()
    monkeypatch.setattr(src.model.layers, "LARGE_MATMUL", large_matmul)
    net = ECAPA_TDNN(channels=64, mfa_channels=192, attention_channels=16, se_channels=16)
    assert (net.mfa.conv.large_matmul is not None) == (large_matmul == 1)
    copy_speechbrain_to_mindspore(sb, net)
    net.set_train(True)
    rng = np.random.default_rng(4)
    feats = rng.normal(size=(4, 30, 80)).astype(np.float32)
    projection = rng.normal(size=(4, 192)).astype(np.float32)

    sb(torch.from_numpy(feats))                                   # updates the float32 running statistics
    out = sb64(torch.from_numpy(feats).double())[:, 0]
    (out * torch.from_numpy(projection).double()).sum().backward()
    reference = {name: p.grad.numpy() for name, p in sb64.named_parameters()}

    params = net.trainable_params()

    def objective(x, w):
        return (net(x) * w).sum()

    grads = ms.grad(objective, grad_position=None, weights=params)(ms.Tensor(feats), ms.Tensor(projection))
    ours = {p.name: g.asnumpy() for p, g in zip(params, grads)}
    for name, g_ref in reference.items():
        g = ours[mindspore_name(name)]
        # tolerance relative to the gradient's size, floored at 1 (asp.conv.bias has an exactly-zero gradient)
        assert np.abs(g - g_ref).max() <= 1e-3 * max(np.abs(g_ref).max(), 1.0), name
    ours_state = {p.name: p.asnumpy() for p in net.get_parameters()}
    for name, value in sb.state_dict().items():
        if name.endswith(("running_mean", "running_var")):
            np.testing.assert_allclose(ours_state[mindspore_name(name)], value.numpy(), rtol=1e-3, atol=1e-5,
                                       err_msg=name)


def test_matmul_nt_gradients_and_when_conv1d_uses_it():
    """MatMulNT's hand-written backward gives the gradients of x @ w^T (float64 NumPy reference); Conv1d uses it
    when k * in and out are both >= LARGE_MATMUL (in the default network: the MFA layer)."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(7, 24)).astype(np.float32)
    w = rng.normal(size=(40, 24)).astype(np.float32)
    projection = rng.normal(size=(7, 40)).astype(np.float32)
    matmul = MatMulNT()

    def objective(a, b):
        return (matmul(a, b) * ms.Tensor(projection)).sum()

    dx, dw = ms.grad(objective, grad_position=(0, 1))(ms.Tensor(x), ms.Tensor(w))
    np.testing.assert_allclose(matmul(ms.Tensor(x), ms.Tensor(w)).asnumpy(), x.astype(np.float64) @ w.T,
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx.asnumpy(), projection.astype(np.float64) @ w, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dw.asnumpy(), projection.astype(np.float64).T @ x, rtol=1e-5, atol=1e-5)
    assert Conv1d(LARGE_MATMUL, LARGE_MATMUL).large_matmul is not None
    assert Conv1d(LARGE_MATMUL // 3, LARGE_MATMUL, kernel_size=3).large_matmul is not None
    assert Conv1d(1024, 1024).large_matmul is None and Conv1d(3072, 128).large_matmul is None
    assert ECAPA_TDNN(channels=512, mfa_channels=1536).mfa.conv.large_matmul is not None


def test_batch_norm_train_backward_equals_the_float64_gradients(pynative):
    """BatchNormTrain's written-out backward gives the gradients of sum(y * projection) for x, gamma and beta that
    float64 autograd of the textbook batch norm (biased batch variance) gives, and its statistics are the batch's."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(50, 6)) * [1, 5, 0.1, 2, 3, 1] + [0, 3, -1, 10, 0, 2]).astype(np.float32)
    gamma = rng.uniform(0.5, 2.0, 6).astype(np.float32)
    beta = rng.normal(size=6).astype(np.float32)
    projection = rng.normal(size=(50, 6)).astype(np.float32)
    norm = BatchNormTrain()

    def objective(rows, g, b):
        return (norm(rows, g, b)[0] * ms.Tensor(projection)).sum()
    grads = ms.grad(objective, grad_position=(0, 1, 2))(ms.Tensor(x), ms.Tensor(gamma), ms.Tensor(beta))
    y, mean, var, _, _ = norm(ms.Tensor(x), ms.Tensor(gamma), ms.Tensor(beta))

    tx, tg, tb = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, gamma, beta))
    ty = (tx - tx.mean(0)) / torch.sqrt(tx.var(0, unbiased=False) + BN_EPS) * tg + tb
    (ty * torch.tensor(projection, dtype=torch.float64)).sum().backward()
    np.testing.assert_allclose(y.asnumpy(), ty.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mean.asnumpy(), x.astype(np.float64).mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(var.asnumpy(), x.astype(np.float64).var(0), rtol=1e-5, atol=1e-5)
    for ours, reference in zip(grads, (tx.grad, tg.grad, tb.grad)):
        np.testing.assert_allclose(ours.asnumpy(), reference.numpy(), rtol=1e-4, atol=1e-4)


def test_build_ecapa_and_bad_padding():
    cfg = load_config(["--channels", "32", "--mfa_channels", "96", "--global_context", "false",
                       "--padding", "zeros", "--embedding_size", "16"])
    net = build_ecapa(cfg)
    assert net.padding == "zeros" and not net.asp.global_context
    assert tuple(net.fc.weight.shape) == (16, 192, 1)
    assert tuple(net.blocks[0].conv.weight.shape) == (32, 80, 5)
    with pytest.raises(ValueError, match="padding"):
        ECAPA_TDNN(channels=32, mfa_channels=96, padding="circular")


# ---------------------------------------------------------------- architecture variants (WeSpeaker's network)
VARIANT_DEFAULTS = dict(mfa_norm=True, attention_norm=True, pooling_stats="speechbrain", embedding_norm=False)
WESPEAKER_VARIANTS = dict(padding="zeros", mfa_norm=False, attention_norm=False, pooling_stats="wespeaker",
                          embedding_norm=True)
SMALL = dict(channels=32, mfa_channels=96, attention_channels=16, se_channels=8)


def test_variant_defaults_are_todays_network():
    """Constructor and recipe default to SpeechBrain's network: same parameters as before the variant keys."""
    net = ECAPA_TDNN(**SMALL)
    assert {key: network_settings(net)[key] for key in VARIANT_DEFAULTS} == VARIANT_DEFAULTS
    cfg = load_config([])
    assert {key: cfg[key] for key in VARIANT_DEFAULTS} == VARIANT_DEFAULTS
    names = {p.name for p in net.get_parameters()}
    assert {"mfa.norm.gamma", "asp.tdnn.norm.moving_mean"} <= names
    assert not any(name.startswith("fc_bn.") for name in names)


@pytest.mark.parametrize("key, value, removed, added", [
    ("mfa_norm", False, "mfa.norm.", None),
    ("attention_norm", False, "asp.tdnn.norm.", None),
    ("embedding_norm", True, None, "fc_bn."),
    ("pooling_stats", "wespeaker", None, None),
])
def test_each_variant_key_changes_the_network(key, value, removed, added, pynative):
    """Each key alone: the parameters it adds or removes, and a different embedding for the same weights."""
    default = randomize_our_batchnorm(ECAPA_TDNN(**SMALL))
    variant = randomize_our_batchnorm(ECAPA_TDNN(**SMALL, **{key: value}), seed=1)
    assert getattr(variant, key) == value and network_settings(variant)[key] == value
    default_params = {p.name: p for p in default.get_parameters()}
    variant_names = {p.name for p in variant.get_parameters()}
    assert {n for n in default_params if removed and n.startswith(removed)} == set(default_params) - variant_names
    assert {n for n in variant_names if added and n.startswith(added)} == variant_names - set(default_params)
    for p in variant.get_parameters():
        if p.name in default_params:
            p.set_data(default_params[p.name].value())
    default.set_train(False)
    variant.set_train(False)
    feats = ms.Tensor(np.random.default_rng(6).normal(size=(2, 20, 80)).astype(np.float32))
    assert np.abs(default(feats).asnumpy() - variant(feats).asnumpy()).max() > 1e-4


def test_attention_without_norm_is_the_plain_conv(pynative):
    """attention_norm False: the attention's hidden layer is the 1x1 conv alone (no ReLU, no batch norm), also
    through the global-context split of its weight."""
    net = ECAPA_TDNN(**SMALL, attention_norm=False)
    rng = np.random.default_rng(7)
    x = rng.normal(size=(2, 11, 96)).astype(np.float32)
    hidden = net.asp.attention_hidden(ms.Tensor(x), None).asnumpy()
    weight = net.asp.tdnn.conv.weight.asnumpy()[:, :, 0]
    context = np.concatenate([x, np.broadcast_to(x.mean(1, keepdims=True), x.shape),
                              np.broadcast_to(x.std(1, keepdims=True), x.shape)], axis=-1)
    expected = context @ weight.T + net.asp.tdnn.conv.bias.asnumpy()
    assert hidden.min() < 0
    np.testing.assert_allclose(hidden, expected, atol=1e-4)


def test_wespeaker_statistics_match_numpy(pynative):
    """pooling_stats "wespeaker": utterance std = sqrt(unbiased variance over valid frames + 1e-7); attentive std =
    sqrt(max(E_w[x^2] - mean^2, 1e-7)) (an all-zero channel gives sqrt(1e-7)). NumPy float64 reference."""
    rng = np.random.default_rng(8)
    x = rng.normal(size=(2, 9, 5)).astype(np.float32)
    x[:, :, 4] = 0.0
    lengths = np.array([9, 6], np.int32)
    mask = frame_mask(ms.Tensor(lengths), 9)
    mean, std = frame_mean_std(ms.Tensor(x), mask, "wespeaker")
    for i, n in enumerate(lengths):
        valid = x[i, :n].astype(np.float64)
        np.testing.assert_allclose(mean.asnumpy()[i], valid.mean(0), atol=1e-6)
        np.testing.assert_allclose(std.asnumpy()[i], np.sqrt(valid.var(0, ddof=1) + 1e-7), atol=1e-6)
    weights = rng.uniform(size=(2, 9, 5))
    weights /= weights.sum(1, keepdims=True)
    pool = ECAPA_TDNN(**SMALL, pooling_stats="wespeaker").asp
    channel_major = (ms.Tensor(x.transpose(0, 2, 1)), ms.Tensor(weights.astype(np.float32).transpose(0, 2, 1)))
    mean, std = pool.statistics(*channel_major)
    expected_mean = (weights * x).sum(1)
    expected_var = np.maximum((weights * x.astype(np.float64) ** 2).sum(1) - expected_mean ** 2, 1e-7)
    np.testing.assert_allclose(mean.asnumpy(), expected_mean, atol=1e-6)
    np.testing.assert_allclose(std.asnumpy(), np.sqrt(expected_var), atol=2e-4)
    np.testing.assert_allclose(std.asnumpy()[:, 4], np.sqrt(1e-7), rtol=1e-3)


def test_wespeaker_variant_padded_utterance_gets_its_embedding_alone():
    """Every variant key flipped: the padded batch runs compiled (GRAPH) and equals each utterance alone."""
    assert_padded_equal_alone(randomize_our_batchnorm(ECAPA_TDNN(**SMALL, **WESPEAKER_VARIANTS)), [40, 23, 9], seed=9)


def test_bad_pooling_stats_is_refused():
    with pytest.raises(ValueError, match="pooling_stats"):
        ECAPA_TDNN(**SMALL, pooling_stats="kaldi")
    with pytest.raises(ValueError, match="pooling_stats: got 'kaldi'"):
        load_config(["--pooling_stats", "kaldi"])


# ---------------------------------------------------------------- the folded inference network
@pytest.mark.parametrize("variants", [{}, WESPEAKER_VARIANTS], ids=["reflect", "zeros-wespeaker"])
def test_inference_network_equals_the_network(variants, pynative):
    """inference_network folds asp_bn (and fc_bn) into fc and each Res2Net block's last sub-block batch norm into
    tdnn2, the MFA batch norm's shift into the pooling, with reflect padding the Shifts inside each SE-Res2Block into
    the convolutions reading them, turns every other batch norm with positive scales into a Shift (its scale folded into the convolution
    before the ReLU) and keeps one with a negative scale: the same embeddings within 1e-5, with and without
    lengths, and the source network keeps its batch norms. Batch norms with realistic statistics, so that a wrong
    fold (a missing shift, a transposed scale) shows."""
    net = randomize_our_batchnorm(ECAPA_TDNN(**SMALL, res2net_scale=4, **variants), seed=10)
    gamma = net.blocks[2].tdnn1.norm.gamma
    gamma.set_data(ms.Tensor(gamma.asnumpy() * np.where(np.arange(gamma.shape[0]) == 3, -1, 1).astype(np.float32)))
    net.set_train(False)
    names = [p.name for p in net.get_parameters()]
    folded = inference_network(net)
    assert [p.name for p in net.get_parameters()] == names
    norms = {name: cell.norm for name, cell in folded.cells_and_names() if isinstance(cell, TDNNBlock)}
    removed = {f"blocks.{i}.res2net_block.blocks.2" for i in (1, 2, 3)}
    if not variants:    # reflect padding: the Shifts of tdnn1 and the sub-blocks went into the convolutions after them
        removed |= {f"blocks.{i}.res2net_block.blocks.{j}" for i in (1, 2, 3) for j in (0, 1)}
        removed |= {"blocks.1.tdnn1", "blocks.3.tdnn1"}
    assert {name for name, norm in norms.items() if norm is None} == removed | {"mfa"} | (
        {"asp.tdnn"} if variants else set())
    assert (folded.asp.mean_shift is None) == bool(variants)    # the MFA batch norm's shift went into the pooling
    assert {name for name, norm in norms.items() if isinstance(norm, BatchNorm)} == {"blocks.2.tdnn1"}
    assert folded.asp_bn is None and folded.fc_bn is None
    parameters = list(folded.get_parameters())
    assert len({p.name for p in parameters}) == len(parameters)          # unique names: exports key them by name
    rng = np.random.default_rng(11)
    feats = ms.Tensor(rng.normal(size=(3, 40, 80)).astype(np.float32))
    lengths = ms.Tensor(np.array([40, 23, 9], np.int32))
    for args, text in [((feats,), "no lengths"), ((feats, lengths), "lengths")]:
        reference = net(*args).asnumpy()
        diff = np.abs(folded(*args).asnumpy() - reference).max()
        print(f"\nfolded vs network, {text}: max abs diff {diff:.3g} (outputs up to {np.abs(reference).max():.3g})")
        assert np.abs(reference).max() > 0.1 and diff <= TOLERANCE
