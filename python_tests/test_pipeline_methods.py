"""``run_methods``: several registered methods over one recording of the concept world (``neurocore demo``'s
world and its planted network, whose unit j of ``colours`` is the share of pixels of colour j), each
method's explanations equal to running it alone, HINT on the world's shape hierarchy, the run's files,
and the errors that name the missing input."""

from __future__ import annotations

import json
import math

import pytest
import torch

from neurocore._errors import NeurocoreError
from neurocore._pipeline import MethodsRun, check_settings, run_dissection, run_methods
from neurocore.demo import ConceptWorld, PlantedConceptNet
from neurocore.methods import WWW, ClipDissect, ConceptHierarchy, Hint, LinearExplanations
from neurocore.probe import record

LAYERS = ["colours", "backgrounds"]
COLOURS = ["red", "green", "blue", "yellow"]
# HINT on the planted net: its outputs are spatial means, not the classes (test_methods_common's reason)
HINT_SETTINGS = dict(saliency="gradient_x_input", target="logit_sum", images_per_concept=8, permutations=8,
                     max_cells=200, shapley_cells=100)


@pytest.fixture(scope="module")
def world():
    world = ConceptWorld()
    probe = world.sample(8, seed=2)  # 192 images
    return world, probe, PlantedConceptNet(world).eval()


def _methods():
    return {"clip_dissect": ClipDissect(similarity="wpmi"), "linear": LinearExplanations(), "www": WWW(n_images=20)}


class _Passes:
    """Counts the model's forward passes (images per pass too)."""

    def __init__(self, model):
        self.sizes = []
        self.handle = model.register_forward_pre_hook(lambda m, args: self.sizes.append(args[0].shape[0]))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def test_one_recording_feeds_every_method_and_each_equals_running_alone(world):
    w, probe, model = world
    with _Passes(model) as passes:
        run = run_methods(model, LAYERS, probe, _methods(), scores=probe.concept_scores(), batch_size=64, progress=False)
    # recorded once: 192 images in 3 passes of 64; the methods themselves ran no forward pass (WWW without vlm)
    assert passes.sizes == [64, 64, 64]
    assert isinstance(run, MethodsRun) and list(run.explanations) == ["clip_dissect", "linear", "www"]
    assert list(run.store.layers) == LAYERS and run.skipped == []
    assert {"recording", "scores", "explanation", "explain:clip_dissect", "explain:linear", "explain:www"} <= set(run.seconds)
    # the largest top-k any method reads: WPMI's 28 (ClipDissect), WWW's 20, LE's 10
    assert run.store["colours"].top_indices.shape[0] == 28
    # each method alone, through the method contract, on its own recording
    alone_store = record(model, LAYERS, probe, top_k=100, batch_size=64, progress=False)
    scores = probe.concept_scores()
    for name, method in _methods().items():
        alone = method.explain(alone_store, scores, model=model, probe=probe, progress=False)
        assert run.explanations[name].neurons == alone.neurons, name
    # the planted truth: unit j of "colours" is colour j's detector, for every method
    for name, ex in run.explanations.items():
        assert ex.layer("colours").labels == COLOURS, name


def test_hint_gets_the_hierarchy_memberships_and_the_others_the_image_scores(world):
    w, probe, model = world
    small = probe.subset(torch.arange(0, len(probe), 8))  # 24 images, one per class: HINT runs the model per image
    tree = ConceptHierarchy.from_groups(w.classes, {k: w.hierarchy[k] for k in ("round", "angular")})
    methods = {"clip_dissect": ClipDissect(similarity="cos"), "hint": Hint(**HINT_SETTINGS)}
    run = run_methods(model, ["colours"], small, methods, labels=True, hierarchy=tree, progress=False)
    assert run.hierarchy is tree and run.hierarchy_scores.concepts == ("round", "angular")
    assert run.concept_scores.concepts == w.classes  # --labels: one concept per class
    # HINT's scores are the memberships of each image's class in round / angular
    expected = tree.membership(small.labels)
    assert torch.equal(run.hierarchy_scores.scores, expected)
    from neurocore.methods.hint import hint

    alone = hint(model, ["colours"], small, tree.concept_scores(small.labels), progress=False, **HINT_SETTINGS)
    assert run.explanations["hint"].neurons == alone.neurons
    assert set(run.explanations["hint"].labels) <= {"round", "angular", ""}


def test_names_build_default_methods_and_run_dissection_is_the_one_method_case(world):
    _, probe, model = world
    run = run_methods(model, ["colours"], probe, ["clip_dissect"], labels=True, progress=False)
    assert isinstance(run.methods["clip_dissect"], ClipDissect)
    one = run_dissection(model, ["colours"], probe, ClipDissect(), labels=True, progress=False)
    assert one.explanations.neurons == run.explanations["clip_dissect"].neurons
    assert set(one.seconds) == {"recording", "scores", "explanation"}


def test_write_saves_each_method_the_manifest_and_one_report(world, tmp_path):
    _, probe, model = world
    small = probe.subset(torch.arange(0, len(probe), 2))
    run = run_methods(model, ["colours"], small, {"clip_dissect": ClipDissect(similarity="cos"), "linear": LinearExplanations()},
                      scores=small.concept_scores(), progress=False)
    report = run.write(tmp_path, model_name="planted", neurons_with_images=2, n_images=2)
    from neurocore.methods import Explanations

    for name in ("clip_dissect", "linear"):
        assert Explanations.load(tmp_path / name).neurons == run.explanations[name].neurons
    assert (tmp_path / "skipped.csv").read_text().splitlines() == ["dataset_index,image_id,reason"]
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["model"] == "planted" and info["layers"] == ["colours"] and info["probe"]["num_images"] == 96
    assert info["methods"]["clip_dissect"]["settings"]["similarity"] == "cos"
    assert info["methods"]["linear"]["settings"]["max_length"] == 10
    assert info["concept_source"]["num_concepts"] == len(small.world.concepts)
    assert all(not math.isnan(v) for v in info["seconds"].values()) and "report" in info["seconds"]
    page = report.read_text()
    assert report.name == "index.html" and page.count("neuron-card") >= 2
    assert "clip_dissect" in page and "linear" in page


def test_check_settings_is_the_largest_top_k_and_validates():
    assert check_settings({"a": ClipDissect(similarity="wpmi"), "b": WWW(n_images=40)}, 1000) == 40
    assert check_settings({"a": LinearExplanations(top_images=12)}, 1000) == 12
    with pytest.raises(NeurocoreError, match="n_images must be an integer >= 1"):
        check_settings({"www": WWW(n_images=0)}, 10)
    with pytest.raises(NeurocoreError, match="unknown similarity 'wmpi'.*did you mean 'wpmi'"):
        check_settings({"clip_dissect": ClipDissect(similarity="wmpi")}, 10)


def test_errors_name_the_missing_input(world):
    w, probe, model = world
    small = probe.subset(torch.arange(0, len(probe), 8))
    with pytest.raises(NeurocoreError, match=r"need hierarchy=.*\['animal', 'whole'\]"):
        run_methods(model, "colours", small, {"hint": Hint(**HINT_SETTINGS)}, progress=False)
    with pytest.raises(NeurocoreError, match="no HINT method is among methods"):
        run_methods(model, "colours", small, ["clip_dissect"], labels=True, hierarchy=["animal"], progress=False)
    with pytest.raises(NeurocoreError, match=r"got neither \(method\(s\) clip_dissect, linear read image–concept scores\)"):
        run_methods(model, "colours", small, ["clip_dissect", "linear"], progress=False)
    with pytest.raises(NeurocoreError, match="got both"):
        run_methods(model, "colours", small, ["linear"], labels=True, scores=small.concept_scores(), progress=False)
    with pytest.raises(NeurocoreError, match="unknown method 'clip_disect'.*did you mean 'clip_dissect'"):
        run_methods(model, "colours", small, ["clip_disect"], labels=True, progress=False)
    with pytest.raises(NeurocoreError, match="methods is empty"):
        run_methods(model, "colours", small, {}, labels=True, progress=False)
    # HINT's images need classes: a probe of bare images has none
    tree = ConceptHierarchy.from_groups(w.classes, {"round": w.hierarchy["round"]})
    bare = [small[i][0] for i in range(len(small))]
    with pytest.raises(NeurocoreError, match=r"HINT \(hint\) needs each image's class"):
        run_methods(model, "colours", bare, {"hint": Hint(**HINT_SETTINGS)}, hierarchy=tree, progress=False)
    with pytest.raises(NeurocoreError, match="hierarchy= as node names needs a labelled probe"):
        run_methods(model, "colours", bare, {"hint": Hint(**HINT_SETTINGS)}, hierarchy=["animal"], progress=False)
