"""EER and minDCF of an int8 ONNX export beside its float32 original, on one trial list.

    python export.py --config configs/demo_config.yaml --checkpoint demo_out/run/checkpoints/ckpt_step00000200.ckpt \
        --export_format ONNX --export_dynamic true --export_int8 true --export_file demo_out/int8/ecapa_tdnn
    python benchmarks/int8_accuracy.py demo_out/int8/ecapa_tdnn demo_out/corpus/test demo_out/corpus/trials.txt

A dynamic export embeds each utterance whole (as eval.py does); a fixed-length one embeds the export's windows as
the 310 flow cuts them (src/deploy/ascend310_files.py) and averages them. Trials are scored by cosine. Prints one line
per file, the relative differences of the int8 metrics from the float32 ones, and the cosine between the two files'
utterance embeddings. Figures are also written as JSON (``--json PATH``, default
runs/benchmarks/int8_accuracy.json; benchmarks/report.py).
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.report import add_json_option, write_report                        # noqa: E402
from src.mindspore_log import route_mindspore_log  # noqa: E402

route_mindspore_log()   # before MindSpore loads: its warnings go to a log file, here and in every worker process

from src.data.audio import read_audio                                               # noqa: E402
from src.data.trials import read_trials, trial_utterances                          # noqa: E402
from src.deploy.ascend310_files import cut_windows, window_starts                   # noqa: E402
from src.deploy.contract import contract_path, read_contract                        # noqa: E402
from src.deploy.onnx_tools import cosine_rows                                       # noqa: E402
from src.evaluate.metrics import summarize                                          # noqa: E402
from src.evaluate.scoring import score_trials                                       # noqa: E402

METRICS = ("eer_percent", "min_dcf_p0.01", "min_dcf_p0.05")


def utterance_embeddings(model_path, keys, audio_root):
    """{key: the ONNX file's embedding of the utterance (whole, or the mean over its windows)}."""
    import onnxruntime as ort
    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    contract = read_contract(contract_path(model_path))
    name = session.get_inputs()[0].name
    result = {}
    for key in keys:
        wav = read_audio(os.path.join(audio_root, key))
        if contract.get("dynamic_time"):
            result[key] = session.run(None, {name: wav[None]})[0][0]
            continue
        window = contract["window_samples"]
        windows = cut_windows(wav, window_starts(wav.shape[0], window), window)
        result[key] = np.mean([session.run(None, {name: row[None]})[0][0] for row in windows], axis=0)
    return result


def compare(export_base, test_dir, trials):
    """Both files of ``export_base`` (BASE.onnx, BASE.int8.onnx) on a trial list ((label, enrol, test) tuples)
    -> dict: per file its metrics and size, the int8 metrics' relative differences from float32 and the cosine of
    the two files' utterance embeddings."""
    keys = trial_utterances(trials)
    labels = np.array([label for label, _, _ in trials])
    embeddings, files = {}, {}
    for suffix in (".onnx", ".int8.onnx"):
        path = export_base + suffix
        embeddings[suffix] = utterance_embeddings(path, keys, test_dir)
        metrics = summarize(score_trials(embeddings[suffix], trials), labels)
        files[suffix] = {"file": path, "megabytes": os.path.getsize(path) / 1e6,
                         **{m: float(metrics[m]) for m in METRICS}}
    cosine = cosine_rows(np.stack([embeddings[".onnx"][k] for k in keys]),
                         np.stack([embeddings[".int8.onnx"][k] for k in keys]))
    relative = {m: (files[".int8.onnx"][m] - files[".onnx"][m]) / files[".onnx"][m] if files[".onnx"][m] else 0.0
                for m in METRICS}
    return {"float32": files[".onnx"], "int8": files[".int8.onnx"], "relative_difference": relative,
            "cosine_min": float(cosine.min()), "cosine_mean": float(cosine.mean()),
            "utterances": len(keys), "trials": len(trials)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export_file", help="the export's path without extension (BASE of BASE.onnx, BASE.int8.onnx)")
    parser.add_argument("test_dir", help="audio root of the trial list")
    parser.add_argument("trials", help="trial list")
    add_json_option(parser, __file__)
    args = parser.parse_args()
    result = compare(args.export_file, args.test_dir, read_trials(args.trials))
    for name in ("float32", "int8"):
        f = result[name]
        print(f"{os.path.basename(f['file']):28s} {f['megabytes']:6.2f} MB  EER {f['eer_percent']:.2f} %  "
              f"minDCF 0.01 {f['min_dcf_p0.01']:.4f}  minDCF 0.05 {f['min_dcf_p0.05']:.4f}")
    print("int8 relative to float32: " + ", ".join(f"{m} {100 * v:+.2f} %"
                                                    for m, v in result["relative_difference"].items()))
    print(f"utterance embeddings float32 vs int8: cosine min {result['cosine_min']:.5f}, mean "
          f"{result['cosine_mean']:.5f} ({result['utterances']} utterances, {result['trials']} trials)")
    write_report(args.json, __file__, vars(args), result)


if __name__ == "__main__":
    main()
