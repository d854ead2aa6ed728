"""The training dataset: random crops of training utterances, augmented in worker processes, batched.

One ``mindspore.dataset`` pipeline is made per epoch (and per rank)::

    train_list = train_list_from_config(cfg)                       # lists.py, reused when unchanged
    augment = WaveAugment.from_config(cfg)                          # checks MUSAN/RIR folders up front
    for epoch in range(start_epoch, cfg.epochs):
        dataset, steps = create_train_dataset(cfg, train_list, epoch, num_shards, shard_id,
                                              start_step=resume_step, augment=augment)
        for wav, label in dataset.create_tuple_iterator(num_epochs=1):
            ...                                                     # wav (B, S) float32, label (B,) int32
        skipped = count_skipped(cfg.output_dir, epoch)                # unreadable files met this epoch

Epoch order: all utterance indices are shuffled with a generator seeded from ``(seed, epoch)``; rank r of
R takes the r-th of R equal slices (``len // R`` items each), so every rank has the same number of batches
and the ranks' shards are disjoint and change every epoch. ``start_step`` drops the first
``start_step * batch_size`` items of the rank's order before anything is read (cheap mid-epoch resume).

Per sample, a ``numpy.random.Generator`` seeded from ``(seed, epoch, index)`` draws the speed factor, the
crop position and the augmentation, so a sample is the same whichever worker process makes it.

Speed perturbation (``speed_perturb: true``): a sample is played at 1.0x, 0.9x or 1.1x (1/3 each); the
slowed and sped-up copies count as new speakers, label ``label + k * num_speakers`` for factor k = 1, 2,
so the classifier needs ``num_train_classes(train_list, cfg.speed_perturb)`` outputs.

Unreadable files: a file that fails to read (``AudioError``) is logged with its path, written as a line
``epoch<TAB>rank<TAB>path<TAB>error`` to ``<output_dir>/unreadable_audio.txt`` (append-only, so it works
from any worker process and with any multiprocessing start method) and replaced by another utterance
chosen deterministically from the sample's generator. ``count_skipped(cfg.output_dir, epoch)`` reads the count.
"""
import logging
import math
import os

import numpy as np
import mindspore.dataset as ds

from src.data.audio import AudioError, read_audio, repeat_pad
from src.data.augment import SPEED_FACTORS, WaveAugment, speed_perturb
from src.data.lists import build_train_list

logger = logging.getLogger(__name__)

UNREADABLE_LOG = "unreadable_audio.txt"
MAX_REPLACEMENTS = 20  # give up when this many replacement files in a row are unreadable too


def train_list_from_config(cfg, rebuild=False):
    """The training list of the recipe (keys train_dir, train_list_dir, exclude_trials, sample_rate, holdout_speakers,
    seed; num_workers processes read the audio headers when the list is made)."""
    return build_train_list(cfg.train_dir, cfg.train_list_dir, cfg.exclude_trials or [], cfg.sample_rate,
                            rebuild=rebuild, num_workers=max(1, int(cfg.num_workers)),
                            holdout=cfg.holdout_speakers, seed=int(cfg.seed))


def num_train_classes(train_list, speed_perturb):
    """Classifier outputs: the speakers, times 3 with speed perturbation (each speed is its own class)."""
    return train_list.num_speakers * (len(SPEED_FACTORS) if speed_perturb else 1)


def epoch_order(num_items, seed, epoch, num_shards=1, shard_id=0, batch_size=1):
    """Indices this rank reads in ``epoch``: its slice of a (seed, epoch) permutation -> int64 array.

    Every rank gets ``steps * batch_size`` indices with ``steps = (num_items // num_shards) // batch_size``.
    """
    if not 0 <= shard_id < num_shards:
        raise ValueError(f"shard_id must be in [0, {num_shards}), got {shard_id}")
    per_rank = num_items // num_shards
    steps = per_rank // batch_size
    if steps == 0:
        raise ValueError(f"{num_items} training utterances are too few for {num_shards} rank(s) x batch_size "
                         f"{batch_size}")
    order = np.random.default_rng([int(seed), int(epoch)]).permutation(num_items)
    return order[shard_id * per_rank: shard_id * per_rank + steps * batch_size]


class UnreadableLog:
    """Append-only record of audio files that failed to read during training (one line each)."""

    def __init__(self, path):
        self.path = path

    def record(self, epoch, rank, path, error):
        line = f"{epoch}\t{rank}\t{path}\t{str(error).replace(chr(10), ' ')}\n"
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        # One short write in append mode is atomic on POSIX, so worker processes can share the file.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode("utf-8"))
        finally:
            os.close(fd)

    def count(self, epoch=None, rank=None):
        """Number of recorded failures, optionally only of one epoch and/or rank."""
        if not os.path.isfile(self.path):
            return 0
        total = 0
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                fields = line.split("\t", 3)
                if len(fields) < 3:
                    continue
                if (epoch is None or fields[0] == str(epoch)) and (rank is None or fields[1] == str(rank)):
                    total += 1
        return total


def unreadable_log(output_dir):
    """The UnreadableLog of the run writing into ``output_dir`` (``<output_dir>/unreadable_audio.txt``)."""
    return UnreadableLog(os.path.join(output_dir, UNREADABLE_LOG))


def count_skipped(output_dir, epoch, rank=None):
    """Unreadable audio files met (and replaced) in ``epoch`` (all ranks when rank is None) by the run writing into
    ``output_dir``."""
    return unreadable_log(output_dir).count(epoch, rank)


def random_crop(wav_reader, num_samples, crop, rng):
    """Read a random ``crop``-sample window of an utterance of ``num_samples`` samples -> float32 (crop,).

    ``wav_reader(start, count)`` reads samples; shorter utterances are read whole and repeated to length.
    """
    if num_samples > crop:
        start = int(rng.integers(num_samples - crop + 1))
        wav = wav_reader(start, crop)
    else:
        wav = wav_reader(0, None)
    if len(wav) == 0:
        raise AudioError(f"no samples where the training list promised {num_samples} (file changed? rebuild the list)")
    return repeat_pad(wav, crop)     # a short utterance (or a header that promised more than the file holds)


class TrainSource:
    """Random-access source for ``GeneratorDataset``: item i -> (waveform float32 (crop,), label int32).

    Args:
        train_list: lists.TrainList.
        order: indices into train_list, in reading order (this rank's part of the epoch).
        crop: samples per training example.
        seed, epoch, rank: seed the per-sample generators and label the unreadable-file log.
        augment: a WaveAugment, or None for clean crops.
        speed_perturb: also play utterances at 0.9x / 1.1x as extra speaker classes.
        log: UnreadableLog, or None to only log unreadable files.
    """

    def __init__(self, train_list, order, crop, seed, epoch, rank=0, augment=None, speed_perturb=False,
                 sample_rate=16000, log=None):
        self.train_list, self.order = train_list, np.asarray(order, dtype=np.int64)
        self.crop, self.seed, self.epoch, self.rank = int(crop), int(seed), int(epoch), int(rank)
        self.augment, self.speed_perturb, self.sample_rate, self.log = augment, speed_perturb, sample_rate, log

    def __len__(self):
        return len(self.order)

    def _read_crop(self, index, rng):
        """Random crop of utterance ``index``, speed-perturbed -> (wav (crop,), speed copy k). Raises AudioError."""
        k = int(rng.integers(len(SPEED_FACTORS))) if self.speed_perturb else 0
        factor = SPEED_FACTORS[k]
        path = os.path.join(self.train_list.root, self.train_list.paths[index])
        need = int(math.ceil(self.crop * factor)) + (1 if factor != 1.0 else 0)

        def reader(start, count):
            return read_audio(path, self.sample_rate, start=start, num_samples=count)

        wav = random_crop(reader, self.train_list.num_samples[index], need, rng)
        if factor != 1.0:
            wav = speed_perturb(wav, factor)
            if len(wav) < self.crop:
                wav = np.pad(wav, (0, self.crop - len(wav)), mode="wrap")
            wav = wav[:self.crop]
        return wav, k

    def __getitem__(self, i):
        index = int(self.order[i])
        for _ in range(MAX_REPLACEMENTS + 1):
            rng = np.random.default_rng([self.seed, self.epoch, index])
            try:
                wav, k = self._read_crop(index, rng)
                break
            except AudioError as err:
                logger.warning("skipping unreadable training file (epoch %d): %s", self.epoch, err)
                if self.log is not None:
                    self.log.record(self.epoch, self.rank, self.train_list.paths[index], err)
                index = (index + 1 + int(rng.integers(max(1, len(self.train_list) - 1)))) % len(self.train_list)
        else:
            raise AudioError(f"{MAX_REPLACEMENTS + 1} training files in a row were unreadable (last: "
                             f"{self.train_list.paths[index]}); run python -m src.data.check")
        if self.augment is not None:
            wav = self.augment(wav, rng)
        label = self.train_list.labels[index] + k * self.train_list.num_speakers
        return wav.astype(np.float32), np.array(label, dtype=np.int32)


def create_train_dataset(cfg, train_list, epoch, num_shards=1, shard_id=0, start_step=0, augment=None):
    """The batched training dataset of one epoch for one rank -> (mindspore Dataset, steps_per_epoch).

    Columns: ``waveform`` (batch_size, crop) float32 and ``label`` (batch_size,) int32; batches are full
    (drop_remainder). ``steps_per_epoch`` counts the whole epoch; the dataset yields
    ``steps_per_epoch - start_step`` batches (the first ``start_step`` are skipped without being read).

    Config keys: seed, batch_size, crop_seconds, sample_rate, num_workers, speed_perturb, output_dir and,
    when ``augment`` is None, the augmentation keys (see ``WaveAugment.from_config``).
    """
    batch_size = int(cfg.batch_size)
    order = epoch_order(len(train_list), cfg.seed, epoch, num_shards, shard_id, batch_size)
    steps_per_epoch = len(order) // batch_size
    if not 0 <= start_step < steps_per_epoch:
        raise ValueError(f"start_step must be in [0, {steps_per_epoch}) for this epoch, got {start_step}")
    if augment is None:
        augment = WaveAugment.from_config(cfg)
    source = TrainSource(train_list, order[start_step * batch_size:], round(cfg.crop_seconds * cfg.sample_rate),
                         cfg.seed, epoch, shard_id, augment, cfg.speed_perturb, cfg.sample_rate,
                         unreadable_log(cfg.output_dir))
    workers = max(1, int(cfg.num_workers))
    dataset = ds.GeneratorDataset(source, column_names=["waveform", "label"], shuffle=False,
                                  num_parallel_workers=workers, python_multiprocessing=workers > 1)
    return dataset.batch(batch_size, drop_remainder=True), steps_per_epoch
