"""The diarization command (python -m src.diarize) end to end on generated conversations (src/data/conversations.py):
outputs, scores against the exact reference, resuming, and one clear error line for bad input."""
import json
import os

import numpy as np
import pytest
import soundfile as sf
import mindspore as ms

from src.cli import run_command
from src.config import load_config
from src.data.audio import write_wav
from src.data.conversations import ConversationSettings, make_conversations, write_conversation
from src.diarize import __main__ as diarize
from src.diarize.rttm import read_rttm
from src.diarize.segments import overlap_fraction
from src.model.ecapa_tdnn import build_ecapa

TINY_MODEL = dict(channels=32, mfa_channels=96, embedding_size=16, attention_channels=16, se_channels=16,
                  res2net_scale=2)
TINY_ARGS = [a for key, value in TINY_MODEL.items() for a in (f"--{key}", str(value))]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """An untrained tiny ECAPA-TDNN (seeded): its random filters still tell these two synthetic voices apart."""
    path = str(tmp_path_factory.mktemp("model") / "tiny.ckpt")
    ms.set_seed(0)
    ms.save_checkpoint(build_ecapa(load_config(TINY_ARGS)), path)
    return path


@pytest.fixture(scope="module")
def conversation(tmp_path_factory):
    """A 30 s conversation of two voices without overlap, and its reference."""
    folder = tmp_path_factory.mktemp("conversation")
    wav, rttm = str(folder / "talk.wav"), str(folder / "talk.rttm")
    info = write_conversation(wav, rttm, "talk", ConversationSettings(num_speakers=2, seconds=30, overlap=0.0), 2)
    return wav, rttm, info


def test_generated_conversation_and_its_exact_reference(tmp_path):
    wav, rttm = str(tmp_path / "c.wav"), str(tmp_path / "c.rttm")
    info = write_conversation(wav, rttm, "c", ConversationSettings(num_speakers=4, seconds=90, overlap=0.2), 7)
    samples, rate = sf.read(wav)
    assert rate == 16000 and samples.size == 90 * 16000 and info["seconds"] == 90
    turns = read_rttm(rttm)["c"]
    assert len({t.speaker for t in turns}) == 4 and len(turns) == info["turns"]
    assert all(0.2 <= t.duration <= 10.0 for t in turns)
    assert info["overlap"] == pytest.approx(overlap_fraction(turns), abs=1e-4) and 0.08 < info["overlap"] < 0.3
    speech = np.zeros(samples.size, bool)
    for t in turns:
        speech[int(t.start * rate):int(t.end * rate)] = True
    # the reference is exact: between turns the audio is near silent (only the fades below 2 % of a turn's peak)
    outside, inside = np.sqrt(np.mean(samples[~speech] ** 2)), np.sqrt(np.mean(samples[speech] ** 2))
    assert outside < 0.05 * inside


def test_a_set_of_conversations_is_written_once(tmp_path):
    catalogue = make_conversations(str(tmp_path), 2, speakers=(2, 3), minutes=(0.2, 0.3), progress=False)
    assert sorted(catalogue) == ["conv0001", "conv0002"]
    listed = open(tmp_path / "recordings.txt").read().split()
    assert [os.path.basename(p) for p in listed] == ["conv0001.wav", "conv0002.wav"]
    stamp = os.stat(listed[0]).st_mtime_ns
    make_conversations(str(tmp_path), 2, speakers=(2, 3), minutes=(0.2, 0.3), progress=False)
    assert os.stat(listed[0]).st_mtime_ns == stamp                                    # kept, not rewritten
    assert 2 <= catalogue["conv0001"]["speakers"] <= 3


def test_diarize_a_conversation_and_score_it(checkpoint, conversation, tmp_path, capsys):
    wav, rttm, _ = conversation
    out = str(tmp_path / "out")
    args = [wav, "--checkpoint", checkpoint, "--out", out, "--reference", rttm, "--num_speakers", "2"] + TINY_ARGS
    assert diarize.main(args) == 0
    printed = capsys.readouterr().out
    assert "collar 0.25 s, overlap scored" in printed and "no collar, overlap skipped" in printed
    for name in ("talk.rttm", "talk.json", "talk.png", "scores.json", "diarize.log"):
        assert os.path.isfile(os.path.join(out, name)), name
    hypothesis = read_rttm(os.path.join(out, "talk.rttm"))["talk"]
    assert {s.speaker for s in hypothesis} == {"spk0", "spk1"}
    scores = json.load(open(os.path.join(out, "scores.json")))["collar 0.25 s, overlap scored"]["talk"]
    # Measured 2026-12-03 with this untrained seeded network: DER 8.3 % (missed 0.0, false alarm 0.0, confusion
    # 8.3; 16.5 % without collar). Silero VAD finds the turns; the untrained embeddings tell the two voices apart
    # well enough when told there are two (the eigengap on its own finds too many: 61.9 %).
    assert scores["missed"] + scores["false_alarm"] < 0.05
    assert scores["der"] < 0.15
    # Read in 10 s chunks (as a long recording is, in chunks of 600 s): the chunks' windows are placed at their time
    # in the recording. Measured 2026-12-03: missed 6.8 %, false alarm 0.0 % (the VAD restarts at each chunk edge).
    chunked = str(tmp_path / "chunked")
    assert diarize.main(args[:4] + [chunked] + args[5:] + ["--diarize_chunk_seconds", "10", "--no_plot"]) == 0
    chunked_scores = json.load(open(os.path.join(chunked, "scores.json")))["collar 0.25 s, overlap scored"]["talk"]
    assert chunked_scores["missed"] + chunked_scores["false_alarm"] < 0.1 and chunked_scores["der"] < 0.25
    # A second run finds the recording done and does not diarize it again.
    stamp = os.stat(os.path.join(out, "talk.json")).st_mtime_ns
    assert diarize.main(args) == 0
    assert os.stat(os.path.join(out, "talk.json")).st_mtime_ns == stamp


def run(args, capsys):
    """Run the command as ``python -m src.diarize`` does (src.cli.run_command: exit status, the error line) in this
    process -> (exit status, stdout, stderr lines)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        run_command(diarize.main, args + TINY_ARGS)
    out, err = capsys.readouterr()
    return stop.value.code, out, err.strip().splitlines()


def test_bad_recordings_get_one_error_line_and_the_good_ones_are_kept(checkpoint, conversation, tmp_path, capsys):
    wav, rttm, _ = conversation
    empty, silent = str(tmp_path / "empty.wav"), str(tmp_path / "silent.wav")
    sf.write(empty, np.zeros(0, np.float32), 16000)
    write_wav(silent, 1e-4 * np.random.default_rng(0).standard_normal(3 * 16000))
    out = str(tmp_path / "out")
    code, _, err = run([empty, wav, silent, "--checkpoint", checkpoint, "--out", out], capsys)
    assert code == 1
    assert err[-1].startswith("error: ") and "empty.wav: the file holds no audio" in err[-1]
    assert "and 1 more recordings" in err[-1]
    assert not any(line.startswith("Traceback") for line in err)
    assert os.path.isfile(os.path.join(out, "talk.rttm"))                      # the good recording was diarized
    log = open(os.path.join(out, "diarize.log")).read()
    assert "silent.wav: no speech found" in log

    # --num_speakers above the number of windows: one line naming the recording; earlier outputs stay
    before = open(os.path.join(out, "talk.rttm")).read()
    code, _, err = run([wav, "--checkpoint", checkpoint, "--out", out, "--num_speakers", "500"], capsys)
    assert code == 1 and err[-1].startswith("error: ") and "talk.wav: num_speakers: 500 speakers asked for" in err[-1]
    assert open(os.path.join(out, "talk.rttm")).read() == before


def test_malformed_reference_is_refused_before_any_work(checkpoint, conversation, tmp_path):
    wav, _, _ = conversation
    bad = tmp_path / "bad.rttm"
    bad.write_text("SPEAKER talk 1 zero 1.0 <NA> <NA> A <NA> <NA>\n")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"bad.rttm:1: start and duration must be numbers"):
        diarize.main([wav, "--checkpoint", checkpoint, "--out", str(out), "--reference", str(bad)] + TINY_ARGS)
    assert not out.exists()


def test_onnxruntime_window_embeddings_match_the_mindspore_graph(checkpoint, tmp_path):
    """``--runtime onnxruntime`` (src/deploy/onnx_runtime.py behind load_embedder) gives diarization's windows the
    embeddings the MindSpore graph gives them, windows shorter than their bucket (padded rows) included."""
    from src.checkpoint import load_embedder
    from src.deploy.onnx_runtime import OnnxEmbedder
    from src.diarize.pipeline import DiarizeSettings, window_batching
    from src.model.embedder import min_samples
    from src.recordings.embed import embed_windows
    cfg = load_config(TINY_ARGS)
    onnx_cfg = load_config(TINY_ARGS + ["--runtime", "onnxruntime", "--runtime_cache_dir", str(tmp_path)])
    samples = 0.1 * np.random.default_rng(1).standard_normal(16000 * 6).astype(np.float32)
    windows = [(0.0, 1.5), (0.75, 2.25), (3.0, 3.6), (4.0, 4.3)]
    batching = window_batching(DiarizeSettings.from_recipe(cfg), min_samples(cfg))
    expected = embed_windows(load_embedder(cfg, checkpoint), samples, windows, batching)
    got = embed_windows(load_embedder(onnx_cfg, checkpoint), samples, windows, batching)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="not a readable ONNX model"):
        OnnxEmbedder(str(tmp_path / "missing.onnx"), "missing")