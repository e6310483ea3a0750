"""neurocore: explain what individual neurons of vision networks do.

The pipeline (ARCHITECTURE.md): :func:`record` a model's activations over probe images into an
:class:`ActivationStore`; score probe images against concepts (:class:`ConceptScores`, from a
vision–language model or from labels); explain every neuron with a method (:func:`dissect` for
CLIP-Dissect, :func:`explain_linear` for Linear Explanations, :func:`run_methods` for several methods
over one recording) into :class:`Explanations`; evaluate
them (:mod:`neurocore.evaluate`). The compiled kernels are reached through :mod:`neurocore.ops`;
:mod:`neurocore.reference` holds their pure-torch twins.
"""

from neurocore import ops, reference
from neurocore._errors import NeurocoreError
from neurocore._split import Split, split_indices
from neurocore._extension import ExtensionError, built_with_cuda
from neurocore.concepts import ConceptScores, load_concepts
from neurocore.methods import Explanations, NeuronExplanation, dissect, get_method, list_methods, load
from neurocore.methods.linear import explain_linear
from neurocore.methods.www import www
from neurocore.methods.hint import hint
from neurocore.probe import ActivationStore, ImageFolder, record, spatial_maps
from neurocore._pipeline import MethodsRun, run_methods

__version__ = "0.1.0"

__all__ = [
    "record",
    "spatial_maps",
    "ActivationStore",
    "ImageFolder",
    "ConceptScores",
    "load_concepts",
    "dissect",
    "run_methods",
    "MethodsRun",
    "explain_linear",
    "www",
    "hint",
    "Explanations",
    "NeuronExplanation",
    "load",
    "Split",
    "split_indices",
    "get_method",
    "list_methods",
    "NeurocoreError",
    "ops",
    "reference",
    "built_with_cuda",
    "ExtensionError",
    "__version__",
]
