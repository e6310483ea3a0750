"""Evaluating explanations: final-layer metrics, simulation scores, top impact."""

from neurocore.evaluate._inputs import TEMPERATURE
from neurocore.evaluate._top_impact import DEFAULT_BETAS, TopImpact, top_impact, top_impact_from_impacts
from neurocore.probe._replace import Head, head_after, replace_units
from neurocore.report._figures import activation_area_chart
from neurocore.evaluate._simulation import (
    CONCEPT_SOURCE_KEY,
    SimulationScores,
    ablation_score,
    correlation_score,
    explainer_source,
    explanation_concepts,
    norm_scaling,
    simulate,
    simulator_matrix,
)
from neurocore.evaluate._simulation_table import TABLE_COLUMNS, simulation_table
from neurocore.evaluate._localization import (
    Localization,
    box_iou,
    centred_boxes,
    concept_localizers,
    concept_maps,
    localization_accuracy,
    localize,
    mask_boxes,
    most_specific_concepts,
    top_neurons,
    whole_image_boxes,
)
from neurocore.evaluate._final_layer import (
    SentenceTransformerText,
    TextCosine,
    final_layer_accuracy,
    normalise_name,
    text_cosine,
)

from neurocore.evaluate._where import (
    HintConceptMaps,
    choose_threshold,
    hint_concept_maps,
    map_boxes,
    map_points,
    pointing_game,
    where_benchmark,
)
from neurocore.evaluate._summaries import highest_similarity, probe_size_effect, top_concept_counts
from neurocore.evaluate._misprediction import MispredictionAUROC, misprediction_auroc
from neurocore.evaluate._www_metrics import WWWMetrics, www_metrics

__all__: list[str] = [
    # WWW: misprediction detection and the WWW metrics
    "misprediction_auroc",
    "MispredictionAUROC",
    "www_metrics",
    "WWWMetrics",
    # simulation (Linear Explanations §4)
    "simulator_matrix",
    "explanation_concepts",
    "simulate",
    "correlation_score",
    "ablation_score",
    "norm_scaling",
    "SimulationScores",
    "CONCEPT_SOURCE_KEY",
    "explainer_source",
    "simulation_table",
    "TABLE_COLUMNS",
    # replacing neurons, Top Impact (§2), area chart
    "Head",
    "head_after",
    "replace_units",
    "top_impact",
    "top_impact_from_impacts",
    "TopImpact",
    "DEFAULT_BETAS",
    "TEMPERATURE",
    "activation_area_chart",
    # final-layer evaluation (CLIP-Dissect §4.2)
    "final_layer_accuracy",
    "text_cosine",
    "TextCosine",
    "SentenceTransformerText",
    "normalise_name",
    # weakly supervised localisation (HINT §3.6; any "where" map)
    "localization_accuracy",
    "localize",
    "Localization",
    "mask_boxes",
    "box_iou",
    "whole_image_boxes",
    "centred_boxes",
    "top_neurons",
    "concept_localizers",
    "concept_maps",
    "most_specific_concepts",
    # the "where" benchmark over any maps (ALGORITHMS.md §5)
    "where_benchmark",
    "choose_threshold",
    "map_boxes",
    "map_points",
    "pointing_game",
    "hint_concept_maps",
    "HintConceptMaps",
    # the analysis report's summaries
    "highest_similarity",
    "top_concept_counts",
    "probe_size_effect",
]
