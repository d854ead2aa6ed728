"""Bucketed embedding extraction: equal to one-at-a-time, bounded compiles, hierarchical features, cache, errors."""
import glob
import json
import os

import mindspore as ms
import numpy as np
import pytest

from src.checkpoint import load_network_weights, parameters_sha256
from src.data.audio import AudioError, read_audio, write_wav
from src.data.synthetic import make_corpus
from src.model.ecapa_tdnn import ECAPA_TDNN
from src.model.embedder import Embedder
from src.evaluate.extract import Batching, EmbeddingCache, cache_fingerprint, extract_embeddings, load_embeddings
from tests.modes import op_by_op

SMALL = dict(channels=32, mfa_channels=96, embedding_size=16, attention_channels=16, se_channels=16,
             res2net_scale=2, global_context=True, padding="reflect")   # scale 2: fewer ops to compile


def small_batching():
    return Batching(sample_rate=16000, bucket_seconds=(1.0,), max_seconds=1.5, batch_size=4, batch_seconds=100.0)


class ShapeRecorder:
    """Calls a cell and remembers the distinct input shapes it was fed (one graph compile each)."""

    def __init__(self, cell):
        self.cell, self.shapes, self.calls = cell, set(), 0

    def __call__(self, wav, lens):
        self.shapes.add(tuple(wav.shape))
        self.calls += 1
        return self.cell(wav, lens)


class AloneFeatures(ms.nn.Cell):
    """One unpadded utterance -> block 0 and block 3 outputs, pooled statistics and embedding."""

    def __init__(self, network):
        super().__init__()
        self.fbank = Embedder(network).fbank
        self.network = network

    def construct(self, wav):
        feats, _ = self.fbank(wav)
        blocks, pooled, embedding = self.network.forward_features(feats)
        return blocks[0], blocks[3], pooled, embedding


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    paths = make_corpus(str(tmp_path_factory.mktemp("corpus")), num_train_speakers=1, num_test_speakers=3,
                        utts_per_speaker=3, seconds=(0.5, 2.0), seed=3, augment_folders=False, progress=False)
    root = paths["test_dir"]
    keys = sorted(os.path.relpath(p, root) for p in glob.glob(os.path.join(root, "**", "*.wav"), recursive=True))
    return root, keys


@pytest.fixture(scope="module")
def network():
    ms.set_seed(0)
    net = ECAPA_TDNN(**{k: v for k, v in SMALL.items()})
    net.set_train(False)
    return net


@pytest.fixture(scope="module")
def embedder(network):
    return Embedder(network)


def alone(cell, root, key, max_samples):
    wav = read_audio(os.path.join(root, key))[:max_samples]
    return cell(ms.Tensor(wav[None]), ms.Tensor(np.array([wav.size], np.int32))).asnumpy()[0]


def test_batched_equals_one_at_a_time_with_bounded_compiles(corpus, embedder):
    root, keys = corpus
    cfg = small_batching()
    lengths = {k: read_audio(os.path.join(root, k)).size for k in keys}
    assert len(set(lengths.values())) == len(keys) == 9
    recorder = ShapeRecorder(embedder)
    emb = extract_embeddings(recorder, keys, root, cfg, progress=False)
    assert list(emb) == keys and all(e.shape == (16,) and e.dtype == np.float32 for e in emb.values())
    # One input shape (so one graph) per bucket used, not one per distinct length; full batches only.
    batches, cropped = cfg.plan(lengths)
    used = {bucket for bucket, _ in batches}
    assert recorder.shapes == {(4, b) for b in used} and len(used) <= 2 < len(keys)
    assert sorted(cropped) == [k for k in keys if lengths[k] > 24000] and cropped
    # Padding does not change an embedding: each utterance equals itself embedded alone at its own length (run in
    # PYNATIVE mode: in GRAPH mode every distinct length would compile a graph).
    with op_by_op():
        for key in keys:
            np.testing.assert_allclose(emb[key], alone(embedder, root, key, 24000), atol=1e-5, rtol=0, err_msg=key)


def test_hierarchical_features_shapes_and_padding(corpus, network, embedder):
    root, keys = corpus
    cfg = small_batching()
    outputs = ("embedding", "block3", "pooled", "block0")            # returned in network order regardless
    # Utterances of the shortest bucket only (one graph): they are padded to 1 s in batches of 4.
    keys = [k for k in keys if read_audio(os.path.join(root, k)).size <= 16000]
    assert len(keys) >= 2
    features_cell = Embedder(network, outputs=outputs)
    feats = extract_embeddings(features_cell, keys, root, cfg, progress=False)
    emb = extract_embeddings(embedder, keys, root, cfg, progress=False)
    assert features_cell.outputs == ("block0", "block3", "pooled", "embedding")
    sizes = [64, 64, 192, 16]                                         # block0, block3 (mean+std), pooled, emb
    assert all(f.shape == (sum(sizes),) for f in feats.values())
    key = min(keys, key=lambda k: read_audio(os.path.join(root, k)).size)
    np.testing.assert_allclose(feats[key][-16:], emb[key], atol=1e-5, rtol=0)
    # The utterance alone, unpadded, through forward_features; block statistics taken in NumPy.
    wav = read_audio(os.path.join(root, key))
    x0, x3, pooled, embedding = (t.asnumpy()[0] for t in AloneFeatures(network)(ms.Tensor(wav[None])))
    expected = np.concatenate([x0.mean(0), x0.std(0), x3.mean(0), x3.std(0), pooled, embedding])
    np.testing.assert_allclose(feats[key], expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="unknown names"):
        Embedder(network, outputs=("block4",))


def test_cache_is_reused_only_for_the_same_model(corpus, embedder, tmp_path):
    root, keys = corpus
    cfg = small_batching()
    path = str(tmp_path / "emb.npz")
    model_id = parameters_sha256(embedder.get_parameters())
    settings = {"sample_rate": 16000, **SMALL}

    def cache(weights=model_id):
        return EmbeddingCache(path, cache_fingerprint(embedder, settings, root, cfg.max_seconds, weights),
                              {"checkpoint": "x.ckpt"})
    first = ShapeRecorder(embedder)
    emb = extract_embeddings(first, keys[:5], root, cfg, cache(), progress=False)
    meta = json.load(open(str(tmp_path / "emb.json")))
    assert meta["info"] == {"checkpoint": "x.ckpt"} and meta["num_keys"] == 5
    assert meta["fingerprint"]["model"] == model_id and meta["fingerprint"]["root"] == os.path.abspath(root)
    stored = load_embeddings(path)
    assert sorted(stored) == sorted(keys[:5])
    with np.load(path) as data:
        assert data["embeddings"].shape == (5, 16) and data["embeddings"].dtype == np.float32
    second = ShapeRecorder(embedder)
    again = extract_embeddings(second, keys[:5], root, cfg, cache(), progress=False)
    assert second.calls == 0 and all(np.array_equal(again[k], emb[k]) for k in keys[:5])
    extract_embeddings(second, keys, root, cfg, cache(), progress=False)
    assert second.calls > 0 and len(load_embeddings(path)) == 9
    third = ShapeRecorder(embedder)
    extract_embeddings(third, keys[:2], root, cfg, cache("other weights"), progress=False)
    assert third.calls >= 1


def test_bad_audio_is_named(corpus, embedder, tmp_path):
    root, keys = corpus
    write_wav(str(tmp_path / "empty.wav"), np.zeros(0, np.float32))
    write_wav(str(tmp_path / "short.wav"), np.zeros(300, np.float32))
    for name, message in (("empty.wav", "no audio"), ("short.wav", "too short"), ("gone.wav", "not found")):
        with pytest.raises(AudioError, match=f"{name}.*{message}"):
            extract_embeddings(embedder, [name], str(tmp_path), small_batching(), progress=False)


def test_load_network_weights_prefixes_missing_and_misshapen(tmp_path):
    ms.set_seed(2)
    network = ECAPA_TDNN(**SMALL)
    path = str(tmp_path / "net.ckpt")
    ms.save_checkpoint(network, path)
    ms.set_seed(1)
    other = ECAPA_TDNN(**SMALL)
    load_network_weights(other, path)
    for name, param in network.parameters_dict().items():
        assert np.array_equal(other.parameters_dict()[name].asnumpy(), param.asnumpy()), name
    # A training checkpoint: names under a wrapper prefix, plus entries that are not network parameters.
    entries = [{"name": "network." + n, "data": p.value()} for n, p in network.parameters_dict().items()]
    entries.append({"name": "classifier.weight", "data": ms.Tensor(np.zeros((5, 16), np.float32))})
    ms.save_checkpoint(entries, str(tmp_path / "train.ckpt"))
    load_network_weights(ECAPA_TDNN(**SMALL), str(tmp_path / "train.ckpt"))
    ms.save_checkpoint([e for e in entries if not e["name"].endswith("fc.weight")], str(tmp_path / "part.ckpt"))
    with pytest.raises(ValueError, match=r"part.ckpt: does not fit the network: 1 network parameters missing.*fc"):
        load_network_weights(ECAPA_TDNN(**SMALL), str(tmp_path / "part.ckpt"))
    with pytest.raises(ValueError, match="net.ckpt: does not fit.*another shape"):
        load_network_weights(ECAPA_TDNN(**dict(SMALL, channels=48)), path)
    with pytest.raises(ValueError, match="nothing.ckpt: checkpoint file not found"):
        load_network_weights(other, str(tmp_path / "nothing.ckpt"))


def test_cache_entries_follow_their_files_and_survive_an_interruption(corpus, embedder, tmp_path):
    import shutil
    import time
    root, keys = corpus
    root = shutil.copytree(root, str(tmp_path / "audio"))            # a copy the test may change
    cfg = small_batching()
    path = str(tmp_path / "emb.npz")
    cache = EmbeddingCache(path, cache_fingerprint(embedder, {"n": 1}, root, cfg.max_seconds))

    class StopsAfter:
        """The real embedder, interrupted (as by Ctrl-C) when it is called the third time."""

        def __init__(self, calls):
            self.calls, self.left = 0, calls

        def __call__(self, wav, lens):
            self.calls += 1
            if self.calls > self.left:
                raise KeyboardInterrupt
            return embedder(wav, lens)
    with pytest.raises(KeyboardInterrupt):
        extract_embeddings(StopsAfter(2), keys, root, cfg, cache, progress=False, save_every_seconds=1e9)
    kept = load_embeddings(path)
    assert 0 < len(kept) < len(keys)                       # what was computed before the interruption is on disk
    rerun = ShapeRecorder(embedder)
    full = extract_embeddings(rerun, keys, root, cfg, cache, progress=False)
    assert rerun.calls > 0 and all(np.array_equal(full[k], kept[k]) for k in kept)
    again = ShapeRecorder(embedder)
    extract_embeddings(again, keys, root, cfg, cache, progress=False)
    assert again.calls == 0

    # Another recording under the same name: its cached embedding is not used, the others are.
    changed = keys[0]
    other = read_audio(os.path.join(root, keys[-1]))
    time.sleep(0.01)
    write_wav(os.path.join(root, changed), other)
    after = ShapeRecorder(embedder)
    result = extract_embeddings(after, keys, root, cfg, cache, progress=False)
    fresh = extract_embeddings(embedder, [changed], root, cfg, progress=False)[changed]
    np.testing.assert_allclose(result[changed], fresh, atol=1e-5, rtol=0)
    assert not np.allclose(result[changed], full[changed], atol=1e-3)
    assert after.calls == 1                                # only the changed file was embedded again

    # A damaged cache file is named in a warning and recomputed.
    with open(path, "wb") as f:
        f.write(b"PK\x03\x04 not a zip any more")
    import logging
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("src.evaluate.extract").addHandler(handler)
    try:
        redone = extract_embeddings(embedder, keys, root, cfg, cache, progress=False)
    finally:
        logging.getLogger("src.evaluate.extract").removeHandler(handler)
    assert any(path in r.getMessage() and "damaged" in r.getMessage() for r in records)
    assert all(np.allclose(redone[k], result[k], atol=1e-5) for k in keys)
