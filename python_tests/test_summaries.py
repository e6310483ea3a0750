"""The analysis report's summaries on planted explanations and planted activations."""

import math

import pytest
import torch

from neurocore import NeurocoreError
from neurocore.concepts import ConceptScores
from neurocore.evaluate import highest_similarity, probe_size_effect, top_concept_counts
from neurocore.methods import ClipDissect, Explanations, NeuronExplanation
from neurocore.probe import ActivationStore


def _exp(rows, method="clip_dissect"):
    return Explanations(method, tuple(NeuronExplanation(l, u, d, s, dead=dead) for l, u, d, s, dead in rows))


def test_highest_similarity_per_layer_and_model():
    a = _exp([("layer3", 0, "x", 0.1, False), ("layer3", 1, "y", 0.9, True),  # dead: ignored
              ("fc", 0, "dog", 0.2, False), ("fc", 1, "cat", 0.25, False), ("fc", 2, "", 0.99, False)])  # unlabelled
    b = _exp([("fc", 0, "dog", 0.4, False), ("layer4", 0, "z", float("nan"), False)])
    t = highest_similarity({"a": a, "b": b})
    assert list(t.index) == ["layer3", "fc", "layer4"] and list(t.columns) == ["a", "b"]
    assert t.loc["layer3", "a"] == 0.1 and t.loc["fc", "a"] == 0.25 and t.loc["fc", "b"] == 0.4
    assert math.isnan(t.loc["layer3", "b"]) and math.isnan(t.loc["layer4", "b"]) and math.isnan(t.loc["layer4", "a"])
    assert list(highest_similarity(a).columns) == ["clip_dissect"]
    with pytest.raises(NeurocoreError, match="explanations must be"):
        highest_similarity([a])


def test_top_concept_counts_planted():
    # 60 neurons: the best 50 by similarity are 30 "dog", 15 "insect", 5 "bedroom"; the rest "spider"
    rows = [("fc", u, "dog", 1.0 - u / 100, False) for u in range(30)]
    rows += [("fc", 30 + u, "insect", 0.6 - u / 100, False) for u in range(15)]
    rows += [("fc", 45 + u, "bedroom", 0.4 - u / 1000, False) for u in range(5)]
    rows += [("fc", 50 + u, "spider", 0.1, False) for u in range(10)]
    rows += [("fc", 60, "wildlife", 5.0, True)]  # dead
    t = top_concept_counts(_exp(rows), "fc")
    assert t["count"].to_dict() == {"dog": 30, "insect": 15, "bedroom": 5}
    assert t.loc["insect", "units"] == tuple(range(30, 45))
    tie = top_concept_counts(_exp([("fc", 0, "b", 0.5, False), ("fc", 1, "a", 0.5, False)]), "fc", top=2)
    assert list(tie.index) == ["a", "b"]  # equal counts: by name
    with pytest.raises(NeurocoreError, match="top must be"):
        top_concept_counts(_exp(rows), "fc", top=0)
    with pytest.raises(NeurocoreError, match="not in these explanations"):
        top_concept_counts(_exp(rows), "layer4")


@pytest.mark.filterwarnings("ignore:.*same score on every probe image")
def test_probe_size_effect_planted():
    # neuron k copies concept k's scores (plus noise): with all images every label is its own concept;
    # with few images noise flips some labels, so agreement grows with n and is 1 at N
    g = torch.Generator().manual_seed(0)
    concept = (torch.rand(400, 6, generator=g) < 0.2).float()
    acts = concept + 0.8 * torch.rand(400, 6, generator=g)
    store = ActivationStore.from_tensor(acts, "fc", top_k=50)
    scores = ConceptScores.from_tensor(concept, [f"c{i}" for i in range(6)])
    t = probe_size_effect(ClipDissect(similarity="cos"), store, scores, sizes=(10, 400, 1000), repeats=3, seed=1)
    assert list(t.index) == [("fc", 10), ("fc", 400)]
    assert t.loc[("fc", 400), "agreement"] == 1.0 and t.loc[("fc", 400), "neurons"] == 6
    assert t.loc[("fc", 10), "agreement"] < 1.0
    again = probe_size_effect(ClipDissect(similarity="cos"), store, scores, sizes=(10,), repeats=3, seed=1)
    assert again.equals(t.loc[[("fc", 10), ("fc", 400)]])
    with pytest.raises(NeurocoreError, match="one row per stored image"):
        probe_size_effect(ClipDissect(), store, ConceptScores.from_tensor(concept[:5], scores.concepts))
