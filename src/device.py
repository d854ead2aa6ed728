"""Select the device and execution mode once, at the start of every entry point; say when a graph compiles."""
import contextlib
import logging
import os
import time

import mindspore as ms

logger = logging.getLogger(__name__)


def setup_device(device_target="CPU", device_id=0, graph_mode=True):
    """Run on ``device_target`` ("Ascend", "GPU" or "CPU") in GRAPH mode (PYNATIVE if ``graph_mode`` is False).

    The device is the DEVICE_ID environment variable when set (the launch scripts set one per rank), else
    ``device_id`` (the recipe's). Returns the normalised target name.
    """
    target = str(device_target).upper() if str(device_target).lower() != "ascend" else "Ascend"
    if target not in ("Ascend", "GPU", "CPU"):
        raise ValueError(f"device_target: expected Ascend, GPU or CPU, got '{device_target}'")
    device_id = int(os.environ.get("DEVICE_ID", device_id if device_id is not None else 0))
    ms.set_context(mode=ms.GRAPH_MODE if graph_mode else ms.PYNATIVE_MODE)
    ms.set_device(target, device_id)
    return target


class CompileLogged:
    """Calls ``cell``; the first call with a new set of input shapes (GRAPH mode compiles a graph for it) is logged
    before it starts and with its duration after, so a long silent compile is explained. ``first_compile`` (a
    context manager factory) wraps the first of these calls only (src/train/compile_cache.py ``compiling``)."""

    def __init__(self, cell, what, first_compile=contextlib.nullcontext):
        self.cell, self.what, self.shapes, self.first_compile = cell, what, set(), first_compile

    def __call__(self, *inputs):
        shapes = tuple(tuple(x.shape) for x in inputs)
        if shapes in self.shapes:
            return self.cell(*inputs)
        logger.info("compiling the %s graph for input shapes %s", self.what, list(shapes))
        start = time.time()
        with self.first_compile() if not self.shapes else contextlib.nullcontext():
            outputs = self.cell(*inputs)
        self.shapes.add(shapes)
        logger.info("%s graph compiled and run once in %.1f s", self.what, time.time() - start)
        return outputs

    def __getattr__(self, name):          # the wrapped cell's attributes (e.g. a train step's optimizer)
        return getattr(self.cell, name)
