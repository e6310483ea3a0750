"""Everything that runs a model: the one hooked forward pass (outputs taken as they left the module, in
canonical layout), recording (summaries, streaming top-k, the ActivationStore, its cache), spatial maps
and crops, the neuron-replacement runner and its heads, and layer gradients."""

from neurocore.probe._cache import weights_digest
from neurocore.probe._data import ImageFolder, ProbeBatch, describe_transform, iter_batches, probe_fingerprint
from neurocore.probe._gradients import LayerGradients, layer_gradients
from neurocore.probe._layers import SUMMARIES, resolve_layers, summarise
from neurocore.probe._forward import hooked_forward
from neurocore.probe._layout import LAYOUTS, from_canonical, to_canonical
from neurocore.probe._maps import Crops, cell_maps, crop_boxes, crops, spatial_maps, token_grid
from neurocore.probe._record import record
from neurocore.probe._replace import Head, ReplacementRunner, head_after, replace_units
from neurocore.probe._recorder import ActivationRecorder
from neurocore.probe._store import DEAD_THRESHOLD, ActivationStore, LayerActivations, dead_neurons

__all__ = [
    "record",
    "spatial_maps",
    "crops",
    "Crops",
    "crop_boxes",
    "cell_maps",
    "token_grid",
    "hooked_forward",
    "LAYOUTS",
    "to_canonical",
    "from_canonical",
    "Head",
    "head_after",
    "replace_units",
    "ReplacementRunner",
    "layer_gradients",
    "LayerGradients",
    "ActivationRecorder",
    "ActivationStore",
    "LayerActivations",
    "DEAD_THRESHOLD",
    "dead_neurons",
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
