"""The same contract checks over every registered explanation method (STYLE.md §9, as
scikit-learn's ``parametrize_with_checks``): a method built with its defaults explains a synthetic
ActivationStore with a synthetic ConceptScores, one entry per neuron; permuting neurons permutes
the results; results survive save/load; the table has the authors' CSV columns.

Methods that cannot run on a store and a score matrix alone (a required argument of ``__init__``
or ``explain`` beyond those two, e.g. a model) are skipped with the reason.
"""

from __future__ import annotations

import importlib
import inspect
import math
import pkgutil

import pytest
import torch

import neurocore.methods
from neurocore.concepts import ConceptScores
from neurocore.methods import Explanations, get_method, list_methods
from neurocore.probe import ActivationStore

# register every method module of the package, including those the package does not import
for _info in pkgutil.iter_modules(neurocore.methods.__path__, prefix="neurocore.methods."):
    importlib.import_module(_info.name)

METHODS = list_methods()
N, K, M = 400, 8, 12
CONCEPTS = [f"concept {i}" for i in range(M)]


def synthetic(seed=0):
    """Binary concept labels and neurons that each follow a weighted pair of concepts (plus noise):
    an input every kind of method (label-, VLM- or regression-based) can explain."""
    g = torch.Generator().manual_seed(seed)
    labels = (torch.rand(N, M, generator=g) < 0.3).float()
    weights = torch.zeros(M, K)
    for k in range(K):
        weights[k % M, k] = 1.0
        weights[(3 * k + 1) % M, k] = 0.5
    acts = labels @ weights + 0.05 * torch.randn(N, K, generator=g)
    return acts, labels


def required_extra(func, skip_first: int) -> list[str]:
    params = list(inspect.signature(func).parameters.values())[skip_first:]
    return [
        p.name
        for p in params
        if p.default is inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]


def explain_or_skip(name, store, scores):
    cls = get_method(name)
    extra = required_extra(cls.__init__, 1)
    if extra:
        pytest.skip(f"method {name!r} needs settings {extra} that a synthetic setting cannot give")
    extra = required_extra(cls.explain, 3)  # self, store, concept_scores
    if extra:
        pytest.skip(f"method {name!r}.explain needs {extra} beyond an ActivationStore and ConceptScores")
    return cls().explain(store, scores)


def test_registry_has_clip_dissect():
    assert "clip_dissect" in METHODS


@pytest.mark.parametrize("name", METHODS)
def test_one_explanation_per_neuron(name):
    acts, labels = synthetic()
    ex = explain_or_skip(name, ActivationStore.from_tensor(acts, layer="block"), ConceptScores.from_tensor(labels, CONCEPTS))
    assert isinstance(ex, Explanations) and ex.method == name
    assert len(ex) == K and [(n.layer, n.unit) for n in ex] == [("block", k) for k in range(K)]
    for n in ex:
        assert isinstance(n.description, str) and isinstance(n.similarity, float)
        assert len(n.concepts) == len(n.scores)
        assert set(n.concepts) <= set(CONCEPTS)  # no compositional search by default


@pytest.mark.parametrize("name", METHODS)
def test_permuting_neurons_permutes_results(name):
    acts, labels = synthetic()
    scores = ConceptScores.from_tensor(labels, CONCEPTS)
    perm = torch.tensor([5, 2, 7, 0, 1, 6, 4, 3])
    ex = explain_or_skip(name, ActivationStore.from_tensor(acts), scores)
    permuted = explain_or_skip(name, ActivationStore.from_tensor(acts[:, perm]), scores)
    for j, n in enumerate(permuted):
        original = ex[int(perm[j])]
        assert n.unit == j
        assert n.description == original.description
        assert n.concepts == original.concepts
        assert n.similarity == pytest.approx(original.similarity, rel=1e-5, abs=1e-6, nan_ok=True)
        assert n.scores == pytest.approx(original.scores, rel=1e-5, abs=1e-6)


def same_number(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


@pytest.mark.parametrize("name", METHODS)
def test_save_load_round_trip(name, tmp_path):
    acts, labels = synthetic()
    acts[:, 3] = 0.0  # a constant, dead neuron: NaN similarity where the method gives none
    ex = explain_or_skip(name, ActivationStore.from_tensor(acts), ConceptScores.from_tensor(labels, CONCEPTS))
    loaded = Explanations.load(ex.save(tmp_path / "out"))
    assert loaded.method == ex.method and len(loaded) == len(ex)
    for a, b in zip(ex, loaded):
        for field in ("layer", "unit", "description", "concepts", "bias", "is_linear", "interpretable", "dead", "top_images"):
            assert getattr(a, field) == getattr(b, field), field
        assert same_number(a.similarity, b.similarity)
        assert all(same_number(x, y) for x, y in zip(a.scores, b.scores))
        assert set(a.metrics) == set(b.metrics) and all(same_number(a.metrics[k], b.metrics[k]) for k in a.metrics)
    assert (tmp_path / "out" / "explanations.csv").is_file()


@pytest.mark.parametrize("name", METHODS)
def test_to_pandas_has_the_csv_columns(name):
    acts, labels = synthetic()
    ex = explain_or_skip(name, ActivationStore.from_tensor(acts, layer="block"), ConceptScores.from_tensor(labels, CONCEPTS))
    table = ex.to_pandas()
    assert list(table.columns[:4]) == ["layer", "unit", "description", "similarity"]
    assert len(table) == K and table["layer"].eq("block").all() and table["unit"].tolist() == list(range(K))
    assert table["description"].tolist() == ex.descriptions


@pytest.mark.parametrize("name", METHODS)
def test_inputs_not_mutated(name):
    acts, labels = synthetic()
    store, scores = ActivationStore.from_tensor(acts), ConceptScores.from_tensor(labels, CONCEPTS)
    before = store["layer"].summaries.clone(), store["layer"].top_indices.clone(), scores.scores.clone()
    explain_or_skip(name, store, scores)
    assert torch.equal(before[0], store["layer"].summaries) and torch.equal(before[1], store["layer"].top_indices)
    assert torch.equal(before[2], scores.scores)
