"""HINT (ALGORITHMS.md §3): saliency against direct autograd, guided rules, normalisation edge cases,
hooks gone after an exception, batched = per-image, Φ against closed forms, seeds, the hierarchy, and
localisation against the concept world's planted boxes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from neurocore._errors import NeurocoreError
from neurocore.demo import ConceptWorld, PlantedConceptNet
from neurocore.evaluate import box_iou, localization_accuracy, localize, mask_boxes, whole_image_boxes
from neurocore.methods.hint import (
    ConceptClassifiers,
    ConceptHierarchy,
    Hint,
    cell_dataset,
    coefficient_contributions,
    collaborative_neurons,
    fit_concept_classifiers,
    layer_saliency,
    multimodal_neurons,
    normalise_saliency,
    random_contributions,
    responsible_regions,
    shapley_contributions,
)


class Net(nn.Module):
    """conv -> ReLU(inplace) -> conv -> ReLU6 -> GAP -> linear: the layer 'conv1' is followed by an in-place ReLU."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 5, 3, padding=1)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(5, 6, 3, padding=1)
        self.relu2 = nn.ReLU6()
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        return self.fc(self.relu2(self.conv2(self.relu1(self.conv1(x)))).mean((2, 3)))


def direct(net, x, y, guided=False):
    """The definition by hand: z = conv1(x) before the in-place ReLU, s = d logit_y / dz."""
    z = net.conv1(x).detach().requires_grad_(True)
    a = torch.relu(z)
    h = net.conv2(a)
    o = torch.clamp(h, 0, 6)
    logits = net.fc(o.mean((2, 3)))
    if not guided:
        (g,) = torch.autograd.grad(logits.gather(1, y[:, None]).sum(), z)
        return z.detach(), g
    # guided: at each ReLU/ReLU6, 1[mask] * max(g, 0); computed by hand layer by layer
    go = torch.zeros_like(logits).scatter_(1, y[:, None], 1.0)
    g_o = (go @ net.fc.weight)[:, :, None, None].expand_as(o) / (o.shape[2] * o.shape[3])
    g_h = g_o.clamp(min=0) * ((h > 0) & (h < 6))
    g_a = torch.nn.grad.conv2d_input(a.shape, net.conv2.weight, g_h, padding=1)
    g_z = g_a.clamp(min=0) * (z > 0)
    return z.detach(), g_z.detach()


@pytest.fixture(scope="module")
def net():
    return Net().eval()


X = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
Y = torch.tensor([0, 2, 3])


def test_gradient_and_gradient_x_input_match_autograd(net):
    z0, g0 = direct(net, X, Y)
    z, s = layer_saliency(net, "conv1", X, Y, "gradient")
    assert torch.allclose(z, z0, atol=1e-6) and torch.allclose(s, g0, atol=1e-6)
    assert (z < 0).any(), "the map is the pre-ReLU one"
    _, sx = layer_saliency(net, "conv1", X, Y, "gradient_x_input")
    assert torch.allclose(sx, g0 * z0, atol=1e-6)


def test_guided_backprop_relu_and_relu6(net):
    z0, g0 = direct(net, X, Y, guided=True)
    z, s = layer_saliency(net, "conv1", X, Y, "guided_backprop")
    assert torch.allclose(s, g0, atol=1e-6) and (s >= 0).all()
    _, plain = layer_saliency(net, "conv1", X, Y, "gradient")
    assert not torch.allclose(s, plain)


def test_smoothgrad_definition_and_seed(net):
    _, s = layer_saliency(net, "conv1", X, Y, "smoothgrad", samples=3, sigma=0.2, seed=5)
    gen = torch.Generator().manual_seed(5)
    spread = (X.flatten(1).max(1).values - X.flatten(1).min(1).values).view(-1, 1, 1, 1)
    expected = sum(direct(net, X + torch.randn(X.shape, generator=gen) * 0.2 * spread, Y)[1] for _ in range(3)) / 3
    assert torch.allclose(s, expected, atol=1e-6)
    _, again = layer_saliency(net, "conv1", X, Y, "smoothgrad", samples=3, sigma=0.2, seed=5)
    _, other = layer_saliency(net, "conv1", X, Y, "smoothgrad", samples=3, sigma=0.2, seed=6)
    assert torch.equal(s, again) and not torch.equal(s, other)


def test_integrated_gradients_input_space(net):
    z, s = layer_saliency(net, "conv1", X, Y, "integrated_gradients", steps=4)
    mean = sum(direct(net, X * a, Y)[1] for a in torch.linspace(0, 1, 4).tolist()) / 4
    assert torch.allclose(z, direct(net, X, Y)[0], atol=1e-6)
    assert torch.allclose(s, z * mean, atol=1e-6)


def test_batched_equals_per_image(net):
    _, s = layer_saliency(net, "conv1", X, Y, batch_size=3)
    single = torch.cat([layer_saliency(net, "conv1", X[i : i + 1], Y[i : i + 1])[1] for i in range(3)])
    assert torch.allclose(s, single, atol=1e-6)


def test_hooks_removed_after_exception(net):
    class Boom(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = Net()

        def forward(self, x):
            self.inner(x)
            raise RuntimeError("midway")

    model = Boom().eval()
    with pytest.raises(RuntimeError, match="midway"):
        layer_saliency(model, "inner.conv1", X, Y)
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks


def test_bad_options_named(net):
    with pytest.raises(NeurocoreError, match="no option 'steps'"):
        layer_saliency(net, "conv1", X, Y, "smoothgrad", steps=3)
    with pytest.raises(NeurocoreError, match="method must be one of"):
        layer_saliency(net, "conv1", X, Y, "lrp")


def test_normalisation_edge_cases():
    flat = torch.ones(1, 3, 3)
    assert not responsible_regions(flat[:, None].expand(1, 2, 3, 3).clone()).any(), "a flat map has no region"
    # p99 with linear interpolation; strict threshold: a cell exactly at t is not responsible
    a = torch.tensor([[[0.0, 1.0], [2.0, 2.0]]])
    assert torch.allclose(normalise_saliency(a), torch.tensor([[[0.0, 0.5], [1.0, 1.0]]]))
    s = a[:, None]  # one channel: norm = |a|
    assert responsible_regions(s, "sum", 0.5).tolist() == [[[False, False], [True, True]]]
    # p99 <= min (all but one cell at the minimum, 100 cells): falls back to max - min
    m = torch.zeros(1, 10, 10); m[0, 0, 0] = 4.0
    n = normalise_saliency(m)
    assert n[0, 0, 0] == 1.0 and n.sum() == 1.0
    q = torch.rand(2, 5, 5)
    lo, p99 = q.flatten(1).min(1).values, torch.quantile(q.flatten(1), 0.99, dim=1)
    assert torch.allclose(normalise_saliency(q), ((q - lo[:, None, None]) / (p99 - lo)[:, None, None]).clamp(0, 1))


@pytest.mark.parametrize("agg,expected", [
    ("norm", 5.0), ("filter_norm", 3.0), ("sum", -1.0), ("max", 3.0), ("abs_sum", 7.0), ("abs_max", 4.0),
])
def test_aggregations(agg, expected):
    from neurocore.methods.hint import aggregate_saliency

    s = torch.tensor([3.0, -4.0]).view(1, 2, 1, 1)
    assert aggregate_saliency(s, agg).item() == expected


def test_hierarchy_wordnet_and_groups():
    h = ConceptHierarchy.from_wordnet(["n02084071", "n01503061", "n02958343"], ["whole", "animal", "bird"])
    assert h.names == ("whole", "animal", "bird") and h["animal"].leaves == (0, 1) and h["bird"].wnid == "n01503061"
    assert h.membership(torch.tensor([1, 2])).tolist() == [[1, 1, 1], [1, 0, 0]]
    every = ConceptHierarchy.from_wordnet(["n02084071", "n02121808"])
    assert "carnivore" in every.names and every["carnivore"].leaves == (0, 1)
    with pytest.raises(NeurocoreError, match="covers none"):
        ConceptHierarchy.from_wordnet(["n02958343"], ["animal"])
    world = ConceptWorld()
    g = ConceptHierarchy.from_groups(world.classes, world.hierarchy)
    assert len(g["object"].leaves) == 24 and [world.classes[i] for i in g["round"].leaves][:2] == ["red circle", "green circle"]


def test_classifier_and_shapley_identity_closed_form():
    gen = torch.Generator().manual_seed(0)
    cells = torch.randn(300, 4, generator=gen)
    labels = torch.stack([cells[:, 0] > 0.5, cells[:, 2] < -0.5], 1)
    clf = fit_concept_classifiers(cells, labels, ["a", "b"], seed=0)
    assert clf.weight[0].abs().argmax() == 0 and clf.weight[1].abs().argmax() == 2 and (clf.f1 > 0.8).all()
    again = fit_concept_classifiers(cells, labels, ["a", "b"], seed=0)
    assert torch.equal(clf.weight, again.weight)
    sgd = fit_concept_classifiers(cells, labels, ["a", "b"], classifier="sgd", seed=0)
    assert sgd.kind == "sgd" and sgd.weight[0].abs().argmax() == 0
    # identity link: phi = mean_r |w_d (x_rd - bg_rd)|, the backgrounds being the cells drawn by the seed
    phi = shapley_contributions(clf, cells, labels, link="identity", permutations=3, max_cells=50, seed=3)
    g2 = torch.Generator().manual_seed(3)
    torch.randint(2**31 - 1, (1,), generator=g2)  # the permutations' seed
    from neurocore.methods.hint import _concept_rows, _sample

    by = labels.T.contiguous()
    rows = [_concept_rows(by, e, 50, g2) for e in range(2)]
    backs = [(r + torch.randint(1, 300, r.shape, generator=g2)) % 300 for r in rows]
    for e in range(2):
        expected = (clf.weight[e] * (cells[rows[e]] - cells[backs[e]])).abs().mean(0)
        assert torch.allclose(phi[:, e], expected, atol=1e-5)
    sig = shapley_contributions(clf, cells, labels, seed=1)
    assert torch.equal(sig, shapley_contributions(clf, cells, labels, seed=1))
    assert sig[:, 0].argmax() == 0 and sig[:, 1].argmax() == 2
    assert torch.equal(coefficient_contributions(clf), clf.weight.abs().T)
    assert random_contributions(4, 2, seed=0).shape == (4, 2)


def test_collaborative_and_multimodal():
    phi = torch.tensor([[0.9, 0.8], [0.5, 0.0], [0.0, 0.7]])
    table = collaborative_neurons(phi, ["a", "b"], top_n=2)
    assert table[table.concept == "a"]["unit"].tolist() == [0, 1]
    assert table[table.concept == "b"]["unit"].tolist() == [0, 2]
    assert multimodal_neurons(phi, ["a", "b"], top_n=2)["unit"].tolist() == [0]


def test_boxes_and_iou():
    assert box_iou(torch.tensor([[0, 0, 9, 9]]), torch.tensor([[0, 0, 9, 4]])).item() == 0.5
    assert box_iou(torch.tensor([[-1, -1, -1, -1]]), torch.tensor([[0, 0, 1, 1]])).item() == 0.0
    m = torch.zeros(1, 4, 4, dtype=torch.bool); m[0, 1:3, 2] = True
    assert mask_boxes(m, (16, 16)).tolist() == [[8, 4, 11, 11]]
    assert whole_image_boxes((16, 8), 2).tolist() == [[0, 0, 7, 15]] * 2
    loc = localize(m, [torch.tensor([[8, 4, 11, 11], [0, 0, 1, 1]])], (16, 16))
    assert loc.accuracy == 1.0 and loc.full_grid == 0.0


@pytest.fixture(scope="module")
def planted():
    world = ConceptWorld()
    data = world.sample(6, seed=4)
    return world, data, PlantedConceptNet(world).eval()


def test_planted_regions_are_the_objects(planted):
    """On the planted net, gradient x input of the colour logits marks exactly the object's coloured pixels."""
    world, data, net = planted
    targets = data.attributes[:, 1]  # the colour unit of each image
    _, s = layer_saliency(net, "colours", data.images, targets, "gradient_x_input")
    regions = responsible_regions(s)
    inside = (regions & data.masks).sum() / regions.sum()
    assert inside > 0.99  # responsible cells lie on the object
    assert (regions.sum((1, 2)) > 0).all()


def test_localisation_beats_whole_image_on_planted_boxes(planted):
    world, data, net = planted
    h = ConceptHierarchy.from_groups(world.classes, world.hierarchy)
    method = Hint(saliency="gradient_x_input", target=[c for _ in world.shapes for c in range(len(world.colours))])
    fit = torch.arange(len(data)) % 2 == 0
    idx_fit, idx_test = fit.nonzero().reshape(-1), (~fit).nonzero().reshape(-1)
    member = h.membership(data.labels)
    _, _, cells, labels = method.layer_cells(net, "colours", data, idx_fit.tolist(), member[idx_fit])
    maps, _, _, _ = method.layer_cells(net, "colours", data, idx_test.tolist(), member[idx_test])
    e = h.names.index("object")
    clf = fit_concept_classifiers(cells, labels, h.names)
    phi = shapley_contributions(clf, cells, labels, permutations=16)
    table = localization_accuracy(cells, labels[:, e], phi[:, e], maps, data.boxes[idx_test], (32, 32),
                                  percents=(50, 100))
    # every colour unit is needed for "object" (objects come in four colours): all of them localise every
    # object, two of them only the objects of their two colours
    assert table.loc[100, "accuracy"] >= 0.95 and 0.4 <= table.loc[50, "accuracy"] <= 0.6, table
    assert (table["whole_image"] < 0.5).all() and (table["full_grid"] == 0).all()


def test_method_seed_reproduces_and_errors(planted):
    world, data, net = planted
    from neurocore.probe import record

    store = record(net, ["colours"], data, batch_size=256, progress=False)
    scores = data.concept_scores()
    settings = dict(saliency="gradient_x_input", target="logit_sum", images_per_concept=6, permutations=8, max_cells=200)
    a = Hint(**settings).explain(store, scores, model=net, probe=data)
    b = Hint(**settings).explain(store, scores, model=net, probe=data)
    assert [n.scores for n in a] == [n.scores for n in b]
    assert [n.label for n in a] == list(world.colours)
    assert set(a.params["collaborative"]["colours"]) == set(world.concepts)
    with pytest.raises(NeurocoreError, match="pass model= and probe="):
        Hint().explain(store, scores)
    with pytest.raises(NeurocoreError, match="saliency must be one of"):
        Hint(saliency="lrp").explain(store, scores, model=net, probe=data)


# ---- layers without responsible regions, interpretability, target="auto" -----------------------


@pytest.fixture(scope="module")
def world_probe():
    from neurocore.probe import record

    world = ConceptWorld()
    data = world.sample(1, seed=0)  # one image per class, 24 classes

    def store_of(net, layers):
        return record(net, layers, data, batch_size=256, progress=False)

    return world, data, data.concept_scores(), store_of


def _gap_net(outputs: int, *, dead: int | None = None) -> nn.Sequential:
    """conv -> ReLU -> 1x1 conv -> ReLU -> global average pool -> linear ('3' is the layer the pool follows)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, outputs)).eval()
    if dead is not None:  # a channel that is 0 everywhere after the first ReLU
        with torch.no_grad():
            net[0].weight[dead] = 0.0
            net[0].bias[dead] = -1.0
    return net


FAST = dict(images_per_concept=3, permutations=4, max_cells=100, contribution="coefficient")


def test_flat_saliency_layer_is_refused_by_every_entry(world_probe):
    """Right before global average pooling a logit's gradient is the same at every cell: no responsible
    region, so HINT must refuse the layer (naming it and the fix) instead of labelling nothing."""
    from neurocore.demo import ConceptWorldCNN
    from neurocore.methods.hint import hint

    world, data, scores, store_of = world_probe
    cnn = ConceptWorldCNN(len(world.classes)).eval()
    store = store_of(cnn, ["block4"])
    for target in ("auto", "logit_sum"):
        with pytest.raises(NeurocoreError, match=r"layer 'block4' is a responsible region.*flat.*earlier layer"):
            Hint(target=target, **FAST).explain(store, scores, layers="block4", model=cnn, probe=data)
    net = _gap_net(len(world.classes))
    with pytest.raises(NeurocoreError, match=r"layer '3' is a responsible region.*flat.*earlier layer"):
        hint(net, "3", data, scores, progress=False, **FAST)
    with pytest.raises(NeurocoreError, match=r"no cell's normalised 'norm' saliency exceeds threshold=1"):
        hint(net, "1", data, scores, progress=False, threshold=1, **FAST)


def test_unlabelled_neuron_is_not_interpretable(world_probe):
    world, data, scores, store_of = world_probe
    net = _gap_net(len(world.classes), dead=2)
    store = store_of(net, ["1"])
    ex = Hint(target="predicted", **FAST).explain(store, scores, model=net, probe=data)
    assert ex[2].label == "" and ex[2].scores == (0.0,) * len(scores.concepts)
    assert [n.interpretable for n in ex] == [bool(n.label) for n in ex] and not ex[2].interpretable
    assert sum(n.interpretable for n in ex) >= 2


def test_target_auto_is_resolved_with_the_model_and_probe(world_probe):
    from torch.utils.data import Dataset

    from neurocore.concepts import imagenet_wnids
    from neurocore.methods.hint import resolve_target

    world, data, scores, store_of = world_probe
    assert Hint().target == "auto"
    net = _gap_net(len(world.classes))  # one output per class: the class label is the logit
    store = store_of(net, ["1"])
    method = Hint(**FAST)
    ex = method.explain(store, scores, model=net, probe=data)
    assert ex.params["target"] == "label" and method.target_ == "label" and method.target == "auto"
    label = Hint(target="label", **FAST).explain(store, scores, model=net, probe=data)
    assert [n.scores for n in ex] == [n.scores for n in label]
    # 6 outputs for 24 unrelated classes: a class index would pick an unrelated logit
    other = _gap_net(6)
    with pytest.raises(NeurocoreError, match=r"6 outputs but the probe has 24 classes.*target='predicted'"):
        Hint(**FAST).explain(store_of(other, ["1"]), scores, model=other, probe=data)
    assert resolve_target("predicted", other, data) == "predicted"
    with pytest.raises(NeurocoreError, match="target='imagenet' needs a 1000-class"):
        resolve_target("imagenet", other, data)

    class WnidFolder(Dataset):  # three ImageNet classes, as ImageFolder lists WordNet-id folders
        classes = ("n01440764", "n01443537", "n04285008")  # tench, goldfish, sports car

        def __len__(self):
            return 3

        def __getitem__(self, i):
            return torch.rand(3, 8, 8), i

    wnids = imagenet_wnids()
    mapping = [wnids.index(c) for c in WnidFolder.classes]
    assert mapping == [0, 1, 817]
    assert resolve_target("auto", _gap_net(1000), WnidFolder()) == mapping
    assert resolve_target("imagenet", _gap_net(1000), WnidFolder()) == mapping
    with pytest.raises(NeurocoreError, match="has no `classes`: pass target='label'"):
        resolve_target("auto", net, torch.utils.data.TensorDataset(data.images, data.labels))
    with pytest.raises(NeurocoreError, match="target must be one of"):
        Hint(target="labels").explain(store, scores, model=net, probe=data)
