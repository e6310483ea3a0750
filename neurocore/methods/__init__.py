"""Explanation methods, registered by name, and their common result type."""

from neurocore.methods._base import (
    Explanations,
    NeuronExplanation,
    get_method,
    list_methods,
    load,
    register_method,
)
from neurocore.methods import clip_dissect
from neurocore.methods.clip_dissect import ClipDissect, dissect
from neurocore.methods import linear
from neurocore.methods.linear import LinearExplanations, explain_linear

__all__ = [
    "Explanations",
    "NeuronExplanation",
    "get_method",
    "list_methods",
    "load",
    "register_method",
    "clip_dissect",
    "ClipDissect",
    "dissect",
    "linear",
    "LinearExplanations",
    "explain_linear",
]
