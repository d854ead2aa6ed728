"""eval.py end to end with each embedding runtime (recipe key ``runtime``): whole-process wall time and EER.

Runs ``eval.py`` as a user does, one process after the other on the same checkpoint and trial list:

1. ``--runtime mindspore`` (the folded MindSpore inference graph);
2. ``--runtime onnxruntime`` with an empty export cache: exports the checkpoint to ONNX and verifies it against
   MindSpore first (once per checkpoint and settings);
3. ``--runtime onnxruntime`` again: the cached export is reused.

The embedding cache is off (``--embedding_cache ''``), so every run embeds every utterance.

    .venv/bin/python benchmarks/bench_eval_runtime.py --config configs/demo_config.yaml \\
        --checkpoint demo_out/run/checkpoints/ckpt_step00000200.ckpt

``--test_dir`` / ``--trials`` default to the recipe's. Printed: a table of wall seconds (the whole process), evaluate
seconds (eval_summary.json ``seconds``: device set-up, export, embedding and scoring, without the imports) and
EER per run; ``--json`` (default runs/benchmarks/bench_eval_runtime.json,
benchmarks/report.py) writes the same.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.report import add_json_option, write_report  # noqa: E402

RUNS = (("mindspore", "mindspore"),
        ("onnxruntime, first run (exports and verifies)", "onnxruntime"),
        ("onnxruntime, export cached", "onnxruntime"))


def run_eval(args, runtime, cache_dir, out_dir):
    """One eval.py process -> (wall seconds, eval_summary.json as a dict)."""
    command = [sys.executable, "eval.py", "--config", args.config, "--checkpoint", args.checkpoint,
               "--embedding_cache", "", "--runtime", runtime, "--runtime_cache_dir", cache_dir,
               "--eval_output_dir", out_dir, "--output_dir", out_dir]
    if args.test_dir:
        command += ["--test_dir", args.test_dir]
    if args.trials:
        command += ["--trials", f"[{args.trials}]"]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"eval.py --runtime {runtime} failed:\n{done.stderr[-3000:]}")
    with open(os.path.join(out_dir, "eval_summary.json"), encoding="utf-8") as f:
        return wall, json.load(f)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=os.path.join("configs", "demo_config.yaml"))
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--test_dir", default="", help="utterance folder ('': the recipe's)")
    parser.add_argument("--trials", default="", help="one trial list ('': the recipe's)")
    add_json_option(parser, __file__)
    args = parser.parse_args(argv)
    args.checkpoint = os.path.abspath(args.checkpoint)
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench_eval_runtime_") as folder:
        cache_dir = os.path.join(folder, "onnx_cache")
        for i, (name, runtime) in enumerate(RUNS):
            print(f"{name}: eval.py --runtime {runtime}", flush=True)
            wall, summary = run_eval(args, runtime, cache_dir, os.path.join(folder, f"eval_{i}"))
            metrics = [m for t in summary["trial_lists"].values() for m in t["metrics"].values()][0]
            runs.append({"run": name, "runtime": runtime, "wall_seconds": round(wall, 1),
                         "evaluate_seconds": summary["seconds"], "utterances": summary["num_utterances"],
                         "trials": metrics["num_trials"], "eer_percent": round(metrics["eer_percent"], 2),
                         "min_dcf_p0.01": round(metrics["min_dcf_p0.01"], 4)})
    print("\n| run | wall s | evaluate s | utterances | trials | EER % | minDCF 0.01 |")
    print("|---|---|---|---|---|---|---|")
    for r in runs:
        print(f"| {r['run']} | {r['wall_seconds']:.1f} | {r['evaluate_seconds']:.1f} | {r['utterances']} | "
              f"{r['trials']} | {r['eer_percent']:.2f} | {r['min_dcf_p0.01']:.4f} |")
    write_report(args.json, __file__, vars(args), {"runs": runs}, argv=argv)


if __name__ == "__main__":
    main()
