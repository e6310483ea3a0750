"""Every docstring example in the package runs (STYLE.md §10): one test per module."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest
import torch

import neurocore

# Modules whose import needs optional packages are still walked; a missing package fails loudly.
MODULES = sorted(
    name
    for _, name, _ in pkgutil.walk_packages(neurocore.__path__, prefix="neurocore.")
    if not name.endswith("__main__")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    torch.manual_seed(0)
    result = doctest.testmod(module, verbose=False, report=True, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} doctest examples in {name} failed (see stdout)"
