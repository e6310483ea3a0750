"""The offline demo: a synthetic concept world with known ground truth, a small CNN trained on it
deterministically, and its dissection (``neurocore demo`` on the command line).

The CNN is trained when the demo runs (about 20 s on two CPU cores; the whole demo about 30 s), not
shipped as a weights file: the training is part of what the demo shows, a changed world or torch
version can never meet stale weights, and the same seed gives bit-identical weights on the same
machine and torch build (their SHA-256 is printed and saved in ``demo.json``; the trained state dict
is saved as ``demo_cnn.pt``). The world doubles as a test bed: :class:`PlantedConceptNet` has units
whose meaning is fixed by construction.
"""

from neurocore.demo._model import ConceptWorldCNN, PlantedConceptNet, TrainingResult, train_cnn
from neurocore.probe._cache import weights_digest
from neurocore.demo._run import (
    DEFAULT_OUT, DEMO_LAYERS, DemoResult, HintDemo, derive_seed, label_precision, run_demo, run_hint_demo,
)
from neurocore.demo._world import BACKGROUNDS, COLOURS, SHAPES, TEXTURES, ConceptWorld, WorldImages

__all__ = [
    "run_demo",
    "DemoResult",
    "run_hint_demo",
    "HintDemo",
    "DEMO_LAYERS",
    "DEFAULT_OUT",
    "derive_seed",
    "label_precision",
    "ConceptWorld",
    "WorldImages",
    "SHAPES",
    "COLOURS",
    "TEXTURES",
    "BACKGROUNDS",
    "ConceptWorldCNN",
    "PlantedConceptNet",
    "TrainingResult",
    "train_cnn",
    "weights_digest",
]
