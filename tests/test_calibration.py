"""Score calibration: the weighted logistic regression against an analytic LLR and scikit-learn, the calibration
trials and file, and python -m src.calibrate -> eval.py --calibration -> verify --calibration end to end."""
import json
import math
import os

import mindspore as ms
import numpy as np
import pytest
import soundfile as sf
from sklearn.linear_model import LogisticRegression

import eval as eval_script
from src.evaluate import calibrate as calibrate_command
from src.checkpoint import SPEAKERS_KEY, json_entry, write_checkpoint_file
from src.config import load_config
from src.data.lists import speaker_of_path
from src.data.synthetic import make_corpus
from src.data.trials import read_trials
from src.evaluate import verify
from src.evaluate.calibration import (Calibration, calibration_pairs, choose_crops, crop_key, feature_names,
                                      fit_linear, read_calibration, trial_features, utterance_quality,
                                      write_calibration)
from src.evaluate.extract import load_embeddings
from src.model.ecapa_tdnn import ECAPA_TDNN

SMALL = dict(channels=32, mfa_channels=96, embedding_size=16, attention_channels=16, se_channels=16,
             res2net_scale=2)
OVERRIDES = [a for k, v in SMALL.items() for a in (f"--{k}", str(v))] + [
    "--bucket_seconds", "[]", "--max_eval_seconds", "1.5", "--eval_batch_size", "4"]      # one graph shape


# ---------------------------------------------------------------- fitting
def test_fit_linear_recovers_the_analytic_llr_and_matches_sklearn():
    # Scores x ~ N(q + 2, 1) for targets and N(q, 1) for nontargets, with a quality measure q: the exact LLR is
    # log N(x; q + 2, 1) - log N(x; q, 1) = 2 x - 2 q - 2, linear in (x, q), whatever the prior of the fit.
    rng = np.random.default_rng(3)
    n = 40000
    labels = rng.random(n) < 0.3
    q = rng.uniform(-1, 2, n)
    x = rng.normal(q + 2 * labels, 1.0)
    features = np.stack([x, q], axis=1)
    for prior in (0.01, 0.5):
        weights, bias = fit_linear(features, labels, prior)
        np.testing.assert_allclose(weights, [2.0, -2.0], atol=0.15)
        assert bias == pytest.approx(-2.0, abs=0.2)
    # The same prior-weighted cross-entropy minimised by scikit-learn (lbfgs, no penalty to speak of).
    prior = 0.05
    weight = np.where(labels, prior / labels.sum(), (1 - prior) / (~labels).sum()) * n
    reference = LogisticRegression(C=1e12, tol=1e-12, max_iter=10000).fit(features, labels, sample_weight=weight)
    weights, bias = fit_linear(features, labels, prior)
    np.testing.assert_allclose(weights, reference.coef_[0], atol=2e-3)
    assert bias == pytest.approx(reference.intercept_[0] - math.log(prior / (1 - prior)), abs=2e-3)
    with pytest.raises(ValueError, match="need both target and nontarget"):
        fit_linear(features, np.ones(n), 0.5)


def test_quality_measures_match_a_direct_computation():
    rng = np.random.default_rng(4)
    embeddings = {f"id1/v/{i}.wav": rng.normal(size=8) * (i + 1) for i in range(3)}
    cohort = {f"id{s}/v/{u}.wav": rng.normal(size=8) for s in range(2, 7) for u in range(2)}
    seconds = {k: 1.5 + i for i, k in enumerate(embeddings)}
    values = utterance_quality(embeddings, seconds, ["duration", "norm", "imposter_mean"], cohort, None, topk=3)

    def unit(v):
        return v / np.linalg.norm(v)
    speakers = [unit(sum(unit(cohort[f"id{s}/v/{u}.wav"]) for u in range(2)) / 2) for s in range(2, 7)]
    for k, e in embeddings.items():
        assert values["duration"][k] == pytest.approx(math.log(seconds[k]))
        assert values["norm"][k] == pytest.approx(math.log(np.linalg.norm(e)))
        top3 = sorted(float(unit(e) @ c) for c in speakers)[-3:]
        assert values["imposter_mean"][k] == pytest.approx(np.mean(top3))
    features = trial_features([(1, "id1/v/0.wav", "id1/v/2.wav")], [0.7], ["duration", "norm"], values)
    np.testing.assert_allclose(features, [[0.7, math.log(1.5), math.log(3.5), values["norm"]["id1/v/0.wav"],
                                           values["norm"]["id1/v/2.wav"]]])
    with pytest.raises(ValueError, match="imposter_mean needs a cohort"):
        utterance_quality(embeddings, seconds, ["imposter_mean"])
    with pytest.raises(ValueError, match="calibration_quality: unknown measures \\['snr'\\]"):
        feature_names(["snr"])


def test_calibration_trials_are_balanced_crops_of_distinct_utterances():
    keys = [f"id{s:05d}/vid/{u:05d}.wav" for s in range(5) for u in range(4)] + ["id99999/vid/00001.wav"]
    lengths = {k: 16000 * (1 + i % 7) for i, k in enumerate(keys)}
    crops = choose_crops(keys, lengths.get, 3, (0.5, 4.0), 16000, seed=1)
    assert len(crops) == 15 and "id99999" not in {speaker_of_path(k) for k, _, _ in crops}   # one utterance only
    for key, start, n in crops:
        assert min(8000, lengths[key]) <= n <= min(64000, lengths[key]) and 0 <= start <= lengths[key] - n
    assert len({k for k, _, _ in crops}) == 15                                  # one crop per utterance
    crop_keys = [crop_key(*c) for c in crops]
    assert crop_key("id1/v/00001.wav", 5, 7) == "id1/v/00001_5_7.wav"
    trials = calibration_pairs(crop_keys, 1000, seed=2)
    targets = [t for t in trials if t[0] == 1]
    assert len(targets) == 5 * 3 and len(trials) == 30                         # all 15 same-speaker pairs
    assert len({(a, b) for _, a, b in trials}) == 30
    assert all((speaker_of_path(a) == speaker_of_path(b)) == bool(label) for label, a, b in trials)
    assert len(calibration_pairs(crop_keys, 10, seed=2)) == 10


def test_calibration_file_round_trip_and_refusals(tmp_path):
    calibration = Calibration(["duration"], [10.0, 0.5, -0.25], -3.0, 0.01, {"scoring": "cosine"}, "a.ckpt",
                              "ab" * 32, {"num_target": 3}, [{"p_target": 0.01, "threshold": math.log(99),
                                                              "false_accept": 0.001, "false_reject": 0.2}])
    path = write_calibration(str(tmp_path / "cal.json"), calibration)
    record = json.load(open(path))
    assert record["features"] == ["score", "min_log_seconds", "max_log_seconds"]
    again = read_calibration(path)
    assert again == calibration and again.operating_point(0.01)["false_reject"] == 0.2
    assert again.operating_point(0.02) is None
    assert again.llrs([[0.5, 0.0, 1.0]]) == pytest.approx([10 * 0.5 - 0.25 - 3.0])
    with pytest.raises(ValueError, match="cal.json: the calibration was fitted for checkpoint a.ckpt"):
        again.check_fits(path, "cd" * 32, {"scoring": "cosine"})
    with pytest.raises(ValueError, match="cal.json: the calibration was fitted on other scores: scoring 'cosine' "
                                         "there, 'asnorm' here"):
        again.check_fits(path, "ab" * 32, {"scoring": "asnorm"})
    record["weights"] = [1.0]
    (tmp_path / "bad.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="bad.json: features/weights: expected 3 weights"):
        read_calibration(str(tmp_path / "bad.json"))
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match="broken.json: not a JSON calibration file"):
        read_calibration(str(tmp_path / "broken.json"))
    with pytest.raises(ValueError, match="missing.json: cannot read the calibration file"):
        read_calibration(str(tmp_path / "missing.json"))


# ---------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("calibration")
    corpus = make_corpus(str(tmp / "corpus"), num_train_speakers=4, num_test_speakers=3, utts_per_speaker=3,
                         seconds=(0.6, 1.4), seed=5, augment_folders=False, progress=False)
    ms.set_seed(0)
    checkpoint = str(tmp / "random.ckpt")        # an untrained network: it records no training speaker
    write_checkpoint_file([{"name": p.name, "data": p} for p in ECAPA_TDNN(**SMALL).get_parameters()]
                          + [json_entry(SPEAKERS_KEY, [])], checkpoint)
    cal_file = str(tmp / "cal" / "calibration.json")
    common = OVERRIDES + ["--checkpoint", checkpoint, "--test_dir", corpus["test_dir"], "--trials", corpus["trials"]]
    calibration = calibrate_command.calibrate(load_config(common + [
        "--calibration_source", corpus["train_dir"], "--calibration", cal_file, "--calibration_seconds", "[0.5, 1.4]",
        "--calibration_utts_per_speaker", "3", "--calibration_quality", "[duration, norm]"]))
    return corpus, checkpoint, cal_file, common, calibration


def test_calibrate_then_eval_writes_llrs_an_independent_computation_reproduces(calibrated, tmp_path):
    corpus, checkpoint, cal_file, common, calibration = calibrated
    assert read_calibration(cal_file) == calibration
    assert calibration.trials["num_speakers"] == 4 and calibration.trials["num_crops"] == 12
    assert calibration.trials["num_target"] == calibration.trials["num_nontarget"] == 12        # 4 x C(3, 2)
    assert 0.5 - 1e-3 <= calibration.trials["seconds"][0] <= calibration.trials["seconds"][1] <= 1.4 + 1e-3
    assert calibration.scoring == {"scoring": "cosine"}
    false_accepts = [op["false_accept"] for op in calibration.operating_points]      # priors ascending
    assert false_accepts == sorted(false_accepts)
    out = str(tmp_path / "eval")
    summary = eval_script.evaluate(load_config(common + ["--calibration", cal_file, "--eval_output_dir", out]))
    entry = summary["trial_lists"]["trials"]
    # LLR = weights . [cosine, min/max log seconds, min/max log embedding norm] + bias, from the embedding cache
    # and the files' lengths.
    emb = load_embeddings(os.path.join(out, "embeddings.npz"))
    w, b = calibration.weights, calibration.bias
    expected, labels = [], []
    for label, e, t in read_trials(corpus["trials"]):
        cos = float(np.dot(emb[e], emb[t]) / np.linalg.norm(emb[e]) / np.linalg.norm(emb[t]))
        secs = [sf.info(os.path.join(corpus["test_dir"], k)).duration for k in (e, t)]
        norms = [float(np.linalg.norm(emb[k])) for k in (e, t)]
        expected.append(w[0] * cos + w[1] * math.log(min(secs)) + w[2] * math.log(max(secs))
                        + w[3] * math.log(min(norms)) + w[4] * math.log(max(norms)) + b)
        labels.append(label)
    rows = [line.split() for line in open(entry["llr_file"])]
    np.testing.assert_allclose([float(r[2]) for r in rows], expected, atol=1e-4)
    m = entry["metrics"]["calibrated"]
    assert {"cllr", "min_cllr", "act_dcf_p0.01", "act_dcf_p0.05"} <= set(m)
    assert m["act_dcf_p0.01"] == pytest.approx(
        (0.01 * np.mean([x < math.log(99) for x, y in zip(expected, labels) if y])
         + 0.99 * np.mean([x >= math.log(99) for x, y in zip(expected, labels) if not y])) / 0.01, abs=1e-9)
    # Another scoring or another checkpoint is refused before any audio is embedded.
    with pytest.raises(ValueError, match="fitted on other scores: .*scoring 'cosine' there, 'mean_cosine' here"):
        eval_script.evaluate(load_config(common + ["--calibration", cal_file, "--subtract_mean", "true",
                                                   "--cohort_source", corpus["train_dir"], "--eval_output_dir", out]))
    other = str(tmp_path / "other.ckpt")
    ms.set_seed(1)
    ms.save_checkpoint(ECAPA_TDNN(**SMALL), other)
    with pytest.raises(ValueError, match="calibration.json: the calibration was fitted for checkpoint .*random.ckpt"):
        eval_script.evaluate(load_config(common + ["--calibration", cal_file, "--checkpoint", other,
                                                   "--eval_output_dir", out]))


def test_verify_decides_at_the_bayes_threshold_of_the_stated_prior(calibrated, capsys):
    corpus, checkpoint, cal_file, _, calibration = calibrated
    _, a, b = read_trials(corpus["trials"])[0]
    pair = [os.path.join(corpus["test_dir"], k) for k in (a, b)]
    assert verify.main(pair + ["--checkpoint", checkpoint, "--calibration", cal_file] + OVERRIDES) == 0
    printed = capsys.readouterr().out
    llr = float(printed.split("LLR ")[1].split()[0])
    decision = "same speaker" if llr >= math.log(99) else "different speakers"
    point = calibration.operating_point(0.01)
    assert f"decision: {decision}  (Bayes threshold {math.log(99):.3f} for p_target 0.01" in printed
    assert (f"false accepts {100 * point['false_accept']:.2f} %, false rejects {100 * point['false_reject']:.2f} %"
            in printed)
    # The Python API gives the same LLR, from the embeddings of eval.py's cache as well.
    from src.checkpoint import load_embedder
    cfg = load_config(OVERRIDES)
    result = verify.score_pair(cfg, load_embedder(cfg, checkpoint), pair, calibration)
    assert result["llr"] == pytest.approx(llr, abs=2e-3)
    # Other priors move the threshold; one without stored error rates says which priors have them.
    line = verify.calibrated_decision({"score": 0.5, "llr": 0.1}, calibration, 0.5)
    assert "decision: same speaker  (Bayes threshold 0.000 for p_target 0.5" in line
    line = verify.calibrated_decision({"score": 0.5, "llr": 0.1}, calibration, 0.3)
    assert "decision: different speakers" in line and "stored for p_target 0.001, 0.002" in line
    with pytest.raises(ValueError, match="--p_target needs a calibration file"):
        verify.main(pair + ["--checkpoint", checkpoint, "--p_target", "0.1"] + OVERRIDES)
    with pytest.raises(ValueError, match="--threshold and --calibration exclude each other"):
        verify.main(pair + ["--checkpoint", checkpoint, "--calibration", cal_file, "--threshold", "0.3"] + OVERRIDES)


def test_crops_are_reused_only_while_their_source_is_unchanged(tmp_path):
    """A second calibration run reuses the crops of the first, but cuts a crop again when its source file changed
    or another source folder holds a file of the same name."""
    rng = np.random.default_rng(0)
    roots = {name: tmp_path / name for name in ("a", "b")}
    for root in roots.values():
        (root / "s1" / "v").mkdir(parents=True)
        sf.write(str(root / "s1" / "v" / "u.wav"), (0.1 * rng.standard_normal(16000)).astype(np.float32), 16000)
    crops, crop_dir = [("s1/v/u.wav", 100, 8000)], str(tmp_path / "crops")
    [key] = calibrate_command.write_crops(crops, str(roots["a"]), crop_dir, 16000)
    path = os.path.join(crop_dir, key)
    first = sf.read(path)[0]
    stamp = os.stat(path).st_mtime_ns
    calibrate_command.write_crops(crops, str(roots["a"]), crop_dir, 16000)
    assert os.stat(path).st_mtime_ns == stamp                                 # unchanged source: reused
    calibrate_command.write_crops(crops, str(roots["b"]), crop_dir, 16000)    # another folder, same name
    np.testing.assert_allclose(sf.read(path)[0], sf.read(str(roots["b"] / "s1/v/u.wav"))[0][100:8100], atol=1e-4)
    sf.write(str(roots["b"] / "s1/v/u.wav"), np.zeros(16000, np.float32), 16000)      # the source changes
    calibrate_command.write_crops(crops, str(roots["b"]), crop_dir, 16000)
    assert not np.any(sf.read(path)[0]) and np.any(first)
