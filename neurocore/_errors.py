"""The one exception type of neurocore's pipeline (ops raise torch's RuntimeError)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class NeurocoreError(ValueError):
    """Bad input to a neurocore function; the message says what was expected and how to fix it."""


def close_matches(name: str, candidates: Iterable[str], n: int = 5) -> list[str]:
    """The names among ``candidates`` closest to ``name`` (for "did you mean" messages)."""
    return difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.5)
