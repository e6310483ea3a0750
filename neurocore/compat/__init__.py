"""Drop-in replacements for the functions of other interpretability code, running on neurocore's kernels.

* :mod:`neurocore.compat.clip_dissect`: CLIP-Dissect's released ``similarity.py`` (same names,
  arguments, defaults and results): ``from neurocore.compat import clip_dissect as similarity``.
* :mod:`neurocore.compat.www`: WWW's concept matching (per-neuron sums of example-image similarities,
  template subtraction, adaptive threshold with α in percent) as one K×M product.
* :mod:`neurocore.compat.shap`: a permutation explainer for linear, logistic and softmax heads that
  returns ``shap.Explanation`` objects (needs the optional ``shap`` package: ``pip install
  neurocore[shap]``).

The submodules are imported on first use, so ``import neurocore.compat`` never needs ``shap``.
"""

from __future__ import annotations

import importlib

__all__ = ["clip_dissect", "www", "shap"]


def __getattr__(name):
    if name in __all__:
        return importlib.import_module(f"neurocore.compat.{name}")
    raise AttributeError(f"module 'neurocore.compat' has no attribute {name!r}")
