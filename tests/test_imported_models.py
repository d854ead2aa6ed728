"""The rest of the project takes imported models. A peer toolkit's checkpoint (random weights, written with the peer's
own code) is imported with ``python -m src.import_weights --format F SRC OUT.ckpt --recipe R.yaml``; then only
``--config R.yaml`` plus data and output keys drive eval.py, ``python -m src.evaluate.verify``, export.py (MINDIR and
ONNX) and the 310 flow (preprocess.py -> src/deploy/ascend310_cpu_twin.py, the CPU stand-in for the Ascend 310
program -> postprocess.py), as a user runs them.

Coverage per format: speechbrain, wespeaker and 3dspeaker go through every command; the SpeechBrain file is a
network of another depth (two SE-Res2Blocks, a 3-tap MFA layer) saved under a key beside another module, as
people save their own. mindspore_zoo is the full
1024-channel zoo network (its importer builds nothing else; every graph of it is slow to compile here), so it covers
eval.py and export.py to MINDIR only: verify, ONNX and the 310 flow run the same code on the recipe and checkpoint
whatever the format, and the other three formats test them.

Graph compilation is what costs here, and it grows with the Res2Net scale: the SpeechBrain and 3D-Speaker models use
res2net_scale 2 (about 4x faster to compile than 8; the importer reads the scale off the tensors), WeSpeaker's code
fixes it at 8. Each format's stages are module fixtures (``imported`` -> ``evaluated``, ``verified``, ``exported``
-> ``inferred``), so the peer file and import happen once and a failing stage fails only the tests that need it.
The reference for every embedding is the Embedder built from the imported checkpoint and its recipe file
(``load_embedder`` + ``recipe_for_checkpoint``), run directly in PYNATIVE mode.
"""
import contextlib
import importlib.util
import io
import json
import os

import numpy as np
import pytest
import mindspore as ms

import eval as eval_script
import export
import postprocess
import preprocess
from src.checkpoint import load_embedder, read_settings, recipe_for_checkpoint
from src.config import load_config
from src.data.audio import read_audio
from src.data.synthetic import make_corpus
from src.data.trials import read_trials, trial_utterances
from src.deploy import ascend310_cpu_twin
from src.deploy.ascend310_files import cut_windows, window_starts
from src.deploy.contract import contract_path, read_contract
from src.evaluate import verify
from src.evaluate.extract import load_embeddings
from src.evaluate.metrics import summarize
from src.evaluate.scoring import score_trials
from src.import_weights import ZOO_MODEL_CONFIG, main as import_weights, our_name
from src.model.ecapa_tdnn import ECAPA_TDNN
from src.model.embedder import EMBEDDER_KEYS
from tests.speechbrain_ref import randomize_batchnorm
from tests.modes import op_by_op

FORMATS = ("speechbrain", "wespeaker", "3dspeaker", "mindspore_zoo")
ZOO = "mindspore_zoo"
ZOO_ONLY = "the zoo format covers eval.py and export.py to MINDIR only (module docstring)"
# Data and output keys only (the model comes from the recipe file): one 1.5 s bucket, so eval.py compiles once.
EVAL_KEYS = ["--bucket_seconds", "[]", "--max_eval_seconds", "1.5", "--eval_batch_size", "4"]
EXPORT_SECONDS, EXPORT_BATCH = 0.5, 2
EXPORT_KEYS = ["--export_seconds", str(EXPORT_SECONDS), "--export_batch_size", str(EXPORT_BATCH)]
METRICS = ("eer", "eer_threshold", "min_dcf_p0.01", "min_dcf_p0.05")


def quiet(main, argv):
    """Run an entry point's ``main(argv)`` in-process -> (exit status, what it printed)."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = main(argv)
    return status, printed.getvalue()


def labels_of(trials):
    return np.array([label for label, _, _ in trials])


# ---------------------------------------------------------------- peer files (random weights)
def write_speechbrain(folder):
    """A SpeechBrain ECAPA_TDNN as people train and share them (its own class at another depth: two SE-Res2Blocks
    and a 3-tap MFA layer, ``channels=[32, 32, 32, 96], kernel_sizes=[5, 3, 3, 3], dilations=[1, 2, 3, 4]``), saved
    under ``ecapa_state_dict`` beside another module's state dict, and mean_var_norm_emb.ckpt (its own
    InputNormalization after one training-mode pass) -> (path, the glob_mean float32 numpy)."""
    torch = pytest.importorskip("torch", reason="the SpeechBrain model needs PyTorch")
    if importlib.util.find_spec("speechbrain") is None:
        pytest.skip("SpeechBrain is not installed")
    from tests.speechbrain_ref import speechbrain_module
    torch.manual_seed(3)
    model = speechbrain_module("speechbrain.lobes.models.ECAPA_TDNN").ECAPA_TDNN(
        80, channels=[32, 32, 32, 96], kernel_sizes=[5, 3, 3, 3], dilations=[1, 2, 3, 4], res2net_scale=2)
    model = randomize_batchnorm(model, seed=3).eval()
    path = os.path.join(folder, "embedding_model.ckpt")
    head = torch.nn.Linear(192, 16)
    torch.save({"ecapa_state_dict": model.state_dict(), "proj_head_state_dict": head.state_dict()}, path)
    norm = speechbrain_module("speechbrain.processing.features").InputNormalization(norm_type="global",
                                                                                   std_norm=False)
    norm.train()
    norm(torch.randn(6, 1, 192) * 0.5 + torch.linspace(-1, 1, 192), torch.ones(6))
    norm._save(os.path.join(folder, "mean_var_norm_emb.ckpt"))
    return path, norm.glob_mean.detach().numpy().reshape(-1).astype(np.float32)


def write_wespeaker(folder):
    """WeSpeaker's avg_model.pt of its own ECAPA_TDNN (global context, emb_bn) with its training head."""
    from tests.test_import_wespeaker import make_wespeaker_ecapa, save_avg_model
    path = os.path.join(folder, "avg_model.pt")
    save_avg_model(make_wespeaker_ecapa(32, True, True, seed=4), path, num_classes=5)
    return path, None


def write_3dspeaker(folder):
    """3D-Speaker's embedding_model.ckpt of its own ECAPA_TDNN (no global context, Res2Net scale 2: the helper of
    tests/test_import_3dspeaker.py always builds scale 8, so speakerlab's class is called here with the scale)."""
    torch = pytest.importorskip("torch", reason="the 3D-Speaker model needs PyTorch")
    module = pytest.importorskip("speakerlab.models.ecapa_tdnn.ECAPA_TDNN",
                                 reason="3D-Speaker's model code is not installed (scripts/setup_env.sh)")
    torch.manual_seed(5)
    model = module.ECAPA_TDNN(80, channels=[32] * 4 + [96], res2net_scale=2, global_context=False)
    path = os.path.join(folder, "embedding_model.ckpt")
    torch.save(randomize_batchnorm(model, seed=5).eval().state_dict(), path)
    return path, None


def write_zoo(folder):
    """The older zoo's training checkpoint layout (names and 4-D shapes of tests/data/mindspore_zoo_ecapa_tdnn_params
    .json under ``network.``, a classifier, optimizer state) holding a freshly initialised zoo-sized network with
    random batch-norm statistics (random values everywhere would blow the embeddings up)."""
    from tests.test_zoo_checkpoint import REFERENCE
    with open(REFERENCE) as f:
        reference = json.load(f)
    ms.set_seed(6)
    ours = {p.name: p.asnumpy() for p in ECAPA_TDNN(**ZOO_MODEL_CONFIG).get_parameters()}
    rng = np.random.default_rng(6)
    for name, value in ours.items():
        if name.endswith("moving_variance"):
            ours[name] = rng.uniform(0.3, 2.0, value.shape).astype(np.float32)
        elif name.endswith(("moving_mean", "beta")):
            ours[name] = rng.normal(0.0, 0.2, value.shape).astype(np.float32)
        elif name.endswith("gamma"):
            ours[name] = rng.uniform(0.5, 1.5, value.shape).astype(np.float32)
    entries = [{"name": "network." + p["name"],
                "data": ms.Tensor(ours[our_name("network." + p["name"])].reshape(p["shape"]))}
               for p in reference["parameters"]]
    entries += [{"name": "classifier.weight", "data": ms.Tensor(rng.normal(size=(5, 192)).astype(np.float32))},
                {"name": "moment1.network.fc.bias", "data": ms.Tensor(np.ones(192, np.float32))},
                {"name": "global_step", "data": ms.Tensor(np.array([1000], np.int32))}]
    path = os.path.join(folder, "zoo.ckpt")
    ms.save_checkpoint(entries, path)
    return path, None


PEERS = {"speechbrain": write_speechbrain, "wespeaker": write_wespeaker, "3dspeaker": write_3dspeaker,
         ZOO: write_zoo}


# ---------------------------------------------------------------- fixtures: one per stage and format
@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Six synthetic test utterances of 0.6-1.4 s (two or three 0.5 s windows each) and their trials."""
    return make_corpus(str(tmp_path_factory.mktemp("corpus")), num_train_speakers=0, num_test_speakers=3,
                       utts_per_speaker=2, seconds=(0.6, 1.4), seed=11, augment_folders=False, progress=False)


@pytest.fixture(scope="module", params=FORMATS)
def imported(request, tmp_path_factory, corpus):
    """A peer file of the format imported on the command line (recipe under tmp); the Embedder the recipe file
    gives; the arguments every command gets: ``--config R.yaml`` and the data keys."""
    fmt = request.param
    tmp = tmp_path_factory.mktemp(fmt)
    source, glob_mean = PEERS[fmt](str(tmp))
    recipe, checkpoint = str(tmp / "recipe" / "imported.yaml"), str(tmp / "imported.ckpt")
    status, printed = quiet(import_weights, ["--format", fmt, "--recipe", recipe, source, checkpoint])
    assert status == 0 and os.path.isfile(checkpoint) and os.path.isfile(recipe), printed
    cfg = load_config(["--config", recipe])
    embedder = load_embedder(recipe_for_checkpoint(cfg, cfg.checkpoint), cfg.checkpoint)
    data = ["--config", recipe, "--test_dir", corpus["test_dir"], "--trials", corpus["trials"]]
    return dict(fmt=fmt, tmp=tmp, recipe=recipe, checkpoint=checkpoint, cfg=cfg, glob_mean=glob_mean,
                embedder=embedder, data=data, trials=read_trials(corpus["trials"]), test_dir=corpus["test_dir"])


@pytest.fixture(scope="module")
def evaluated(imported):
    """eval.py; with subtract_mean (and no cohort) for SpeechBrain, whose import carries a mean embedding."""
    out = str(imported["tmp"] / "eval")
    mean = ["--subtract_mean", "true"] if imported["glob_mean"] is not None else []
    assert eval_script.main(imported["data"] + EVAL_KEYS + ["--eval_output_dir", out] + mean) == 0
    summary_file = os.path.join(out, "eval_summary.json")
    with open(summary_file) as f:
        summary = json.load(f)
    return dict(out=out, summary_file=summary_file, summary=summary,
                embeddings=load_embeddings(os.path.join(out, "embeddings.npz")))


@pytest.fixture(scope="module")
def verified(imported, evaluated):
    """verify on the first trial's pair with eval.py's summary -> (the pair's keys, what it printed)."""
    if imported["fmt"] == ZOO:
        pytest.skip(ZOO_ONLY)
    _, enroll, test = imported["trials"][0]
    pair = [os.path.join(imported["test_dir"], key) for key in (enroll, test)]
    status, printed = quiet(verify.main, pair + ["--config", imported["recipe"], "--summary",
                                                 evaluated["summary_file"]])
    assert status == 0
    return (enroll, test), printed


@pytest.fixture(scope="module")
def exported(imported):
    """export.py to MINDIR and (not for the zoo) ONNX, same --export_file -> {format: contract}, the file base."""
    base = str(imported["tmp"] / "export" / "ecapa")
    contracts = {}
    for fmt, ext in (("MINDIR", ".mindir"), ("ONNX", ".onnx"))[:1 if imported["fmt"] == ZOO else 2]:
        status, printed = quiet(export.main, ["--config", imported["recipe"], "--export_file", base,
                                              "--export_format", fmt] + EXPORT_KEYS)
        assert status == 0 and json.loads(printed.strip().splitlines()[-1])["model"] == base + ext
        contracts[fmt] = read_contract(contract_path(base + ext))
    return dict(base=base, contracts=contracts)


@pytest.fixture(scope="module")
def inferred(imported, exported):
    """The 310 flow on the exported MINDIR: preprocess.py, the CPU runner's command line, postprocess.py (plain
    cosine, and for SpeechBrain again with subtract_mean) -> {run: result.json}, the flow's embeddings."""
    if imported["fmt"] == ZOO:
        pytest.skip(ZOO_ONLY)
    infer_dir = str(imported["tmp"] / "infer")
    args = imported["data"] + ["--export_file", exported["base"], "--infer_dir", infer_dir]
    assert preprocess.main(args) == 0
    assert ascend310_cpu_twin.main(["--model", exported["base"] + ".mindir",
                                    "--input_dir", os.path.join(infer_dir, "input"),
                                    "--output_dir", os.path.join(infer_dir, "output")]) == 0
    results = {}
    runs = [("plain", [])] + ([("mean", ["--subtract_mean", "true"])] if imported["glob_mean"] is not None else [])
    for name, extra in runs:
        status, printed = quiet(postprocess.main, args + extra)
        assert status == 0 and "trials.txt: EER" in printed
        with open(os.path.join(infer_dir, "result.json")) as f:
            results[name] = json.load(f)["trials.txt"]
    flow = dict(np.load(os.path.join(infer_dir, "embeddings.npz")))
    return dict(results=results, embeddings=dict(zip(flow["keys"], flow["embeddings"])))


@pytest.fixture(scope="module")
def window_reference(imported):
    """Every trial utterance cut into the export's windows as preprocess.py cuts them, all windows in one batch
    through the checkpoint's Embedder -> ({key: mean window embedding}, the windows, their embeddings)."""
    window = int(EXPORT_SECONDS * 16000)
    keys, rows = [], []
    for key in trial_utterances(imported["trials"]):
        wav = read_audio(os.path.join(imported["test_dir"], key))
        cut = cut_windows(wav, window_starts(wav.shape[0], window), window)
        keys += [key] * cut.shape[0]
        rows.append(cut)
    windows = np.concatenate(rows)
    with op_by_op():   # references: no graph to compile, and another path than the commands' GRAPH mode
        emb = imported["embedder"](ms.Tensor(windows)).asnumpy()
    keys = np.array(keys)
    return {key: emb[keys == key].mean(axis=0) for key in dict.fromkeys(keys)}, windows, emb


def close(got, expected, tolerance):
    """``got`` equals ``expected`` within ``tolerance`` times the larger of 1 and its largest magnitude."""
    np.testing.assert_allclose(got, expected, atol=tolerance * max(1.0, float(np.abs(expected).max())), rtol=0)


# ---------------------------------------------------------------- tests
def test_import_writes_a_checkpoint_and_a_recipe_that_agree(imported):
    """The recipe file the importer writes loads on its own, names the imported checkpoint and repeats exactly the
    embedder settings the checkpoint carries, so ``--config R.yaml`` is all the model a command needs."""
    cfg, settings = imported["cfg"], read_settings(imported["checkpoint"])
    assert os.path.abspath(cfg.checkpoint) == os.path.abspath(imported["checkpoint"])
    assert set(settings) <= set(EMBEDDER_KEYS) and {k: cfg[k] for k in settings} == settings
    front_end = {"speechbrain": "speechbrain", ZOO: "speechbrain", "wespeaker": "kaldi", "3dspeaker": "kaldi"}
    assert settings["front_end"] == front_end[imported["fmt"]]
    assert (settings["channels"], settings["res2net_scale"]) == \
        {ZOO: (1024, 8), "wespeaker": (32, 8)}.get(imported["fmt"], (32, 2))


def test_eval_embeddings_equal_the_imported_embedder_on_an_utterance_alone(imported, evaluated):
    """eval.py with the recipe file embeds with the imported network and its front end: the shortest utterance's
    cached embedding (the most padding in its batch) equals the checkpoint's Embedder on it alone; the summary
    records that checkpoint and its settings, and its metrics are those of the cosine scores of the embeddings."""
    embeddings, summary, trials = evaluated["embeddings"], evaluated["summary"], imported["trials"]
    assert sorted(embeddings) == sorted(trial_utterances(trials))
    lengths = {key: read_audio(os.path.join(imported["test_dir"], key)).size for key in embeddings}
    key = min(lengths, key=lengths.get)
    wav = read_audio(os.path.join(imported["test_dir"], key))
    with op_by_op():   # references: no graph to compile, and another path than the commands' GRAPH mode
        alone = imported["embedder"](ms.Tensor(wav[None]), ms.Tensor(np.array([wav.size], np.int32))).asnumpy()[0]
    assert np.abs(alone).max() > 1e-2
    close(embeddings[key], alone, 2e-5)
    settings = read_settings(imported["checkpoint"])
    assert {k: summary["config"][k] for k in settings} == settings
    assert summary["checkpoint"] == os.path.abspath(imported["checkpoint"])
    cosine = summarize(score_trials(embeddings, trials), labels_of(trials))
    assert summary["trial_lists"]["trials"]["metrics"]["cosine"] == pytest.approx(cosine, abs=1e-6)
    assert summary["verify_threshold"]["value"] == pytest.approx(cosine["eer_threshold"], abs=1e-6)


def test_verify_scores_a_pair_with_the_eval_threshold(evaluated, verified):
    """``python -m src.evaluate.verify a.wav b.wav --config R.yaml --summary eval_summary.json`` prints the cosine
    score of the imported model's embeddings and the decision at the threshold eval.py calibrated."""
    pair, printed = verified
    a, b = (evaluated["embeddings"][key] for key in pair)
    expected = float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b))
    assert printed.startswith("score ")
    score = float(printed.split()[1])
    assert score == pytest.approx(expected, abs=1e-4)
    threshold = evaluated["summary"]["verify_threshold"]["value"]
    assert f"(threshold {threshold:.4f}: EER threshold of plain cosine scores on trials, from " \
           f"{evaluated['summary_file']})" in printed
    assert ("decision: same speaker" if score >= threshold else "decision: different speakers") in printed


def test_export_writes_files_that_reproduce_the_imported_network(request, imported, exported):
    """export.py with the recipe file writes MINDIR and ONNX files that pass the after-write check within
    export_tolerance and whose contracts record the imported model's settings and checkpoint; the ONNX graph holds
    the imported front end: onnxruntime on real windows gives the checkpoint Embedder's embeddings."""
    settings = read_settings(imported["checkpoint"])
    contracts = exported["contracts"]
    assert sorted(contracts) == (["MINDIR"] if imported["fmt"] == ZOO else ["MINDIR", "ONNX"])
    for fmt, contract in contracts.items():
        ver = contract["verification"]
        assert ver["max_abs_diff"] <= float(imported["cfg"].export_tolerance), fmt
        assert ver["checked_shapes"] == [[EXPORT_BATCH, int(EXPORT_SECONDS * 16000)]]
        assert contract["format"] == fmt and contract["input"]["kind"] == "waveform"
        assert contract["output"]["shape"] == [EXPORT_BATCH, settings["embedding_size"]]
        assert {k: contract["network"][k] for k in settings} == settings, fmt
        assert os.path.abspath(contract["network"]["checkpoint"]) == os.path.abspath(imported["checkpoint"])
    if "ONNX" in contracts:
        ort = pytest.importorskip("onnxruntime")
        assert contracts["ONNX"]["verification"]["loaded_with"].startswith("onnxruntime")
        _, windows, expected = request.getfixturevalue("window_reference")
        session = ort.InferenceSession(exported["base"] + ".onnx", providers=["CPUExecutionProvider"])
        got = session.run(None, {session.get_inputs()[0].name: windows[:EXPORT_BATCH]})[0]
        close(got, expected[:EXPORT_BATCH], 1e-4)


def test_310_flow_scores_the_imported_model_on_its_windows(imported, inferred, window_reference):
    """preprocess.py -> CPU runner -> postprocess.py on the exported imported model: each utterance's embedding is
    the checkpoint's Embedder averaged over the same windows, and result.json holds the EER and minDCF of those
    embeddings' cosine scores."""
    reference, flow = window_reference[0], inferred["embeddings"]
    assert sorted(flow) == sorted(reference)
    for key in reference:
        close(flow[key], reference[key], 1e-5)
    trials = imported["trials"]
    expected = summarize(score_trials(flow, trials), labels_of(trials))
    result = inferred["results"]["plain"]
    assert result["num_trials"] == len(trials) and result["score_norm"] == "none"
    assert {k: result[k] for k in METRICS} == pytest.approx({k: expected[k] for k in METRICS}, abs=1e-9)


def test_mean_embedding_reaches_eval_export_and_postprocess(request, imported, evaluated, exported):
    """SpeechBrain's mean_var_norm_emb travels with the import: eval.py's subtract_mean (no cohort) subtracts its
    glob_mean (mean_embedding.npy), export.py records it in the contract, and postprocess.py's subtract_mean (no
    --infer_cohort) scores with it. The other formats carry none, and eval.py's subtract_mean without a cohort is
    refused for them naming the checkpoint."""
    if imported["glob_mean"] is None:
        assert not any("embedding_mean" in contract for contract in exported["contracts"].values())
        with pytest.raises(ValueError, match=f"subtract_mean needs a mean embedding: .*{imported['checkpoint']} "
                                             "carries none"):
            eval_script.main(imported["data"] + EVAL_KEYS + ["--eval_output_dir", str(imported["tmp"] / "refused"),
                                                             "--subtract_mean", "true"])
        assert not os.path.exists(imported["tmp"] / "refused" / "eval_summary.json")
        return
    inferred = request.getfixturevalue("inferred")
    glob_mean = imported["glob_mean"].astype(np.float64)
    np.testing.assert_array_equal(np.load(os.path.join(evaluated["out"], "mean_embedding.npy")), glob_mean)
    trials, labels = imported["trials"], labels_of(imported["trials"])
    summary = evaluated["summary"]
    assert summary["scoring"] == "mean_cosine"
    with_mean = summarize(score_trials(evaluated["embeddings"], trials, mean=glob_mean), labels)
    assert summary["trial_lists"]["trials"]["metrics"]["mean_cosine"] == pytest.approx(with_mean, abs=1e-6)
    for contract in exported["contracts"].values():
        np.testing.assert_array_equal(contract["embedding_mean"], glob_mean)
    flow = inferred["embeddings"]
    expected = summarize(score_trials(flow, trials, mean=glob_mean), labels)
    plain = summarize(score_trials(flow, trials), labels)
    assert abs(expected["eer_threshold"] - plain["eer_threshold"]) > 1e-3        # the mean changes the scores
    result = inferred["results"]["mean"]
    assert {k: result[k] for k in METRICS} == pytest.approx({k: expected[k] for k in METRICS}, abs=1e-9)
