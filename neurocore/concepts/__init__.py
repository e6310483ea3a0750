"""Concept sets (built-in and user lists), the WordNet hierarchy, and image–concept scores."""

from neurocore.concepts._scores import ConceptScores
from neurocore.concepts._calibrate import (
    CALIBRATION_PRESETS,
    Calibration,
    calibrate,
    calibrated_matrix,
    calibration_preset,
)
from neurocore.concepts._label_matrix import label_concept_matrix
from neurocore.concepts._sets import builtin_concept_sets, imagenet_class_names, imagenet_wnids, load_concepts
from neurocore.concepts._wordnet import WordNetHierarchy, display_class_names, wordnet_hierarchy, wordnet_name

__all__ = [
    "label_concept_matrix",
    "calibrate",
    "calibrated_matrix",
    "calibration_preset",
    "Calibration",
    "CALIBRATION_PRESETS",
    "ConceptScores",
    "load_concepts",
    "builtin_concept_sets",
    "imagenet_wnids",
    "imagenet_class_names",
    "WordNetHierarchy",
    "wordnet_hierarchy",
    "wordnet_name",
    "display_class_names",
]
