"""The whole 310 flow on CPU (scripts/run_infer_cpu.sh: preprocess -> src/deploy/ascend310_cpu_twin.py ->
postprocess) against embeddings computed directly with the network on the same windows and against eval.py on the
same windows, run_infer_310.sh's argument handling (device id handed to the program), and the run id that ties
output/ to input/ (outputs of an earlier preprocess run are refused)."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import mindspore as ms

from src.config import load_config
from src.data.audio import read_audio
from src.data.synthetic import make_corpus
from src.model.ecapa_tdnn import ECAPA_TDNN
from src.deploy.verified_export import export_cell, export_model
from src.deploy.ascend310_files import (LIST_FILE, MANIFEST_FILE, cut_windows, infer_folders, read_list, read_manifest,
                                        read_run_id, window_starts)
from src.deploy.contract import InferFileError
from src.evaluate.metrics import summarize
from src.evaluate.scoring import score_trials
from src.data.trials import read_trials, trial_utterances
from tests.modes import op_by_op

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT_310 = os.path.join(ROOT, "scripts", "run_infer_310.sh")
SCRIPT_CPU = os.path.join(ROOT, "scripts", "run_infer_cpu.sh")
SMALL = dict(channels=16, mfa_channels=48, embedding_size=24, attention_channels=8, se_channels=8,
             res2net_scale=2)                 # scale 2: the fewest ops to compile (the flow is what is tested)
BATCH, SECONDS = 3, 1.0


# Stands in for ascend310_infer/build/ecapa_infer (INFER_PROGRAM): records its flags, then runs the Python runner,
# which takes the same flags and honours the same file contract.
FAKE_PROGRAM = """#!/bin/bash
printf '%s\\n' "$@" > "$(dirname "$0")/program_args.txt"
exec "$PYTHON" -m src.deploy.ascend310_cpu_twin "$@"
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One random-weight network, its checkpoint and its MINDIR export (waveform input, batch 3, 1 s windows),
    shared by the flow tests: (network, model file without ".mindir", checkpoint)."""
    folder = tmp_path_factory.mktemp("model")
    ms.set_seed(0)
    net = ECAPA_TDNN(**SMALL)
    net.set_train(False)
    checkpoint = str(folder / "net.ckpt")
    ms.save_checkpoint(net, checkpoint)
    model = str(folder / "ecapa")
    export_model(net, model, "MINDIR", "waveform", batch_size=BATCH, seconds=SECONDS)
    return net, model, checkpoint


def run(script, *args, **env):
    return subprocess.run(["bash", script, *args], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, PYTHON=sys.executable, **env))


def test_cpu_flow_equals_direct_network_embeddings(tmp_path, exported):
    corpus = make_corpus(str(tmp_path / "corpus"), num_train_speakers=0, num_test_speakers=4, utts_per_speaker=3,
                         seconds=(0.6, 3.4), seed=3, augment_folders=False, progress=False)
    net, model, _ = exported
    infer_dir = tmp_path / "infer"

    proc = run(SCRIPT_CPU, model + ".mindir", corpus["test_dir"], "0", "--trials", corpus["trials"],
               "--infer_max_windows", "0", INFER_DIR=str(infer_dir))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    result = json.load(open(infer_dir / "result.json"))["trials.txt"]
    acc = open(infer_dir / "acc.log").read()
    assert f"EER {result['eer_percent']:.3f}%" in acc and "minDCF(0.01)" in acc
    entries, run_id = read_list(str(infer_dir / "output"))
    assert [e[0] for e in entries] == sorted(n for n in os.listdir(infer_dir / "input") if n.endswith(".bin"))
    manifest = read_manifest(str(infer_dir / "input" / MANIFEST_FILE))
    assert run_id == read_run_id(str(infer_dir / "input")) == manifest["run_id"]
    assert open(infer_dir / "output" / LIST_FILE).read().splitlines()[-1].startswith("# total_ms ")

    # Reference: the same windows through the network directly (fbank + ECAPA-TDNN cell, no export, no files).
    trials = read_trials(corpus["trials"])
    cell = export_cell(net, "waveform")
    window = int(SECONDS * 16000)
    reference, num_windows = {}, 0
    for key in trial_utterances(trials):
        wav = read_audio(os.path.join(corpus["test_dir"], key))
        rows = cut_windows(wav, window_starts(wav.shape[0], window), window)
        num_windows += rows.shape[0]
        padded = np.concatenate([rows, np.repeat(rows[-1:], -rows.shape[0] % BATCH, axis=0)])
        emb = np.concatenate([cell(ms.Tensor(padded[i:i + BATCH])).asnumpy() for i in range(0, len(padded), BATCH)])
        reference[key] = emb[:rows.shape[0]].mean(axis=0)
    assert num_windows > len(reference)                      # some utterances span several windows
    flow = dict(np.load(infer_dir / "embeddings.npz"))
    flow = dict(zip(flow["keys"], flow["embeddings"]))
    assert sorted(flow) == sorted(reference)
    for key in reference:
        np.testing.assert_allclose(flow[key], reference[key], atol=1e-5, rtol=0)
    labels = np.array([label for label, _, _ in trials])
    expected = summarize(score_trials(reference, trials), labels)
    assert result["eer"] == pytest.approx(expected["eer"], abs=1e-9)
    assert result["min_dcf_p0.01"] == pytest.approx(expected["min_dcf_p0.01"], abs=1e-9)

    # The Ascend script with a stand-in program: the device id reaches the program as --device_id, same result.
    program = tmp_path / "bin" / "ecapa_infer"
    program.parent.mkdir()
    program.write_text(FAKE_PROGRAM)
    program.chmod(0o755)
    proc = run(SCRIPT_310, model + ".mindir", corpus["test_dir"], "3", "--trials", corpus["trials"],
               INFER_DIR=str(tmp_path / "infer310"), INFER_PROGRAM=str(program))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    args = open(tmp_path / "bin" / "program_args.txt").read().split()
    assert args == ["--model", model + ".mindir", "--input_dir", str(tmp_path / "infer310" / "input"),
                    "--output_dir", str(tmp_path / "infer310" / "output"), "--device_id", "3"]
    assert json.load(open(tmp_path / "infer310" / "result.json")) == json.load(open(infer_dir / "result.json"))


@pytest.mark.parametrize("script", [SCRIPT_310, SCRIPT_CPU])
def test_infer_script_argument_errors(tmp_path, script):
    model = tmp_path / "m.mindir"
    model.write_bytes(b"x")
    (tmp_path / "m.mindir.json").write_text("{}")
    trials = tmp_path / "trials.txt"
    trials.write_text("1 a.wav b.wav\n")
    cases = [
        ((), "expected at least 2 arguments"),
        ((str(model),), "expected at least 2 arguments"),
        ((str(tmp_path / "none.mindir"), str(tmp_path), "--trials", str(trials)), "is not a file"),
        ((str(model), str(tmp_path / "nodata"), "--trials", str(trials)), "DATA_PATH"),
        ((str(model), str(tmp_path), "0"), "no trial list: pass --trials"),
        # The older zoo's bug: the data path landing in the device id. It must be refused, not run on device 0.
        ((str(model), str(tmp_path), str(tmp_path), "--trials", str(trials)),
         "DEVICE_ID must be a non-negative integer"),
        ((str(model), str(tmp_path), "-1", "--trials", str(trials)), "DEVICE_ID must be a non-negative integer"),
    ]
    for args, message in cases:
        proc = run(script, *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in proc.stderr and "MINDIR DATA_PATH [DEVICE_ID] --trials TRIALS" in proc.stderr, proc.stderr
    os.remove(tmp_path / "m.mindir.json")
    proc = run(script, str(model), str(tmp_path), "--trials", str(trials))
    assert proc.returncode == 2 and "no export contract" in proc.stderr


def test_preprocess_fbank_contract_writes_fbank_of_each_window(tmp_path):
    """For an fbank-input model the .bin rows are src.model.fbank.Fbank of each (repeat-padded) window."""
    from src.data.audio import write_wav
    from src.deploy.verified_export import window_featurizer
    from src.model.fbank import Fbank
    from src.deploy.ascend310_files import read_bin, read_manifest, write_inputs

    wav = (0.3 * np.sin(np.arange(5000) * 0.05)).astype(np.float32)
    write_wav(str(tmp_path / "a.wav"), wav)
    contract = {"input": {"kind": "fbank", "shape": [2, 11, 80]}, "output": {"shape": [2, 4]}, "batch_size": 2,
                "sample_rate": 16000, "window_samples": 1600, "frames_per_window": 11, "n_mels": 80,
                "embedding_size": 4}
    manifest = read_manifest(write_inputs(["a.wav"], str(tmp_path), contract, str(tmp_path / "in"),
                                          featurize=window_featurizer(contract), progress=False))
    assert len(manifest["utterances"][0]["starts"]) == 4                   # ceil(5000 / 1600)
    rows = np.concatenate([read_bin(str(tmp_path / "in" / f["name"]), (2, 11, 80)) for f in manifest["files"]])
    windows = cut_windows(read_audio(str(tmp_path / "a.wav")), manifest["utterances"][0]["starts"], 1600)
    expected, _ = Fbank()(ms.Tensor(windows))
    np.testing.assert_allclose(rows, expected.asnumpy(), atol=1e-4)


@pytest.mark.parametrize("file_format", ["MINDIR", "ONNX"])
def test_cpu_flow_eer_equals_eval_py_on_the_same_windows(tmp_path, exported, file_format):
    """First window only (infer_max_windows 1) vs eval.py cropping every utterance to that window
    (max_eval_seconds = the window, no other bucket, long_audio crop): the same samples reach the network, so the
    same EER. The CPU runner runs a MINDIR in MindSpore and an ONNX file (dynamic axes) in onnxruntime."""
    import eval as eval_script
    import postprocess
    import preprocess
    from src.deploy.ascend310_cpu_twin import run_folder

    corpus = make_corpus(str(tmp_path / "corpus"), num_train_speakers=0, num_test_speakers=4, utts_per_speaker=3,
                         seconds=(1.2, 2.5), seed=4, augment_folders=False, progress=False)
    net, model, checkpoint = exported
    if file_format == "ONNX":
        model = str(tmp_path / "ecapa")
        with op_by_op():     # the export's check runs the network op by op: nothing to compile
            export_model(net, model, "ONNX", "waveform", batch_size=BATCH, seconds=SECONDS, dynamic=True)
    model += ".onnx" if file_format == "ONNX" else ".mindir"
    infer_dir = str(tmp_path / "infer")
    common = ["--infer_model", model, "--test_dir", corpus["test_dir"], "--trials", corpus["trials"],
              "--infer_dir", infer_dir, "--infer_max_windows", "1"]
    assert preprocess.main(common) == 0
    run_folder(model, os.path.join(infer_dir, "input"), os.path.join(infer_dir, "output"))
    assert postprocess.main(common) == 0
    flow = json.load(open(os.path.join(infer_dir, "result.json")))["trials.txt"]

    model_args = [a for k, v in SMALL.items() for a in (f"--{k}", str(v))]
    summary = eval_script.evaluate(load_config(model_args + [
        "--checkpoint", checkpoint, "--test_dir", corpus["test_dir"], "--trials", corpus["trials"],
        "--eval_output_dir", str(tmp_path / "eval"), "--bucket_seconds", "[]", "--max_eval_seconds", str(SECONDS),
        "--eval_batch_size", "4", "--embedding_cache", "", "--long_audio", "crop"]))
    evaluated = summary["trial_lists"]["trials"]["metrics"]["cosine"]
    assert evaluated["num_trials"] == flow["num_trials"] > 10 and 0 < flow["eer"] < 1
    for key in ("eer", "min_dcf_p0.01", "min_dcf_p0.05"):
        assert flow[key] == pytest.approx(evaluated[key], abs=1e-9), key
    # Not by chance: the scores themselves agree trial by trial.
    flow_emb = dict(np.load(os.path.join(infer_dir, "embeddings.npz")))
    flow_emb = dict(zip(flow_emb["keys"], flow_emb["embeddings"]))
    flow_scores = score_trials(flow_emb, read_trials(corpus["trials"]))
    eval_scores = [float(line.split()[2]) for line in open(summary["trial_lists"]["trials"]["score_file"])]
    np.testing.assert_allclose(flow_scores, eval_scores, atol=1e-5)


def test_outputs_of_an_earlier_preprocess_run_are_refused(tmp_path, caplog, exported):
    """Preprocess, infer, preprocess again with other settings (which deletes output/), put the old output/ back:
    its file names still match the new manifest, but postprocess.py refuses it by run id, naming both folders. After
    the inference step runs again, postprocess.py scores."""
    import postprocess
    import preprocess
    from src.cli import run_command
    from src.deploy.ascend310_cpu_twin import run_folder

    corpus = make_corpus(str(tmp_path / "corpus"), num_train_speakers=0, num_test_speakers=2, utts_per_speaker=3,
                         seconds=(1.2, 2.5), seed=5, augment_folders=False, progress=False)
    model = exported[1] + ".mindir"
    infer_dir = str(tmp_path / "infer")
    input_dir, output_dir = infer_folders(infer_dir)
    common = ["--infer_model", model, "--test_dir", corpus["test_dir"], "--trials", corpus["trials"],
              "--infer_dir", infer_dir]
    assert preprocess.main(common + ["--infer_max_windows", "0"]) == 0
    run_folder(model, input_dir, output_dir)
    old_run_id = read_run_id(input_dir)
    assert open(os.path.join(output_dir, LIST_FILE)).read().splitlines()[1] == f"# run_id {old_run_id}"
    old_names = {name for name, _, _ in read_list(output_dir)[0]}
    shutil.copytree(output_dir, tmp_path / "kept_output")

    assert preprocess.main(common + ["--infer_max_windows", "1"]) == 0
    assert not os.path.exists(output_dir) and f"removed {output_dir}" in caplog.text
    new_manifest = read_manifest(os.path.join(input_dir, MANIFEST_FILE))
    assert new_manifest["run_id"] == read_run_id(input_dir) != old_run_id
    assert {f["name"] for f in new_manifest["files"]} < old_names        # names alone would not tell
    shutil.copytree(tmp_path / "kept_output", output_dir)                # the old outputs put back in place

    with pytest.raises(InferFileError) as refused:
        postprocess.main(common)
    message = str(refused.value)
    assert message.startswith(f"{output_dir}: its outputs do not belong to {input_dir} ")
    assert f"run id {old_run_id} in {LIST_FILE}, {new_manifest['run_id']} in {MANIFEST_FILE}" in message
    assert message.endswith(f"run the inference step again on {input_dir}")
    with pytest.raises(SystemExit) as exit_info:                          # as a command: status 1, no result
        run_command(postprocess.main, common)
    assert exit_info.value.code == 1 and not os.path.exists(os.path.join(infer_dir, "result.json"))

    run_folder(model, input_dir, output_dir)
    assert postprocess.main(common) == 0
    assert json.load(open(os.path.join(infer_dir, "result.json")))["trials.txt"]["max_windows"] == 1
