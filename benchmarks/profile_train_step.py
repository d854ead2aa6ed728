"""Where the train step's time goes: MindSpore's profiler over a few steps of ``src/train/step.py``'s train step,
totals per operator type.

Builds the recipe's train step (front end, ECAPA-TDNN, AAM-softmax, Adam, clipping) on a random batch of waveforms,
runs ``--warmup`` steps untimed, times ``--steps`` steps, then profiles ``--steps`` more and prints the operator types
by total time per step (MindSpore's ``cpu_op_type_info`` table).

    .venv/bin/python benchmarks/profile_train_step.py --channels 512
    .venv/bin/python benchmarks/profile_train_step.py --channels 1024 --batch 16 --seconds 2.0
    .venv/bin/python benchmarks/profile_train_step.py --channels 512 --graph_kernel     # with graph-kernel fusion
    .venv/bin/python benchmarks/profile_train_step.py --config configs/demo_config.yaml --channels 0 --batch 32 \
        --classes 32                                                                  # the demo recipe's step

``--json`` (default runs/benchmarks/profile_train_step.json, benchmarks/report.py) writes the same table.
"""
import argparse
import csv
import glob
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from src.mindspore_log import route_mindspore_log  # noqa: E402

route_mindspore_log()   # before MindSpore loads: its warnings go to a log file

from benchmarks.report import add_json_option, write_report  # noqa: E402


def operator_totals(profile_dir, steps):
    """MindSpore's CPU operator table under ``profile_dir`` -> [(op type, ms per step, calls per step)], slowest
    first."""
    path = glob.glob(os.path.join(profile_dir, "**", "cpu_op_type_info_*.csv"), recursive=True)[0]
    with open(path, encoding="utf-8") as f:
        rows = [(r["op_type"], float(r["total_compute_time"]) / steps, int(r["type_occurrences"]) // steps)
                for r in csv.DictReader(f)]
    return sorted(rows, key=lambda row: -row[1])


def slowest_operators(profile_dir, steps):
    """MindSpore's CPU per-operator table under ``profile_dir`` -> [(scope name, op type, ms per step)], slowest
    first (the scope names the layer: ``.../mfa-TDNNBlock/conv-Conv1d/...``)."""
    path = glob.glob(os.path.join(profile_dir, "**", "cpu_op_detail_info_*.csv"), recursive=True)[0]
    with open(path, encoding="utf-8") as f:
        rows = [(r["full_op_name"], r["op_type"], float(r["op_total_time(ms)"]) / steps) for r in csv.DictReader(f)]
    return sorted(rows, key=lambda row: -row[2])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=os.path.join(ROOT, "configs", "ecapa-tdnn_config.yaml"),
                        help="the recipe whose train step is profiled (its network sizes, front end, SpecAugment)")
    parser.add_argument("--channels", type=int, default=512, help="C, with MFA 3 C (0: the recipe's)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=2.0, help="waveform crop length")
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=12)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--top", type=int, default=16, help="operator types printed")
    parser.add_argument("--slowest", type=int, default=8, help="single operators printed, slowest first")
    parser.add_argument("--graph_kernel", action="store_true",
                        help="with MindSpore's graph-kernel fusion (set_context(enable_graph_kernel=True))")
    add_json_option(parser, __file__)
    args = parser.parse_args(argv)

    import numpy as np
    import mindspore as ms
    from mindspore import Profiler
    from src.config import load_config
    from src.device import setup_device
    from src.train.step import build_train_step
    setup_device("CPU")
    if args.graph_kernel:
        ms.set_context(enable_graph_kernel=True)
    sizes = ["--channels", str(args.channels), "--mfa_channels", str(3 * args.channels)] if args.channels else []
    cfg = load_config(["--config", args.config, *sizes, "--batch_size", str(args.batch),
                       "--crop_seconds", str(args.seconds)])
    step, _ = build_train_step(cfg, args.classes)
    step.set_train()                 # batch norm on batch statistics, SpecAugment on: as train.py runs it
    rng = np.random.default_rng(0)
    samples = round(args.seconds * cfg.sample_rate)
    wav = ms.Tensor((0.1 * rng.standard_normal((args.batch, samples))).astype(np.float32))
    labels = ms.Tensor(rng.integers(0, args.classes, args.batch).astype(np.int32))
    print(f"C={cfg.channels}, batch {args.batch} x {args.seconds} s: compiling and {args.warmup} warm-up steps",
          flush=True)
    for _ in range(args.warmup):
        step(wav, labels)[0].asnumpy()
    start = time.perf_counter()
    for _ in range(args.steps):
        step(wav, labels)[0].asnumpy()
    step_ms = (time.perf_counter() - start) / args.steps * 1000
    with tempfile.TemporaryDirectory(prefix="profile_train_step_") as folder:
        profiler = Profiler(output_path=folder)
        for _ in range(args.steps):
            step(wav, labels)[0].asnumpy()
        profiler.stop()
        profiler.analyse()
        rows = operator_totals(folder, args.steps)
        slowest = slowest_operators(folder, args.steps)
    total = sum(ms_per_step for _, ms_per_step, _ in rows)
    print(f"\nstep {step_ms:.0f} ms unprofiled; operators {total:.0f} ms per profiled step\n")
    print("| operator | ms per step | share | calls per step |")
    print("|---|---|---|---|")
    for name, ms_per_step, calls in rows[:args.top]:
        print(f"| {name} | {ms_per_step:.1f} | {100 * ms_per_step / total:.1f} % | {calls} |")
    print("\n| single operator | type | ms per step |")
    print("|---|---|---|")
    for name, op_type, ms_per_step in slowest[:args.slowest]:
        print(f"| {name} | {op_type} | {ms_per_step:.1f} |")
    write_report(args.json, __file__, vars(args), {
        "step_ms": round(step_ms, 1), "operators_ms_per_step": round(total, 1),
        "operators": [{"op_type": n, "ms_per_step": round(t, 2), "calls_per_step": c} for n, t, c in rows],
        "slowest": [{"name": n, "op_type": t, "ms_per_step": round(m, 2)} for n, t, m in slowest[:args.slowest]]},
        argv=argv)


if __name__ == "__main__":
    main()
