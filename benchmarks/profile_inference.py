"""Where one embedding call's time goes, in MindSpore or in onnxruntime: operator types by time per call.

The same random-weight network as benchmarks/bench_inference.py (C channels, MFA 3 C) on one fbank input of
``--frames`` frames, every frame valid, on ``--threads`` threads (the process is kept on that many CPUs):

- ``--runtime mindspore``: our folded inference network in GRAPH mode, called with frame lengths as eval.py calls
  it, under MindSpore's profiler (``cpu_op_type_info``);
- ``--runtime onnxruntime``: our dynamic ONNX export under onnxruntime's profiler (node kernel times).

One framework per process, as the other benchmarks run them:

    .venv/bin/python benchmarks/profile_inference.py --runtime mindspore
    .venv/bin/python benchmarks/profile_inference.py --runtime onnxruntime

Printed: the unprofiled median call time, the operators' total per call, and the operator types slowest first;
``--json`` (default runs/benchmarks/profile_inference.json, benchmarks/report.py) writes the same.
"""
import argparse
import collections
import json
import os
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from src.mindspore_log import route_mindspore_log  # noqa: E402

route_mindspore_log()   # before MindSpore loads: its warnings go to a log file

from benchmarks.profile_train_step import operator_totals  # noqa: E402
from benchmarks.report import add_json_option, write_report  # noqa: E402
from benchmarks.sides import pin_threads, timed_runs  # noqa: E402


def median_ms(run, calls):
    """Median wall time of ``calls`` calls of ``run()``, in ms."""
    return float(np.median(timed_runs(run, calls))) * 1000


def profile_mindspore(network, feats, threads, warmup, calls):
    """-> (median ms unprofiled, [(op type, ms per call, calls per call)])."""
    import mindspore as ms
    from mindspore import Profiler
    ms.device_context.cpu.op_tuning.threads_num(threads)
    from src.model.ecapa_tdnn import inference_network
    folded = inference_network(network)
    inputs = ms.Tensor(feats), ms.Tensor(np.full(feats.shape[0], feats.shape[1], np.int32))
    median_ms(lambda: folded(*inputs).asnumpy(), warmup)
    call_ms = median_ms(lambda: folded(*inputs).asnumpy(), calls)
    with tempfile.TemporaryDirectory(prefix="profile_inference_") as folder:
        profiler = Profiler(output_path=folder)
        for _ in range(calls):
            folded(*inputs).asnumpy()
        profiler.stop()
        profiler.analyse()
        return call_ms, operator_totals(folder, calls)


def profile_onnxruntime(network, feats, threads, warmup, calls):
    """-> (median ms unprofiled, [(op type, ms per call, calls per call)])."""
    import onnxruntime as ort
    from src.deploy.verified_export import export_model
    with tempfile.TemporaryDirectory(prefix="profile_inference_") as folder:
        export_model(network, os.path.join(folder, "ecapa"), "ONNX", "fbank", seconds=1.0, dynamic=True)
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        plain = ort.InferenceSession(os.path.join(folder, "ecapa.onnx"), options, providers=["CPUExecutionProvider"])
        feed = {plain.get_inputs()[0].name: feats}
        median_ms(lambda: plain.run(None, feed), warmup)
        call_ms = median_ms(lambda: plain.run(None, feed), calls)
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(folder, "ort_profile")
        session = ort.InferenceSession(os.path.join(folder, "ecapa.onnx"), options, providers=["CPUExecutionProvider"])
        for _ in range(warmup + calls):
            session.run(None, feed)
        with open(session.end_profiling(), encoding="utf-8") as f:
            events = json.load(f)
    # only the node kernels inside the last ``calls`` runs (the first runs of a session also pack weights)
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")[-calls:]
    totals, counts = collections.Counter(), collections.Counter()
    for event in events:
        if (event.get("cat") == "Node" and event["name"].endswith("_kernel_time")
                and any(start <= event["ts"] <= end for start, end in runs)):
            totals[event["args"]["op_name"]] += event["dur"] / 1000 / calls
            counts[event["args"]["op_name"]] += 1
    return call_ms, [(op, ms, counts[op] // calls) for op, ms in totals.most_common()]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runtime", choices=("mindspore", "onnxruntime"), required=True)
    parser.add_argument("--channels", type=int, default=512)
    parser.add_argument("--frames", type=int, default=500, help="feature frames (100 per second of audio)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=15)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--top", type=int, default=12, help="operator types printed")
    add_json_option(parser, __file__)
    args = parser.parse_args(argv)
    pin_threads(args.threads)

    from src.device import setup_device
    from src.model.ecapa_tdnn import ECAPA_TDNN
    setup_device("CPU")
    network = ECAPA_TDNN(channels=args.channels, mfa_channels=3 * args.channels)
    network.set_train(False)
    feats = np.random.default_rng(0).standard_normal((args.batch, args.frames, 80)).astype(np.float32)
    profile = profile_mindspore if args.runtime == "mindspore" else profile_onnxruntime
    call_ms, rows = profile(network, feats, args.threads, args.warmup, args.calls)
    total = sum(ms_per_call for _, ms_per_call, _ in rows)
    kernels = sum(calls for _, _, calls in rows)
    print(f"\n{args.runtime}, C={args.channels}, {args.batch} x {args.frames} frames, {args.threads} thread(s): "
          f"{call_ms:.1f} ms per call unprofiled; operators {total:.1f} ms in {kernels} kernels per profiled call\n")
    print("| operator | ms per call | share | kernels per call |")
    print("|---|---|---|---|")
    for name, ms_per_call, calls in rows[:args.top]:
        print(f"| {name} | {ms_per_call:.2f} | {100 * ms_per_call / total:.1f} % | {calls} |")
    write_report(args.json, __file__, vars(args), {
        "call_ms": round(call_ms, 2), "operators_ms_per_call": round(total, 2), "kernels_per_call": kernels,
        "operators": [{"op_type": n, "ms_per_call": round(t, 3), "calls_per_call": c} for n, t, c in rows]},
        argv=argv)


if __name__ == "__main__":
    main()
