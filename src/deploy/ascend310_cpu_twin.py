"""The CPU twin of the Ascend 310 program: the 310 flow's inference step on any MindSpore device, in Python.

The flow is preprocess.py -> ascend310_infer/ (the device program) or this module -> postprocess.py
(src/deploy/ascend310_files.py describes the files between the steps).

Same file contract as the C++ program (ascend310_infer/BIN_FORMAT.md): every ``*.bin`` of ``input_dir`` (sorted by
name) is one model input tensor; each gives ``output_dir/<same name>`` (float32 ``[B, E]``) and a line of
``output_list.txt``, whose ``# run_id <id>`` header line copies ``input_dir/run_id.txt`` when there is one. The
model's input shape comes from its export contract (``<model>.json``), because a loaded ``nn.GraphCell`` does not
report it; a dynamic axis is taken from the file size as in the C++ program. An ONNX export (``--model x.onnx``,
e.g. ``export.py --export_format ONNX``, or its ``.int8.onnx``) runs in onnxruntime instead of MindSpore, on the
same files.

Command line (the C++ program's flags)::

    python -m src.deploy.ascend310_cpu_twin --model ecapa.mindir --input_dir infer/input --output_dir infer/output
    python -m src.deploy.ascend310_cpu_twin --model ecapa.onnx --input_dir infer/input --output_dir infer/output
"""
from src.mindspore_log import route_mindspore_log

if __name__ == "__main__":
    route_mindspore_log()       # first: MindSpore's C++ logger reads its settings when the imports below load it

import logging
import os
import time

import numpy as np
import mindspore as ms
from mindspore import nn

from src.cli import run_command, setup_logging
from src.config import ArgumentParser
from src.deploy.ascend310_files import read_bin, read_run_id, resolve_shape, write_bin, write_list
from src.deploy.contract import InferFileError, contract_path, read_contract

logger = logging.getLogger(__name__)


def list_inputs(input_dir):
    """Sorted names of the .bin files in ``input_dir``; errors as the C++ program's."""
    if not os.path.isdir(input_dir):
        raise InferFileError(f"--input_dir {input_dir}: not a folder")
    names = sorted(n for n in os.listdir(input_dir)
                   if n.endswith(".bin") and os.path.isfile(os.path.join(input_dir, n)))
    if not names:
        raise InferFileError(f"--input_dir {input_dir}: no .bin files in it")
    return names


def load_model(model_path):
    """The exported file as a function numpy input -> numpy output: MindSpore's ``nn.GraphCell`` for MINDIR,
    onnxruntime for ONNX (``.onnx``)."""
    if model_path.endswith(".onnx"):
        import onnxruntime as ort
        session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x})[0]
    cell = nn.GraphCell(ms.load(model_path))
    return lambda x: cell(ms.Tensor(x)).asnumpy()


def run_folder(model_path, input_dir, output_dir):
    """Run the exported MINDIR or ONNX file on every input .bin -> total milliseconds of the model calls."""
    names = list_inputs(input_dir)
    run_id = read_run_id(input_dir)
    if not os.path.isfile(model_path):
        raise InferFileError(f"{model_path}: not a readable file")
    contract = read_contract(contract_path(model_path))
    model_shape = contract["input"]["shape"]
    os.makedirs(output_dir, exist_ok=True)
    model = load_model(model_path)
    entries, total_ms = [], 0.0
    for name in names:
        path = os.path.join(input_dir, name)
        shape = resolve_shape(model_shape, os.path.getsize(path), path)
        x = read_bin(path, shape)
        start = time.perf_counter()
        y = model(x)
        ms_taken = 1000.0 * (time.perf_counter() - start)
        write_bin(os.path.join(output_dir, name), y.astype(np.float32))
        entries.append((name, name, ms_taken))
        total_ms += ms_taken
        logger.info("%s %s -> %s %.1f ms", name, list(shape), list(y.shape), ms_taken)
    write_list(output_dir, entries, total_ms, run_id)
    logger.info("total: %d files, %.1f ms, %.1f ms per file", len(names), total_ms, total_ms / len(names))
    return total_ms


def main(argv=None):
    parser = ArgumentParser(description="Run an exported MINDIR or ONNX file on a folder of .bin inputs "
                                                 "(the CPU twin of ascend310_infer).")
    parser.add_argument("--model", required=True, help="exported MINDIR or ONNX file (its contract JSON beside it)")
    parser.add_argument("--input_dir", required=True, help="folder of input .bin files (preprocess.py)")
    parser.add_argument("--output_dir", required=True, help="folder for output .bin files and output_list.txt")
    parser.add_argument("--device_target", default="CPU", help="CPU, GPU or Ascend")
    parser.add_argument("--device_id", type=int, default=0)
    args = parser.parse_args(argv)
    setup_logging()
    from src.device import setup_device
    setup_device(args.device_target, args.device_id)
    run_folder(args.model, args.input_dir, args.output_dir)
    return 0


if __name__ == "__main__":
    run_command(main)
