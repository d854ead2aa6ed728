"""Test session setup: every test runs MindSpore on the CPU in GRAPH mode, from the repository root."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
from src.mindspore_log import route_mindspore_log  # noqa: E402

route_mindspore_log()   # as every entry point starts: before any test module imports MindSpore, its log goes to a file


@pytest.fixture
def pynative():
    """Run the test in PYNATIVE mode (no graph compile), then return to GRAPH mode."""
    from tests.modes import op_by_op
    with op_by_op():
        yield


@pytest.fixture(scope="session", autouse=True)
def cpu_graph_mode():
    from src.device import setup_device
    setup_device("CPU")


# ---------------------------------------------------------------- shared by the training tests (tests/tiny_training.py)
@pytest.fixture(scope="session")
def train_compile_cache(tmp_path_factory):
    """The ``--compile_cache_dir`` of the runs of tests/tiny_training.py (src/train/compile_cache.py): the first run
    of a train-step graph in the session compiles it, the others load it."""
    return tmp_path_factory.mktemp("tiny_train_compile_cache")
