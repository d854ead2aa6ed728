"""A whole small training run: train.py against the same recipe in a plain PyTorch loop with SpeechBrain's
ECAPA_TDNN, each in its own process, on the same generated corpus and the same number of steps.

    .venv/bin/python benchmarks/bench_train_run.py                              # demo recipe, 60 steps, ~30 min
    .venv/bin/python benchmarks/bench_train_run.py --steps 5 --augment false    # a quick look

Both sides read the same training list with the same crops and the same waveform augmentation (src/data/dataset.py
``TrainSource`` with src/data/augment.py ``WaveAugment``; ``--augment false`` sets aug_prob 0), in the recipe's
``num_workers`` worker processes (MindSpore's GeneratorDataset; PyTorch's DataLoader), and take ``--steps`` steps
of ``batch_size`` crops: fbank with the utterance mean removed, SpecAugment masks (one time mask of <= 5 frames, one
frequency mask of <= 10 bins), ECAPA-TDNN of the recipe's sizes, AAM softmax (margin, scale), Adam with the
recipe's weight decay, a checkpoint every ``checkpoint_every_steps`` steps.

- mindspore: ``train.py`` as a user runs it, three times per recipe: without the compile cache
  (``--compile_cache false``), with an empty one (the first run of a recipe: it compiles and saves the graph) and
  again with the same one (a rerun or a resumed run: it loads the graph; src/train/compile_cache.py). Its split
  (train_log.jsonl's ``run_end`` record, src/train/loop.py ``PhaseTimes``): setup, dataset start, first step (graph
  compile and one step), steps, data wait, checkpoints, other.
- pytorch: SpeechBrain's ECAPA_TDNN, Fbank and AAM loss in eager PyTorch, timed the same way.

Printed: each side's process wall time (from start to exit, imports included) and its split; ``--json`` (default
runs/benchmarks/bench_train_run.json, benchmarks/report.py) writes the same.
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

RECIPE = os.path.join(ROOT, "configs", "demo_config.yaml")
PHASES = ("setup", "dataset", "first_step", "step", "data_wait", "checkpoint", "other")


def recipe_args(corpus, output_dir, steps, augment):
    """The command-line keys both sides run with."""
    return ["--config", RECIPE, "--train_dir", os.path.join(corpus, "train"),
            "--musan_dir", os.path.join(corpus, "musan"),
            "--rir_dir", os.path.join(corpus, "RIRS_NOISES", "simulated_rirs"),
            "--train_list_dir", os.path.join(output_dir, "lists"), "--output_dir", output_dir,
            "--max_steps", str(steps), "--aug_prob", "0.8" if augment else "0.0"]


def pytorch_run(argv):
    """The PyTorch side (a process of its own): the recipe's run in eager PyTorch -> timing record."""
    import numpy as np
    import torch
    from src.config import load_config
    from src.data.augment import WaveAugment
    from src.data.dataset import TrainSource, epoch_order, train_list_from_config
    from tests.speechbrain_ref import make_speechbrain_ecapa, speechbrain_module
    times = {phase: 0.0 for phase in PHASES}
    last = [time.perf_counter()]

    def lap(phase):
        now = time.perf_counter()
        times[phase] += now - last[0]
        last[0] = now

    cfg = load_config(argv)
    torch.manual_seed(int(cfg.seed))
    train_list = train_list_from_config(cfg)
    augment = WaveAugment.from_config(cfg)
    crop = int(round(float(cfg.crop_seconds) * int(cfg.sample_rate)))
    features = speechbrain_module("speechbrain.lobes.features").Fbank(n_mels=int(cfg.n_mels))
    model = make_speechbrain_ecapa(int(cfg.channels), int(cfg.mfa_channels), int(cfg.embedding_size),
                                   int(cfg.attention_channels), int(cfg.se_channels), int(cfg.res2net_scale))
    ecapa = speechbrain_module("speechbrain.lobes.models.ECAPA_TDNN")
    losses = speechbrain_module("speechbrain.nnet.losses")
    classifier = ecapa.Classifier(int(cfg.embedding_size), out_neurons=train_list.num_speakers)
    loss_fn = losses.LogSoftmaxWrapper(losses.AdditiveAngularMargin(margin=float(cfg.aam_margin),
                                                                     scale=float(cfg.aam_scale)))
    params = list(model.parameters()) + list(classifier.parameters())
    optimizer = torch.optim.Adam(params, lr=float(cfg.max_lr), weight_decay=float(cfg.weight_decay))
    model.train()
    classifier.train()
    checkpoint_dir = os.path.join(cfg.output_dir, "torch_checkpoints")
    os.makedirs(checkpoint_dir, exist_ok=True)
    lap("setup")

    class Source(torch.utils.data.Dataset):
        def __init__(self, epoch):
            order = epoch_order(len(train_list), int(cfg.seed), epoch, batch_size=int(cfg.batch_size))
            self.source = TrainSource(train_list, order, crop, int(cfg.seed), epoch, augment=augment,
                                      sample_rate=int(cfg.sample_rate))

        def __len__(self):
            return len(self.source)

        def __getitem__(self, i):
            wav, label = self.source[i]
            return torch.from_numpy(wav), torch.tensor(int(label))

    def spec_augment(feats):
        batch, frames, bins = feats.shape
        keep = torch.ones_like(feats)
        for row in range(batch):
            width = int(np.random.randint(0, 6))
            start = int(np.random.randint(0, frames - width + 1))
            keep[row, start:start + width] = 0
            width = int(np.random.randint(0, 11))
            start = int(np.random.randint(0, bins - width + 1))
            keep[row, :, start:start + width] = 0
        return feats * keep

    steps, epoch = 0, 0
    while steps < int(cfg.max_steps):
        loader = torch.utils.data.DataLoader(Source(epoch), batch_size=int(cfg.batch_size), shuffle=False,
                                             drop_last=True, num_workers=int(cfg.num_workers))
        lap("dataset")
        for wav, labels in loader:
            lap("data_wait")
            feats = features(wav)
            feats = spec_augment(feats - feats.mean(dim=1, keepdim=True))
            logits = classifier(model(feats))
            loss = loss_fn(logits, labels.unsqueeze(1))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            float(loss)
            lap("first_step" if steps == 0 else "step")
            steps += 1
            if steps % int(cfg.checkpoint_every_steps) == 0 or steps == int(cfg.max_steps):
                torch.save({"model": model.state_dict(), "classifier": classifier.state_dict(),
                            "optimizer": optimizer.state_dict()}, os.path.join(checkpoint_dir, f"step{steps}.pt"))
                lap("checkpoint")
            if steps == int(cfg.max_steps):
                break
        epoch += 1
    lap("other")
    step_time = times["step"] + times["first_step"]
    return {"seconds": {k: round(v, 3) for k, v in times.items()}, "steps": steps,
            "data_wait_per_step_time": round(times["data_wait"] / step_time, 4)}


# The MindSpore runs of one recipe, in order: (label, compile cache setting); the last two share one cache folder.
MINDSPORE_RUNS = (("no compile cache", "off"), ("compile cache saved", "cache"), ("compile cache loaded", "cache"))


def run_side(side, corpus, folder, steps, augment, compile_cache=None, run=0):
    """Start one side's process, wait for it -> {"wall_seconds", split record}. ``compile_cache`` (mindspore):
    "off", or "cache" (the recipe's cache folder under ``folder``)."""
    recipe = "aug" if augment else "clean"
    output_dir = os.path.join(folder, f"{side}_{recipe}_{run}")
    args = recipe_args(corpus, output_dir, steps, augment)
    if side == "mindspore":
        cache = (["--compile_cache", "false"] if compile_cache == "off" else
                 ["--compile_cache", "true", "--compile_cache_dir", os.path.join(folder, f"compile_cache_{recipe}")])
        argv = [sys.executable, os.path.join(ROOT, "train.py"), *args, *cache, "--device_target", "CPU"]
    else:
        argv = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(args)]
    start = time.perf_counter()
    subprocess.run(argv, check=True, cwd=ROOT, stdout=subprocess.DEVNULL if side == "mindspore" else None)
    wall = time.perf_counter() - start
    if side == "mindspore":
        with open(os.path.join(output_dir, "train_log.jsonl"), encoding="utf-8") as f:
            record = [json.loads(line) for line in f if '"run_end"' in line][-1]
    else:
        with open(os.path.join(output_dir, "torch_run.json"), encoding="utf-8") as f:
            record = json.load(f)
    return {"wall_seconds": round(wall, 2), "compile_cache": record.get("compile_cache"),
            **{k: record[k] for k in ("seconds", "steps", "data_wait_per_step_time")}}


def print_table(results):
    sides = list(results)
    print("\n| recipe | side | wall s | " + " | ".join(PHASES) + " | data wait / step time |")
    print("|---|---|---|" + "---|" * len(PHASES) + "---|")
    for key, r in results.items():
        recipe, side = key
        print(f"| {recipe} | {side} | {r['wall_seconds']:.1f} | " +
              " | ".join(f"{r['seconds'][p]:.1f}" for p in PHASES) +
              f" | {100 * r['data_wait_per_step_time']:.1f} % |")
    return sides


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--augment", default="false,true", help="false, true or both (false,true)")
    parser.add_argument("--corpus", default="", help="a synthetic corpus folder to reuse ('': generate the demo's)")
    add_json_option(parser, __file__)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker_args = json.loads(args.worker)
        record = pytorch_run(worker_args)
        output_dir = worker_args[worker_args.index("--output_dir") + 1]
        with open(os.path.join(output_dir, "torch_run.json"), "w", encoding="utf-8") as f:
            json.dump(record, f)
        return
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_train_run_") as folder:
        corpus = args.corpus
        if not corpus:
            corpus = os.path.join(folder, "corpus")
            print(f"writing the demo's synthetic corpus to {corpus}", flush=True)
            subprocess.run([sys.executable, "-m", "src.data.synthetic", "--out", corpus, "--train_speakers", "40",
                            "--test_speakers", "2", "--utts", "20", "--min_seconds", "2", "--max_seconds", "4",
                            "--seed", "0"], check=True, cwd=ROOT)
        for augment in [a.strip() == "true" for a in args.augment.split(",")]:
            recipe = "demo, augmented" if augment else "demo, no augmentation"
            for run, (label, cache) in enumerate(MINDSPORE_RUNS):
                print(f"{recipe}: mindspore, {label}, {args.steps} steps", flush=True)
                results[(recipe, f"mindspore, {label}")] = run_side("mindspore", corpus, folder, args.steps, augment,
                                                                    cache, run)
            print(f"{recipe}: pytorch, {args.steps} steps", flush=True)
            results[(recipe, "pytorch")] = run_side("pytorch", corpus, folder, args.steps, augment)
    print_table(results)
    write_report(args.json, __file__, vars(args), {
        "recipe": os.path.relpath(RECIPE, ROOT),
        "runs": [{"recipe": recipe, "side": side, **r} for (recipe, side), r in results.items()]}, argv=argv)


if __name__ == "__main__":
    main()
