"""Recording activations: hooks by module name, summaries, streaming top-k, the ActivationStore."""

from neurocore.probe._cache import weights_digest
from neurocore.probe._data import ImageFolder, ProbeBatch, describe_transform, iter_batches, probe_fingerprint
from neurocore.probe._layers import SUMMARIES, resolve_layers, summarise
from neurocore.probe._record import record, spatial_maps
from neurocore.probe._recorder import ActivationRecorder
from neurocore.probe._store import DEAD_THRESHOLD, ActivationStore, LayerActivations

__all__ = [
    "record",
    "spatial_maps",
    "ActivationRecorder",
    "ActivationStore",
    "LayerActivations",
    "DEAD_THRESHOLD",
    "SUMMARIES",
    "resolve_layers",
    "summarise",
    "weights_digest",
    "ImageFolder",
    "ProbeBatch",
    "iter_batches",
    "probe_fingerprint",
    "describe_transform",
]
