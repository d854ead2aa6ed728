"""Embedding extraction: length buckets (one graph per bucket) vs one utterance at a time (one graph per length).

    .venv/bin/python benchmarks/bench_embedding.py [--utts 12] [--channels 256] [--mfa_channels 768]

Writes a synthetic set of utterances with distinct lengths, embeds it both ways with the same random-weight
network in GRAPH mode, and prints wall time, distinct input shapes fed to the network (= graph compilations)
and the largest difference between the two sets of embeddings. The one-at-a-time way is how the older zoo
evaluated (a recompile per utterance length).

Figures are also written as JSON (``--json PATH``, default runs/benchmarks/bench_embedding.json; benchmarks/report.py).
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from src.mindspore_log import route_mindspore_log  # noqa: E402

route_mindspore_log()   # before MindSpore loads: its warnings go to a log file, here and in every worker process

import mindspore as ms  # noqa: E402

from benchmarks.report import add_json_option, write_report  # noqa: E402
from src.data.audio import read_audio, write_wav  # noqa: E402
from src.device import setup_device  # noqa: E402
from src.model.ecapa_tdnn import ECAPA_TDNN  # noqa: E402
from src.evaluate.extract import Batching, extract_embeddings  # noqa: E402
from src.model.embedder import Embedder  # noqa: E402


class ShapeCounter:
    """Forwards to the embedder and counts the distinct input shapes (graph compilations)."""

    def __init__(self, cell):
        self.cell, self.shapes = cell, set()

    def __call__(self, wav, lens):
        self.shapes.add(tuple(wav.shape))
        return self.cell(wav, lens)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utts", type=int, default=12)
    parser.add_argument("--min_seconds", type=float, default=2.0)
    parser.add_argument("--max_seconds", type=float, default=8.0)
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--mfa_channels", type=int, default=768)
    parser.add_argument("--buckets", default="3,5,8")
    parser.add_argument("--batch", type=int, default=8)
    add_json_option(parser, __file__)
    args = parser.parse_args()
    setup_device("CPU")
    rng = np.random.default_rng(0)
    folder = tempfile.mkdtemp(prefix="bench_embedding_")
    seconds = np.linspace(args.min_seconds, args.max_seconds, args.utts)
    keys = []
    for i, s in enumerate(seconds):
        keys.append(f"utt{i:03d}.wav")
        write_wav(os.path.join(folder, keys[-1]), 0.1 * rng.standard_normal(int(s * 16000)).astype(np.float32))
    buckets = [float(b) for b in args.buckets.split(",")]
    cfg = Batching(sample_rate=16000, bucket_seconds=tuple(buckets[:-1]), max_seconds=buckets[-1],
                   batch_size=args.batch, batch_seconds=1e9)
    ms.set_seed(0)
    network = ECAPA_TDNN(channels=args.channels, mfa_channels=args.mfa_channels)
    network.set_train(False)
    total_audio = float(seconds.sum())
    print(f"{args.utts} utterances, {total_audio:.0f} s of audio, {len(set(seconds))} distinct lengths, "
          f"channels {args.channels}, MFA {args.mfa_channels}, buckets {buckets} s, batch {args.batch}")

    bucketed = ShapeCounter(Embedder(network))
    start = time.time()
    emb = extract_embeddings(bucketed, keys, folder, cfg, progress=False)
    t_bucketed = time.time() - start
    start = time.time()
    extract_embeddings(bucketed, keys, folder, cfg, progress=False)
    t_bucketed_warm = time.time() - start

    alone = ShapeCounter(Embedder(network))
    start = time.time()
    diff = 0.0
    for key in keys:
        wav = read_audio(os.path.join(folder, key))
        out = alone(ms.Tensor(wav[None]), ms.Tensor(np.array([wav.size], np.int32))).asnumpy()[0]
        diff = max(diff, float(np.abs(out - emb[key]).max()))
    t_alone = time.time() - start

    print(f"{'':34s}{'wall s':>9s}{'utt/s':>8s}{'x realtime':>12s}{'compiles':>10s}")
    rows = []
    for name, t, n in (("buckets, first run (compiling)", t_bucketed, len(bucketed.shapes)),
                       ("buckets, second run (compiled)", t_bucketed_warm, 0),
                       ("one at a time (zoo)", t_alone, len(alone.shapes))):
        print(f"{name:34s}{t:9.1f}{args.utts / t:8.2f}{total_audio / t:12.1f}{n:10d}")
        rows.append({"way": name, "wall_seconds": t, "utterances_per_second": args.utts / t,
                     "x_real_time": total_audio / t, "compiles": n})
    print(f"largest |difference| between bucketed and one-at-a-time embeddings: {diff:.2e}")
    write_report(args.json, __file__, vars(args), {"audio_seconds": total_audio, "rows": rows,
                                                   "max_abs_diff": diff})


if __name__ == "__main__":
    main()
