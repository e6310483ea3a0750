"""The one exception type of neurocore's pipeline (ops raise torch's RuntimeError)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class NeurocoreError(ValueError):
    """Bad input to a neurocore function; the message says what was expected and how to fix it.

    A ``ValueError``, so code that catches bad values catches it too.

    Example:
        >>> from neurocore import get_method
        >>> try:
        ...     get_method("clip_disect")
        ... except ValueError as exc:
        ...     print(type(exc).__name__, "|", exc)
        NeurocoreError | unknown method 'clip_disect'; registered methods: ... (did you mean 'clip_dissect'?)
    """


def close_matches(name: str, candidates: Iterable[str], n: int = 5) -> list[str]:
    """The names among ``candidates`` closest to ``name`` (for "did you mean" messages).

    Example:
        >>> close_matches("layer5", ["layer1", "layer4", "fc"])
        ['layer4', 'layer1']
    """
    return difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.5)


def positive_int(value, name: str) -> int:
    """``value`` when it is an integer >= 1 (not a bool); else a NeurocoreError naming ``name``.

    Example:
        >>> positive_int(3, "batch_size")
        3
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise NeurocoreError(f"{name} must be an integer >= 1; got {value!r}")
    return value
