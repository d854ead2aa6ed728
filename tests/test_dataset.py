"""src/data/dataset.py: sharded epoch order, crops, speed classes, worker processes, resume, bad files."""
import os

import numpy as np
import pytest

from src.config import load_config
from src.data.audio import read_audio
from src.data.augment import SPEED_FACTORS
from src.data.dataset import (TrainSource, count_skipped, create_train_dataset, epoch_order, num_train_classes,
                              train_list_from_config)
from src.data.synthetic import make_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(str(tmp_path_factory.mktemp("ds")), 5, 0, 5, (1.0, 2.5), seed=2, progress=False)


def _cfg(corpus, tmp_path, **overrides):
    args = {"train_dir": corpus["train_dir"], "train_list_dir": str(tmp_path / "lists"),
            "musan_dir": corpus["musan_dir"], "rir_dir": corpus["rir_dir"], "output_dir": str(tmp_path / "run"),
            "batch_size": 4, "num_workers": 1, "crop_seconds": 1.5, "seed": 11}
    args.update(overrides)
    return load_config([item for k, v in args.items() for item in (f"--{k}", str(v))])


def _batches(dataset):
    return [(w.asnumpy(), lab.asnumpy()) for w, lab in dataset.create_tuple_iterator(num_epochs=1)]


def test_epoch_order_shards_are_disjoint_equal_and_change_per_epoch():
    shards = [epoch_order(103, seed=5, epoch=2, num_shards=4, shard_id=r, batch_size=8) for r in range(4)]
    assert all(len(s) == 24 for s in shards)                       # 103 // 4 = 25 -> 3 full batches
    assert len(np.unique(np.concatenate(shards))) == 96
    np.testing.assert_array_equal(shards[1], epoch_order(103, 5, 2, 4, 1, 8))
    assert not np.array_equal(shards[1], epoch_order(103, 5, 3, 4, 1, 8))
    with pytest.raises(ValueError, match="too few"):
        epoch_order(10, 0, 0, num_shards=4, shard_id=0, batch_size=4)
    with pytest.raises(ValueError, match="shard_id"):
        epoch_order(10, 0, 0, num_shards=2, shard_id=2)


def test_clean_crops_come_from_the_files(corpus, tmp_path):
    cfg = _cfg(corpus, tmp_path)
    tl = train_list_from_config(cfg)
    crop = 24000
    source = TrainSource(tl, np.arange(len(tl)), crop, seed=1, epoch=0)
    for i in range(len(tl)):
        wav, label = source[i]
        assert wav.shape == (crop,) and wav.dtype == np.float32 and label.dtype == np.int32
        assert int(label) == tl.labels[i]
        full = read_audio(os.path.join(tl.root, tl.paths[i]))
        if len(full) >= crop:                                       # a window of the file
            starts = [s for s in range(len(full) - crop + 1) if full[s] == wav[0] and full[s + 1] == wav[1]]
            assert any(np.array_equal(full[s:s + crop], wav) for s in starts)
        else:                                                       # short: repeated to length
            np.testing.assert_array_equal(wav[:len(full)], full)
            np.testing.assert_array_equal(wav[len(full):2 * len(full)], full[:crop - len(full)])
    again = TrainSource(tl, np.arange(len(tl)), crop, seed=1, epoch=0)
    np.testing.assert_array_equal(again[3][0], source[3][0])
    assert not np.array_equal(TrainSource(tl, np.arange(len(tl)), crop, seed=1, epoch=1)[3][0], source[3][0])


def test_speed_perturbation_adds_speaker_classes(corpus, tmp_path):
    cfg = _cfg(corpus, tmp_path, speed_perturb=True)
    tl = train_list_from_config(cfg)
    assert num_train_classes(tl, cfg.speed_perturb) == 3 * tl.num_speakers
    source = TrainSource(tl, np.arange(len(tl)), 16000, seed=3, epoch=0, speed_perturb=True)
    copies = set()
    for i in range(len(tl)):
        wav, label = source[i]
        assert wav.shape == (16000,)
        k, speaker = divmod(int(label), tl.num_speakers)
        assert speaker == tl.labels[i] and 0 <= k < len(SPEED_FACTORS)
        copies.add(k)
    assert copies == {0, 1, 2}


def test_dataset_batches_same_with_worker_processes_and_resume(corpus, tmp_path):
    cfg1 = _cfg(corpus, tmp_path, num_workers=1)
    tl = train_list_from_config(cfg1)
    dataset, steps = create_train_dataset(cfg1, tl, epoch=1)
    serial = _batches(dataset)
    assert steps == len(tl) // 4 == len(serial)
    for wav, label in serial:
        assert wav.shape == (4, 24000) and wav.dtype == np.float32
        assert label.shape == (4,) and label.dtype == np.int32
    cfg2 = _cfg(corpus, tmp_path, num_workers=2)
    parallel = _batches(create_train_dataset(cfg2, tl, epoch=1)[0])   # python_multiprocessing workers
    resumed_ds, resumed_steps = create_train_dataset(cfg2, tl, epoch=1, start_step=4)
    resumed = _batches(resumed_ds)
    assert resumed_steps == steps and len(resumed) == steps - 4
    for (w1, l1), (w2, l2) in zip(serial, parallel):
        np.testing.assert_array_equal(w1, w2)
        np.testing.assert_array_equal(l1, l2)
    for (w1, l1), (w2, l2) in zip(serial[4:], resumed):
        np.testing.assert_array_equal(w1, w2)
        np.testing.assert_array_equal(l1, l2)
    with pytest.raises(ValueError, match="start_step"):
        create_train_dataset(cfg1, tl, epoch=1, start_step=steps)


def test_two_ranks_read_disjoint_utterances(corpus, tmp_path):
    cfg = _cfg(corpus, tmp_path, aug_prob=0.0)
    tl = train_list_from_config(cfg)
    seen = []
    for rank in range(2):
        dataset, steps = create_train_dataset(cfg, tl, epoch=0, num_shards=2, shard_id=rank)
        batches = _batches(dataset)
        assert steps == len(batches) == (len(tl) // 2) // 4
        seen.append({w[:200].tobytes() for wav, _ in batches for w in wav})
    assert not seen[0] & seen[1]


def test_unreadable_file_is_replaced_logged_and_counted(corpus, tmp_path, caplog):
    cfg = _cfg(corpus, tmp_path, num_workers=2, aug_prob=0.0)
    tl = train_list_from_config(cfg)
    bad = tl.paths[7]
    os.replace(os.path.join(tl.root, bad), str(tmp_path / "saved.wav"))
    try:
        with open(os.path.join(tl.root, bad), "wb") as f:
            f.write(b"RIFF....WAVEnot really a wav file")
        batches = _batches(create_train_dataset(cfg, tl, epoch=0)[0])
    finally:
        os.replace(str(tmp_path / "saved.wav"), os.path.join(tl.root, bad))
    assert len(batches) == len(tl) // 4 and all(w.shape == (4, 24000) for w, _ in batches)
    assert count_skipped(cfg.output_dir, epoch=0) == 1 and count_skipped(cfg.output_dir, epoch=1) == 0
    with open(os.path.join(cfg.output_dir, "unreadable_audio.txt")) as f:
        assert bad in f.read()


class _PidSource(TrainSource):
    """TrainSource that also reports which process made each sample."""

    def __getitem__(self, i):
        wav, label = super().__getitem__(i)
        return wav, label, np.array(os.getpid(), dtype=np.int64)


def test_random_access_source_runs_in_worker_processes(corpus, tmp_path):
    import mindspore.dataset as ds
    tl = train_list_from_config(_cfg(corpus, tmp_path))
    source = _PidSource(tl, epoch_order(len(tl), 1, 0, batch_size=4), 8000, seed=1, epoch=0)
    dataset = ds.GeneratorDataset(source, ["waveform", "label", "pid"], shuffle=False, num_parallel_workers=2,
                                  python_multiprocessing=True)
    pids = {int(row[2]) for row in dataset.create_tuple_iterator(output_numpy=True, num_epochs=1)}
    assert pids and os.getpid() not in pids
