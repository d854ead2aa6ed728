"""Real-time factor and peak memory of the whole diarization pipeline (VAD + window embeddings + clustering).

    .venv/bin/python benchmarks/bench_diarize.py                          # 10 min, C=512, 1 and 2 threads, MindSpore
    .venv/bin/python benchmarks/bench_diarize.py --runtimes mindspore,onnxruntime
    .venv/bin/python benchmarks/bench_diarize.py --minutes 10,60,240 --threads 2 --channels 128   # long recordings

A generated conversation (src/data/conversations.py: 4 voices, 10 % overlap) of each length is diarized with an
untrained network of C channels (random weights: speed does not depend on them) by ``diarize_recording``
(src/diarize/pipeline.py), the path ``python -m src.diarize`` runs. Each measurement runs in its own process kept
on ``threads`` CPUs (benchmarks/sides.py), after a warm-up that compiles the embedding graph and runs it past
MindSpore's first kernel-splitting launches; the embedding stage runs through MindSpore's compiled graph or
through onnxruntime on the dynamic waveform ONNX export (src/deploy/onnx_runtime.py). Silero VAD always runs on
one thread (src/recordings/vad.py). Printed per run: seconds and real-time factor (seconds / audio seconds) of
each stage, the whole pipeline's, and the process's peak resident memory; ``--json`` (default
runs/benchmarks/bench_diarize.json, benchmarks/report.py) holds the same. Goal: a real-time factor of at most 0.05 on one
thread with C=512.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.report import add_json_option, write_report  # noqa: E402
from benchmarks.sides import int_list, pin_threads  # noqa: E402

GOAL_RTF = 0.05
WARMUP_CALLS = 16        # MindSpore's first 15 launches of a CPU graph search how to split its kernels


def model_args(channels):
    return ["--channels", str(channels), "--mfa_channels", str(3 * channels)]


def prepare(folder, minutes, channels, onnx):
    """Write the conversations, the untrained network's checkpoint and (``onnx``) its dynamic waveform ONNX export,
    each unless ``folder`` holds it already."""
    import mindspore as ms
    from src.config import load_config
    from src.data.conversations import ConversationSettings, write_conversation
    from src.deploy.verified_export import export_model
    from src.device import setup_device
    from src.model.ecapa_tdnn import build_ecapa
    setup_device("CPU")
    for length in minutes:
        wav = os.path.join(folder, f"conversation_{length}min.wav")
        if not os.path.isfile(wav):
            write_conversation(wav, wav[:-4] + ".rttm", f"conversation_{length}min",
                               ConversationSettings(num_speakers=4, seconds=60.0 * length, overlap=0.1), seed=length)
    checkpoint, onnx_file = os.path.join(folder, f"c{channels}.ckpt"), os.path.join(folder, f"c{channels}.onnx")
    if os.path.isfile(checkpoint) and (os.path.isfile(onnx_file) or not onnx):
        return
    ms.set_seed(channels)
    network = build_ecapa(load_config(model_args(channels)))
    network.set_train(False)
    ms.save_checkpoint(network, checkpoint)
    if onnx:
        export_model(network, os.path.join(folder, f"c{channels}"), "ONNX", "waveform", seconds=1.5, dynamic=True)


def measure(folder, minutes, channels, threads, runtime):
    """One process: load, warm up, diarize the conversation -> dict of timings and peak memory."""
    pin_threads(threads)
    import numpy as np
    import mindspore as ms
    from src.config import load_config
    from src.device import setup_device
    from src.diarize.pipeline import DiarizeSettings, diarize_recording, window_batching
    from src.checkpoint import load_embedder
    from src.model.embedder import min_samples
    from src.recordings.embed import embed_windows
    setup_device("CPU")
    ms.device_context.cpu.op_tuning.threads_num(threads)
    cfg = load_config(model_args(channels))
    settings = DiarizeSettings.from_recipe(cfg)
    if runtime == "onnxruntime":
        from src.deploy.onnx_runtime import OnnxEmbedder
        embedder = OnnxEmbedder(os.path.join(folder, f"c{channels}.onnx"), f"c{channels}", threads)
    else:
        embedder = load_embedder(cfg, os.path.join(folder, f"c{channels}.ckpt"))
    start = time.perf_counter()
    window = settings.window_seconds
    windows = [(i * window, (i + 1) * window) for i in range(settings.batch_size)]      # one full batch
    noise = np.random.default_rng(0).standard_normal(int(16000 * window * len(windows))).astype(np.float32) * 0.1
    for _ in range(WARMUP_CALLS):
        embed_windows(embedder, noise, windows, window_batching(settings, min_samples(cfg)))
    warmup = time.perf_counter() - start
    start = time.perf_counter()
    result = diarize_recording(os.path.join(folder, f"conversation_{minutes}min.wav"), embedder, settings,
                               min_samples(cfg))
    total = time.perf_counter() - start
    return {"minutes": minutes, "channels": channels, "threads": threads, "runtime": runtime,
            "audio_seconds": result.seconds, "windows": len(result.windows),
            "speakers_found": len({s.speaker for s in result.segments}),
            "stage_seconds": {k: round(v, 2) for k, v in result.times.items()}, "total_seconds": round(total, 2),
            "rtf": {**{k: round(v / result.seconds, 4) for k, v in result.times.items()},
                    "total": round(total / result.seconds, 4)},
            "warmup_seconds": round(warmup, 1),
            "peak_memory_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def run_worker(args, *extra):
    command = [sys.executable, os.path.abspath(__file__), "--worker", "--data", args.data, *map(str, extra)]
    result = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"benchmark worker {extra} failed with exit code {result.returncode} (see above)")
    return json.loads(result.stdout.strip().splitlines()[-1])


def print_table(rows):
    print(f"\n{'minutes':>7} {'C':>5} {'thr':>3} {'runtime':<12} {'windows':>7} {'vad s':>7} {'embed s':>8} "
          f"{'cluster s':>9} {'total s':>8} {'RTF':>7} {'peak MB':>8}")
    for r in rows:
        s = r["stage_seconds"]
        print(f"{r['minutes']:>7} {r['channels']:>5} {r['threads']:>3} {r['runtime']:<12} {r['windows']:>7} "
              f"{s['vad']:>7.1f} {s['embedding']:>8.1f} {s['clustering']:>9.1f} {r['total_seconds']:>8.1f} "
              f"{r['rtf']['total']:>7.4f} {r['peak_memory_mb']:>8.0f}")
    print(f"\nGoal: RTF <= {GOAL_RTF} on one thread at C=512 (RTF = pipeline seconds / audio seconds).")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=int_list, default=[10], help="recording lengths, e.g. 10,60,240")
    parser.add_argument("--channels", type=int, default=512)
    parser.add_argument("--threads", type=int_list, default=[1, 2])
    parser.add_argument("--runtimes", type=lambda s: s.split(","), default=["mindspore"],
                        help="mindspore and/or onnxruntime (the dynamic waveform ONNX export)")
    parser.add_argument("--data", default="", help="folder for the conversations and models (default: a temporary "
                                                   "one); kept and reused when given")
    add_json_option(parser, __file__)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--runtime", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = sorted(set(args.runtimes) - {"mindspore", "onnxruntime"})
    if unknown:
        parser.error(f"--runtimes: unknown {unknown}; choose from mindspore, onnxruntime")
    if args.worker:
        from src.mindspore_log import route_mindspore_log
        route_mindspore_log()   # before MindSpore loads: its warnings go to a log file
        if args.prepare:
            prepare(args.data, args.minutes, args.channels, "onnxruntime" in args.runtimes)
            print(json.dumps({"prepared": True}))
        else:
            print(json.dumps(measure(args.data, args.minutes[0], args.channels, args.threads[0], args.runtime)))
        return 0
    with tempfile.TemporaryDirectory(prefix="bench_diarize_") as scratch:
        args.data = args.data or scratch
        os.makedirs(args.data, exist_ok=True)
        lengths = ",".join(map(str, args.minutes))
        print(f"writing {lengths} min conversations and the C={args.channels} network in {args.data}", flush=True)
        run_worker(args, "--prepare", "--minutes", lengths, "--channels", args.channels, "--runtimes",
                   ",".join(args.runtimes))
        rows = []
        for minutes in args.minutes:
            for threads in args.threads:
                for runtime in args.runtimes:
                    print(f"{minutes} min, {threads} thread(s), {runtime}", flush=True)
                    rows.append(run_worker(args, "--minutes", minutes, "--channels", args.channels, "--threads",
                                           threads, "--runtime", runtime))
                    print_table(rows[-1:])
    print_table(rows)
    write_report(args.json, __file__, vars(args), {"goal_rtf": GOAL_RTF, "runs": rows}, argv=argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
