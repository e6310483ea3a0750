"""The concept world, its CNN and the demo pipeline: exact concepts, planted truth, determinism."""

from __future__ import annotations

import json

import pytest
import torch

from neurocore._errors import NeurocoreError
from neurocore.demo import (
    DEMO_LAYERS,
    ConceptWorld,
    ConceptWorldCNN,
    PlantedConceptNet,
    label_precision,
    run_demo,
    train_cnn,
    weights_digest,
)
from neurocore.methods import ClipDissect
from neurocore.probe import record

# Small settings: the pipeline end to end in a few seconds (quality is checked on the default run
# in test_cli_demo.py).
SMALL = dict(train_per_class=12, probe_per_class=10, epochs=2, progress=False)


@pytest.fixture(scope="module")
def world():
    return ConceptWorld()


# -- the world ----------------------------------------------------------------------------------


def test_concept_matrix_is_exact(world):
    data = world.sample(3, seed=1)
    m = data.concept_matrix()
    fam = world.families
    assert m.shape == (3 * len(world.classes), len(world.concepts))
    assert set(m.unique().tolist()) == {0.0, 1.0}
    for i in range(len(data)):
        present = [c for c, v in zip(world.concepts, m[i].tolist()) if v]
        # exactly one concept of every family
        assert sorted(fam[c] for c in present) == sorted(["shape", "colour", "texture", "background", "object"])
        s, c, t, b = data.attributes[i].tolist()
        cls = world.classes[int(data.labels[i])]
        assert cls == f"{world.colours[c]} {world.shapes[s]}"
        assert set(present) == {world.shapes[s], world.colours[c], world.textures[t], world.backgrounds[b], cls}
    cs = data.concept_scores()
    assert cs.concepts == world.concepts and torch.equal(cs.scores, m)


def test_sampling_is_deterministic_and_balanced(world):
    a, b, c = world.sample(4, seed=7), world.sample(4, seed=7), world.sample(4, seed=8)
    assert torch.equal(a.images, b.images) and torch.equal(a.attributes, b.attributes)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert not torch.equal(a.images, c.images)
    assert torch.bincount(a.labels).tolist() == [4] * len(world.classes)
    assert a.images.min() >= 0 and a.images.max() <= 1
    assert a.images.shape[1:] == (3, 32, 32)


def test_rendered_colour_is_the_planted_colour(world):
    # Per image, the pixels far from the background grey are the shape; their mean colour's
    # strongest channels must be the planted colour's (red: R, green: G, blue: B, yellow: R and G).
    data = world.sample(5, seed=3)
    expected = {"red": {0}, "green": {1}, "blue": {2}, "yellow": {0, 1}}
    for i in range(len(data)):
        img = data.images[i]
        background = img[:, 0, 0]  # shapes never touch the corner (radius + 1 margin)
        shape = (img - background[:, None, None]).abs().amax(0) > 0.25
        assert shape.sum() > 20
        mean = img[:, shape].mean(1)
        colour = world.colours[int(data.attributes[i, 1])]
        strong = {j for j in range(3) if mean[j] > 0.6 * mean.max()}
        assert strong == expected[colour], (i, colour, mean.tolist())


def test_world_rejects_bad_settings():
    with pytest.raises(NeurocoreError, match="shapes must be distinct names"):
        ConceptWorld(shapes=("circle", "hexagon"))
    with pytest.raises(NeurocoreError, match="colours is empty"):
        ConceptWorld(colours=())
    with pytest.raises(NeurocoreError, match="image_size must be >= 24"):
        ConceptWorld(image_size=16)
    with pytest.raises(NeurocoreError, match="n_per_class must be >= 1"):
        ConceptWorld().sample(0)


def test_subset_world(world):
    small = ConceptWorld(shapes=("circle", "square"), colours=("red", "blue"), textures=("plain",),
                         backgrounds=("dark background",), image_size=24)
    assert small.classes == ("red circle", "blue circle", "red square", "blue square")
    data = small.sample(2, seed=0)
    assert data.images.shape == (8, 3, 24, 24)
    assert data.concept_matrix().sum(1).tolist() == [5.0] * 8


# -- planted truth ----------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["wpmi", "rank_reorder", "cos"])
def test_planted_units_get_their_concepts(world, method):
    # PlantedConceptNet's units are built to mean one colour / one background each: the dissection
    # with the exact concept scores must name exactly those. (Not cos_cubed: cubing keeps only the
    # strongest activations, and a colour unit is strongest on that colour's circles, the largest
    # shape, so "red circle" is its fair cos_cubed label. Not soft_wpmi: see run_demo's docs.)
    probe = world.sample(20, seed=11)
    net = PlantedConceptNet(world)
    store = record(net, ["colours", "backgrounds"], probe, top_k=100, progress=False)
    ex = ClipDissect(similarity=method).explain(store, probe.concept_scores())
    assert ex.layer("colours").descriptions == list(world.colours)
    assert ex.layer("backgrounds").descriptions == list(world.backgrounds)
    assert all(v == 1.0 for v in label_precision(ex, probe.concept_scores()).values())


def test_label_precision_counts_top_images():
    from neurocore.concepts import ConceptScores
    from neurocore.methods import Explanations, NeuronExplanation

    cs = ConceptScores.from_tensor(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]]), ["a", "b"])
    ex = Explanations("x", (
        NeuronExplanation("l", 0, "a", 1.0, top_images=(1, 0, 2, 3)),   # 2 of 4; first: 0 of 1
        NeuronExplanation("l", 1, "b", 1.0, top_images=(1, 2)),         # 2 of 2
        NeuronExplanation("l", 2, "", float("nan"), top_images=(0,)),   # no label: left out
        NeuronExplanation("m", 0, "zebra", 1.0, top_images=(0,)),       # not a concept: left out
    ))
    out = label_precision(ex, cs)
    assert out["l"] == pytest.approx(0.75)
    assert out["m"] != out["m"]  # NaN: no labelled neuron
    assert label_precision(ex, cs, n_images=1)["l"] == pytest.approx(0.5)


# -- the CNN ------------------------------------------------------------------------------------


def test_cnn_layers_and_shapes():
    net = ConceptWorldCNN(24)
    names = dict(net.named_modules())
    for layer in DEMO_LAYERS:
        assert layer in names
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 24)
    with pytest.raises(NeurocoreError, match="widths must be 4"):
        ConceptWorldCNN(3, widths=(8, 8))


def test_training_is_deterministic_and_leaves_global_state(world):
    data = world.sample(3, seed=0)
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    threads = torch.get_num_threads()
    det = torch.are_deterministic_algorithms_enabled()
    a = train_cnn(data.images, data.labels, len(world.classes), epochs=2, seed=5, progress=False)
    after = torch.rand(3)
    assert torch.equal(before, after), "train_cnn must not consume the global random stream"
    assert torch.get_num_threads() == threads and torch.are_deterministic_algorithms_enabled() == det
    b = train_cnn(data.images, data.labels, len(world.classes), epochs=2, seed=5, progress=False)
    c = train_cnn(data.images, data.labels, len(world.classes), epochs=2, seed=6, progress=False)
    assert a.digest == b.digest == weights_digest(b.model)
    assert a.digest != c.digest
    assert a.losses == b.losses and len(a.losses) == 2
    assert not a.model.training


def test_training_learns(world):
    # 720 images, 6 epochs: far above chance (1/24) on images it has not seen (0.34 here; the
    # default demo's 3600 images and 8 epochs reach 0.999, checked in test_cli_demo.py).
    train, test = world.sample(30, seed=0), world.sample(5, seed=1)
    result = train_cnn(train.images, train.labels, len(world.classes), epochs=6, seed=0, progress=False)
    assert result.losses[-1] < result.losses[0]
    with torch.no_grad():
        acc = (result.model(test.images).argmax(1) == test.labels).float().mean().item()
    assert acc > 0.2


def test_training_rejects_bad_input(world):
    data = world.sample(1, seed=0)
    with pytest.raises(NeurocoreError, match="labels must lie in"):
        train_cnn(data.images, data.labels + 100, len(world.classes), progress=False)
    with pytest.raises(NeurocoreError, match="N >= 1"):
        train_cnn(data.images[:0], data.labels[:0], len(world.classes), progress=False)
    with pytest.raises(NeurocoreError, match="label_smoothing"):
        train_cnn(data.images, data.labels, len(world.classes), label_smoothing=1.5, progress=False)


# -- the demo pipeline --------------------------------------------------------------------------


def test_demo_end_to_end_small(tmp_path):
    r = run_demo(tmp_path / "out", seed=3, **SMALL)
    assert r.explanations.layers == DEMO_LAYERS
    assert len(r.explanations.layer("fc")) == len(r.world.classes)
    assert r.store.num_images == len(r.probe) == 10 * 24
    for name in ("explanations.csv", "explanations.json", "summary.csv", "demo.json", "demo_cnn.pt", "index.html"):
        assert (tmp_path / "out" / name).is_file(), name
    info = json.loads((tmp_path / "out" / "demo.json").read_text())
    assert info["weights_digest"] == r.training.digest
    assert info["final_layer_accuracy"] == r.final_layer_accuracy
    # final-layer accuracy is the share of fc neurons labelled with their own class
    fc = r.explanations.layer("fc")
    assert r.final_layer_accuracy == pytest.approx(sum(n.description == r.world.classes[n.unit] for n in fc) / 24)
    # the summary counts every labelled neuron in exactly one family
    fams = ["shape", "colour", "texture", "background", "object"]
    assert (r.summary[fams].sum(axis=1) + r.summary["unlabelled"]).tolist() == r.summary["neurons"].tolist()
    # the saved CNN is the trained one
    state = torch.load(tmp_path / "out" / "demo_cnn.pt", weights_only=True)
    net = ConceptWorldCNN(24)
    net.load_state_dict(state)
    assert weights_digest(net) == r.training.digest
    page = (tmp_path / "out" / "index.html").read_text()
    assert "red circle" in page and "data:image/png;base64," in page


def test_demo_same_seed_same_results():
    a = run_demo(None, seed=4, **SMALL)
    b = run_demo(None, seed=4, **SMALL)
    c = run_demo(None, seed=5, **SMALL)
    assert a.out_dir is None and a.report is None
    assert a.training.digest == b.training.digest != c.training.digest
    assert torch.equal(a.probe.images, b.probe.images)
    assert a.explanations == b.explanations
    for layer in DEMO_LAYERS:
        assert torch.equal(a.store[layer].summaries, b.store[layer].summaries)


def test_demo_rejects_bad_settings():
    with pytest.raises(NeurocoreError, match="epochs must be an integer >= 1"):
        run_demo(None, epochs=0, progress=False)
    with pytest.raises(NeurocoreError, match="seed must be an integer >= 0"):
        run_demo(None, seed=-1, progress=False)
    with pytest.raises(NeurocoreError, match="unknown similarity"):
        run_demo(None, similarity="nope", progress=False)
    with pytest.warns(DeprecationWarning, match="method= is deprecated"), pytest.raises(NeurocoreError, match="unknown similarity"):
        run_demo(None, method="nope", progress=False)  # the old keyword still reaches the setting


# -- object masks, boxes, the class hierarchy and HINT (issue 9) ------------------------------------


def test_masks_and_boxes_are_the_drawn_objects(world):
    data = world.sample(2, seed=3)
    assert data.masks.shape == (len(data), 32, 32) and data.masks.dtype == torch.bool
    # the mask is exactly where the image differs from its background grey (beyond the noise)
    from neurocore.demo._world import _BACKGROUND_LEVEL

    level = torch.tensor([_BACKGROUND_LEVEL[world.backgrounds[b]] for b in data.attributes[:, 3].tolist()])
    off = (data.images - level.view(-1, 1, 1, 1)).abs().amax(1) > 0.15
    assert (off == data.masks).float().mean() > 0.99
    for i in range(len(data)):
        x0, y0, x1, y1 = data.boxes[i].tolist()
        ys, xs = data.masks[i].nonzero().unbind(1)
        assert (x0, y0, x1, y1) == (xs.min(), ys.min(), xs.max(), ys.max())
    sub = data.subset([3, 1])
    assert torch.equal(sub.masks, data.masks[[3, 1]])


def test_hierarchy_covers_the_classes(world):
    h = world.hierarchy
    assert h["object"] == world.classes
    assert set(h["round"]) == {f"{c} {s}" for s in ("circle", "ring") for c in world.colours}
    assert all(set(h[s]) <= set(h["object"]) for s in world.shapes)


def test_demo_runs_hint_small():
    r = run_demo(None, **SMALL)
    assert r.hint is not None and r.hint.layer == "block3"
    assert set(r.hint.localization.index) == {10, 20, 40, 80, 100}
    assert r.hint.explanations.method == "hint" and len(r.hint.explanations) == 64


def test_demo_where_table_on_planted_boxes(world):
    # The demo's "where" table: WWW heatmaps, the library baselines and the whole-image box on the planted
    # objects (exact boxes): scores are shares in [0, 1], and the whole-image box fails IoU >= 0.5 on the
    # small objects.
    from neurocore.demo._run import run_where_demo

    probe = world.sample(4, seed=3)
    torch.manual_seed(0)
    table = run_where_demo(ConceptWorldCNN(len(world.classes)).eval(), probe, per_class=2, lime_samples=20)
    assert "whole image" in table.index and {"accuracy", "pointing", "threshold"} <= set(table.columns)
    assert table.loc["whole image", "accuracy"] <= 0.5
    assert table["accuracy"].between(0, 1).all() and table["pointing"].dropna().between(0, 1).all()  # NaN: regions
