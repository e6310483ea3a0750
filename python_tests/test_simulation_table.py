"""simulation_table: every method's explanations scored by one simulator (not the explainer) in one table.

The planted truth is the concept world's (neurocore.demo): DistractorNet's ``units`` layer has one
detector per colour, one per background and one for white, and ConceptWorldVLM's cosines are the
world's exact concept scores (÷√5). Explanations naming each unit's planted concept must outscore
shuffled ones; the table must equal correlation_score / ablation_score called per method directly.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from neurocore._errors import NeurocoreError
from neurocore._split import split_indices
from neurocore.concepts import ConceptScores
from neurocore.demo import ConceptWorld
from neurocore.demo._www import ConceptWorldVLM, DistractorNet, colour_labels
from neurocore.evaluate import TABLE_COLUMNS, ablation_score, correlation_score, simulation_table, simulator_matrix
from neurocore.methods import get_method, probe_identity
from neurocore.methods._base import Explanations, NeuronExplanation
from neurocore.probe import record

LAYER = "units"


@pytest.fixture(scope="module")
def world():
    world = ConceptWorld()
    probe = world.sample(4, seed=5)  # 96 images; yields (Tensor image, class)
    net = DistractorNet(world).eval()
    with pytest.warns(UserWarning, match="1 of 7 neurons are dead"):  # white: no world image shows it
        store = record(net, [LAYER], probe, top_k=10, batch_size=128, progress=False)
    truth = list(world.colours) + list(world.backgrounds) + ["white"]  # unit k's planted concept
    return world, probe, net, store, truth


def explain(names, method="x", **params):
    return Explanations(method, tuple(NeuronExplanation(LAYER, k, c, 1.0) for k, c in enumerate(names)), params)


def shuffled(truth):
    """Each colour unit labelled with the next colour, each background unit with the other background."""
    return truth[1:4] + truth[0:1] + [truth[5], truth[4], truth[6]]


def exact(probe):
    """The world's exact concept scores (as probabilities: 0/1)."""
    return probe.concept_scores()


class RecordingVLM(ConceptWorldVLM):
    """ConceptWorldVLM that remembers every text it was asked to encode."""

    def __init__(self, images):
        super().__init__(images)
        self.texts = []

    def encode_texts(self, texts):
        self.texts += list(texts)
        return super().encode_texts(texts)


def test_planted_explanations_outscore_shuffled_with_a_vlm_simulator(world):
    w, probe, net, store, truth = world
    ex = {"planted": explain(truth, concept_source="noisy-world"), "shuffled": explain(shuffled(truth), concept_source="noisy-world")}
    vlm = ConceptWorldVLM(probe)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # different sources, no fitting split, explicit calibration: no warning
        table = simulation_table(ex, store, vlm, probe=probe, calibration=None)
    assert list(table.columns) == list(TABLE_COLUMNS)
    assert table.method.tolist() == ["planted", "shuffled"] and table.layer.tolist() == [LAYER, LAYER]
    assert (table.simulator == vlm.identity).all() and (table.explainer_source == "noisy-world").all()
    planted, shuf = table.iloc[0], table.iloc[1]
    # white never shows in world images: that unit is dead, left out of both means and counted
    assert planted.neurons == 7 and planted.dead == 1 and planted.scored == 6 and planted.missing_concepts == 0
    assert planted.correlation > 0.8 and shuf.correlation < 0.2
    assert planted.correlation > shuf.correlation + 0.6
    assert planted.test_images == split_indices(store, seed=0).test.numel() == table.attrs["split"]["test"].__len__()
    assert table.attrs["calibration"] is None and table.attrs["simulator"] == vlm.identity


@pytest.mark.filterwarnings("ignore:1 neuron")  # the direct calls warn about "zebra"/"white"; the table counts them
def test_table_equals_correlation_score_per_method(world):
    w, probe, net, store, truth = world
    ex = {"planted": explain(truth), "shuffled": explain(shuffled(truth)), "half": explain(truth[:4] + shuffled(truth)[4:])}
    sim = exact(probe)
    split = split_indices(store, seed=3)
    table = simulation_table(ex, store, sim, split=split)
    for name, e in ex.items():
        direct = correlation_score(e, store, sim, split, missing="nan")
        row = table.set_index("method").loc[name]
        assert row.correlation == pytest.approx(direct.mean, abs=1e-12)
        assert row.correlation_sem == pytest.approx(direct.sem, abs=1e-12)
        assert row.scored == int(direct.scored.sum())
    assert table.set_index("method").loc["planted", "missing_concepts"] == 0  # "white" is dead before missing
    # another seed draws another test split: the default is split_indices(store, seed)
    again = simulation_table(ex, store, sim, seed=3)
    assert again.correlation.tolist() == pytest.approx(table.correlation.tolist(), abs=1e-12)


def test_vlm_encodes_the_union_of_the_methods_concepts(world):
    w, probe, net, store, truth = world
    colours_only = explain(truth[:4] + ["", "", ""], "a")  # no concept for the backgrounds and white
    others = explain(["dots"] * 4 + truth[4:], "b")  # a texture, the backgrounds, and "white" (no world concept)
    vlm = RecordingVLM(probe)
    table = simulation_table({"a": colours_only, "b": others}, store, vlm, probe=probe, calibration=None)
    assert vlm.texts == truth[:4] + ["dots"] + truth[4:]  # every concept once, in first-use order
    a, b = table.iloc[0], table.iloc[1]
    assert a.missing_concepts == 0 and b.missing_concepts == 0  # the simulator scores every method's concepts
    assert a.no_concepts == 2 and a.dead == 1  # two background units without concepts; white dead
    # cosines = exact scores / √5: the correlation is the exact simulator's
    direct = correlation_score(colours_only, store, exact(probe), split_indices(store, seed=0), missing="nan")
    assert a.correlation == pytest.approx(direct.mean, abs=1e-6)
    # with the exact scores as simulator, "white" is missing but the unit is dead: nothing else is left out
    table2 = simulation_table({"b": others}, store, exact(probe))
    assert table2.iloc[0].correlation == pytest.approx(b.correlation, abs=1e-6)


@pytest.mark.filterwarnings("ignore:1 neuron")
def test_missing_concepts_and_none_labels_are_counted(world):
    w, probe, net, store, truth = world
    unknown = explain(["zebra"] + truth[1:], "clip_dissect")  # a concept the exact simulator lacks
    www = Explanations("www", tuple(
        NeuronExplanation(LAYER, k, c if k % 2 else "none", 1.0, concepts=(c,) if k % 2 else (), interpretable=bool(k % 2))
        for k, c in enumerate(truth)
    ))
    vlm = RecordingVLM(probe)
    table = simulation_table({"clip_dissect": unknown, "www": www}, store, exact(probe))
    cd, ww = table.iloc[0], table.iloc[1]
    assert cd.missing_concepts == 1 and cd.scored == 5 and cd.dead == 1
    assert ww.no_concepts == 3 and ww.missing_concepts == 0 and ww.scored == 6  # units 0, 2, 4: "none" scores 0
    direct = correlation_score(explain(["", truth[1], "", truth[3], "", truth[5], truth[6]]), store, exact(probe),
                               split_indices(store, seed=0), missing="nan")
    assert ww.correlation == pytest.approx(direct.mean, abs=1e-12)
    simulation_table({"www": www}, store, vlm, probe=probe, calibration=None)
    assert "none" not in vlm.texts  # WWW's placeholder is not a concept to encode


@pytest.mark.filterwarnings("ignore:1 neuron")  # the direct calls warn about "white"; the table counts it
def test_ablation_equals_ablation_score(world):
    w, probe, net, store, truth = world
    labels = colour_labels(probe)
    sim = exact(probe)
    split = split_indices(store, seed=1)
    # norm scaling for planted and shuffled labels; the paper's optimised scaling for the planted ones
    for scaling, ex in (("norm", {"planted": explain(truth), "shuffled": explain(shuffled(truth))}),
                        ("optim", {"planted": explain(truth)})):
        table = simulation_table(ex, store, sim, model=net, probe=probe, split=split, ablation=True, labels=labels,
                                 scaling=scaling)
        assert list(table.columns) == list(TABLE_COLUMNS) + ["ablation", "ablation_sem", "ablation_scored"]
        assert table.attrs["scaling"] == scaling
        for name, e in ex.items():
            direct = ablation_score(e, store, sim, val=split.val, test=split.test, model=net, labels=labels,
                                    scaling=scaling, missing="nan", progress=False)
            row = table.set_index("method").loc[name]
            assert row.ablation == pytest.approx(direct.mean, abs=1e-9)
            assert row.ablation_scored == int(direct.scored.sum()) == 4  # white is dead; the backgrounds shift every logit alike: no effect
        if scaling == "norm":  # (optim fits (c, d) by Adam on 10 val images here: equal to the direct call, no more)
            assert table.iloc[0].ablation > 0.4 and table.iloc[0].ablation > table.iloc[1].ablation + 0.3


def test_same_source_warns_and_strict_raises(world):
    w, probe, net, store, truth = world
    sim = exact(probe)  # source "concept-world"
    ex = {"self": explain(truth, concept_source=sim.source), "other": explain(truth, concept_source="noisy-world")}
    with pytest.warns(UserWarning, match=r"explanations\['self'\] come from concept scores of 'concept-world'.*Pass simulator="):
        table = simulation_table(ex, store, sim)
    assert table.explainer_source.tolist() == ["concept-world", "noisy-world"]
    with pytest.raises(NeurocoreError, match=r"'self'.*simulator's own source.*strict=False"):
        simulation_table(ex, store, sim, strict=True)
    simulation_table({"other": ex["other"]}, store, sim, strict=True)


def test_real_clip_dissect_on_a_noisy_source_simulated_by_the_vlm(world):
    w, probe, net, store, truth = world
    clean = exact(probe)
    g = torch.Generator().manual_seed(0)
    noisy = ConceptScores.from_tensor(clean.scores + 0.3 * torch.rand(clean.scores.shape, generator=g), clean.concepts,
                                      source="noisy-world", image_ids=store.image_ids)
    ex = get_method("clip_dissect")().explain(store, noisy)
    assert ex.params["concept_source"] == "noisy-world"
    vlm = ConceptWorldVLM(probe)
    table = simulation_table({"clip_dissect": ex, "shuffled": explain(shuffled(truth))}, store, vlm, probe=probe,
                             calibration=None)
    assert table.explainer_source.tolist() == ["noisy-world", ""] and (table.simulator == vlm.identity).all()
    assert table.iloc[0].correlation > table.iloc[1].correlation + 0.5


def test_fitting_split_overlap_warns(world):
    w, probe, net, store, truth = world
    fitted = explain(truth, "linear", split=split_indices(store, seed=1).to_dict())
    with pytest.warns(UserWarning, match=r"test images were used to fit explanations\['linear'\].*split=Split.from_dict"):
        simulation_table({"linear": fitted}, store, exact(probe), seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        simulation_table({"linear": fitted}, store, exact(probe), seed=1)  # the split it was fitted with
    with pytest.raises(NeurocoreError, match="were used to fit"):
        simulation_table({"linear": fitted}, store, exact(probe), strict=True)


@pytest.mark.filterwarnings("ignore:layer 'units'")  # recording other probes: white is dead there too
def test_errors_name_the_fix(world):
    w, probe, net, store, truth = world
    ex = explain(truth)
    vlm = ConceptWorldVLM(probe)
    with pytest.raises(NeurocoreError, match="pass probe="):
        simulation_table({"x": ex}, store, vlm)
    with pytest.raises(NeurocoreError, match="pass model="):
        simulation_table({"x": ex}, store, exact(probe), ablation=True)
    with pytest.raises(NeurocoreError, match=r"wrap it, \{'x': explanations\}"):
        simulation_table(ex, store, exact(probe))
    with pytest.raises(NeurocoreError, match="non-empty mapping"):
        simulation_table({}, store, exact(probe))
    with pytest.raises(NeurocoreError, match="simulator must be ConceptScores"):
        simulation_table({"x": ex}, store, torch.rand(96, 40))
    with pytest.raises(NeurocoreError, match=r"did not record.*close: \['units'\]"):
        simulation_table({"x": Explanations("x", (NeuronExplanation("unit", 0, "red", 1.0),))}, store, exact(probe))
    # explanations made from another probe (params["probe"] = probe_identity of their store)
    other = record(net, [LAYER], w.sample(3, seed=9), top_k=5, batch_size=128, progress=False)
    with pytest.raises(NeurocoreError, match=r"the probe of explanations\['x'\] has 72 images but the store has 96.*pass the store"):
        simulation_table({"x": explain(truth, probe=probe_identity(other))}, store, exact(probe))
    same_size = record(net, [LAYER], w.sample(4, seed=8), top_k=5, batch_size=128, progress=False)
    with pytest.raises(NeurocoreError, match=r"made for different images"):
        simulation_table({"x": explain(truth, probe=probe_identity(same_size))}, store, exact(probe))
    simulation_table({"x": explain(truth, probe=probe_identity(store))}, store, exact(probe))  # its own: fine
    with pytest.raises(NeurocoreError, match="split was drawn for 72 images"):
        simulation_table({"x": ex}, store, exact(probe), split=split_indices(other))
    with pytest.raises(NeurocoreError, match="simulator's concept scores"):
        simulation_table({"x": ex}, store, exact(w.sample(3, seed=9)))
    with pytest.raises(NeurocoreError, match="calibration must be"):
        simulation_table({"x": ex}, store, vlm, probe=probe, calibration="fitted")


@pytest.mark.filterwarnings("ignore:1 neuron")
def test_calibration_preset_or_given(world):
    w, probe, net, store, truth = world
    vlm = ConceptWorldVLM(probe)
    ex = {"planted": explain(truth)}
    with pytest.warns(UserWarning, match=r"no published calibration for the simulator.*calibration=\(a, b\)"):
        t = simulation_table(ex, store, vlm, probe=probe)
    assert t.attrs["calibration"] is None
    t = simulation_table(ex, store, vlm, probe=probe, calibration=(58.0, -0.13))
    assert t.attrs["calibration"] == {"a": 58.0, "b": -0.13}
    cos = ConceptScores.from_tensor(exact(probe).scores / math.sqrt(5), w.concepts, source=vlm.identity,
                                    image_ids=store.image_ids)
    direct = correlation_score(ex["planted"], store, simulator_matrix(cos, 58.0, -0.13), split_indices(store), missing="nan")
    assert t.iloc[0].correlation == pytest.approx(direct.mean, abs=1e-5)


def test_a_spec_string_is_loaded_with_load_vlm(world, monkeypatch):
    import neurocore.vlm

    w, probe, net, store, truth = world
    vlm = ConceptWorldVLM(probe)
    asked = []
    monkeypatch.setattr(neurocore.vlm, "load_vlm", lambda spec, **kw: asked.append(spec) or vlm)
    table = simulation_table({"planted": explain(truth)}, store, "open_clip:ViT-SO400M-14-SigLIP-384:webli", probe=probe,
                             calibration=None, progress=True)
    assert asked == ["open_clip:ViT-SO400M-14-SigLIP-384:webli"] and table.simulator.tolist() == [vlm.identity]
    same = simulation_table({"planted": explain(truth)}, store, vlm, probe=probe, calibration=None)
    assert table.correlation.tolist() == same.correlation.tolist()


def test_wordnet_id_concepts_are_encoded_by_their_names(world):
    # --labels explanations name WordNet ids ('n04962784' is red.n.01, 'n04967191' green.n.01): the text
    # encoder must see their names, the table's concepts stay the ids (before: the ids were encoded as text)
    w, probe, net, store, truth = world
    ids = {"red": "n04962784", "green": "n04967191"}
    labelled = explain([ids.get(c, c) for c in truth], "labels")
    vlm = RecordingVLM(probe)
    table = simulation_table({"labels": labelled}, store, vlm, probe=probe, calibration=None)
    assert "red" in vlm.texts and "green" in vlm.texts and not any(t.startswith("n0") for t in vlm.texts)
    same = simulation_table({"names": explain(truth, "names")}, store, RecordingVLM(probe), probe=probe, calibration=None)
    assert table.iloc[0].correlation == pytest.approx(same.iloc[0].correlation, abs=1e-9)
    assert table.iloc[0].missing_concepts == 0


def test_a_simulator_sharing_no_concept_is_refused(world):
    w, probe, net, store, truth = world
    ids = explain(["n04962784"] * len(truth), "labels")  # a WordNet id; the exact scores name 'red'
    with pytest.raises(NeurocoreError, match="share no concept.*display_class_names"):
        simulation_table({"labels": ids}, store, exact(probe))
