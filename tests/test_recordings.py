"""Recordings from the command line: python -m src.recordings.speech, verify and eval.py with --vad silero (files
without speech named and refused or warned about, the embedding cache tied to the VAD settings)."""
import json
import os

import mindspore as ms
import numpy as np
import pytest

import eval as eval_script
from src.config import load_config
from src.data.audio import write_wav
from src.data.synthetic import _rng, make_corpus, make_long_recordings, random_speaker, synthesize_utterance
from src.evaluate import verify
from src.evaluate.extract import load_embeddings
from src.model.ecapa_tdnn import ECAPA_TDNN
from src.recordings import speech

SMALL = dict(channels=32, mfa_channels=96, embedding_size=16, attention_channels=16, se_channels=16,
             res2net_scale=2)
OVERRIDES = [a for k, v in SMALL.items() for a in (f"--{k}", str(v))] + [
    "--bucket_seconds", "[]", "--max_eval_seconds", "2.0", "--eval_batch_size", "4"]      # one graph shape


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    ms.set_seed(0)
    path = str(tmp_path_factory.mktemp("ckpt") / "random.ckpt")
    ms.save_checkpoint(ECAPA_TDNN(**SMALL), path)
    return path


def test_speech_command_prints_regions_writes_rttm_and_measures_against_the_truth(tmp_path, capsys):
    paths = make_long_recordings(str(tmp_path / "long"), num_speakers=1, recordings_per_speaker=1,
                                 seconds=(20.0, 20.0), seed=1, snr_db=(20.0, 20.0), progress=False)
    with open(paths["speech"], encoding="utf-8") as f:
        key = next(iter(json.load(f)))
    wav, rttm = os.path.join(paths["test_dir"], key), str(tmp_path / "speech.rttm")
    assert speech.main([wav, "--rttm", rttm, "--truth", paths["speech"]]) == 0
    out = capsys.readouterr().out
    line = next(text for text in out.splitlines() if "frame precision" in text)
    precision, recall = (float(v) for v in line.split("frame precision ")[1].split(", recall "))
    assert precision > 0.85 and recall > 0.85, out
    lines = open(rttm, encoding="utf-8").read().splitlines()
    assert lines and all(line.startswith("SPEAKER 00001 1 ") and " speech " in line for line in lines)
    noise = str(tmp_path / "noise.wav")
    write_wav(noise, 0.01 * np.random.default_rng(0).standard_normal(32000))
    with pytest.raises(ValueError, match=f"{noise}: the VAD found no speech"):
        speech.main([noise])


def test_verify_with_vad_refuses_a_file_without_speech_unless_forced(checkpoint, tmp_path, capsys):
    noise, voice = str(tmp_path / "noise.wav"), str(tmp_path / "voice.wav")
    write_wav(noise, 0.01 * np.random.default_rng(0).standard_normal(32000))
    rng = _rng(0, 5)
    write_wav(voice, synthesize_utterance(random_speaker(rng), 3.0, rng))
    with pytest.raises(ValueError, match=f"{noise}: the VAD found no speech; .*--force"):
        verify.main([noise, voice, "--checkpoint", checkpoint, "--vad", "silero"] + OVERRIDES)
    assert verify.main([noise, voice, "--checkpoint", checkpoint, "--vad", "silero", "--force", "--threshold", "0.5"]
                       + OVERRIDES) == 0
    assert "score" in capsys.readouterr().out


def test_eval_with_vad_embeds_speech_and_ties_the_cache_to_the_vad(checkpoint, tmp_path, caplog):
    corpus = make_corpus(str(tmp_path / "corpus"), num_train_speakers=1, num_test_speakers=2, utts_per_speaker=2,
                         seconds=(1.2, 1.8), seed=2, augment_folders=False, progress=False)
    noise_key = "id10001/noise/00009.wav"                 # a file without speech in the trial list
    write_wav(os.path.join(corpus["test_dir"], noise_key), 0.01 * np.random.default_rng(1).standard_normal(24000))
    trials = str(tmp_path / "trials.txt")
    with open(corpus["trials"], encoding="utf-8") as f:
        first = f.readline().split()
    with open(trials, "w", encoding="utf-8") as f:
        f.write(f"{' '.join(first)}\n0 {first[1]} {noise_key}\n")
    out = str(tmp_path / "eval")
    argv = OVERRIDES + ["--checkpoint", checkpoint, "--test_dir", corpus["test_dir"], "--trials", trials,
                        "--eval_output_dir", out]
    eval_script.evaluate(load_config(argv))
    plain = load_embeddings(os.path.join(out, "embeddings.npz"))
    caplog.clear()
    eval_script.evaluate(load_config(argv + ["--vad", "silero"]))
    assert "made by another model/config/root; recomputing" in caplog.text          # the VAD is in the fingerprint
    assert "have no speech the VAD found" in caplog.text and noise_key in caplog.text
    with open(os.path.join(out, "embeddings.json"), encoding="utf-8") as f:
        fingerprint = json.load(f)["fingerprint"]
    assert fingerprint["speech"]["vad"]["method"] == "silero"
    with_vad = load_embeddings(os.path.join(out, "embeddings.npz"))
    np.testing.assert_allclose(with_vad[noise_key], plain[noise_key], atol=1e-5)   # no speech: embedded whole
    assert not np.allclose(with_vad[first[1]], plain[first[1]], atol=1e-4)         # speech only: another input
