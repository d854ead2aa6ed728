"""Files of the Ascend 310 flow: windows, ``.bin`` tensors, manifest, run id, list file.

The flow: preprocess.py (utterances -> fixed-length windows as input ``.bin`` files, ``write_inputs``) -> the device
program ascend310_infer/ or its CPU twin src/deploy/ascend310_cpu_twin.py (input ``.bin`` -> output ``.bin``) ->
postprocess.py (``utterance_embeddings``, then scores and metrics). Every step reads the exported model's contract
(src/deploy/contract.py).

The byte layout is described once, in ascend310_infer/BIN_FORMAT.md; this module and the C++ program
(ascend310_infer/src/infer_io.cc) both follow it. In short:

- export contract ``<model file>.json`` (src/deploy/contract.py, written by export.py): input kind (waveform or
  fbank), shapes, dtype, sample rate, window length, embedding size, batch size;
- input ``.bin``: raw little-endian float32 of the model's input shape ``[B, S]`` or ``[B, T, n_mels]``, one
  window per row; ``manifest.json`` says which rows belong to which utterance; ``run_id.txt`` holds the run id
  of the folder (also in the manifest); the folder is written aside and renamed into place when complete;
- output ``.bin``: same file name, raw little-endian float32 ``[B, E]``; ``output_list.txt`` lists
  ``<input> <output> <ms>`` per file after a ``# run_id <id>`` header line (copied from ``run_id.txt``) and ends
  with ``# total_ms <ms> files <n>``; outputs whose run id differs from the manifest's are refused.

Example::

    contract = read_contract("ecapa_tdnn.mindir.json")                  # src/deploy/contract.py
    starts = window_starts(num_samples=130000, window_samples=48000)    # [0, 41000, 82000]
    rows = cut_windows(wav, starts, 48000)                              # (3, 48000)
"""
import json
import math
import os
import shutil
import uuid

import numpy as np

from src.data.audio import read_audio, repeat_pad
from src.deploy.contract import InferFileError, export_base

LIST_FILE = "output_list.txt"
MANIFEST_FILE = "manifest.json"
RUN_ID_FILE = "run_id.txt"         # in the input folder: the run id of its windows, copied into the list file
BIN_DTYPE = np.dtype("<f4")        # little-endian float32, the only dtype on both sides


# ---- folders ----

def infer_paths(cfg):
    """(model path, infer folder) of the 310 flow with the config defaults filled in (infer_model, infer_dir)."""
    model = cfg.infer_model or export_base(cfg) + ".mindir"
    return model, cfg.infer_dir or os.path.join(cfg.output_dir, "infer")


def infer_folders(infer_dir):
    """(input folder, output folder) of an infer folder: ``<infer_dir>/input``, ``<infer_dir>/output``."""
    return os.path.join(infer_dir, "input"), os.path.join(infer_dir, "output")


# ---- windows ----

def window_starts(num_samples, window_samples, max_windows=0):
    """Start sample of each window of an utterance (BIN_FORMAT.md, "Windows").

    ``num_samples <= window_samples``: ``[0]`` (one repeat-padded window). Longer: ``n = ceil(L / S)`` windows
    (at most ``max_windows`` when > 0) with starts spread evenly over ``[0, L - S]``, rounded down: consecutive
    when L is a multiple of S, overlapping a little otherwise, so every sample is covered.
    """
    if num_samples <= 0:
        raise ValueError(f"num_samples must be positive, got {num_samples}")
    if num_samples <= window_samples:
        return [0]
    count = math.ceil(num_samples / window_samples)
    if max_windows and max_windows > 0:
        count = min(count, int(max_windows))
    if count == 1:
        return [0]
    last = num_samples - window_samples
    return [(i * last) // (count - 1) for i in range(count)]


def cut_windows(wav, starts, window_samples):
    """(L,) float32 and window starts -> (len(starts), window_samples) float32 rows."""
    if wav.shape[0] <= window_samples:
        return repeat_pad(wav, window_samples)[None].astype(np.float32)
    return np.stack([wav[s:s + window_samples] for s in starts]).astype(np.float32)


# ---- .bin tensors ----

def write_bin(path, array):
    """Write ``array`` as raw little-endian float32, C order (no header)."""
    np.ascontiguousarray(array, dtype=BIN_DTYPE).tofile(path)
    return path


def resolve_shape(model_shape, num_bytes, what):
    """Shape of a .bin of ``num_bytes`` for a model input of ``model_shape`` (-1: dynamic, from the file size).

    Mirrors ``ResolveShape`` of ascend310_infer/src/infer_io.cc, including its messages.
    """
    dynamic = [i for i, d in enumerate(model_shape) if d is None or d < 0]
    shape_text = "[" + ", ".join(str(-1 if d is None else d) for d in model_shape) + "]"
    if len(dynamic) > 1:
        raise InferFileError(f"model input shape {shape_text} has more than one dynamic dimension; export it with "
                             f"a fixed batch size")
    fixed = int(np.prod([d for i, d in enumerate(model_shape) if i not in dynamic], dtype=np.int64))
    row = fixed * BIN_DTYPE.itemsize
    if not dynamic:
        if num_bytes != row:
            raise InferFileError(f"{what}: {num_bytes} bytes, expected {row} (float32 {shape_text}, the model's "
                                 f"input shape)")
        return tuple(int(d) for d in model_shape)
    if row == 0 or num_bytes == 0 or num_bytes % row:
        raise InferFileError(f"{what}: {num_bytes} bytes is not a positive multiple of {row} (float32 {shape_text} "
                             f"with the dynamic dimension taken from the file size)")
    shape = [int(d) for d in model_shape]
    shape[dynamic[0]] = num_bytes // row
    return tuple(shape)


def read_bin(path, shape):
    """Read a .bin written by ``write_bin`` (or the C++ program) as ``shape``; the size must match exactly."""
    if not os.path.isfile(path):
        raise InferFileError(f"{path}: .bin file not found")
    shape = resolve_shape(list(shape), os.path.getsize(path), path)
    return np.fromfile(path, dtype=BIN_DTYPE).reshape(shape).astype(np.float32)


# ---- manifest ----

def write_manifest(path, contract, window_samples, max_windows, utterances, files, run_id):
    """``utterances``: list of dicts key, num_samples, starts; ``files``: list of dicts name, rows [[key, i]];
    ``run_id``: the input folder's run id (``new_run_id``)."""
    manifest = {"contract": contract, "run_id": run_id, "window_samples": int(window_samples),
                "max_windows": int(max_windows), "utterances": utterances, "files": files}
    with open(path, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
    return path


def read_manifest(path):
    """Read ``manifest.json`` and check that every utterance's windows appear exactly once in the files."""
    if not os.path.isfile(path):
        raise InferFileError(f"{path}: manifest not found (preprocess.py writes it beside the input .bin files)")
    with open(path, encoding="utf-8") as f:
        try:
            manifest = json.load(f)
        except json.JSONDecodeError as err:
            raise InferFileError(f"{path}: not valid JSON: {err}") from None
    for key in ("contract", "utterances", "files"):
        if key not in manifest:
            raise InferFileError(f"{path}: missing key '{key}'")
    expected = {(u["key"], i) for u in manifest["utterances"] for i in range(len(u["starts"]))}
    seen = [tuple(row) for f in manifest["files"] for row in f["rows"]]
    if len(seen) != len(set(seen)) or set(seen) != expected:
        raise InferFileError(f"{path}: the files' rows do not list every utterance window exactly once")
    return manifest


# ---- run id: ties output/ to the input folder it was computed from ----

def new_run_id():
    """A fresh run id: 32 lowercase hex digits (uuid4)."""
    return uuid.uuid4().hex


def write_run_id(input_dir, run_id):
    """Write ``input_dir/run_id.txt``: the run id and a newline."""
    path = os.path.join(input_dir, RUN_ID_FILE)
    with open(path, "w", encoding="utf-8") as f:
        f.write(run_id + "\n")
    return path


def read_run_id(input_dir):
    """The run id in ``input_dir/run_id.txt`` (one word), or None when the folder has no such file.

    Mirrors ``ReadRunId`` of ascend310_infer/src/infer_io.cc, including its messages.
    """
    path = os.path.join(input_dir, RUN_ID_FILE)
    if not os.path.exists(path):
        return None
    if not os.path.isfile(path):
        raise InferFileError(f"{path}: not a readable file")
    with open(path, encoding="utf-8") as f:
        text = f.read().strip()
    if len(text.split()) != 1:
        raise InferFileError(f"{path}: expected one run id (a single word written by preprocess.py), got '{text}'")
    return text


def check_run_id(input_dir, output_dir, manifest_run_id, list_run_id):
    """Refuse outputs computed from another input folder: the list file's run id must equal the manifest's."""
    if manifest_run_id is None or list_run_id != manifest_run_id:
        raise InferFileError(
            f"{output_dir}: its outputs do not belong to {input_dir} (run id {list_run_id or 'missing'} in "
            f"{LIST_FILE}, {manifest_run_id or 'missing'} in {MANIFEST_FILE}): they come from another preprocess "
            f"run; run the inference step again on {input_dir}")


# ---- output list ----

def write_list(output_dir, entries, total_ms, run_id=None):
    """Write ``output_list.txt``: ``entries`` of (input name, output name, milliseconds), then the total.

    ``run_id`` (from the input folder's ``run_id.txt``, when it has one) goes into a ``# run_id <id>`` header line.
    """
    path = os.path.join(output_dir, LIST_FILE)
    with open(path, "w", encoding="utf-8") as f:
        f.write("# input output milliseconds\n")
        if run_id is not None:
            f.write(f"# run_id {run_id}\n")
        for name_in, name_out, ms in entries:
            f.write(f"{name_in} {name_out} {ms:.3f}\n")
        f.write(f"# total_ms {total_ms:.3f} files {len(entries)}\n")
    return path


def read_list(output_dir):
    """Read ``output_list.txt`` -> (list of (input name, output name, milliseconds), run id or None)."""
    path = os.path.join(output_dir, LIST_FILE)
    if not os.path.isfile(path):
        raise InferFileError(f"{path}: list file not found (the inference step writes it last; did it finish?)")
    entries, run_id = [], None
    with open(path, encoding="utf-8") as f:
        for line_no, text in enumerate((line.strip() for line in f), 1):
            words = text.lstrip("#").split()
            if text.startswith("#") and words[:1] == ["run_id"]:
                if len(words) != 2:
                    raise InferFileError(f"{path}:{line_no}: expected '# run_id <id>', got {text!r}")
                run_id = words[1]
            elif text and not text.startswith("#"):
                try:
                    entries.append((words[0], words[1], float(words[2])))
                except (IndexError, ValueError):
                    raise InferFileError(f"{path}:{line_no}: expected '<input> <output> <ms>', got "
                                         f"{text!r}") from None
    return entries, run_id


def utterance_embeddings(input_dir, output_dir, manifest):
    """Average each utterance's window embeddings -> dict key -> (E,) float32 (listed outputs only).

    ``manifest``: ``read_manifest`` of ``input_dir``; the list file must carry its run id (``check_run_id``).
    """
    contract = manifest["contract"]
    batch, emb_size = int(contract["batch_size"]), int(contract["embedding_size"])
    entries, list_run_id = read_list(output_dir)
    check_run_id(input_dir, output_dir, manifest.get("run_id"), list_run_id)
    outputs = {name_in: name_out for name_in, name_out, _ in entries}
    sums, counts = {}, {}
    for entry in manifest["files"]:
        if entry["name"] not in outputs:
            raise InferFileError(f"{os.path.join(output_dir, LIST_FILE)}: no output listed for input {entry['name']}")
        emb = read_bin(os.path.join(output_dir, outputs[entry["name"]]), (batch, emb_size))
        for row, (key, _) in enumerate(entry["rows"]):
            sums[key] = sums.get(key, 0.0) + emb[row].astype(np.float64)
            counts[key] = counts.get(key, 0) + 1
    return {key: (sums[key] / counts[key]).astype(np.float32) for key in sums}


# ---- preprocess: utterances -> input .bin files + manifest ----

def replace_folder(new_dir, target_dir):
    """Put the complete folder ``new_dir`` in the place of ``target_dir`` (renames), then delete the old one.

    Renames within one parent folder: ``target_dir`` is missing only between the two renames, and restored when
    the second fails.
    """
    old_dir = target_dir + ".old"
    shutil.rmtree(old_dir, ignore_errors=True)          # left by an earlier run killed between the renames
    if os.path.lexists(target_dir):
        os.rename(target_dir, old_dir)
    try:
        os.rename(new_dir, target_dir)
    except OSError:
        if os.path.lexists(old_dir):
            os.rename(old_dir, target_dir)
        raise
    shutil.rmtree(old_dir, ignore_errors=True)


def write_windows(keys, audio_root, contract, folder, max_windows, featurize, progress):
    """Cut every utterance into windows and write them to ``folder`` as ``batch_NNNNNN.bin`` files of the contract's
    batch size -> (manifest utterances, manifest files), as ``write_manifest`` takes them."""
    from tqdm import tqdm

    batch = int(contract["batch_size"])
    window = int(contract["window_samples"])
    utterances, files, pending, pending_rows = [], [], [], []

    def flush():
        rows = np.concatenate(pending)
        rows = np.concatenate([rows, np.repeat(rows[-1:], batch - rows.shape[0], axis=0)])
        if featurize is not None:
            rows = featurize(rows)
        name = f"batch_{len(files):06d}.bin"
        write_bin(os.path.join(folder, name), rows)
        files.append({"name": name, "rows": list(pending_rows)})
        pending.clear()
        pending_rows.clear()

    for key in tqdm(keys, desc="preprocess", unit="utt", disable=not progress):
        wav = read_audio(os.path.join(audio_root, key), sample_rate=int(contract["sample_rate"]))
        starts = window_starts(wav.shape[0], window, max_windows)
        utterances.append({"key": key, "num_samples": int(wav.shape[0]), "starts": starts})
        for i, row in enumerate(cut_windows(wav, starts, window)):
            pending.append(row[None])
            pending_rows.append([key, i])
            if len(pending) == batch:
                flush()
    if pending:
        flush()
    return utterances, files


def write_inputs(keys, audio_root, contract, input_dir, max_windows=0, featurize=None, progress=True):
    """Write the input folder of the 310 flow: window .bin files, ``manifest.json`` and ``run_id.txt``.

    ``keys``: utterance paths relative to ``audio_root``; ``featurize``: for fbank-input models a function
    (N, S) waveform rows -> (N, T, n_mels) (src/deploy/verified_export.py ``window_featurizer``). The last file is
    filled up with copies of its last row. Everything is written to ``<input_dir>.partial`` first and replaces ``input_dir`` only
    when complete; on any failure the partial folder is deleted and ``input_dir`` is left as it was.
    Returns the manifest path (``input_dir/manifest.json``).
    """
    if (contract["input"]["kind"] == "fbank") != (featurize is not None):
        raise ValueError("featurize must be given exactly when the contract's input kind is fbank")
    input_dir = os.path.normpath(input_dir)
    partial_dir = input_dir + ".partial"
    shutil.rmtree(partial_dir, ignore_errors=True)      # left by an earlier run that was killed
    os.makedirs(partial_dir)
    try:
        utterances, files = write_windows(keys, audio_root, contract, partial_dir, max_windows, featurize, progress)
        run_id = new_run_id()
        write_manifest(os.path.join(partial_dir, MANIFEST_FILE), contract, contract["window_samples"], max_windows,
                       utterances, files, run_id)
        write_run_id(partial_dir, run_id)
        replace_folder(partial_dir, input_dir)
    except BaseException:                               # Ctrl-C too: never leave a partial folder behind
        shutil.rmtree(partial_dir, ignore_errors=True)
        raise
    return os.path.join(input_dir, MANIFEST_FILE)
