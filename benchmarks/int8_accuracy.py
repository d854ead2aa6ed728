"""EER and minDCF of an int8 ONNX export beside its float32 original, on one trial list.

    python export.py --config configs/demo_config.yaml --checkpoint demo_out/run/checkpoints/ckpt_step00000200.ckpt \
        --export_format ONNX --export_int8 true --export_seconds 3.0 --export_file demo_out/int8/ecapa_tdnn
    python benchmarks/int8_accuracy.py demo_out/int8/ecapa_tdnn demo_out/heldout/test demo_out/heldout/trials.txt

Each utterance is cut into the export's windows as the 310 flow cuts them (src/deploy/ascend310_files.py), each window
embedded by onnxruntime, the window embeddings averaged; trials are scored by cosine. Prints one line per file and
the cosine between the two files' utterance embeddings.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from src.mindspore_log import route_mindspore_log  # noqa: E402

route_mindspore_log()   # before MindSpore loads: its warnings go to a log file, here and in every worker process

from src.data.audio import read_audio                                               # noqa: E402
from src.data.trials import read_trials, trial_utterances                          # noqa: E402
from src.deploy.ascend310_files import cut_windows, window_starts                   # noqa: E402
from src.deploy.contract import contract_path, read_contract                        # noqa: E402
from src.deploy.onnx_tools import cosine_rows                                       # noqa: E402
from src.evaluate.metrics import summarize                                          # noqa: E402
from src.evaluate.scoring import score_trials                                       # noqa: E402


def utterance_embeddings(model_path, keys, audio_root):
    """{key: mean of the ONNX file's embeddings of the utterance's windows}."""
    import onnxruntime as ort
    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    window = read_contract(contract_path(model_path))["window_samples"]
    name = session.get_inputs()[0].name
    result = {}
    for key in keys:
        wav = read_audio(os.path.join(audio_root, key))
        windows = cut_windows(wav, window_starts(wav.shape[0], window), window)
        result[key] = np.mean([session.run(None, {name: row[None]})[0][0] for row in windows], axis=0)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export_file", help="the export's path without extension (BASE of BASE.onnx, BASE.int8.onnx)")
    parser.add_argument("test_dir", help="audio root of the trial list")
    parser.add_argument("trials", help="trial list")
    args = parser.parse_args()
    trials = read_trials(args.trials)
    keys = trial_utterances(trials)
    labels = np.array([label for label, _, _ in trials])
    embeddings = {}
    for suffix in (".onnx", ".int8.onnx"):
        path = args.export_file + suffix
        embeddings[suffix] = utterance_embeddings(path, keys, args.test_dir)
        m = summarize(score_trials(embeddings[suffix], trials), labels)
        print(f"{os.path.basename(path):28s} {os.path.getsize(path) / 1e6:6.2f} MB  EER {m['eer_percent']:.2f} %  "
              f"minDCF 0.01 {m['min_dcf_p0.01']:.4f}  minDCF 0.05 {m['min_dcf_p0.05']:.4f}")
    cosine = cosine_rows(np.stack([embeddings[".onnx"][k] for k in keys]),
                         np.stack([embeddings[".int8.onnx"][k] for k in keys]))
    print(f"utterance embeddings float32 vs int8: cosine min {cosine.min():.5f}, mean {cosine.mean():.5f} "
          f"({len(keys)} utterances, {len(trials)} trials)")


if __name__ == "__main__":
    main()
