"""eval.py and python -m src.evaluate.verify end to end on a synthetic corpus with a random-weight checkpoint."""
import json
import os
import subprocess
import sys

import mindspore as ms
import numpy as np
import pytest
import soundfile as sf

import eval as eval_script
from src.config import load_config
from src.evaluate import verify
from src.data.audio import read_audio, write_wav
from src.data.synthetic import make_corpus
from src.model.ecapa_tdnn import ECAPA_TDNN
from src.evaluate.extract import load_embeddings
from src.evaluate.metrics import summarize
from src.evaluate.scoring import score_trials
from src.data.trials import read_trials, write_trials

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = dict(channels=32, mfa_channels=96, embedding_size=16, attention_channels=16, se_channels=16,
             res2net_scale=2)             # scale 2: the fewest ops to compile (what is tested needs no more)
OVERRIDES = [a for k, v in SMALL.items() for a in (f"--{k}", str(v))] + [
    "--bucket_seconds", "[1.0, 1.5]", "--max_eval_seconds", "1.5", "--eval_batch_size", "4"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("eval")
    corpus = make_corpus(str(tmp / "corpus"), num_train_speakers=3, num_test_speakers=3, utts_per_speaker=2,
                         seconds=(0.6, 1.4), seed=5, augment_folders=False, progress=False)
    kaldi = write_trials(read_trials(corpus["trials"]), str(tmp / "kaldi_trials.txt"), "kaldi")
    ms.set_seed(0)
    checkpoint = str(tmp / "random.ckpt")
    ms.save_checkpoint(ECAPA_TDNN(**SMALL), checkpoint)
    out = str(tmp / "out")
    argv = OVERRIDES + ["--checkpoint", checkpoint, "--test_dir", corpus["test_dir"],
                        "--trials", f"[{corpus['trials']}, {kaldi}]", "--eval_output_dir", out,
                        "--score_norm", "asnorm", "--asnorm_topk", "2", "--cohort_source", corpus["train_dir"],
                        "--cohort_utts_per_speaker", "2", "--subtract_mean", "true"]
    summary = eval_script.evaluate(load_config(argv))
    return corpus, checkpoint, out, argv, summary


def test_eval_writes_scores_summary_and_det(setup):
    corpus, checkpoint, out, _, summary = setup
    trials = read_trials(corpus["trials"])
    labels = np.array([t[0] for t in trials])
    with open(os.path.join(out, "eval_summary.json")) as f:
        assert json.load(f) == json.loads(json.dumps(summary))
    assert set(summary["trial_lists"]) == {"trials", "kaldi_trials"} and summary["scoring"] == "mean_asnorm"
    assert summary["num_utterances"] == 6 and summary["config"]["score_norm"] == "asnorm"
    # Scores recomputed from the embedding caches eval.py wrote (cohort = training utterances).
    emb = load_embeddings(os.path.join(out, "embeddings.npz"))
    cohort_emb = load_embeddings(os.path.join(out, "embeddings_cohort.npz"))
    assert len(emb) == 6 and len(cohort_emb) == 6 and all(k.startswith("id0") for k in cohort_emb)
    mean = np.mean(np.stack(list(cohort_emb.values())), axis=0, dtype=np.float64)
    expected = score_trials(emb, trials, "asnorm", cohort_emb, mean, 2)
    for name in ("trials", "kaldi_trials"):
        entry = summary["trial_lists"][name]
        rows = [line.split() for line in open(entry["score_file"])]
        assert [(int(r[3]), r[0], r[1]) for r in rows] == trials
        np.testing.assert_allclose([float(r[2]) for r in rows], expected, rtol=1e-5, atol=2e-6)
        assert entry["metrics"]["mean_asnorm"] == pytest.approx(summarize(expected, labels), rel=1e-5, abs=1e-5)
        cosine = summarize(score_trials(emb, trials), labels)
        assert entry["metrics"]["cosine"] == pytest.approx(cosine, abs=1e-6)
        with open(entry["det_plot"], "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert summary["verify_threshold"]["value"] == pytest.approx(cosine["eer_threshold"], abs=1e-6)
    meta = json.load(open(os.path.join(out, "embeddings.json")))
    assert meta["info"]["checkpoint"] == os.path.abspath(checkpoint)


def test_eval_rerun_uses_the_cache_and_bad_checkpoint_is_named(setup, tmp_path):
    corpus, checkpoint, out, argv, summary = setup
    again = eval_script.evaluate(load_config(argv))
    assert again["trial_lists"] == summary["trial_lists"]
    log = open(os.path.join(out, "eval.log")).read()
    assert "6 of 6 utterances found" in log
    partial = str(tmp_path / "partial.ckpt")
    params = ms.load_checkpoint(checkpoint)
    ms.save_checkpoint([{"name": k, "data": v} for k, v in params.items() if k != "fc.weight"], partial)
    with pytest.raises(ValueError, match="partial.ckpt: does not fit the network: 1 network parameters missing"):
        eval_script.evaluate(load_config(argv + ["--checkpoint", partial]))
    with pytest.raises(ValueError, match="score_norm asnorm needs training data"):
        eval_script.evaluate(load_config(argv + ["--cohort_source", ""]))
    with pytest.raises(ValueError, match="subtract_mean needs a mean embedding: .*random.ckpt carries none"):
        eval_script.evaluate(load_config(argv + ["--cohort_source", "", "--score_norm", "none"]))


def test_verify_scores_a_pair_with_the_eval_threshold(setup, tmp_path, capsys, caplog):
    corpus, checkpoint, out, _, summary = setup
    emb = load_embeddings(os.path.join(out, "embeddings.npz"))
    lengths = {k: read_audio(os.path.join(corpus["test_dir"], k)).size for k in emb}
    a, b = sorted(emb, key=lengths.get)[-2:]                       # the two longest: one bucket
    paths = [os.path.join(corpus["test_dir"], k) for k in (a, b)]
    summary_file = os.path.join(out, "eval_summary.json")
    assert verify.main(paths + ["--checkpoint", checkpoint, "--summary", summary_file] + OVERRIDES) == 0
    printed = capsys.readouterr().out
    score = float(printed.split()[1])
    expected = float(np.dot(emb[a], emb[b]) / np.linalg.norm(emb[a]) / np.linalg.norm(emb[b]))
    assert score == pytest.approx(expected, abs=1e-4)
    threshold = summary["verify_threshold"]["value"]
    assert f"threshold {threshold:.4f}: EER threshold of plain cosine scores on trials, from {summary_file}" \
        in printed
    assert ("same speaker" if score >= threshold else "different speakers") in printed
    assert "the threshold is not calibrated" in caplog.text
    # --embed writes embeddings keyed by the paths given; stereo 44.1 kHz input is mixed down and resampled.
    wav, _ = sf.read(paths[0], dtype="float32")
    stereo = str(tmp_path / "stereo44k.wav")
    sf.write(stereo, np.stack([np.interp(np.arange(int(wav.size * 44100 / 16000)) * 16000 / 44100,
                                         np.arange(wav.size), wav)] * 2, axis=1), 44100)
    npz = str(tmp_path / "emb.npz")
    with caplog.at_level("INFO"):
        assert verify.main(["--embed", stereo, paths[1], "--out", npz, "--checkpoint", checkpoint] + OVERRIDES) == 0
    assert f"{stereo}: resampling from 44100 Hz to 16000 Hz" in caplog.text          # the note
    written = load_embeddings(npz)
    assert list(written) == [stereo, paths[1]] and np.allclose(written[paths[1]], emb[b], atol=1e-5)
    e = written[stereo]
    assert abs(float(np.dot(e, emb[b]) / np.linalg.norm(e) / np.linalg.norm(emb[b])) - expected) < 0.05


def test_verify_default_threshold_is_stated_and_warned(caplog):
    with caplog.at_level("WARNING"):
        assert verify.threshold_from(None, None, "any.ckpt") == (verify.DEFAULT_THRESHOLD, "default (uncalibrated)")
    assert "NOT calibrated" in caplog.text
    assert verify.threshold_from("0.4", None, "any.ckpt") == (0.4, "given with --threshold")


def test_verify_rejects_empty_and_unreadable_files(setup, tmp_path):
    corpus, checkpoint, _, _, _ = setup
    write_wav(str(tmp_path / "empty.wav"), np.zeros(0, np.float32))
    (tmp_path / "garbage.wav").write_bytes(b"not audio at all")
    good = os.path.join(corpus["test_dir"], read_trials(corpus["trials"])[0][1])
    for bad, message in (("empty.wav", "no audio"), ("garbage.wav", "not a readable audio file")):
        with pytest.raises(ValueError, match=f"{tmp_path / bad}: .*{message}"):
            verify.main([good, str(tmp_path / bad), "--checkpoint", checkpoint] + OVERRIDES)
    # As a command: exit status 1 and a message naming the file.
    missing = str(tmp_path / "missing.wav")
    result = subprocess.run([sys.executable, "-m", "src.evaluate.verify", good, missing, "--checkpoint", checkpoint]
                            + OVERRIDES, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 1 and f"error: {missing}: audio file not found" in result.stderr, result.stderr


def test_checkpoints_carry_their_model_so_no_model_keys_are_needed(setup, tmp_path):
    import export
    from src.checkpoint import save_checkpoint
    from src.model.embedder import embedder_settings
    from src.train.step import build_train_step
    corpus, _, _, _, _ = setup
    cfg = load_config(OVERRIDES)
    step, _ = build_train_step(cfg, 3, "CPU")
    checkpoint = save_checkpoint(step, str(tmp_path / "run"), 1, {"global_step": 1},
                                 settings=embedder_settings(cfg))
    # No model keys: the full recipe says channels 1024, the checkpoint says 32.
    common = ["--checkpoint", checkpoint, "--test_dir", corpus["test_dir"], "--trials", corpus["trials"],
              "--bucket_seconds", "[1.0, 1.5]", "--max_eval_seconds", "1.5"]
    summary = eval_script.evaluate(load_config(common + ["--eval_output_dir", str(tmp_path / "eval")]))
    assert summary["config"]["channels"] == 32 and summary["config"]["res2net_scale"] == 2
    assert export.main(["--checkpoint", checkpoint, "--export_file", str(tmp_path / "net"),
                        "--export_seconds", "0.5"]) == 0
    a, b = (os.path.join(corpus["test_dir"], k) for k in read_trials(corpus["trials"])[0][1:])
    assert verify.main([a, b, "--checkpoint", checkpoint, "--threshold", "0.5"]) == 0
    with pytest.raises(ValueError, match=f"channels: the command line gives 64 but {checkpoint} was made with 32"):
        verify.main([a, b, "--checkpoint", checkpoint, "--channels", "64"])


def test_verify_refuses_silent_or_very_short_input_unless_forced(setup, tmp_path, capsys):
    _, checkpoint, _, _, _ = setup
    silent_a, silent_b, short = (str(tmp_path / n) for n in ("silent_a.wav", "silent_b.wav", "short.wav"))
    write_wav(silent_a, np.zeros(16000, np.float32))
    write_wav(silent_b, np.full(16000, 1e-5, np.float32))
    write_wav(short, 0.1 * np.sin(np.arange(1280) * 0.3).astype(np.float32))            # 0.08 s
    with pytest.raises(ValueError, match=f"{silent_a}: near-silent .*--force"):
        verify.main([silent_a, silent_b, "--checkpoint", checkpoint] + OVERRIDES)
    with pytest.raises(ValueError, match=f"{short}: very short \\(0.08 s"):
        verify.main([short, silent_b, "--checkpoint", checkpoint] + OVERRIDES)
    assert verify.main([silent_a, silent_b, "--checkpoint", checkpoint, "--force", "--threshold", "0.5"]
                       + OVERRIDES) == 0
    assert "score" in capsys.readouterr().out


def test_trial_paths_outside_test_dir_are_refused_unless_allowed(setup, tmp_path):
    corpus, checkpoint, _, _, _ = setup
    trials = read_trials(corpus["trials"])
    absolute = [(label, os.path.join(corpus["test_dir"], e), os.path.join(corpus["test_dir"], t))
                for label, e, t in trials]
    outside = write_trials(absolute, str(tmp_path / "absolute.txt"))
    argv = OVERRIDES + ["--checkpoint", checkpoint, "--test_dir", corpus["test_dir"], "--trials", outside,
                        "--eval_output_dir", str(tmp_path / "eval")]
    with pytest.raises(ValueError, match="trials: 6 path\\(s\\) leave test_dir .*--allow_outside_test_dir true"):
        eval_script.evaluate(load_config(argv))
    summary = eval_script.evaluate(load_config(argv + ["--allow_outside_test_dir", "true"]))
    assert summary["num_utterances"] == 6
