"""Training data pipeline throughput: seconds of audio prepared per CPU second, one worker.

Runs the real chain (src/data: read a random 2 s crop from a WAV file, speed perturbation, MUSAN noise,
RIR reverberation; then fbank) over the same samples with growing parts of the chain switched on, and
prints "x real time per core" = audio seconds / CPU seconds (``time.process_time``: this process's CPU time
over all its threads, so other users of the shared machine do not inflate it). Target: >= 500x.

The "full chain" rows add the fbank (read, crop, speed, noise, reverb, fbank), once as NumPy/scipy.fft (what a
CPU data worker would compute) and once as MindSpore's ``src.model.fbank.Fbank`` (GRAPH mode, batches of
--batch_size; what the train graph runs, on the device on Ascend/GPU). "Recipe probabilities" is the default
recipe (aug_prob 0.8, reverb 0.5, one of noise/music/babble 0.9, speed perturbation on); "every crop" reverberates
and adds noise, music or babble to every crop.

    python benchmarks/bench_pipeline.py                       # makes a synthetic corpus in a temp folder
    python benchmarks/bench_pipeline.py --corpus data/synthetic --samples 400

Figures are also written as JSON (``--json PATH``, default runs/benchmarks/bench_pipeline.json; benchmarks/report.py).
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np
import scipy.fft
from scipy.signal import get_window

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from src.mindspore_log import route_mindspore_log  # noqa: E402

route_mindspore_log()   # before MindSpore loads: its warnings go to a log file, here and in every worker process

from benchmarks.report import add_json_option, write_report  # noqa: E402
from src.config import load_config  # noqa: E402
from src.data.augment import WaveAugment  # noqa: E402
from src.data.dataset import TrainSource, train_list_from_config  # noqa: E402
from src.data.synthetic import make_corpus  # noqa: E402
from src.device import setup_device  # noqa: E402
from src.model.fbank import Fbank, mel_filterbank  # noqa: E402

TARGET = 500    # x real time per core


def numpy_fbank(batch, n_mels=80):
    """(B, S) -> (B, 1 + S // 160, n_mels) log-mel (centred 400-sample Hamming frames, hop 160) in NumPy."""
    window = get_window("hamming", 400, fftbins=True).astype(np.float32)
    mel = mel_filterbank(16000, 400, n_mels).astype(np.float32)
    padded = np.pad(batch, ((0, 0), (200, 200)))
    n_frames = 1 + batch.shape[1] // 160
    frames = np.lib.stride_tricks.sliding_window_view(padded, 400, axis=1)[:, ::160][:, :n_frames]
    power = np.abs(scipy.fft.rfft(frames * window, axis=-1)) ** 2
    db = 10 * np.log10(np.maximum(power @ mel, 1e-10))
    db = np.maximum(db, db.max(axis=(1, 2), keepdims=True) - 80)
    return db - db.mean(axis=1, keepdims=True)


def measure(source, indices, batch_size, fbank=None):
    """CPU seconds to prepare the samples (and their fbank batches) -> (audio_seconds, cpu_seconds)."""
    start = time.process_time()
    batch = []
    for i in indices:
        batch.append(source[i][0])
        if len(batch) == batch_size:
            if fbank is not None:
                fbank(np.stack(batch))
            batch = []
    cpu = time.process_time() - start
    return len(indices) - len(batch), cpu


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", help="synthetic corpus folder (made by src.data.synthetic); default: a temp one")
    parser.add_argument("--samples", type=int, default=320, help="crops per measurement")
    parser.add_argument("--batch_size", type=int, default=32)
    add_json_option(parser, __file__)
    args = parser.parse_args()
    setup_device("CPU")
    tmp = None
    if args.corpus is None:
        tmp = tempfile.TemporaryDirectory()
        args.corpus = tmp.name
        print("making a synthetic corpus (30 speakers x 10 utterances of 4-10 s) ...")
        make_corpus(args.corpus, 30, 0, 10, (4.0, 10.0), seed=0, progress=False)
    corpus = os.path.abspath(args.corpus)
    cfg = load_config(["--train_dir", f"{corpus}/train", "--train_list_dir", f"{corpus}/lists_bench",
                       "--musan_dir", f"{corpus}/musan", "--rir_dir", f"{corpus}/RIRS_NOISES/simulated_rirs"])
    train_list = train_list_from_config(cfg)
    crop = int(cfg.crop_seconds * cfg.sample_rate)
    indices = np.random.default_rng(0).integers(len(train_list), size=args.samples)
    order = np.arange(len(train_list))

    def source(augment, speed):
        return TrainSource(train_list, order, crop, cfg.seed, 0, augment=augment, speed_perturb=speed)

    recipe = WaveAugment.from_config(cfg)
    always = WaveAugment(cfg.musan_dir, cfg.rir_dir, aug_prob=1.0, reverb_prob=1.0, noise_prob=0.34,
                         music_prob=0.33, babble_prob=0.33)
    ms_fbank_cell = Fbank()

    def ms_fbank(batch):
        import mindspore as ms
        return ms_fbank_cell(ms.Tensor(batch))[0].asnumpy()

    ms_fbank(np.zeros((args.batch_size, crop), np.float32))   # compile once, outside the measurement
    rows = [
        ("read + crop", source(None, False), None),
        ("read + crop + speed + MUSAN/RIR at recipe probabilities", source(recipe, cfg.speed_perturb), None),
        ("read + crop + speed + reverb + noise on every crop", source(always, True), None),
        ("full chain, recipe probabilities, NumPy fbank", source(recipe, cfg.speed_perturb), numpy_fbank),
        ("full chain, every crop augmented, NumPy fbank", source(always, True), numpy_fbank),
        ("full chain, recipe probabilities, MindSpore Fbank", source(recipe, cfg.speed_perturb), ms_fbank),
        ("full chain, every crop augmented, MindSpore Fbank", source(always, True), ms_fbank),
    ]
    print(f"\n{args.samples} crops of {cfg.crop_seconds} s, one worker, CPU time via time.process_time "
          f"(target >= {TARGET}x real time per core)")
    print(f"{'chain':56s} {'audio s':>8s} {'CPU s':>7s} {'x real time':>12s}  target")
    results = []
    for name, src, fbank in rows:
        measure(src, indices[:args.batch_size], args.batch_size, fbank)          # warm the file cache
        count, cpu = measure(src, indices, args.batch_size, fbank)
        audio = count * cfg.crop_seconds
        speed = audio / cpu
        print(f"{name:56s} {audio:8.1f} {cpu:7.2f} {speed:11.0f}x  {'met' if speed >= TARGET else 'MISSED'}")
        results.append({"chain": name, "audio_seconds": audio, "cpu_seconds": cpu, "x_real_time": speed,
                        "target_met": speed >= TARGET})
    print("Fbank: NumPy = scipy.fft rfft, as a CPU worker would compute it; MindSpore = src.model.fbank.Fbank in "
          "GRAPH mode on the CPU (in training it runs inside the train graph, on the device on Ascend/GPU).")
    write_report(args.json, __file__, vars(args), {"target_x_real_time": TARGET, "rows": results})
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
