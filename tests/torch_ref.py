"""Comparing our network with a peer toolkit's own PyTorch model on the same fbank input."""
import numpy as np
import mindspore as ms

TOLERANCE = 1e-4       # max abs difference of embeddings allowed (issue: "within 1e-4")


def assert_same_embeddings(model, net, seed, lengths=(50, 123)):
    """``model`` (PyTorch, eval mode) and ``net`` (ours, eval mode) embed the same random (2, T, 80) features alike
    for each T in ``lengths`` -> the last features used."""
    import torch
    rng = np.random.default_rng(seed)
    for frames in lengths:
        feats = rng.normal(size=(2, frames, 80)).astype(np.float32)
        with torch.no_grad():
            reference = model(torch.from_numpy(feats)).numpy()
        ours = net(ms.Tensor(feats)).asnumpy()
        assert np.abs(reference).max() > 0.1
        assert np.abs(ours - reference).max() <= TOLERANCE, f"{frames} frames"
    return feats
