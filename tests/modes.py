"""MindSpore execution modes for tests: the suite runs in GRAPH mode (conftest.py); a reference computed op by op
(PYNATIVE) compiles no graph, which is cheaper for a single call or for inputs of many different lengths."""
import contextlib

import mindspore as ms


@contextlib.contextmanager
def op_by_op():
    """Run the block in PYNATIVE mode, then return to GRAPH mode (also when the block raises)."""
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        yield
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)
