"""The whole 310 flow on CPU (scripts/run_infer_cpu.sh: preprocess -> src/infer_runner.py -> postprocess) against
embeddings computed directly with the network on the same windows, and run_infer_310.sh's argument handling."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import mindspore as ms

from src.data.audio import read_audio
from src.data.synthetic import make_corpus
from src.ecapa_tdnn import ECAPA_TDNN
from src.exporting import export_cell, export_model
from src.infer_io import LIST_FILE, cut_windows, read_list, window_starts
from src.metrics import summarize
from src.scoring import score_trials
from src.trials import read_trials, trial_utterances

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT_310 = os.path.join(ROOT, "scripts", "run_infer_310.sh")
SCRIPT_CPU = os.path.join(ROOT, "scripts", "run_infer_cpu.sh")
SMALL = dict(channels=16, mfa_channels=48, embedding_size=24, attention_channels=8, se_channels=8, res2net_scale=4)
BATCH, SECONDS = 3, 1.0


def run(script, *args, **env):
    return subprocess.run(["bash", script, *args], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, PYTHON=sys.executable, **env))


def test_cpu_flow_equals_direct_network_embeddings(tmp_path):
    corpus = make_corpus(str(tmp_path / "corpus"), num_train_speakers=0, num_test_speakers=4, utts_per_speaker=3,
                         seconds=(0.6, 3.4), seed=3, augment_folders=False, progress=False)
    ms.set_seed(0)
    net = ECAPA_TDNN(**SMALL)
    net.set_train(False)
    model = str(tmp_path / "model" / "ecapa")
    export_model(net, model, "MINDIR", "waveform", batch_size=BATCH, seconds=SECONDS)
    infer_dir = tmp_path / "infer"

    proc = run(SCRIPT_CPU, model + ".mindir", corpus["test_dir"], corpus["trials"], "0",
               "--infer_max_windows", "0", INFER_DIR=str(infer_dir))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    result = json.load(open(infer_dir / "result.json"))["trials.txt"]
    acc = open(infer_dir / "acc.log").read()
    assert f"EER {result['eer_percent']:.3f}%" in acc and "minDCF(0.01)" in acc
    entries = read_list(str(infer_dir / "output"))
    assert [e[0] for e in entries] == sorted(n for n in os.listdir(infer_dir / "input") if n.endswith(".bin"))
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


@pytest.mark.parametrize("script", [SCRIPT_310, SCRIPT_CPU])
def test_infer_script_argument_errors(tmp_path, script):
    model = tmp_path / "m.mindir"
    model.write_bytes(b"x")
    (tmp_path / "m.mindir.json").write_text("{}")
    trials = tmp_path / "trials.txt"
    trials.write_text("1 a.wav b.wav\n")
    cases = [
        ((), "expected at least 3 arguments"),
        ((str(model), str(tmp_path)), "expected at least 3 arguments"),
        ((str(tmp_path / "none.mindir"), str(tmp_path), str(trials)), "is not a file"),
        ((str(model), str(tmp_path / "nodata"), str(trials)), "DATA_PATH"),
        ((str(model), str(tmp_path), str(tmp_path / "none.txt")), "TRIALS"),
        # The older zoo's bug: the data path landing in the device id. It must be refused, not run on device 0.
        ((str(model), str(tmp_path), str(trials), str(tmp_path)), "DEVICE_ID must be a non-negative integer"),
    ]
    for args, message in cases:
        proc = run(script, *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in proc.stderr and "MINDIR DATA_PATH TRIALS [DEVICE_ID]" in proc.stderr, proc.stderr
    os.remove(tmp_path / "m.mindir.json")
    proc = run(script, str(model), str(tmp_path), str(trials))
    assert proc.returncode == 2 and "no export contract" in proc.stderr


def test_preprocess_fbank_contract_writes_fbank_of_each_window(tmp_path):
    """For an fbank-input model the .bin rows are src.features.Fbank of each (repeat-padded) window."""
    from src.data.audio import write_wav
    from src.exporting import window_featurizer
    from src.features import Fbank
    from src.infer_io import read_bin, read_manifest, write_inputs

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
