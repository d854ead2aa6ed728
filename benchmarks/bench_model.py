"""ECAPA-TDNN speed: our MindSpore network (GRAPH mode) against SpeechBrain's (PyTorch eager), side by side.

For each model: the forward pass (eval mode, embeddings of a (batch, frames, 80) batch) and one training step
(forward, AAM-softmax loss over ``--classes`` speakers, backward, Adam update). The runs are interleaved
(ours, reference, ours, ...) so both see the same machine load; medians over ``--repeats`` runs are printed with
the ratio ours / reference and the GFLOP/s our step achieves (FLOPs counted analytically, see ``forward_flops``).
The best (minimum) times and their ratio are printed too: on a machine shared with other processes a burst of load
can fall on a few runs of one model only and move the medians' ratio far from the uncontended one, while each
model's fastest run is the one least disturbed. Before timing, our forward pass and train step each run ``--warmup``
(15) times untimed, the reference's twice (see ``MINDSPORE_WARMUP``).

    .venv/bin/python benchmarks/bench_model.py                       # batch 16 x 200 frames, C=1024, MFA 3072
    .venv/bin/python benchmarks/bench_model.py --channels 64 --mfa_channels 192 --repeats 2     # smoke run
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import mindspore as ms  # noqa: E402
from mindspore import nn  # noqa: E402

from src.device import setup_device  # noqa: E402
from src.model.ecapa_tdnn import ECAPA_TDNN  # noqa: E402
from src.model.loss import AAMSoftmax  # noqa: E402
from tests.speechbrain_ref import make_speechbrain_ecapa, speechbrain_module  # noqa: E402

KERNELS = (5, 3, 3, 3)
# MindSpore's CPU elementwise kernels (ParallelLaunchAutoSearch) time their first launches to choose how to split
# the work: 5 launches each with 1, 2 and 4 blocks on 2 threads, so the first 5 runs of a graph are single-threaded
# (measured: forward 820 ms for runs 2-5, 610-650 ms from run 6 on). Timing starts after 15 runs.
MINDSPORE_WARMUP = 15
REFERENCE_WARMUP = 2        # PyTorch eager: the first call allocates, later calls run the same kernels


def forward_flops(args, frames):
    """FLOPs (2 per multiply-add) of our forward pass for one utterance of ``frames`` frames: every matmul of
    the network (elementwise ops, softmax and batch norm are left out). Global context costs M*A per frame plus
    2M*A per utterance in our formulation of the attention's first layer."""
    c, m, a, w = args.channels, args.mfa_channels, 128, args.channels // 8
    per_frame = 80 * KERNELS[0] * c                                # blocks.0
    per_frame += 3 * (2 * c * c + 7 * w * 3 * w)                   # blocks.1-3: two 1x1 TDNNs + Res2Net convs
    per_frame += 3 * c * m                                         # mfa
    per_frame += m * a + a * m                                     # attention: tdnn and conv
    per_utt = 3 * 2 * c * 128 + 2 * m * args.embedding_size        # SE blocks, fc
    if args.global_context:
        per_utt += 2 * m * a
    return 2 * (per_frame * frames + per_utt)


class EmbeddingLoss(nn.Cell):
    """(feats, labels) -> AAM-softmax loss of the network's embeddings."""

    def __init__(self, network, loss):
        super().__init__()
        self.network = network
        self.loss = loss

    def construct(self, feats, labels):
        return self.loss(self.network(feats), labels)


def build_ours(args):
    """-> (forward(feats) -> numpy, train_step(feats, labels) -> loss numpy)."""
    config = dict(channels=args.channels, mfa_channels=args.mfa_channels, embedding_size=args.embedding_size,
                  global_context=args.global_context)
    embedder = ECAPA_TDNN(**config)
    embedder.set_train(False)
    train_net = EmbeddingLoss(ECAPA_TDNN(**config), AAMSoftmax(args.embedding_size, args.classes))
    step = nn.TrainOneStepCell(train_net, nn.Adam(train_net.trainable_params(), learning_rate=1e-4))
    step.set_train(True)

    def forward(feats, labels):
        return embedder(feats).asnumpy()

    def train_step(feats, labels):
        return step(feats, labels).asnumpy()
    return forward, train_step


def build_reference(args):
    """SpeechBrain's ECAPA_TDNN, Classifier and AdditiveAngularMargin loss with torch Adam (2 threads)."""
    import torch
    torch.set_num_threads(args.threads)
    ecapa = speechbrain_module("speechbrain.lobes.models.ECAPA_TDNN")
    losses = speechbrain_module("speechbrain.nnet.losses")
    model = make_speechbrain_ecapa(args.channels, args.mfa_channels, args.embedding_size,
                                   global_context=args.global_context)
    embedder = make_speechbrain_ecapa(args.channels, args.mfa_channels, args.embedding_size,
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


def timed(fn, *inputs):
    start = time.perf_counter()
    fn(*inputs)
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--channels", type=int, default=1024)
    parser.add_argument("--mfa_channels", type=int, default=3072)
    parser.add_argument("--embedding_size", type=int, default=192)
    parser.add_argument("--no_global_context", dest="global_context", action="store_false")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each measurement (median)")
    parser.add_argument("--threads", type=int, default=2, help="PyTorch intra-op threads")
    parser.add_argument("--warmup", type=int, default=MINDSPORE_WARMUP,
                        help="untimed runs of our forward pass and train step before timing (the first compiles)")
    args = parser.parse_args(argv)

    import torch
    setup_device("CPU")
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((args.batch, args.frames, 80), dtype=np.float32)
    labels = rng.integers(0, args.classes, args.batch).astype(np.int32)
    inputs = {"ours": (ms.Tensor(feats), ms.Tensor(labels)),
              "reference": (torch.from_numpy(feats), torch.from_numpy(labels.astype(np.int64)).reshape(-1, 1))}
    models = {"ours": build_ours(args), "reference": build_reference(args)}

    print(f"batch {args.batch} x {args.frames} frames x 80, channels {args.channels}, MFA {args.mfa_channels}, "
          f"global context {args.global_context}, {args.classes} classes, {args.repeats} repeats", flush=True)
    for name, (forward, train_step) in models.items():      # compile / warm up
        runs = args.warmup if name == "ours" else REFERENCE_WARMUP
        start = time.perf_counter()
        for _ in range(runs):
            forward(*inputs[name])
        for _ in range(runs):
            train_step(*inputs[name])
        print(f"{name}: {runs} untimed forward passes and train steps (compile, warm-up) "
              f"{time.perf_counter() - start:.1f} s", flush=True)
    times = {(name, kind): [] for name in models for kind in ("forward", "train step")}
    for _ in range(args.repeats):
        for kind, index in (("forward", 0), ("train step", 1)):
            for name in models:
                times[(name, kind)].append(timed(models[name][index], *inputs[name]))

    flops = forward_flops(args, args.frames) * args.batch
    step_flops = 3 * flops + 3 * 2 * args.batch * args.embedding_size * args.classes
    print(f"\n{'':18}{'ours (MindSpore GRAPH)':>24}{'SpeechBrain (torch eager)':>28}{'ours/ref':>10}"
          f"{'our GFLOP/s':>13}")
    for kind, count in (("forward", flops), ("train step", step_flops)):
        for summary, statistic in (("median", statistics.median), ("best", min)):
            ours = statistic(times[("ours", kind)])
            ref = statistic(times[("reference", kind)])
            print(f"{kind + ' ' + summary:18}{ours * 1e3:21.0f} ms{ref * 1e3:25.0f} ms{ours / ref:10.2f}"
                  f"{count / ours / 1e9:13.1f}")
    print(f"(forward {flops / 1e9:.1f} GFLOP, train step ~{step_flops / 1e9:.1f} GFLOP counted analytically; "
          f"all runs in ms: " + ", ".join(f"{n} {k}: " + "/".join(f"{t * 1e3:.0f}" for t in v)
                                          for (n, k), v in times.items()) + ")")


if __name__ == "__main__":
    main()
