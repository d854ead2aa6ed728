"""python -m src.speakers end to end on a tiny random network: enrolled embeddings equal verify's, calibrated
open-set decisions, an identification list scored, and bad input ending in one line with nothing lost."""
import glob
import json
import os

import mindspore as ms
import numpy as np
import pytest
import soundfile as sf

from src.checkpoint import file_sha256
from src.cli import run_command
from src.config import load_config
from src.data.synthetic import make_corpus
from src.evaluate import verify
from src.evaluate.calibration import Calibration, scoring_settings, write_calibration
from src.evaluate.extract import load_embeddings
from src.model.ecapa_tdnn import ECAPA_TDNN
from src.speakers.command import main
from src.speakers.metrics import identification_metrics
from src.speakers.store import open_store

SMALL = dict(channels=32, mfa_channels=96, embedding_size=16, attention_channels=16, se_channels=16,
             res2net_scale=2)
OVERRIDES = [a for k, v in SMALL.items() for a in (f"--{k}", str(v))] + [
    "--bucket_seconds", "[]", "--max_eval_seconds", "1.5", "--eval_batch_size", "8"]      # one graph shape


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("speakers")
    corpus = make_corpus(str(tmp / "corpus"), num_train_speakers=1, num_test_speakers=5, utts_per_speaker=4,
                         seconds=(0.6, 1.4), seed=7, augment_folders=False, progress=False)
    utts = {os.path.basename(d): sorted(glob.glob(os.path.join(d, "*", "*.wav")))
            for d in sorted(glob.glob(os.path.join(corpus["test_dir"], "id*")))}
    ms.set_seed(0)
    checkpoint = str(tmp / "random.ckpt")
    ms.save_checkpoint(ECAPA_TDNN(**SMALL), checkpoint)
    store = str(tmp / "speakers.db")
    common = OVERRIDES + ["--checkpoint", checkpoint, "--store", store]
    enrolled = sorted(utts)[:3]                                   # the other two are never enrolled
    assert main(["enroll", enrolled[0]] + utts[enrolled[0]][:3] + common) == 0
    enroll_map = tmp / "enroll.map"                               # the other two from a list, clips below a folder
    enroll_map.write_text("".join(f"{name} {' '.join(os.path.relpath(p, corpus['test_dir']) for p in utts[name][:3])}\n"
                                  for name in enrolled[1:]))
    assert main(["enroll", "--enroll_map", str(enroll_map), "--audio_dir", corpus["test_dir"]] + common) == 0
    # Every utterance embedded by python -m src.evaluate.verify --embed: the reference of the tests below.
    npz = str(tmp / "verify.npz")
    assert verify.main(["--embed"] + sorted(p for paths in utts.values() for p in paths)
                       + ["--out", npz, "--checkpoint", checkpoint] + OVERRIDES) == 0
    return dict(tmp=tmp, corpus=corpus, utts=utts, checkpoint=checkpoint, store=store, common=common,
                enrolled=enrolled, embedded=load_embeddings(npz))


def run(argv, capsys):
    """Run the command as ``python -m src.speakers`` does -> (exit status, stdout, stderr)."""
    with pytest.raises(SystemExit) as stop:
        run_command(main, argv)
    out, err = capsys.readouterr()
    return stop.value.code, out, err


def test_enrolled_embeddings_are_the_ones_verify_writes(setup, capsys):
    s = setup
    name = s["enrolled"][0]
    written = s["embedded"]
    store = open_store("sqlite", s["store"], None)
    clips = store.clips(name)
    assert [c.path for c in clips] == s["utts"][name][:3]
    assert [c.path for c in store.clips(s["enrolled"][2])] == s["utts"][s["enrolled"][2]][:3]
    for clip in clips:
        np.testing.assert_allclose(clip.embedding, written[clip.path], atol=1e-5)
    raw = np.stack([written[p] for p in s["utts"][name][:3]]).astype(np.float64)
    profile = (raw / np.linalg.norm(raw, axis=1, keepdims=True)).mean(axis=0)
    assert store.search(profile[None], 1)[0][0] == (name, pytest.approx(1.0, abs=1e-5))
    code, out, _ = run(["list", "--store", s["store"]], capsys)
    assert code == 0 and out.splitlines()[-1] == f"3 speaker(s) in {s['store']}"


def write_test_calibration(setup, path, bias):
    """A calibration file for this checkpoint with chosen weights (score, duration and norm measures)."""
    cfg = load_config(OVERRIDES)
    quality = ["duration", "norm"]
    calibration = Calibration(quality, [8.0, 0.5, -0.25, 0.1, 0.2], bias, 0.01, scoring_settings(cfg, quality),
                              setup["checkpoint"], file_sha256(setup["checkpoint"]))
    write_calibration(path, calibration)
    return calibration


def test_calibrated_identification_gives_llrs_and_decides_at_the_bayes_threshold(setup, capsys):
    s = setup
    clip = s["utts"][s["enrolled"][1]][3]                        # not used for enrolment
    for bias, accepted in ((40.0, True), (-40.0, False)):
        cal, out_json = str(s["tmp"] / f"cal{bias}.json"), str(s["tmp"] / f"who{bias}.json")
        calibration = write_test_calibration(s, cal, bias)
        code, out, err = run(["identify", clip, "--calibration", cal, "--p_target", "0.05", "--top_k", "2",
                              "--out", out_json] + s["common"], capsys)
        assert code == 0, err
        answer = json.load(open(out_json))[0]
        assert len(answer["candidates"]) == 2
        # The LLR of each candidate, computed here from the stored profile and the clip's own embedding.
        rows = {row["name"]: row for row in open_store("sqlite", s["store"], None).speakers()}
        test_emb = s["embedded"][clip]
        seconds = sf.info(clip).frames / 16000
        for candidate in answer["candidates"]:
            row = rows[candidate["speaker"]]
            log_norm_test = np.log(np.linalg.norm(test_emb))
            d = sorted([np.log(seconds), np.log(row["seconds"])])
            n = sorted([log_norm_test, row["log_norm"]])
            expected = np.dot(calibration.weights, [candidate["score"], d[0], d[1], n[0], n[1]]) + bias
            assert candidate["llr"] == pytest.approx(expected, abs=1e-4)
        threshold = np.log(0.95 / 0.05)
        assert (answer["candidates"][0]["llr"] >= threshold) == accepted
        assert answer["decision"] == (answer["candidates"][0]["speaker"] if accepted else "unknown")
        assert f"decision: {answer['decision']}  (Bayes threshold {threshold:.3f} for p_target 0.05)" in out


def test_an_identification_list_is_scored_with_the_metrics_of_its_answers(setup, capsys):
    s = setup
    test_dir = s["corpus"]["test_dir"]
    lines = [f"{os.path.relpath(p, test_dir)} {name}" for name in s["enrolled"] for p in s["utts"][name][3:]]
    lines += [f"{os.path.relpath(p, test_dir)} unknown" for name in sorted(s["utts"])[3:] for p in s["utts"][name]]
    id_list = s["tmp"] / "ident.txt"
    id_list.write_text("\n".join(lines) + "\n")
    out_dir = s["tmp"] / "ident_out"
    code, out, err = run(["evaluate", "--list", str(id_list), "--audio_dir", test_dir, "--fpir", "0.25",
                          "--out", str(out_dir)] + s["common"], capsys)
    assert code == 0, err
    summary = json.load(open(out_dir / "identification_summary.json"))
    results = (out_dir / "identification_results.txt").read_text().splitlines()
    assert len(results) == len(lines) == 3 + 8
    assert [r.split()[:2] for r in results] == [line.split() for line in lines]
    # The same metrics from cosine scores computed here: verify's embeddings against profiles made by hand.
    store = open_store("sqlite", s["store"], None)
    names = s["enrolled"]
    profiles = []
    for name in names:
        raw = np.stack([s["embedded"][p] for p in s["utts"][name][:3]]).astype(np.float64)
        profile = (raw / np.linalg.norm(raw, axis=1, keepdims=True)).mean(axis=0)
        profiles.append(profile / np.linalg.norm(profile))
    ranked, scores = [], []
    for line in lines:
        emb = s["embedded"][os.path.join(test_dir, line.split()[0])].astype(np.float64)
        cosine = np.stack(profiles) @ (emb / np.linalg.norm(emb))
        order = np.argsort(-cosine)
        ranked.append([names[j] for j in order])
        scores.append(list(cosine[order]))
    again = identification_metrics(ranked, scores, [line.split()[1] for line in lines], 0.25)
    for key in ("top1_accuracy", "top5_accuracy", "fnir", "fpir", "threshold", "num_mated", "num_nonmated"):
        assert summary["cosine"][key] == pytest.approx(again[key], abs=1e-5), key
    assert len(store.speakers()) == 3
    assert summary["cosine"]["top5_accuracy"] == 1.0             # only 3 speakers are enrolled
    assert "closed set: top-1 accuracy" in out and "open set: FNIR" in out


def test_bad_input_ends_in_one_line_and_loses_nothing(setup, capsys, tmp_path):
    s = setup
    before = open_store("sqlite", s["store"], None).speakers()
    some = s["utts"][s["enrolled"][0]][:1]
    cases = [
        (["enroll", "newcomer", some[0], str(tmp_path / "missing.wav")], "missing.wav: audio file not found"),
        (["enroll", "newcomer"], "enroll newcomer: no clips given; an enrolment needs at least one clip"),
        (["enroll", s["enrolled"][0]] + some, f"speaker '{s['enrolled'][0]}' is already enrolled (--replace"),
        (["enroll", "unknown"] + some, "speaker name 'unknown' is reserved"),
        (["enroll", "--enroll_map", str(tmp_path / "none.map")], "none.map: enrolment list not found"),
    ]
    for argv, message in cases:
        code, out, err = run(argv + s["common"], capsys)
        assert code == 1 and err.strip().splitlines() == [f"error: {err.strip()[len('error: '):]}"], err
        assert message in err
    # Another checkpoint: refused before anything is embedded.
    other = str(tmp_path / "other.ckpt")
    ms.save_checkpoint(ECAPA_TDNN(**SMALL), other)
    code, _, err = run(["identify"] + some + s["common"] + ["--checkpoint", other], capsys)
    assert code == 1 and "holds embeddings of another model or other settings (checkpoint sha256" in err
    # Other VAD settings: the store's clips reached the network through another path.
    code, _, err = run(["identify"] + some + s["common"] + ["--vad", "silero"], capsys)
    assert code == 1 and "other settings (audio vad: {'method': 'none'} there" in err
    # An unreadable store; a list naming a speaker who is not enrolled.
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database at all " * 50)
    code, _, err = run(["list", "--store", str(garbage)], capsys)
    assert code == 1 and "garbage.db: not a readable speaker store (file is not a database)" in err
    id_list = tmp_path / "ident.txt"
    id_list.write_text(f"{some[0]} nobody\n")
    code, _, err = run(["evaluate", "--list", str(id_list)] + s["common"], capsys)
    assert code == 1 and "search 1: speaker 'nobody' is not enrolled" in err
    assert open_store("sqlite", s["store"], None).speakers() == before
    assert garbage.read_bytes().startswith(b"not a database")
    code, _, err = run(["remove", "nobody", "--store", s["store"]], capsys)
    assert code == 1 and "no speaker 'nobody' is enrolled" in err


def test_the_milvus_backend_runs_the_same_commands(setup, capsys, tmp_path):
    pytest.importorskip("milvus_lite")
    s = setup
    milvus = ["--backend", "milvus", "--store", str(tmp_path / "milvus_speakers.db")]
    common = s["common"] + milvus            # the later --store wins
    name = s["enrolled"][2]
    assert run(["enroll", name] + s["utts"][name][:3] + common, capsys)[0] == 0
    with open_store("milvus", milvus[-1], None) as store:
        clips = store.clips(name)
    for clip, reference in zip(clips, open_store("sqlite", s["store"], None).clips(name), strict=True):
        assert clip.path == reference.path and clip.seconds == pytest.approx(reference.seconds)
        np.testing.assert_allclose(clip.embedding, reference.embedding, atol=1e-6)
    code, out, _ = run(["identify", s["utts"][name][3], "--top_k", "1"] + common, capsys)
    assert code == 0 and out.splitlines()[1].split()[1] == name
    code, out, _ = run(["list"] + milvus, capsys)
    assert code == 0 and out.splitlines()[-1].startswith("1 speaker(s)")
    assert run(["remove", name] + milvus, capsys)[0] == 0
    assert run(["list"] + milvus, capsys)[1].splitlines()[-1].startswith("0 speaker(s)")
