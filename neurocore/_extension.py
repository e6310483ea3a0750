"""Loading the compiled kernels (neurocore._C) with errors that say how to fix a broken build."""

from __future__ import annotations

import importlib

import torch  # must be loaded before _C: the extension links against torch's libraries

REBUILD_HINT = (
    "rebuild it from the neurocore source folder with the torch you use: "
    "`pip install --no-build-isolation -e .` (or `python setup.py build_ext --inplace`)"
)

_module = None


class ExtensionError(ImportError):
    """neurocore._C is missing, broken, or was built against another torch."""


def load():
    """Import ``neurocore._C`` once; raise :class:`ExtensionError` naming the fix when it fails."""
    global _module
    if _module is not None:
        return _module
    try:
        module = importlib.import_module("neurocore._C")
    except ImportError as exc:
        text = str(exc)
        if "undefined symbol" in text or "version" in text.lower():
            reason = f"neurocore._C does not match the installed torch {torch.__version__} ({text})"
        else:
            reason = f"neurocore._C is not built ({text})"
        raise ExtensionError(f"{reason}; {REBUILD_HINT}") from exc
    built_for = getattr(module, "torch_version", "unknown")
    if built_for != torch.__version__:
        raise ExtensionError(
            f"neurocore._C was built against torch {built_for} but torch {torch.__version__} is "
            f"installed; {REBUILD_HINT}"
        )
    _module = module
    return module


def built_with_cuda() -> bool:
    """Whether the CUDA kernels were compiled into ``neurocore._C``.

    Example:
        >>> import neurocore
        >>> isinstance(neurocore.built_with_cuda(), bool)
        True
    """
    return bool(load().built_with_cuda())
