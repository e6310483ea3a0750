"""The same contract checks over every registered explanation method (STYLE.md §9, as
scikit-learn's ``parametrize_with_checks``), none skipped, on the concept world of ``neurocore demo``.

The input is the demo's world with planted truth: :class:`~neurocore.demo.PlantedConceptNet` (no
training; unit j of ``colours`` is the share of pixels of colour j, unit j of ``backgrounds`` the share
of background j's grey) recorded over a few hundred world images, with the world's exact image–concept
scores and the images' ids. Every method gets what the contract gives (``_base.py``): the store, the
scores, and the model, the probe and its transform for methods that declare them in ``needs``.
Checked: the contract's surface (explicit settings with defaults, ``needs``), one explanation per
unit, labels among the concepts, top images traceable to image ids and dataset indices, the probe
identity in ``params``, save/load round trip, same seed same output, permuting neurons permutes
results, inputs not mutated, a misspelt setting named with its close match, and the planted truth.
"""

from __future__ import annotations

import importlib
import inspect
import math
import pkgutil
from dataclasses import fields

import pytest

from neurocore import NeurocoreError
import torch

import neurocore.methods
from neurocore.concepts import ConceptScores
from neurocore.demo import ConceptWorld, PlantedConceptNet
from neurocore.methods import METHOD_INPUTS, Explanations, NeuronExplanation, get_method, list_methods
from neurocore.probe import ActivationStore, record

# register every method module of the package, including those the package does not import
for _info in pkgutil.iter_modules(neurocore.methods.__path__, prefix="neurocore.methods."):
    importlib.import_module(_info.name)

METHODS = list_methods()
LAYERS = ("colours", "backgrounds")

# Settings that suit exact 0/1 concept scores (the demo's reason, neurocore.demo.run_demo: SoftWPMI's
# marginal saturates on 0/1 scores and ties several concepts; WPMI ranks them). Defaults otherwise.
DEMO_SETTINGS = {
    "clip_dissect": {"similarity": "wpmi"},
    # HINT: the planted net's outputs are spatial means (not the probe's classes), so its saliency is the
    # sum of all logits, times the input (a plain or guided gradient of a mean is flat: no region).
    "hint": {"saliency": "gradient_x_input", "target": "logit_sum", "max_cells": 500},
}


@pytest.fixture(scope="session")
def demo():
    world = ConceptWorld()
    probe = world.sample(8, seed=2)  # 192 images: a few seconds for every method
    model = PlantedConceptNet(world).eval()
    store = record(model, list(LAYERS), probe, top_k=100, batch_size=256, progress=False)
    ids = [probe.image_id(i) for i in range(len(probe))]
    scores = ConceptScores.from_tensor(probe.concept_matrix(), world.concepts, source="concept-world", image_ids=ids)
    return {"world": world, "probe": probe, "model": model, "store": store, "scores": scores}


def explain(name, demo, store=None, **settings):
    cls = get_method(name)
    method = cls(**{**DEMO_SETTINGS.get(name, {}), **settings})
    # every method accepts the contract's keyword inputs; those not in `needs` are ignored
    return method.explain(
        demo["store"] if store is None else store, demo["scores"], model=demo["model"], probe=demo["probe"],
        transform=None, progress=False,
    )


@pytest.fixture(scope="session")
def results(demo):
    return {name: explain(name, demo) for name in METHODS}


def test_registry_has_the_methods():
    assert {"clip_dissect", "linear"} <= set(METHODS)


@pytest.mark.parametrize("name", METHODS)
def test_contract_surface(name):
    cls = get_method(name)
    assert cls.name == name and set(cls.needs) <= METHOD_INPUTS and {"store", "scores"} <= set(cls.needs)
    init = inspect.signature(cls.__init__).parameters
    assert all(p.default is not p.empty for n, p in init.items() if n != "self"), "settings need defaults"
    assert not any(p.kind == p.VAR_KEYWORD for p in init.values()), "settings are explicit keywords"
    params = inspect.signature(cls.explain).parameters
    assert {"model", "probe", "transform", "progress", "layers"} <= set(params)
    cls().check_settings()  # the contract's validation: the defaults pass it
    first = next(n for n, p in init.items() if n != "self" and isinstance(p.default, int) and not isinstance(p.default, bool))
    with pytest.raises(NeurocoreError):  # and a setting of the wrong type fails it, before any work
        cls(**{first: object()}).check_settings()


@pytest.mark.parametrize("name", METHODS)
def test_misspelt_setting_is_named(name):
    cls = get_method(name)
    settings = [n for n in inspect.signature(cls.__init__).parameters if n != "self" and len(n) > 3]
    if not settings:
        return  # a method without settings has nothing to misspell
    typo = settings[0][:-1] + "x" + settings[0][-1]
    with pytest.raises(TypeError, match=f"{typo!r}.*did you mean.*{settings[0]!r}"):
        cls(**{typo: 1})


@pytest.mark.parametrize("name", METHODS)
def test_one_explanation_per_unit(name, demo, results):
    ex = results[name]
    assert isinstance(ex, Explanations) and ex.method == name
    expected = [(layer, k) for layer in LAYERS for k in range(demo["store"][layer].num_neurons)]
    assert [(n.layer, n.unit) for n in ex] == expected
    concepts = set(demo["scores"].concepts)
    for n in ex:
        assert isinstance(n.description, str) and isinstance(n.similarity, float)
        assert len(n.concepts) == len(n.scores) and set(n.concepts) <= concepts
        assert n.label == "" or n.label in concepts


@pytest.mark.parametrize("name", METHODS)
def test_top_images_traceable_to_files(name, demo, results):
    store = demo["store"]
    for n in results[name]:
        assert n.top_images, "every neuron lists its top images"
        assert n.top_image_ids == tuple(store.image_ids[r] for r in n.top_images)
        assert n.top_dataset_indices == tuple(int(store.dataset_indices[r]) for r in n.top_images)
        # the ids name the images the probe holds at those indices
        assert all(demo["probe"].image_id(i) == s for i, s in zip(n.top_dataset_indices, n.top_image_ids))
    probe = results[name].params["probe"]
    assert probe["num_images"] == store.num_images and probe["skipped"] == []
    assert probe["image_ids_sha256"] is not None


@pytest.mark.parametrize("name", METHODS)
def test_planted_truth(name, demo, results):
    world, ex = demo["world"], results[name]
    truth = {("colours", j): c for j, c in enumerate(world.colours)}
    truth.update({("backgrounds", j): b for j, b in enumerate(world.backgrounds)})
    for n in ex:
        planted = truth[(n.layer, n.unit)]
        if n.is_linear:
            # a linear explanation may lead with "<colour> <shape>" (a shape with more pixels of the
            # colour); the planted concept must still be in it with a positive weight
            assert n.label == planted or dict(zip(n.concepts, n.scores)).get(planted, 0) > 0, (n.unit, n.description)
        else:
            assert n.label == planted, (n.layer, n.unit, n.label)


def same(a, b) -> bool:
    return (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)) or a == b


def assert_same_neurons(xs, ys):
    assert len(xs) == len(ys)
    for a, b in zip(xs, ys):
        for f in fields(NeuronExplanation):
            va, vb = getattr(a, f.name), getattr(b, f.name)
            if f.name == "scores":
                assert all(same(x, y) for x, y in zip(va, vb)) and len(va) == len(vb)
            elif f.name == "metrics":
                assert set(va) == set(vb) and all(same(va[k], vb[k]) for k in va)
            else:
                assert same(va, vb), f.name


@pytest.mark.parametrize("name", METHODS)
def test_save_load_round_trip(name, results, tmp_path):
    ex = results[name]
    loaded = neurocore.methods.load(ex.save(tmp_path / "out"))
    assert loaded.method == ex.method
    assert_same_neurons(ex.neurons, loaded.neurons)
    assert loaded.params["probe"] == ex.params["probe"]
    table = ex.to_pandas()
    assert list(table.columns[:4]) == ["layer", "unit", "description", "similarity"]
    assert_same_neurons(ex.neurons, Explanations.from_pandas(table, name).neurons)


@pytest.mark.parametrize("name", METHODS)
def test_same_seed_same_output(name, demo, results):
    has_seed = "seed" in inspect.signature(get_method(name).__init__).parameters
    settings = {"seed": 5} if has_seed else {}
    a, b = explain(name, demo, **settings), explain(name, demo, **settings)
    assert_same_neurons(a.neurons, b.neurons)
    if not has_seed:
        assert_same_neurons(a.neurons, results[name].neurons)


@pytest.mark.parametrize("name", METHODS)
def test_permuting_neurons_permutes_results(name, demo):
    if get_method(name).needs - {"store", "scores"}:
        pytest.skip(f"{name} runs the model: its units cannot be permuted in a store alone")
    store = demo["store"]
    acts = store["colours"].summaries
    perm = torch.tensor([2, 0, 3, 1])
    kw = dict(image_ids=store.image_ids, dataset_indices=store.dataset_indices, top_k=100)
    ex = explain(name, demo, ActivationStore.from_tensor(acts, "colours", **kw))
    permuted = explain(name, demo, ActivationStore.from_tensor(acts[:, perm], "colours", **kw))
    for j, n in enumerate(permuted):
        original = ex[int(perm[j])]
        assert n.unit == j and n.label == original.label and n.concepts == original.concepts
        assert n.similarity == pytest.approx(original.similarity, rel=1e-5, abs=1e-6, nan_ok=True)
        assert n.scores == pytest.approx(original.scores, rel=1e-5, abs=1e-6)
        assert n.top_image_ids == original.top_image_ids


@pytest.mark.parametrize("name", METHODS)
def test_inputs_not_mutated(name, demo):
    store, scores = demo["store"], demo["scores"]
    before = [store[layer].summaries.clone() for layer in LAYERS], scores.scores.clone()
    state = {k: v.clone() for k, v in demo["model"].state_dict().items()}
    explain(name, demo)
    assert all(torch.equal(b, store[layer].summaries) for b, layer in zip(before[0], LAYERS))
    assert torch.equal(before[1], scores.scores)
    assert all(torch.equal(v, demo["model"].state_dict()[k]) for k, v in state.items())


@pytest.mark.parametrize("name", METHODS)
def test_store_and_scores_of_other_images_are_refused(name, demo):
    scores = demo["scores"]
    ids = list(scores.image_ids)
    ids[3], ids[4] = ids[4], ids[3]
    other = ConceptScores.from_tensor(scores.scores, scores.concepts, image_ids=ids)
    cls = get_method(name)
    with pytest.raises(neurocore.NeurocoreError, match="row 3 is"):
        cls(**DEMO_SETTINGS.get(name, {})).explain(demo["store"], other, model=demo["model"], probe=demo["probe"], progress=False)
