"""Explanation methods, registered by name, and their common result type."""

from neurocore.methods._base import (
    METHOD_INPUTS,
    Explanations,
    NeuronExplanation,
    UnknownSettingError,
    get_method,
    list_methods,
    load,
    probe_identity,
    register_method,
    top_image_refs,
)
from neurocore.methods import clip_dissect
from neurocore.methods.clip_dissect import ClipDissect, dissect
from neurocore.methods import linear
from neurocore.methods.linear import LinearExplanations, explain_linear
from neurocore.methods import www as _www_module
from neurocore.methods.www import WWW
from neurocore.methods import hint  # the module (registers "hint"); the function is neurocore.hint
from neurocore.methods.hint import ConceptHierarchy, Hint

__all__ = [
    "METHOD_INPUTS",
    "Explanations",
    "NeuronExplanation",
    "UnknownSettingError",
    "probe_identity",
    "top_image_refs",
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
    "hint",
    "Hint",
    "ConceptHierarchy",
]
