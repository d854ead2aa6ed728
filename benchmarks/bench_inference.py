"""Embedding speed on the CPU: our MindSpore inference graph and exports against onnxruntime and PyTorch.

    .venv/bin/python benchmarks/bench_inference.py                  # C=512 and 1024, 1 and 2 threads (~25 min)
    .venv/bin/python benchmarks/bench_inference.py --channels 64 --threads 1 --rounds 1 --repeats 1 --warmup 2

Every side runs the same random-weight network (SpeechBrain's ECAPA_TDNN with random batch-norm statistics, its
weights copied into ours; MFA channels 3 C) on fbank input (B, T, 80), every frame valid:

- mindspore: our folded inference network (src/model/ecapa_tdnn.py ``inference_network``) in GRAPH mode, called
  with frame lengths as eval.py calls it.
- mindspore-fused: the same with MindSpore's graph-kernel fusion (``set_context(enable_graph_kernel=True)``,
  deprecated in MindSpore 2.10; not used by the project's commands, see docs/performance.md).
- mindir: our MINDIR export (dynamic time axis, src/deploy/verified_export.py) run by ``nn.GraphCell``.
- onnxruntime, onnxruntime-int8: our ONNX export (dynamic axes, src/deploy/onnx_graph.py) and its static int8
  copy (src/deploy/onnx_tools.py ``quantize_int8``, calibrated on 64 standard-normal inputs like the timed ones) in
  onnxruntime.
- speechbrain: SpeechBrain's ECAPA_TDNN in PyTorch eager (``inference_mode``).

Cases: one utterance of 2, 5 and 20 s (latency, and real-time factor = latency / audio seconds) and a batch of
16 x 5 s (throughput), with 1 and 2 threads (each process is also kept on that many CPUs). Each side runs in its own
process and alone (benchmarks/sides.py); rounds alternate the sides' order; in each turn every case is first run once
untimed (the first call after a pause pays for cold caches). Printed: median [min-max] ms per side with
its ratio to onnxruntime float32 on our ONNX graph (the anchor), the real-time factors, and how far each side's
embedding of one input is from our MindSpore network's.
"""
import argparse
import contextlib
import os
import statistics
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from src.mindspore_log import route_mindspore_log  # noqa: E402

route_mindspore_log()   # before MindSpore loads: its warnings go to a log file, here and in every worker process

from benchmarks.report import add_json_option, write_report  # noqa: E402
from benchmarks.sides import (Side, int_list, pin_threads, serve, spread, take_turns, timed_runs,  # noqa: E402
                             worker_command)

SIDES = ("mindspore", "mindspore-fused", "mindir", "onnxruntime", "onnxruntime-int8", "speechbrain")
ANCHOR = "onnxruntime"
CASES = (("1 x 2 s", 1, 200), ("1 x 5 s", 1, 500), ("1 x 20 s", 1, 2000), ("16 x 5 s", 16, 500))
BATCH_SIZES = sorted({batch for _, batch, _ in CASES})
FRAMES_PER_SECOND = 100
MINDSPORE_WARMUP = 15   # the first 15 launches of a MindSpore CPU graph search how to split its kernels
OTHER_WARMUP = 3


def model_files(folder, channels):
    """Paths of what the prepare step writes for one channel count."""
    base = os.path.join(folder, f"ecapa_c{channels}")
    files = {"checkpoint": base + ".ckpt", "speechbrain": base + ".pt", "onnxruntime": base + ".onnx",
             "onnxruntime-int8": base + ".int8.onnx"}
    for batch in BATCH_SIZES:         # our MINDIR export's batch axis is fixed: one file per batch size
        files[f"mindir batch {batch}"] = f"{base}_batch{batch}.mindir"
    return files


def prepare(folder, channels):
    """Random SpeechBrain network -> its state dict, our checkpoint of the same weights, our MINDIR, ONNX and int8
    ONNX exports (fbank input, dynamic time axis)."""
    import torch
    import mindspore as ms
    from src.deploy.verified_export import export_model
    from src.deploy.onnx_tools import quantize_int8
    from src.model.ecapa_tdnn import ECAPA_TDNN
    from tests.speechbrain_ref import copy_speechbrain_to_mindspore, make_speechbrain_ecapa, randomize_batchnorm
    files = model_files(folder, channels)
    torch.manual_seed(channels)
    model = randomize_batchnorm(make_speechbrain_ecapa(channels, 3 * channels), seed=channels)
    torch.save(model.state_dict(), files["speechbrain"])
    network = ECAPA_TDNN(channels=channels, mfa_channels=3 * channels)
    copy_speechbrain_to_mindspore(model, network)
    network.set_train(False)
    ms.save_checkpoint(network, files["checkpoint"])
    for batch in BATCH_SIZES:        # checked at 1 s, 1.67 s and 0.67 s (the default 3 s check takes minutes here)
        export_model(network, files[f"mindir batch {batch}"][:-len(".mindir")], "MINDIR", "fbank", batch, 1.0,
                     dynamic=True)
    contract = export_model(network, files["onnxruntime"][:-len(".onnx")], "ONNX", "fbank", seconds=1.0,
                            dynamic=True)
    rng = np.random.default_rng(0)          # the timed inputs are standard normal features: calibrate on such
    calibration = [rng.standard_normal((16, 300, 80)).astype(np.float32) for _ in range(4)]
    quantize_int8(network, files["onnxruntime"], contract, calibration, calibration[0][:1])


def use_threads(side, threads):
    """Set the framework of ``side`` to ``threads`` threads (once per process)."""
    if side in ("mindspore", "mindspore-fused", "mindir"):
        import mindspore as ms
        from src.device import setup_device
        setup_device("CPU")
        ms.device_context.cpu.op_tuning.threads_num(threads)
        if side == "mindspore-fused":
            ms.set_context(enable_graph_kernel=True)
    elif side == "speechbrain":
        import torch
        torch.set_num_threads(threads)


def load_runner(side, files, channels, threads):
    """-> (to_input(numpy feats) -> the side's input, run(input) -> numpy embeddings); ``threads`` sets an
    onnxruntime session's (MindSpore's and PyTorch's are set per process, ``use_threads``)."""
    if side in ("mindspore", "mindspore-fused", "mindir"):
        import mindspore as ms
        from mindspore import nn
        if side == "mindir":
            cells = {batch: nn.GraphCell(ms.load(files[f"mindir batch {batch}"])) for batch in BATCH_SIZES}
            return ms.Tensor, lambda x: cells[x.shape[0]](x).asnumpy()
        from src.model.ecapa_tdnn import ECAPA_TDNN, inference_network
        network = ECAPA_TDNN(channels=channels, mfa_channels=3 * channels)
        not_loaded, _ = ms.load_param_into_net(network, ms.load_checkpoint(files["checkpoint"]), strict_load=True)
        if not_loaded:
            raise RuntimeError(f"{files['checkpoint']}: parameters not loaded: {not_loaded}")
        folded = inference_network(network)

        def to_input(feats):
            return ms.Tensor(feats), ms.Tensor(np.full(feats.shape[0], feats.shape[1], np.int32))
        return to_input, lambda inputs: folded(*inputs).asnumpy()
    if side.startswith("onnxruntime"):
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        session = ort.InferenceSession(files[side], options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return (lambda feats: {name: feats}), (lambda feed: session.run(None, feed)[0])
    import torch
    from tests.speechbrain_ref import make_speechbrain_ecapa
    model = make_speechbrain_ecapa(channels, 3 * channels)
    model.load_state_dict(torch.load(files["speechbrain"]))

    def run(x):
        with torch.inference_mode():
            return model(x)[:, 0].numpy()
    return torch.from_numpy, run


def worker(args):
    """One side's process: set up its runners (compile, warm up), then time them on request."""
    pin_threads(args.threads)
    if args.worker == "prepare":
        for channels in args.channels:
            prepare(args.folder, channels)
        return serve(lambda request: {"prepared": args.channels})
    rng = np.random.default_rng(0)
    inputs = {name: rng.standard_normal((batch, frames, 80)).astype(np.float32) for name, batch, frames in CASES}
    use_threads(args.worker, args.threads)
    runners = {}
    for channels in args.channels:
        to_input, run = load_runner(args.worker, model_files(args.folder, channels), channels, args.threads)
        runners[channels] = run, {name: to_input(x) for name, x in inputs.items()}
    warmup = args.warmup if args.worker in ("mindspore", "mindspore-fused", "mindir") else OTHER_WARMUP

    def handle(request):
        if request["kind"] == "setup":
            check = {}
            for channels, (run, native) in runners.items():
                for name, x in native.items():
                    timed_runs(lambda: run(x), warmup)
                check[channels] = run(native["1 x 5 s"]).tolist()
            return {"check": check}
        times = {}
        for channels, (run, native) in runners.items():
            for name, x in native.items():
                run(x)                  # untimed: the first call after a pause pays for cold caches
                times[f"{channels} {name}"] = timed_runs(lambda: run(x), request["repeats"])
        return {"times": times}
    serve(handle)


def print_tables(times, sides, channels_list, threads):
    """Markdown tables: median [min-max] ms with the ratio to the anchor, then real-time factors."""
    print(f"\n#### {threads} thread{'s' if threads > 1 else ''}: ms per call, median [min-max], "
          f"(x ratio to {ANCHOR} float32)\n")
    print("| C | case | " + " | ".join(sides) + " |")
    print("|---|---|" + "---|" * len(sides))
    for channels in channels_list:
        for name, _, _ in CASES:
            key = f"{channels} {name}"
            anchor = statistics.median(times[(ANCHOR, key)]) if ANCHOR in sides else None
            cells = []
            for side in sides:
                cell = spread(times[(side, key)])
                if anchor:
                    cell += f" (x{statistics.median(times[(side, key)]) / anchor:.2f})"
                cells.append(cell)
            print(f"| {channels} | {name} | " + " | ".join(cells) + " |")
    print(f"\nReal-time factor (median time / seconds of audio), {threads} thread{'s' if threads > 1 else ''}:\n")
    print("| C | case | " + " | ".join(sides) + " |")
    print("|---|---|" + "---|" * len(sides))
    for channels in channels_list:
        for name, batch, frames in CASES:
            audio = batch * frames / FRAMES_PER_SECOND
            cells = [f"{statistics.median(times[(side, f'{channels} {name}')]) / audio:.4f}" for side in sides]
            print(f"| {channels} | {name} | " + " | ".join(cells) + " |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--channels", type=int_list, default=[512, 1024])
    parser.add_argument("--threads", type=int_list, default=[1, 2])
    parser.add_argument("--sides", type=lambda s: s.split(","), default=list(SIDES))
    parser.add_argument("--rounds", type=int, default=4, help="rounds of alternating turns")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls per case in each turn")
    parser.add_argument("--warmup", type=int, default=MINDSPORE_WARMUP,
                        help=f"untimed calls per case of the MindSpore sides before timing (others: {OTHER_WARMUP})")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    add_json_option(parser, __file__)
    args = parser.parse_args(argv)
    if args.worker:
        args.threads = args.threads[0]
        return worker(args)
    unknown = sorted(set(args.sides) - set(SIDES))
    if unknown:
        parser.error(f"--sides: unknown {unknown}; choose from {', '.join(SIDES)}")
    common = ["--channels", ",".join(map(str, args.channels)), "--warmup", args.warmup]
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_inference_") as folder:
        common += ["--folder", folder]
        print(f"writing the networks and exports (C = {args.channels}) in {folder}", flush=True)
        with Side("prepare", worker_command(__file__, "prepare", "--threads", 2, *common)) as preparer:
            preparer.ask(kind="prepared")
        for threads in args.threads:
            with contextlib.ExitStack() as stack:
                sides = []
                for name in args.sides:
                    print(f"{threads} thread(s): starting {name} (load, compile, warm up)", flush=True)
                    side = stack.enter_context(Side(name, worker_command(__file__, name, "--threads", threads,
                                                                         *common)))
                    check = side.ask(kind="setup")["check"]
                    if not sides:
                        first = check
                    diffs = [np.max(np.abs(np.array(check[c]) - np.array(first[c]))) for c in check]
                    print(f"  its embedding of one 5 s input: max abs diff from {args.sides[0]}'s {max(diffs):.2e}",
                          flush=True)
                    sides.append(side)
                times = take_turns(sides, args.rounds, {"kind": "run", "repeats": args.repeats})
            print_tables(times, args.sides, args.channels, threads)
            results += [{"threads": threads, "side": side, "case": key, "ms": [t * 1e3 for t in runs]}
                        for (side, key), runs in times.items()]
    write_report(args.json, __file__, vars(args), {"times": results}, argv=argv)


if __name__ == "__main__":
    main()
