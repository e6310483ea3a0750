"""The registered CLIP-Dissect method: ClipDissect(...).explain(store, concept_scores)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from neurocore import ops
from neurocore._errors import NeurocoreError
from neurocore.concepts import ConceptScores
from neurocore.methods import ClipDissect, Explanations, get_method
from neurocore.methods import clip_dissect as cd
from neurocore.probe import ActivationStore, LayerActivations

CONCEPTS = [f"concept{i}" for i in range(30)]


def world(n=400, planted=(4, 17, 0, 29, 11), background=20, seed=0):
    """CLIP-like scores and a layer whose first neurons follow one concept each (plus noise), the
    rest unrelated."""
    g = torch.Generator().manual_seed(seed)
    sims = 0.2 + 0.05 * torch.randn(n, len(CONCEPTS), generator=g)
    acts = sims[:, list(planted)] + 1e-3 * torch.randn(n, len(planted), generator=g)
    acts = torch.cat([acts, torch.randn(n, background, generator=g)], 1)
    return sims, acts


def test_registered():
    assert get_method("clip_dissect") is ClipDissect


def test_init_only_stores_settings():
    # no validation in __init__ (STYLE.md §2): bad settings fail in explain
    m = ClipDissect(similarity="sofwpmi", top_k=-1)
    assert m.similarity == "sofwpmi" and m.params == {"top_k": -1}
    sims, acts = world()
    with pytest.raises(NeurocoreError, match="unknown similarity 'sofwpmi'.*did you mean 'soft_wpmi'"):
        m.explain(ActivationStore.from_tensor(acts), ConceptScores.from_tensor(sims, CONCEPTS))
    with pytest.raises(NeurocoreError, match="top_k must be >= 1"):
        ClipDissect(top_k=-1).explain(ActivationStore.from_tensor(acts), ConceptScores.from_tensor(sims, CONCEPTS))


@pytest.mark.parametrize("method", cd.SIMILARITIES)
def test_explain_planted_and_fields(method):
    sims, acts = world()
    store = ActivationStore.from_tensor(acts, layer="block", top_k=100)
    cs = ConceptScores.from_tensor(sims, CONCEPTS)
    ex = ClipDissect(similarity=method).explain(store, cs)
    assert isinstance(ex, Explanations) and ex.method == "clip_dissect" and len(ex) == acts.shape[1]
    assert [n.description for n in ex.neurons[:5]] == [CONCEPTS[i] for i in (4, 17, 0, 29, 11)]
    expected = cd.scores(sims, acts, method)
    for k, n in enumerate(ex):
        assert (n.layer, n.unit) == ("block", k)
        assert len(n.concepts) == 5 and len(n.scores) == 5 and n.concepts[0] == n.description
        assert list(n.scores) == sorted(n.scores, reverse=True)
        assert n.similarity == n.scores[0]
        top = torch.topk(expected[k].double(), 5)
        assert n.concepts == tuple(CONCEPTS[i] for i in top.indices.tolist())
        torch.testing.assert_close(torch.tensor(n.scores, dtype=torch.float64), top.values, rtol=1e-5, atol=1e-5)
        assert n.top_images == tuple(store["block"].top_indices[:10, k].tolist())
        assert n.top_dataset_indices == n.top_images and n.top_image_ids == ()  # from_tensor: rows, no ids
        assert n.label == n.description
        assert not n.dead and not n.is_linear and n.bias == 0
    assert ex.params["similarity"] == method
    assert ex.params["similarity_params"] == cd.similarity_params(method, **({"seed": 0} if method == "rank_reorder" else {}))
    assert ex.params["concepts"] == CONCEPTS and ex.params["num_images"] == 400 and ex.params["layers"] == ["block"]


def test_interpretable_threshold():
    sims, acts = world()
    store, cs = ActivationStore.from_tensor(acts), ConceptScores.from_tensor(sims, CONCEPTS)
    ex = ClipDissect().explain(store, cs)
    assert ex.params["interpretable_threshold"] == 0.16
    assert [n.interpretable for n in ex] == [n.similarity > 0.16 for n in ex]
    assert all(n.interpretable for n in ex.neurons[:5])  # planted neurons score ~log K
    t = sorted(n.similarity for n in ex)[len(ex) // 2]
    ex = ClipDissect(interpretable_threshold=t).explain(store, cs)
    assert [n.interpretable for n in ex] == [n.similarity > t for n in ex]
    assert 0 < sum(n.interpretable for n in ex) < len(ex)
    # no published cutoff for the other methods: every labelled neuron is interpretable
    ex = ClipDissect(similarity="cos").explain(store, cs)
    assert ex.params["interpretable_threshold"] is None and all(n.interpretable for n in ex)
    ex = ClipDissect(similarity="cos", interpretable_threshold=0.5).explain(store, cs)
    assert [n.interpretable for n in ex] == [n.similarity > 0.5 for n in ex]
    ex = ClipDissect(interpretable_threshold=None).explain(store, cs)
    assert all(n.interpretable for n in ex)
    with pytest.raises(NeurocoreError, match="interpretable_threshold must be a number, None or 'auto'"):
        ClipDissect(interpretable_threshold="high").explain(store, cs)


def test_dead_and_constant_neurons():
    sims, acts = world()
    acts[:, 5] = -1.0 - acts[:, 0]  # never reaches 0.01 but ordered like concept 4 reversed...
    acts[:, 6] = sims[:, 8] - 5  # dead by the 0.01 rule, yet ordered exactly like concept 8
    acts[:, 7] = 0.0  # constant: no order at all
    store, cs = ActivationStore.from_tensor(acts), ConceptScores.from_tensor(sims, CONCEPTS)
    ex = ClipDissect().explain(store, cs)
    n = ex[6]
    assert n.dead and not n.interpretable and n.description == "concept8"  # label kept, flagged
    assert ex[5].dead and not ex[5].interpretable
    n = ex[7]
    assert n.dead and n.description == "" and math.isnan(n.similarity) and n.concepts == () and not n.interpretable
    assert not any(m.dead for i, m in enumerate(ex) if i not in (5, 6, 7))
    # a constant neuron that is not dead is still unlabelled
    acts[:, 7] = 3.0
    ex = ClipDissect().explain(ActivationStore.from_tensor(acts), cs)
    assert not ex[7].dead and ex[7].description == "" and not ex[7].interpretable


def test_rows_must_match():
    sims, acts = world()
    with pytest.raises(NeurocoreError, match="store has 399 images but concept_scores has 400.*same images in the same order"):
        ClipDissect().explain(ActivationStore.from_tensor(acts[:399]), ConceptScores.from_tensor(sims, CONCEPTS))


@pytest.mark.parametrize("change", ["swap", "rename", "shift"])
def test_rows_must_be_the_same_images(change):
    # same number of rows, other images: the first differing row and both ids are named
    sims, acts = world()
    ids = [f"class{i % 3}/img{i}.png" for i in range(400)]
    other = list(ids)
    if change == "swap":
        other[7], other[8] = other[8], other[7]
        row = 7
    elif change == "rename":
        other[123] = "class0/new.png"
        row = 123
    else:
        other = other[1:] + other[:1]
        row = 0
    store = ActivationStore.from_tensor(acts, image_ids=ids)
    with pytest.raises(NeurocoreError, match=f"row {row} is '{ids[row]}' in the activation store but '{other[row]}' in concept_scores"):
        ClipDissect().explain(store, ConceptScores.from_tensor(sims, CONCEPTS, image_ids=other))
    ClipDissect().explain(store, ConceptScores.from_tensor(sims, CONCEPTS))  # unknown ids: counts only


def test_top_images_traceable_after_skipped_images():
    # the store's rows skip dataset indices 0 and 5 (unreadable files): top images name the files
    sims, acts = world(n=60, planted=(4,), background=1)
    kept = [i for i in range(62) if i not in (0, 5)]
    ids = [f"img{i:03d}.png" for i in kept]
    store = ActivationStore.from_tensor(acts, image_ids=ids, dataset_indices=torch.tensor(kept))
    store = replace(store, skipped=((0, "img000.png: truncated"), (5, "img005.png: truncated")))
    ex = ClipDissect(n_top_images=4).explain(store, ConceptScores.from_tensor(sims, CONCEPTS, image_ids=ids))
    for n in ex:
        assert n.top_dataset_indices == tuple(kept[r] for r in n.top_images)
        assert n.top_image_ids == tuple(f"img{kept[r]:03d}.png" for r in n.top_images)
    assert ex.skipped == [(0, "img000.png: truncated"), (5, "img005.png: truncated")]
    assert ex.params["probe"]["num_images"] == 60 and len(ex.params["probe"]["image_ids_sha256"]) == 64


def test_similarity_keyword_and_deprecated_method():
    sims, acts = world()
    store, cs = ActivationStore.from_tensor(acts), ConceptScores.from_tensor(sims, CONCEPTS)
    new = ClipDissect(similarity="cos").explain(store, cs)
    with pytest.warns(DeprecationWarning, match="similarity="):
        old = ClipDissect(method="cos")
    assert old.similarity == "cos" and old.method == "cos"
    assert old.explain(store, cs).descriptions == new.descriptions and new.params["similarity"] == "cos"


@pytest.mark.parametrize(
    "typo, match",
    [
        ({"n_top_concept": 3}, "'n_top_concept' \\(did you mean 'n_top_concepts'"),
        ({"topk": 5}, "'topk' \\(did you mean 'top_k'"),
        ({"simlarity": "cos"}, "'simlarity' \\(did you mean 'similarity'"),
        ({"interpretable_treshold": 0.1}, "did you mean 'interpretable_threshold'"),
    ],
)
def test_misspelt_setting_names_its_close_match(typo, match):
    from neurocore.methods import UnknownSettingError

    with pytest.raises(UnknownSettingError, match=match) as info:
        ClipDissect(**typo)
    assert isinstance(info.value, TypeError) and isinstance(info.value, NeurocoreError)


@pytest.mark.parametrize("similarity, param", [("cos", {"a": 2.0}), ("wpmi", {"p_start": 0.9}), ("soft_wpmi", {"min_norm": 0.1})])
def test_similarity_parameter_of_another_similarity(similarity, param):
    sims, acts = world()
    store, cs = ActivationStore.from_tensor(acts), ConceptScores.from_tensor(sims, CONCEPTS)
    name = next(iter(param))
    with pytest.raises(NeurocoreError, match=f"similarity '{similarity}' has no parameter {name}"):
        ClipDissect(similarity=similarity, **param).explain(store, cs)


def test_wrong_types():
    sims, acts = world()
    with pytest.raises(NeurocoreError, match="store must be an ActivationStore"):
        ClipDissect().explain(acts, ConceptScores.from_tensor(sims, CONCEPTS))
    with pytest.raises(NeurocoreError, match="concept_scores must be a ConceptScores"):
        ClipDissect().explain(ActivationStore.from_tensor(acts), sims)


def two_layer_store(acts_a, acts_b):
    a = ActivationStore.from_tensor(acts_a, layer="a")
    b = ActivationStore.from_tensor(acts_b, layer="b")
    return replace(a, layers={"a": a["a"], "b": b["b"]})


def test_layers_selection_and_each_layer_its_own_call():
    sims, acts = world()
    store = two_layer_store(acts[:, :12], acts[:, 12:])
    cs = ConceptScores.from_tensor(sims, CONCEPTS)
    ex = ClipDissect().explain(store, cs)
    assert ex.layers == ("a", "b") and len(ex) == acts.shape[1]
    # the marginal runs over one layer's neurons: layer b alone gives the same as within the call
    only_b = ClipDissect().explain(store, cs, layers="b")
    assert only_b.layers == ("b",)
    assert [n.similarity for n in only_b] == [n.similarity for n in ex.layer("b")]
    expected = cd.soft_wpmi(sims, acts[:, 12:])
    torch.testing.assert_close(torch.tensor([n.similarity for n in only_b]), expected.max(1).values)
    with pytest.raises(NeurocoreError, match="layer 'c' is not in the activation store; it has: a, b"):
        ClipDissect().explain(store, cs, layers=["c"])
    with pytest.raises(NeurocoreError, match="layers is empty"):
        ClipDissect().explain(store, cs, layers=[])


def test_uses_the_stores_top_indices_when_deep_enough():
    sims, acts = world()
    cs = ConceptScores.from_tensor(sims, CONCEPTS)
    store = ActivationStore.from_tensor(acts, top_k=150)
    la = store["layer"]
    # a store whose top-k lists other images: the method must read them (not recompute)
    fake_idx = la.top_indices.flip(0)
    fake = replace(store, layers={"layer": replace(la, top_indices=fake_idx)})
    ex = ClipDissect().explain(fake, cs)
    expected = ops.soft_wpmi(sims, fake_idx[:100], ops.soft_wpmi_weights(100), 10.0, 1.0)
    torch.testing.assert_close(torch.tensor([n.similarity for n in ex]), expected.max(1).values)
    assert ex[0].top_images == tuple(fake_idx[:10, 0].tolist())
    # a store that kept fewer than the method needs: recomputed from the summaries
    shallow = ActivationStore.from_tensor(acts, top_k=20)
    ex = ClipDissect().explain(shallow, cs)
    torch.testing.assert_close(torch.tensor([n.similarity for n in ex]), cd.soft_wpmi(sims, acts).max(1).values)
    assert len(ex[0].top_images) == 10
    ex = ClipDissect(n_top_images=50).explain(shallow, cs)
    assert len(ex[0].top_images) == 20  # no more than the store kept


def test_required_top_k():
    assert ClipDissect().required_top_k(1000) == 100
    assert ClipDissect(similarity="wpmi").required_top_k(1000) == 28
    assert ClipDissect(similarity="rank_reorder").required_top_k(10000) == 500
    assert ClipDissect(similarity="cos").required_top_k(1000) == 10  # the top images it reports


def test_settings_validated():
    sims, acts = world()
    store, cs = ActivationStore.from_tensor(acts), ConceptScores.from_tensor(sims, CONCEPTS)
    with pytest.raises(NeurocoreError, match="n_top_concepts must be >= 1"):
        ClipDissect(n_top_concepts=0).explain(store, cs)
    with pytest.raises(NeurocoreError, match="'topk' \\(did you mean 'top_k'"):
        ClipDissect(topk=5)
    with pytest.raises(NeurocoreError, match="compositional must be True or False"):
        ClipDissect(compositional="yes").explain(store, cs)


def test_rank_reorder_seed_setting():
    sims, acts = world()
    store, cs = ActivationStore.from_tensor(acts), ConceptScores.from_tensor(sims, CONCEPTS)
    a = ClipDissect(similarity="rank_reorder", seed=3).explain(store, cs)
    b = ClipDissect(similarity="rank_reorder", seed=3).explain(store, cs)
    c = ClipDissect(similarity="rank_reorder", seed=4).explain(store, cs)
    assert [n.similarity for n in a] == [n.similarity for n in b]
    assert [n.similarity for n in a] != [n.similarity for n in c]
    assert a.descriptions == c.descriptions
    assert a.params["seed"] == 3 and a.params["similarity_params"]["seed"] == 3


def test_n_top_concepts_and_small_concept_sets():
    sims, acts = world()
    store = ActivationStore.from_tensor(acts)
    ex = ClipDissect(n_top_concepts=2).explain(store, ConceptScores.from_tensor(sims, CONCEPTS))
    assert all(len(n.concepts) == 2 for n in ex)
    ex = ClipDissect().explain(store, ConceptScores.from_tensor(sims[:, :3], CONCEPTS[:3]))
    assert all(len(n.concepts) == 3 for n in ex)


def test_progress_bar_off_by_default(capsys):
    sims, acts = world()
    ClipDissect().explain(ActivationStore.from_tensor(acts), ConceptScores.from_tensor(sims, CONCEPTS))
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_inputs_not_mutated():
    sims, acts = world()
    store, cs = ActivationStore.from_tensor(acts), ConceptScores.from_tensor(sims, CONCEPTS)
    before = (store["layer"].summaries.clone(), store["layer"].top_indices.clone(), cs.scores.clone())
    ClipDissect(similarity="cos_cubed").explain(store, cs)
    ClipDissect().explain(store, cs)
    assert torch.equal(before[0], store["layer"].summaries) and torch.equal(before[1], store["layer"].top_indices)
    assert torch.equal(before[2], cs.scores)


# ----------------------------------------------------------------------------------------------
# compositional concepts (paper A.4)


BASE = ["red", "round", "metal", "soft", "striped", "tall"]


def composite_world(n=500, seed=1):
    """Binary image attributes; a composite "x y" is present when both x and y are. The image
    scores of any text come from these attributes (a stand-in vision–language model)."""
    g = torch.Generator().manual_seed(seed)
    attrs = torch.rand(n, len(BASE), generator=g) < 0.5
    noise = torch.Generator().manual_seed(seed + 1)

    def text_scores(texts):
        cols = []
        for t in texts:
            parts = t.split(" ")
            present = torch.ones(n, dtype=torch.bool)
            for p in parts:
                present &= attrs[:, BASE.index(p)]
            cols.append(0.2 + 0.1 * present.float() + 0.01 * torch.randn(n, generator=noise))
        return torch.stack(cols, 1)

    calls = []

    def encode(texts):
        calls.append(list(texts))
        return text_scores(texts)

    sims = text_scores(BASE)
    # neuron 0 fires for red AND metal, 1 for round, 2 for red, 3 for metal; the rest are unrelated.
    # (Neurons 2 and 3 share "red" and "metal" with neuron 0: without them neuron 0 alone would own
    # both concepts' SoftWPMI marginals and score them at the ceiling log K, tied with "red metal".)
    acts = torch.stack(
        [(attrs[:, 0] & attrs[:, 2]).float(), attrs[:, 1].float(), attrs[:, 0].float(), attrs[:, 2].float()], 1
    ) + 0.05 * torch.rand(n, 4, generator=g)
    acts = torch.cat([acts, torch.randn(n, 10, generator=g)], 1)
    return sims, acts, encode, calls


@pytest.mark.parametrize("method", ["soft_wpmi", "cos"])
def test_compositional_finds_the_conjunction(method):
    sims, acts, encode, calls = composite_world()
    store, cs = ActivationStore.from_tensor(acts), ConceptScores.from_tensor(sims, BASE)
    single = ClipDissect(similarity=method).explain(store, cs)
    assert single[0].description in ("red", "metal")
    ex = ClipDissect(similarity=method, compositional=True, composite_top_n=4).explain(store, cs, encode_composites=encode)
    assert ex[0].description in ("red metal", "metal red")
    # a composite is made of the neuron's own top singles, the better one first
    order = ClipDissect(similarity=method, n_top_concepts=4).explain(store, cs)[0].concepts
    a, b = ex[0].description.split(" ")
    assert order.index(a) < order.index(b)
    assert len(calls) == 1 and len(calls[0]) == len(set(calls[0]))  # unique texts, one call per layer
    for n in ex:
        for c in n.concepts:
            parts = c.split(" ")
            assert len(parts) in (1, 2)
            if len(parts) == 2:  # only its own candidates
                own = ClipDissect(similarity=method, n_top_concepts=4).explain(store, cs)[n.unit].concepts
                assert set(parts) <= set(own)
    assert ex.params["compositional"] is True and ex.params["composite_top_n"] == 4


def test_compositional_needs_an_encoder():
    sims, acts, encode, _ = composite_world()
    store, cs = ActivationStore.from_tensor(acts), ConceptScores.from_tensor(sims, BASE)
    with pytest.raises(NeurocoreError, match="compositional=True .* needs their image scores: pass encode_composites"):
        ClipDissect(compositional=True).explain(store, cs)
    with pytest.raises(NeurocoreError, match=r"encode_composites must return a Tensor\[N=500, \d+\] of image scores; got \(3, "):
        ClipDissect(compositional=True).explain(store, cs, encode_composites=lambda texts: torch.zeros(3, len(texts)))
    with pytest.raises(NeurocoreError, match="NaN or inf"):
        ClipDissect(compositional=True).explain(
            store, cs, encode_composites=lambda texts: torch.full((500, len(texts)), float("nan"))
        )


def test_compositional_skips_texts_that_are_single_concepts():
    sims, acts, encode, calls = composite_world()
    names = BASE[:2] + ["red round"] + BASE[3:]  # "red round" is a given concept here
    sims = encode(names)
    calls.clear()
    store, cs = ActivationStore.from_tensor(acts), ConceptScores.from_tensor(sims, names)
    ClipDissect(compositional=True, composite_top_n=6).explain(store, cs, encode_composites=encode)
    assert "red round" not in calls[0]


def test_compositional_top_concepts_never_other_neurons_candidates():
    # with fewer allowed columns than n_top_concepts, the list is shorter, never padded with
    # other neurons' candidates (masked to -inf)
    sims, acts, encode, _ = composite_world()
    store, cs = ActivationStore.from_tensor(acts), ConceptScores.from_tensor(sims[:, :2], BASE[:2])
    ex = ClipDissect(compositional=True, n_top_concepts=10).explain(store, cs, encode_composites=encode)
    for n in ex:
        assert len(n.concepts) == 3 and all(math.isfinite(v) for v in n.scores)  # 2 singles + 1 pair
        assert set(n.concepts) <= {"red", "round", "red round", "round red"}


@pytest.mark.parametrize("similarity", ["soft_wpmi", "wpmi", "cos", "cos_cubed", "rank_reorder"])
def test_a_concept_no_image_shows_never_labels_a_neuron(similarity):
    # An empty class folder gives an all-zero label column; under SoftWPMI it used to win (score 0.0 beats
    # the real concepts' negative scores). Constant columns carry no evidence and are left out, said once.
    import torch.nn.functional as F

    from neurocore.concepts import ConceptScores
    from neurocore.methods.clip_dissect import ClipDissect
    from neurocore.probe import ActivationStore

    g = torch.Generator().manual_seed(0)
    labels = torch.arange(200) % 2
    sims = F.one_hot(labels, 3).float()  # column "ghost" is all zeros
    acts = torch.rand(200, 4, generator=g)
    store = ActivationStore.from_tensor(acts, "0", top_k=100)
    scores = ConceptScores.from_tensor(sims, ["a", "b", "ghost"])
    with pytest.warns(UserWarning, match=r"1 concept\(s\) have the same score on every probe image.*'ghost'"):
        ex = ClipDissect(similarity=similarity).explain(store, scores)
    assert all(n.description in ("a", "b") for n in ex)
    assert all("ghost" not in n.concepts for n in ex)
    with pytest.raises(NeurocoreError, match="every concept has the same score"):
        ClipDissect(similarity=similarity).explain(store, ConceptScores.from_tensor(torch.zeros(200, 2), ["x", "y"]))
