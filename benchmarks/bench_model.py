"""ECAPA-TDNN speed: our MindSpore network (GRAPH mode) against SpeechBrain's (PyTorch eager), side by side.

For each channel count: the forward pass (our inference network with frame lengths, as eval.py runs it; SpeechBrain's
model in eval mode: embeddings of a (batch, frames, 80) batch) and one training
step (forward, AAM-softmax loss over ``--classes`` speakers, backward, Adam update) of each model. Each side runs in
its own process and alone on the machine (benchmarks/sides.py: MindSpore's and PyTorch's thread pools never share
the cores), taking turns in alternating order over ``--rounds`` rounds; each turn first runs every measurement once
untimed (the first call after a pause pays for cold caches). Printed: median [min-max] of each side, the
ratio of the medians ours / reference and the GFLOP/s our step achieves (FLOPs counted analytically, see
``forward_flops``). Before timing, our forward pass and train step each run ``--warmup`` (15) times untimed, the
reference's twice (see ``MINDSPORE_WARMUP``).

    .venv/bin/python benchmarks/bench_model.py                       # batch 16 x 200 frames, C=512 and 1024
    .venv/bin/python benchmarks/bench_model.py --batch 32 --frames 201 --classes 20 --channels 512
    .venv/bin/python benchmarks/bench_model.py --channels 64 --rounds 1 --repeats 1 --warmup 2     # smoke run

Figures are also written as JSON (``--json PATH``, default runs/benchmarks/bench_model.json; benchmarks/report.py).
"""
import argparse
import contextlib
import os
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from src.mindspore_log import route_mindspore_log  # noqa: E402

route_mindspore_log()   # before MindSpore loads: its warnings go to a log file, here and in every worker process

from benchmarks.report import add_json_option, write_report  # noqa: E402
from benchmarks.sides import (Side, int_list, pin_threads, serve, spread, take_turns, timed_runs,  # noqa: E402
                             worker_command)

KERNELS = (5, 3, 3, 3)
# MindSpore's CPU elementwise kernels (ParallelLaunchAutoSearch) time their first launches to choose how to split
# the work: 5 launches each with 1, 2 and 4 blocks on 2 threads, so the first 5 runs of a graph are single-threaded
# (measured: forward 820 ms for runs 2-5, 610-650 ms from run 6 on). Timing starts after 15 runs.
MINDSPORE_WARMUP = 15
REFERENCE_WARMUP = 2        # PyTorch eager: the first call allocates, later calls run the same kernels


def forward_flops(args, channels, frames):
    """FLOPs (2 per multiply-add) of our forward pass for one utterance of ``frames`` frames: every matmul of
    the network (elementwise ops, softmax and batch norm are left out). Global context costs M*A per frame plus
    2M*A per utterance in our formulation of the attention's first layer."""
    c, m, a, w = channels, 3 * channels, 128, channels // 8
    per_frame = 80 * KERNELS[0] * c                                # blocks.0
    per_frame += 3 * (2 * c * c + 7 * w * 3 * w)                   # blocks.1-3: two 1x1 TDNNs + Res2Net convs
    per_frame += 3 * c * m                                         # mfa
    per_frame += m * a + a * m                                     # attention: tdnn and conv
    per_utt = 3 * 2 * c * 128 + 2 * m * args.embedding_size        # SE blocks, fc
    if args.global_context:
        per_utt += 2 * m * a
    return 2 * (per_frame * frames + per_utt)


def build_ours(args, channels):
    """-> (forward(feats, labels) -> numpy, train_step(feats, labels) -> loss numpy)."""
    import mindspore as ms
    from mindspore import nn
    from src.model.ecapa_tdnn import ECAPA_TDNN, inference_network
    from src.model.loss import AAMSoftmax

    class EmbeddingLoss(nn.Cell):
        """(feats, labels) -> AAM-softmax loss of the network's embeddings."""

        def __init__(self, network, loss):
            super().__init__()
            self.network = network
            self.loss = loss

        def construct(self, feats, labels):
            return self.loss(self.network(feats), labels)
    config = dict(channels=channels, mfa_channels=3 * channels, embedding_size=args.embedding_size,
                  global_context=args.global_context)
    embedder = inference_network(ECAPA_TDNN(**config))
    train_net = EmbeddingLoss(ECAPA_TDNN(**config), AAMSoftmax(args.embedding_size, args.classes))
    step = nn.TrainOneStepCell(train_net, nn.Adam(train_net.trainable_params(), learning_rate=1e-4))
    step.set_train(True)

    def forward(feats, labels):              # as eval.py runs it: the inference network, with frame lengths
        lengths = ms.Tensor(np.full(feats.shape[0], feats.shape[1], np.int32))
        return embedder(feats, lengths).asnumpy()

    def train_step(feats, labels):
        return step(feats, labels).asnumpy()
    return forward, train_step


def build_reference(args, channels):
    """SpeechBrain's ECAPA_TDNN, Classifier and AdditiveAngularMargin loss with torch Adam."""
    import torch
    from tests.speechbrain_ref import make_speechbrain_ecapa, speechbrain_module
    ecapa = speechbrain_module("speechbrain.lobes.models.ECAPA_TDNN")
    losses = speechbrain_module("speechbrain.nnet.losses")
    model = make_speechbrain_ecapa(channels, 3 * channels, args.embedding_size, global_context=args.global_context)
    embedder = make_speechbrain_ecapa(channels, 3 * channels, args.embedding_size,
                                      global_context=args.global_context).eval()
    classifier = ecapa.Classifier(args.embedding_size, lin_blocks=0, out_neurons=args.classes)
    criterion = losses.LogSoftmaxWrapper(losses.AdditiveAngularMargin(margin=0.2, scale=30.0))
    optimizer = torch.optim.Adam(list(model.parameters()) + list(classifier.parameters()), lr=1e-4)
    model.train()

    def forward(feats, labels):
        with torch.inference_mode():
            return embedder(feats).numpy()

    def train_step(feats, labels):
        optimizer.zero_grad()
        loss = criterion(classifier(model(feats)), labels)
        loss.backward()
        optimizer.step()
        return loss.detach().numpy()
    return forward, train_step


def worker(args):
    """One side's process ("ours" or "reference"): build and warm up its models for each channel count, then time
    them on request."""
    pin_threads(args.threads)
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((args.batch, args.frames, 80), dtype=np.float32)
    labels = rng.integers(0, args.classes, args.batch).astype(np.int32)
    if args.worker == "ours":
        import mindspore as ms
        from src.device import setup_device
        setup_device("CPU")
        ms.device_context.cpu.op_tuning.threads_num(args.threads)
        inputs, build, warmup = (ms.Tensor(feats), ms.Tensor(labels)), build_ours, args.warmup
    else:
        import torch
        torch.set_num_threads(args.threads)
        inputs = (torch.from_numpy(feats), torch.from_numpy(labels.astype(np.int64)).reshape(-1, 1))
        build, warmup = build_reference, REFERENCE_WARMUP
    models = {channels: build(args, channels) for channels in args.channels}

    def handle(request):
        if request["kind"] == "setup":
            for forward, train_step in models.values():
                timed_runs(lambda: forward(*inputs), warmup)
                timed_runs(lambda: train_step(*inputs), warmup)
            return {}
        times = {}
        for channels, (forward, train_step) in models.items():
            for kind, fn in (("forward", forward), ("train step", train_step)):
                fn(*inputs)             # untimed: the first call after a pause pays for cold caches
                times[f"{channels} {kind}"] = timed_runs(lambda: fn(*inputs), request["repeats"])
        return {"times": times}
    serve(handle)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--channels", type=int_list, default=[512, 1024],
                        help="channel counts C, comma-separated (MFA channels 3 C)")
    parser.add_argument("--embedding_size", type=int, default=192)
    parser.add_argument("--no_global_context", dest="global_context", action="store_false")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=4, help="rounds of alternating turns")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each measurement in each turn")
    parser.add_argument("--threads", type=int, default=2, help="threads (and CPUs) of each side")
    parser.add_argument("--warmup", type=int, default=MINDSPORE_WARMUP,
                        help="untimed runs of our forward pass and train step before timing (the first compiles)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    add_json_option(parser, __file__)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)

    print(f"batch {args.batch} x {args.frames} frames x 80, channels {args.channels} (MFA 3 C), global context "
          f"{args.global_context}, {args.classes} classes, {args.threads} threads, {args.rounds} rounds x "
          f"{args.repeats} runs per side", flush=True)
    passed = list(argv if argv is not None else sys.argv[1:])
    with contextlib.ExitStack() as stack:
        sides = []
        for name in ("ours", "reference"):
            start = time.perf_counter()
            side = stack.enter_context(Side(name, worker_command(__file__, name, *passed)))
            side.ask(kind="setup")
            print(f"{name}: built, compiled and warmed up in {time.perf_counter() - start:.1f} s", flush=True)
            sides.append(side)
        times = take_turns(sides, args.rounds, {"kind": "run", "repeats": args.repeats})

    results = []
    print(f"\n| C | measurement | ours (MindSpore GRAPH) ms | SpeechBrain (torch eager) ms | ours/ref (medians) "
          f"| our GFLOP/s |\n|---|---|---|---|---|---|")
    for channels in args.channels:
        flops = forward_flops(args, channels, args.frames) * args.batch
        step_flops = 3 * flops + 3 * 2 * args.batch * args.embedding_size * args.classes
        for kind, count in (("forward", flops), ("train step", step_flops)):
            ours, ref = times[("ours", f"{channels} {kind}")], times[("reference", f"{channels} {kind}")]
            print(f"| {channels} | {kind} | {spread(ours)} | {spread(ref)} | "
                  f"{statistics.median(ours) / statistics.median(ref):.2f} | "
                  f"{count / statistics.median(ours) / 1e9:.1f} |")
            results.append({"channels": channels, "measurement": kind, "ours_ms": [t * 1e3 for t in ours],
                            "speechbrain_ms": [t * 1e3 for t in ref],
                            "ours_over_speechbrain": statistics.median(ours) / statistics.median(ref),
                            "our_gflops": count / statistics.median(ours) / 1e9})
    print("(median [min-max] over all runs; FLOPs counted analytically, train step ~3x the forward pass)")
    write_report(args.json, __file__, vars(args), {"rows": results}, argv=passed)


if __name__ == "__main__":
    main()
