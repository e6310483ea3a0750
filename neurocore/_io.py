"""Small file helpers shared by every result type that saves itself: JSON-safe values and atomic writes."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path


def jsonable(value):
    """Tuples to lists, NaN to None (strict JSON readers reject NaN), tensors and numpy values to
    Python numbers; infinities stay floats (``json`` writes them as ``Infinity``).

    Example:
        >>> import torch
        >>> jsonable({"a": (1, float("nan")), "b": torch.tensor([0.5])})
        {'a': [1, None], 'b': [0.5]}
    """
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return jsonable(value.tolist())
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` on a temporary file next to ``path``, then rename it onto ``path``: a
    reader (or an interrupted run) never sees a half-written file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
