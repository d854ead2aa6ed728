"""The 310 flow's files (src/deploy/infer_files.py): .bin layout, windows, manifest, list file, preprocess output."""
import json
import os

import numpy as np
import pytest

from src.data.audio import repeat_pad, write_wav
from src.deploy.infer_files import (InferFileError, LIST_FILE, MANIFEST_FILE, cut_windows, read_bin, read_list,
                                    read_manifest, resolve_shape, utterance_embeddings, window_starts, write_bin,
                                    write_inputs, write_list)


def contract(kind="waveform", batch=2, window=1600, emb=4):
    return {"input": {"kind": kind, "shape": [batch, window]}, "output": {"shape": [batch, emb]},
            "batch_size": batch, "sample_rate": 16000, "window_samples": window, "frames_per_window": 1 + window // 160,
            "n_mels": 80, "embedding_size": emb, "model_file": "m.mindir"}


def test_bin_layout_is_raw_little_endian_float32(tmp_path):
    x = np.arange(12, dtype=np.float32).reshape(3, 4) - 2.5
    path = write_bin(str(tmp_path / "a.bin"), x)
    raw = open(path, "rb").read()
    assert len(raw) == 48 and raw[:4] == np.float32(-2.5).tobytes() == b"\x00\x00\x20\xc0"
    np.testing.assert_array_equal(read_bin(path, (3, 4)), x)
    np.testing.assert_array_equal(read_bin(path, (-1, 4)), x)            # dynamic axis from the size
    with pytest.raises(InferFileError, match=r"a\.bin: 48 bytes, expected 32 \(float32 \[2, 4\]"):
        read_bin(path, (2, 4))
    with pytest.raises(InferFileError, match="not a positive multiple of 20"):
        read_bin(path, (-1, 5))
    with pytest.raises(InferFileError, match="more than one dynamic"):
        resolve_shape([-1, -1], 48, "x")
    with pytest.raises(InferFileError, match="not found"):
        read_bin(str(tmp_path / "missing.bin"), (1,))


def test_window_starts_cover_the_utterance():
    assert window_starts(1000, 1600) == [0]
    assert window_starts(1600, 1600) == [0]
    assert window_starts(4800, 1600) == [0, 1600, 3200]                  # consecutive, non-overlapping
    starts = window_starts(4000, 1600)                                   # 3 windows, last one ends at 4000
    assert starts == [0, 1200, 2400] and starts[-1] + 1600 == 4000
    assert all(b - a <= 1600 for a, b in zip(starts, starts[1:]))        # no gap: every sample covered
    assert window_starts(16000, 1600, max_windows=1) == [0]              # the older zoo: first window only
    assert window_starts(16000, 1600, max_windows=3) == [0, 7200, 14400]
    with pytest.raises(ValueError):
        window_starts(0, 1600)


def test_cut_windows_repeat_pads_short_and_slices_long():
    short = np.arange(1, 6, dtype=np.float32)
    np.testing.assert_array_equal(repeat_pad(short, 12), [1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 1, 2])
    np.testing.assert_array_equal(cut_windows(short, [0], 7), [[1, 2, 3, 4, 5, 1, 2]])
    wav = np.arange(10, dtype=np.float32)
    np.testing.assert_array_equal(cut_windows(wav, window_starts(10, 4), 4), [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]])


def test_write_inputs_batches_windows_and_manifest(tmp_path):
    rng = np.random.default_rng(0)
    lengths = {"spk1/v/a.wav": 900, "spk1/v/b.wav": 3200, "spk2/w/c.wav": 5000}
    waves = {}
    for key, n in lengths.items():
        waves[key] = (0.5 * rng.uniform(-1, 1, n)).astype(np.float32)
        os.makedirs(tmp_path / os.path.dirname(key), exist_ok=True)
        write_wav(str(tmp_path / key), waves[key])
    c = contract(batch=4, window=1600)
    manifest_path = write_inputs(sorted(lengths), str(tmp_path), c, str(tmp_path / "in"), progress=False)
    manifest = read_manifest(manifest_path)
    counts = {u["key"]: len(u["starts"]) for u in manifest["utterances"]}
    assert counts == {"spk1/v/a.wav": 1, "spk1/v/b.wav": 2, "spk2/w/c.wav": 4}      # 7 windows -> 2 files of 4
    assert [f["name"] for f in manifest["files"]] == ["batch_000000.bin", "batch_000001.bin"]
    assert sorted(os.listdir(tmp_path / "in")) == ["batch_000000.bin", "batch_000001.bin", MANIFEST_FILE]
    rows = np.concatenate([read_bin(str(tmp_path / "in" / f["name"]), (4, 1600)) for f in manifest["files"]])
    tol = 1 / 32768                                                       # 16-bit WAV quantisation
    np.testing.assert_allclose(rows[0], np.tile(waves["spk1/v/a.wav"], 2)[:1600], atol=tol)   # repeat-padded
    np.testing.assert_allclose(rows[1], waves["spk1/v/b.wav"][:1600], atol=tol)               # consecutive
    np.testing.assert_allclose(rows[2], waves["spk1/v/b.wav"][1600:], atol=tol)
    c_starts = window_starts(5000, 1600)
    for i, s in enumerate(c_starts):
        np.testing.assert_allclose(rows[3 + i], waves["spk2/w/c.wav"][s:s + 1600], atol=tol)
    assert len(manifest["files"][1]["rows"]) == 3                         # the 4th row of file 2 is padding
    np.testing.assert_array_equal(rows[7], rows[6])

    # Capped: max_windows=1 keeps the first 1600 samples only.
    capped = read_manifest(write_inputs(sorted(lengths), str(tmp_path), c, str(tmp_path / "in1"), max_windows=1,
                                        progress=False))
    assert [len(u["starts"]) for u in capped["utterances"]] == [1, 1, 1]


def test_list_file_and_window_averaging(tmp_path):
    c = contract(batch=2, emb=3)
    files = [{"name": "batch_000000.bin", "rows": [["a", 0], ["a", 1]]}, {"name": "batch_000001.bin", "rows": [["b", 0]]}]
    manifest = {"contract": c, "utterances": [{"key": "a", "starts": [0, 5]}, {"key": "b", "starts": [0]}],
                "files": files, "max_windows": 0}
    out = tmp_path / "out"
    out.mkdir()
    write_bin(str(out / "batch_000000.bin"), [[1, 2, 3], [3, 4, 5]])
    write_bin(str(out / "batch_000001.bin"), [[7, 8, 9], [0, 0, 0]])
    write_list(str(out), [("batch_000000.bin", "batch_000000.bin", 1.5), ("batch_000001.bin", "batch_000001.bin", 2)],
               3.5)
    text = open(out / LIST_FILE).read()
    assert text.splitlines()[1] == "batch_000000.bin batch_000000.bin 1.500"
    assert text.splitlines()[-1] == "# total_ms 3.500 files 2"
    assert read_list(str(out))[1] == ("batch_000001.bin", "batch_000001.bin", 2.0)
    emb = utterance_embeddings(str(out), manifest)
    np.testing.assert_allclose(emb["a"], [2, 3, 4])
    np.testing.assert_allclose(emb["b"], [7, 8, 9])

    with open(out / LIST_FILE, "a") as f:
        f.write("broken-line\n")
    with pytest.raises(InferFileError, match=LIST_FILE + ":5: expected"):
        read_list(str(out))


def test_manifest_must_list_every_window_once(tmp_path):
    path = tmp_path / MANIFEST_FILE
    path.write_text(json.dumps({"contract": {}, "utterances": [{"key": "a", "starts": [0, 5]}],
                                "files": [{"name": "x.bin", "rows": [["a", 0]]}]}))
    with pytest.raises(InferFileError, match="every utterance window exactly once"):
        read_manifest(str(path))
