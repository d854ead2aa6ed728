"""runtime onnxruntime (src/deploy/onnx_runtime.py behind src/checkpoint.py load_embedder): the batched
extraction gives MindSpore's embeddings within the export tolerance, the ONNX export is made once per checkpoint and
settings, and eval.py runs on it end to end.

Every test exports into one cache folder (``<tmp>/run/onnx_cache``, the default ``output_dir/onnx_cache`` of the
first test), so each checkpoint and settings pair is exported and verified once per module; the first two tests run
in PYNATIVE mode (the ONNX file is written by src/deploy/onnx_graph.py, not by a MindSpore graph export, and the
export's check and the reference extraction then compile nothing), eval.py runs as a user runs it (GRAPH mode)."""
import os

import mindspore as ms
import numpy as np
import pytest

import eval as eval_script
from src.config import load_config
from src.data.synthetic import make_corpus
from src.deploy.onnx_runtime import EXPORT_TOLERANCE, OnnxEmbedder
from src.evaluate.extract import Batching, extract_embeddings
from src.data.trials import read_trials
from src.model.ecapa_tdnn import ECAPA_TDNN
from src.checkpoint import load_embedder
from tests.test_ecapa_tdnn import randomize_our_batchnorm

pytest.importorskip("onnxruntime")
SMALL = dict(channels=32, mfa_channels=96, embedding_size=16, attention_channels=16, se_channels=16,
             res2net_scale=4)
ARGS = [a for k, v in SMALL.items() for a in (f"--{k}", str(v))] + [
    "--bucket_seconds", "[1.0, 1.5]", "--max_eval_seconds", "1.5", "--eval_batch_size", "4"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("runtime")
    corpus = make_corpus(str(tmp / "corpus"), num_train_speakers=0, num_test_speakers=3, utts_per_speaker=3,
                         seconds=(0.6, 1.9), seed=7, augment_folders=False, progress=False)
    network = randomize_our_batchnorm(ECAPA_TDNN(**SMALL), seed=3)
    checkpoint = str(tmp / "random.ckpt")
    ms.save_checkpoint(network, checkpoint)
    return tmp, corpus, checkpoint


def shared_output(tmp):
    """The output folder whose onnx_cache every test of this module shares."""
    return str(tmp / "run")


def embed(cfg, checkpoint, corpus):
    keys = sorted({key for _, a, b in read_trials(corpus["trials"]) for key in (a, b)})
    embedder = load_embedder(cfg, checkpoint)
    return embedder, extract_embeddings(embedder, keys, corpus["test_dir"], Batching.from_recipe(cfg),
                                        progress=False)


@pytest.mark.parametrize("front_end", ["speechbrain", "kaldi"])
def test_onnxruntime_embeddings_equal_mindspore(setup, front_end, pynative):
    """Utterances of 0.6-1.9 s in padded buckets (the longest cropped to 1.5 s): onnxruntime on the export and the
    MindSpore Embedder agree within the export tolerance, row for row."""
    tmp, corpus, checkpoint = setup
    args = ARGS + ["--front_end", front_end, "--output_dir", shared_output(tmp)]
    reference = embed(load_config(args), checkpoint, corpus)[1]
    embedder, got = embed(load_config(args + ["--runtime", "onnxruntime"]), checkpoint, corpus)
    assert isinstance(embedder, OnnxEmbedder) and embedder.path.startswith(
        os.path.join(shared_output(tmp), "onnx_cache"))
    diff = max(np.max(np.abs(got[k] - reference[k])) for k in reference)
    print(f"\n{front_end}: {len(got)} utterances, max abs diff onnxruntime vs MindSpore {diff:.2e}")
    assert list(got) == list(reference) and np.abs(np.stack(list(reference.values()))).max() > 0.1
    assert diff <= EXPORT_TOLERANCE


def test_export_made_once_per_checkpoint_and_settings(setup, tmp_path, pynative):
    """The second embedder reuses the cached file untouched; another checkpoint or another front end setting
    gets its own export; other outputs than the embedding are refused, naming the runtime."""
    tmp, corpus, checkpoint = setup
    cache = os.path.join(shared_output(tmp), "onnx_cache")
    cfg = load_config(ARGS + ["--runtime", "onnxruntime", "--runtime_cache_dir", cache])
    first = load_embedder(cfg, checkpoint)
    stamp = os.stat(first.path).st_mtime_ns
    again = load_embedder(cfg, checkpoint)
    assert again.path == first.path and os.stat(again.path).st_mtime_ns == stamp
    other = str(tmp_path / "other.ckpt")
    ms.save_checkpoint(randomize_our_batchnorm(ECAPA_TDNN(**SMALL), seed=4), other)
    assert load_embedder(cfg, other).path != first.path
    kaldi = load_embedder(load_config(ARGS + ["--runtime", "onnxruntime", "--runtime_cache_dir", cache,
                                              "--front_end", "kaldi"]), checkpoint)
    assert kaldi.path != first.path
    assert len([n for n in os.listdir(cache) if n.endswith(".onnx")]) == 3
    with pytest.raises(ValueError, match="runtime onnxruntime: the ONNX export gives the embedding only"):
        load_embedder(cfg, checkpoint, outputs=("pooled",))


def test_eval_with_onnxruntime(setup):
    """eval.py --runtime onnxruntime: the scores of MindSpore's eval run within 1e-4."""
    tmp, corpus, checkpoint = setup
    args = ARGS + ["--checkpoint", checkpoint, "--test_dir", corpus["test_dir"], "--trials", corpus["trials"]]
    summaries = {runtime: eval_script.evaluate(load_config(args + [
        "--runtime", runtime, "--eval_output_dir", str(tmp / f"eval_{runtime}"), "--output_dir", shared_output(tmp)]))
        for runtime in ("mindspore", "onnxruntime")}
    scores = {runtime: [float(line.split()[2]) for line in open(s["trial_lists"]["trials"]["score_file"])]
              for runtime, s in summaries.items()}
    np.testing.assert_allclose(scores["onnxruntime"], scores["mindspore"], atol=1e-4)
    assert len(scores["mindspore"]) == len(read_trials(corpus["trials"])) > 0
