"""The 310 flow's files (src/deploy/ascend310_files.py): .bin layout, windows, manifest, run id, list file, preprocess
output (also when preprocess.py fails half-way)."""
import json
import os

import numpy as np
import pytest

import preprocess
from src.cli import run_command
from src.data.audio import AudioError, repeat_pad, write_wav
from src.deploy.ascend310_files import (LIST_FILE, MANIFEST_FILE, RUN_ID_FILE, cut_windows, infer_folders, read_bin,
                                        read_list, read_manifest, read_run_id, resolve_shape, utterance_embeddings,
                                        window_starts, write_bin, write_inputs, write_list)
from src.deploy.contract import InferFileError, contract_path, write_contract


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
    assert sorted(os.listdir(tmp_path / "in")) == ["batch_000000.bin", "batch_000001.bin", MANIFEST_FILE, RUN_ID_FILE]
    assert read_run_id(str(tmp_path / "in")) == manifest["run_id"] and len(manifest["run_id"]) == 32
    assert not os.path.exists(tmp_path / "in.partial")                  # written aside, then renamed into place
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

    # Written again into the same folder: replaced as a whole, with a new run id.
    again = read_manifest(write_inputs(sorted(lengths)[:1], str(tmp_path), c, str(tmp_path / "in"), progress=False))
    assert sorted(os.listdir(tmp_path / "in")) == ["batch_000000.bin", MANIFEST_FILE, RUN_ID_FILE]
    assert again["run_id"] == read_run_id(str(tmp_path / "in")) != manifest["run_id"]
    assert sorted(os.listdir(tmp_path)) == ["in", "in1", "spk1", "spk2"]


def test_run_id_file(tmp_path):
    """Mirrors ReadRunId of ascend310_infer/src/infer_io.cc (checked by its native test with the same messages)."""
    assert read_run_id(str(tmp_path)) is None                            # no run_id.txt: no header line
    (tmp_path / RUN_ID_FILE).write_text("  5d41402abc4b2a76b9719d911017c592\n")
    assert read_run_id(str(tmp_path)) == "5d41402abc4b2a76b9719d911017c592"
    (tmp_path / RUN_ID_FILE).write_text("two words\n")
    with pytest.raises(InferFileError, match=r"run_id\.txt: expected one run id \(a single word written by "
                                             r"preprocess\.py\), got 'two words'"):
        read_run_id(str(tmp_path))
    (tmp_path / RUN_ID_FILE).write_text("\n")
    with pytest.raises(InferFileError, match=r"run_id\.txt: expected one run id"):
        read_run_id(str(tmp_path))
    os.remove(tmp_path / RUN_ID_FILE)
    (tmp_path / RUN_ID_FILE).mkdir()
    with pytest.raises(InferFileError, match=r"run_id\.txt: not a readable file"):
        read_run_id(str(tmp_path))


def test_list_file_and_window_averaging(tmp_path):
    c = contract(batch=2, emb=3)
    files = [{"name": "batch_000000.bin", "rows": [["a", 0], ["a", 1]]}, {"name": "batch_000001.bin", "rows": [["b", 0]]}]
    manifest = {"contract": c, "utterances": [{"key": "a", "starts": [0, 5]}, {"key": "b", "starts": [0]}],
                "files": files, "max_windows": 0, "run_id": "abc123"}
    inputs, out = str(tmp_path / "in"), tmp_path / "out"
    out.mkdir()
    write_bin(str(out / "batch_000000.bin"), [[1, 2, 3], [3, 4, 5]])
    write_bin(str(out / "batch_000001.bin"), [[7, 8, 9], [0, 0, 0]])
    entries = [("batch_000000.bin", "batch_000000.bin", 1.5), ("batch_000001.bin", "batch_000001.bin", 2)]
    write_list(str(out), entries, 3.5)                                  # an input folder without run_id.txt
    text = open(out / LIST_FILE).read()
    assert text.splitlines()[1] == "batch_000000.bin batch_000000.bin 1.500"
    assert text.splitlines()[-1] == "# total_ms 3.500 files 2"
    assert read_list(str(out))[0][1] == ("batch_000001.bin", "batch_000001.bin", 2.0)
    assert read_list(str(out))[1] is None
    with pytest.raises(InferFileError, match=f"{out}: its outputs do not belong to {inputs} "
                                             rf"\(run id missing in {LIST_FILE}, abc123 in {MANIFEST_FILE}\).*"
                                             f"run the inference step again on {inputs}"):
        utterance_embeddings(inputs, str(out), manifest)

    write_list(str(out), entries, 3.5, run_id="abc123")
    assert open(out / LIST_FILE).read().splitlines()[:3] == [
        "# input output milliseconds", "# run_id abc123", "batch_000000.bin batch_000000.bin 1.500"]
    assert read_list(str(out)) == ([(n_in, n_out, float(ms)) for n_in, n_out, ms in entries], "abc123")
    emb = utterance_embeddings(inputs, str(out), manifest)
    np.testing.assert_allclose(emb["a"], [2, 3, 4])
    np.testing.assert_allclose(emb["b"], [7, 8, 9])
    with pytest.raises(InferFileError, match=rf"\(run id abc123 in {LIST_FILE}, def456 in {MANIFEST_FILE}\)"):
        utterance_embeddings(inputs, str(out), dict(manifest, run_id="def456"))
    with pytest.raises(InferFileError, match=rf"\(run id abc123 in {LIST_FILE}, missing in {MANIFEST_FILE}\)"):
        utterance_embeddings(inputs, str(out), {k: v for k, v in manifest.items() if k != "run_id"})

    write_list(str(out), entries, 3.5)
    with open(out / LIST_FILE, "a") as f:
        f.write("broken-line\n")
    with pytest.raises(InferFileError, match=LIST_FILE + ":5: expected"):
        read_list(str(out))
    write_list(str(out), entries, 3.5)
    with open(out / LIST_FILE, "a") as f:
        f.write("# run_id a b\n")
    with pytest.raises(InferFileError, match=LIST_FILE + ":5: expected '# run_id <id>'"):
        read_list(str(out))


def test_manifest_must_list_every_window_once(tmp_path):
    path = tmp_path / MANIFEST_FILE
    path.write_text(json.dumps({"contract": {}, "utterances": [{"key": "a", "starts": [0, 5]}],
                                "files": [{"name": "x.bin", "rows": [["a", 0]]}]}))
    with pytest.raises(InferFileError, match="every utterance window exactly once"):
        read_manifest(str(path))


def folder_bytes(folder):
    """{path relative to folder: file bytes} of every file below ``folder``."""
    return {os.path.relpath(os.path.join(d, n), folder): open(os.path.join(d, n), "rb").read()
            for d, _, names in os.walk(folder) for n in names}


def test_failed_preprocess_leaves_the_previous_input_folder(tmp_path, capsys):
    """An unreadable WAV listed after good ones (some window files already written) ends preprocess.py with one
    error line; the previous input/ (manifest, run id, .bin files) and output/ stay byte-identical, and no partial
    folder is left behind."""
    rng = np.random.default_rng(1)
    for name in ("a.wav", "b.wav", "c.wav"):
        write_wav(str(tmp_path / "audio" / name), (0.5 * rng.uniform(-1, 1, 4000)).astype(np.float32))
    (tmp_path / "audio" / "bad.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEnot really audio")
    model = str(tmp_path / "m.mindir")                                    # preprocess.py reads only its contract
    write_contract(contract_path(model), contract(batch=2, window=1600))
    infer_dir = tmp_path / "infer"
    input_dir, output_dir = infer_folders(str(infer_dir))
    (tmp_path / "good.txt").write_text("a.wav\nb.wav\n")
    (tmp_path / "with_bad.txt").write_text("c.wav\na.wav\nb.wav\nbad.wav\n")
    args = ["--infer_model", model, "--test_dir", str(tmp_path / "audio"), "--infer_dir", str(infer_dir)]
    assert preprocess.main(args + ["--infer_utt_list", str(tmp_path / "good.txt")]) == 0
    os.makedirs(output_dir)
    write_list(output_dir, [], 0.0, read_run_id(input_dir))              # stands in for the previous outputs
    before = {"input": folder_bytes(input_dir), "output": folder_bytes(output_dir)}
    assert len([n for n in before["input"] if n.endswith(".bin")]) == 3  # 2 x 3 windows, batch 2

    with pytest.raises(AudioError, match="bad.wav"):
        preprocess.main(args + ["--infer_utt_list", str(tmp_path / "with_bad.txt")])
    with pytest.raises(SystemExit) as exit_info:                          # as a command: one error line, status 1
        run_command(preprocess.main, args + ["--infer_utt_list", str(tmp_path / "with_bad.txt")])
    assert exit_info.value.code == 1
    stderr = capsys.readouterr().err.splitlines()                       # progress and log lines, then the error
    assert [line for line in stderr if line.startswith("error: ")] == stderr[-1:] and "bad.wav" in stderr[-1]
    assert {"input": folder_bytes(input_dir), "output": folder_bytes(output_dir)} == before
    assert sorted(os.listdir(infer_dir)) == ["input", "output"]
