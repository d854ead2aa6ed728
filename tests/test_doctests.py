"""The docstring examples of the model blocks, front ends and metrics run, and show what they say (doctest).

PYNATIVE mode: each example runs its ops directly instead of compiling a graph per example, so the whole file takes
seconds.
"""
import doctest
import importlib

import pytest

MODULES = ("src.model.layers", "src.model.ecapa_tdnn", "src.model.fbank", "src.model.kaldi_fbank",
           "src.evaluate.metrics")


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, pynative):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 2, f"{name}: no docstring examples found"
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} docstring examples failed (see above)"
