"""WWW (ALGORITHMS.md §4): ACS and the adaptive threshold against their definitions, importance in closed
form = autograd (CNN and ViT CLS), heatmaps on planted maps, crops inside the image, and the planted
concept world: planted concepts come out as major and minor concepts, a planted distractor moves the
sample heatmap and the heatmap similarity separates those mispredictions."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision

from neurocore import NeurocoreError
from neurocore.demo import ConceptWorld, PlantedConceptNet
from neurocore.demo._www import (
    ConceptWorldVLM, DistractorNet, add_distractor, box_energy, colour_labels, object_boxes,
)
from neurocore.evaluate import misprediction_auroc
from neurocore.methods.www import (
    WWW, adaptive_cosine_similarity, adaptive_threshold, class_heatmap, class_importance, heatmap_similarity,
    image_heatmaps, minor_concepts, sample_heatmap, sample_importance,
)
from neurocore.probe import Head, crop_boxes, head_after, record

CUDA = torch.cuda.is_available()


def acs_reference(images, concepts, template=None):
    """Per-image transcription of WWW's ACS: Σ_i cos(I_i, T_m) − cos(I_i, T_template)."""
    K, n, _ = images.shape
    out = torch.zeros(K, concepts.shape[0], dtype=torch.float64)
    for k in range(K):
        for i in range(n):
            for m in range(concepts.shape[0]):
                c = F.cosine_similarity(images[k, i].double(), concepts[m].double(), dim=0)
                if template is not None:
                    c = c - F.cosine_similarity(images[k, i].double(), template.double(), dim=0)
                out[k, m] += c
    return out


@pytest.mark.parametrize("with_template", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_acs_equals_per_image_definition(with_template, dtype):
    g = torch.Generator().manual_seed(0)
    images = (torch.randn(5, 7, 6, generator=g) * 3).to(dtype)
    concepts = torch.randn(9, 6, generator=g).to(dtype)
    template = torch.randn(6, generator=g).to(dtype) if with_template else None
    got = adaptive_cosine_similarity(images, concepts, template)
    assert got.dtype == dtype and got.shape == (5, 9)
    torch.testing.assert_close(got.double(), acs_reference(images, concepts, template), rtol=1e-5, atol=1e-5)


def test_acs_negative_and_scale_invariant():
    images = torch.tensor([[[-1.0, 0.0], [-5.0, 0.0]]])
    concepts = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert adaptive_cosine_similarity(images, concepts).tolist() == [[-2.0, 0.0]]
    assert adaptive_threshold(adaptive_cosine_similarity(images, concepts)) == [[]]  # max 0: nothing passes
    # raw embeddings: scaling an image or a concept changes nothing
    torch.testing.assert_close(adaptive_cosine_similarity(images * 7, concepts * 0.1), adaptive_cosine_similarity(images, concepts))


def test_acs_errors():
    with pytest.raises(NeurocoreError, match="d=3 but image_embeddings has d=2"):
        adaptive_cosine_similarity(torch.rand(1, 2, 2), torch.rand(4, 3))
    with pytest.raises(NeurocoreError, match=r"image_embeddings must be a Tensor\[K, n, d\]"):
        adaptive_cosine_similarity(torch.rand(2, 2), torch.rand(4, 2))


@pytest.mark.skipif(not CUDA, reason="no CUDA device")
def test_acs_cpu_equals_cuda():
    images, concepts, t = torch.randn(8, 40, 16), torch.randn(30, 16), torch.randn(16)
    cpu = adaptive_cosine_similarity(images, concepts, t)
    gpu = adaptive_cosine_similarity(images.cuda(), concepts.cuda(), t.cuda())
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-5, atol=1e-5)


def test_threshold_strict_sorted_and_ties():
    s = torch.tensor([
        [1.0, 0.95, 0.96, 0.96, 0.2],   # 0.95 = α·max exactly: strict, left out; tie 0.96 by index
        [-1.0, -0.5, -0.1, -2.0, -3.0],  # max < 0: none
        [0.0, 0.0, 0.0, 0.0, 0.0],       # max = 0: none
        [2.0, 2.0, 1.0, float("nan"), 1.95],
    ])
    assert adaptive_threshold(s, 0.95) == [[0, 2, 3], [], [], [0, 1, 4]]
    assert adaptive_threshold(s, 1.0) == [[], [], [], []]
    assert adaptive_threshold(s, 0.0)[0] == [0, 2, 3, 1, 4]
    assert adaptive_threshold(torch.zeros(2, 0)) == [[], []]
    with pytest.raises(NeurocoreError, match="alpha must be a number in"):
        adaptive_threshold(s, 1.5)


# ----------------------------------------------------------------------------------------------
# Why: importance


def _labelled(images, labels):
    return [(images[i], int(labels[i])) for i in range(len(labels))]


def test_closed_form_equals_autograd_resnet():
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=5).eval()
    x = torch.rand(6, 3, 32, 32)
    y = torch.tensor([0, 1, 1, 3, 4, 4])
    head = head_after(net, "layer4", example=x[:1])
    assert head.kind == "pooled"
    closed = class_importance(net, "layer4", _labelled(x, y), head=head, method="closed_form", batch_size=4)
    auto = class_importance(net, "layer4", _labelled(x, y), head=head, method="autograd", batch_size=4)
    assert closed.shape == (5, 512)
    torch.testing.assert_close(closed, auto, rtol=1e-4, atol=1e-6)
    assert bool((closed[2] == 0).all())  # class without images: zero row
    s_closed = sample_importance(net, "layer4", x, head=head, method="closed_form")
    # definition: pooled activation × W[predicted class]
    pooled = net.avgpool(net.layer4(net.layer3(net.layer2(net.layer1(net.maxpool(net.relu(net.bn1(net.conv1(x))))))))).flatten(1)
    pred = net(x).argmax(1)
    torch.testing.assert_close(s_closed, (pooled * net.fc.weight[pred]).detach(), rtol=1e-4, atol=1e-6)


def test_closed_form_equals_autograd_vit_cls():
    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=16,
                                               mlp_dim=32, num_classes=4).eval()
    x = torch.rand(5, 3, 32, 32)
    head = head_after(vit, "encoder", example=x[:1])
    assert head.kind == "pooled" and head.summary == "first"
    closed = sample_importance(vit, "encoder", x, method="closed_form")
    auto = sample_importance(vit, "encoder", x, method="autograd")
    torch.testing.assert_close(closed, auto, rtol=1e-4, atol=1e-6)


def test_shapley_option_sums_to_softmax_change_and_is_seeded():
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=3).eval()
    x = torch.rand(2, 3, 32, 32)
    a = sample_importance(net, "layer4", x, method="shapley", n_permutations=8, seed=3)
    b = sample_importance(net, "layer4", x, method="shapley", n_permutations=8, seed=3)
    assert torch.equal(a, b)
    logits = net(x).detach()
    pred = logits.argmax(1)
    p = torch.softmax(logits, 1)[torch.arange(2), pred]
    p0 = torch.softmax(net.fc.bias.detach(), 0)[pred]  # background: zero features
    torch.testing.assert_close(a.sum(1), p - p0, rtol=1e-3, atol=1e-5)


def test_closed_form_needs_a_linear_head():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 36, 2))
    with pytest.raises(NeurocoreError, match="method='closed_form' needs a head"):
        sample_importance(net, "1", torch.rand(2, 3, 8, 8), method="closed_form")
    assert sample_importance(net, "1", torch.rand(2, 3, 8, 8)).shape == (2, 4)  # auto: autograd


# ----------------------------------------------------------------------------------------------
# Where: heatmaps


def test_heatmaps_on_planted_maps():
    maps = torch.zeros(2, 4, 2, 2)
    maps[:, 0, 0, 0] = 1.0
    maps[:, 1, 1, 1] = 1.0
    maps[:, 2, 0, 1] = 1.0
    maps[:, 3, 1, 0] = 5.0
    ci = torch.tensor([[3.0, 1.0, 0.0, -1.0], [0.0, 0.0, 0.0, 2.0]])
    h = class_heatmap(maps, ci, torch.tensor([0, 1]))
    # class 0: top-3 = units 0, 1, 2 with weights 3/4, 1/4, 0
    assert h[0].tolist() == [[0.75, 0.0], [0.0, 0.25]]
    # class 1: top-3 = unit 3 (weight 1), then ties at 0 by index
    assert h[1].tolist() == [[0.0, 0.0], [5.0, 0.0]]
    s = sample_heatmap(maps, torch.tensor([[0.0, 0.0, 1.0, 0.0], [-1.0, -1.0, -1.0, -1.0]]), top_n=1)
    assert s[0].tolist() == [[0.0, 1.0], [0.0, 0.0]] and bool((s[1] == 0).all())  # Σs <= 0: zero heatmap
    sim = heatmap_similarity(h, s)
    assert sim.tolist() == [0.0, 0.0]
    up = class_heatmap(maps, ci, torch.tensor([0, 1]), size=(8, 8))
    assert up.shape == (2, 8, 8)
    torch.testing.assert_close(up, F.interpolate(h[:, None], size=(8, 8), mode="bilinear", align_corners=False)[:, 0])
    torch.testing.assert_close(heatmap_similarity(up, 2 * up), torch.ones(2))


@pytest.mark.parametrize("map_size", [(1, 1), (2, 3), (7, 7), (13, 5)])
@pytest.mark.parametrize("image_size", [(32, 32), (33, 20)])
def test_crops_inside_the_image(map_size, image_size):
    h, w = map_size
    cells = torch.stack(torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij"), -1).reshape(-1, 2)
    boxes = crop_boxes(cells, map_size, image_size, 0.5)
    H, W = image_size
    assert bool((boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all() and (boxes[:, 2] <= W).all() and (boxes[:, 3] <= H).all())
    assert bool(((boxes[:, 2] - boxes[:, 0]) == round(0.5 * W)).all())


# ----------------------------------------------------------------------------------------------
# The planted concept world


@pytest.fixture(scope="module")
def world_probe():
    world = ConceptWorld()
    return world, world.sample(8, seed=2)


def test_vlm_stand_in_cosines_are_the_exact_scores(world_probe):
    import torchvision.transforms.functional as TF

    world, probe = world_probe
    vlm = ConceptWorldVLM(probe)
    x = torch.stack([vlm.preprocess(TF.to_pil_image(probe.images[i])) for i in range(10)])
    cos = F.normalize(vlm.encode_images(x), dim=1) @ F.normalize(vlm.encode_texts([f"A photo of a {c}" for c in world.concepts]), dim=1).T
    torch.testing.assert_close(cos, probe.concept_matrix()[:10] / math.sqrt(5))
    assert vlm.encode_texts(["A photo of a"])[0, -1] == 1.0  # the template is its own axis


def test_planted_concepts_are_major_and_minor(world_probe):
    world, probe = world_probe
    net = PlantedConceptNet(world).eval()
    store = record(net, ["colours", "backgrounds"], probe, top_k=40, batch_size=256, progress=False)
    ex = WWW(vlm=ConceptWorldVLM(probe), concept_set=list(world.concepts)).explain(store, model=net, probe=probe)
    truth = {("colours", j): c for j, c in enumerate(world.colours)}
    truth.update({("backgrounds", j): b for j, b in enumerate(world.backgrounds)})
    for n in ex:
        planted = truth[(n.layer, n.unit)]
        assert n.label == planted and n.concepts == (planted,)
        assert n.similarity == pytest.approx(40 / math.sqrt(5), rel=1e-5)  # in all 40 top images
        assert minor_concepts(ex, n.layer, n.unit)[0][0] == planted
    assert len(ex[0].top_images) == 40


def test_distractor_moves_the_sample_heatmap_and_similarity_separates():
    world = ConceptWorld()
    train, test = world.sample(6, seed=3), world.sample(6, seed=4)
    flagged = torch.arange(0, len(test), 2)
    dtest, dboxes = add_distractor(test, flagged)
    net = DistractorNet(world).eval()
    assert head_after(net, "units").kind == "pooled"  # closed form applies
    ci = class_importance(net, "units", _labelled(train.images, colour_labels(train)))
    torch.testing.assert_close(ci, class_importance(net, "units", _labelled(train.images, colour_labels(train)),
                                                    method="autograd"), rtol=1e-4, atol=1e-7)
    res = image_heatmaps(net, "units", _labelled(dtest.images, colour_labels(dtest)), ci, keep_heatmaps=True)
    wrong = ~res.correct
    with_d = torch.zeros(len(test), dtype=torch.bool)
    with_d[flagged] = True
    # mispredicted exactly: distractor present and the object is not of the target colour
    assert torch.equal(wrong, with_d & (colour_labels(test) != net.target))
    # the sample heatmap moves to the distractor, the class heatmap does not
    assert float(box_energy(res.sample_heatmaps, dboxes)[wrong].min()) > 0.6
    assert float(box_energy(res.class_heatmaps, dboxes)[wrong].max()) < 0.2
    assert float(box_energy(res.sample_heatmaps, object_boxes(test))[~with_d].mean()) > 0.5
    auc = misprediction_auroc(res.similarity, res.correct, res.msp, n_bootstrap=50)
    assert auc.heatmap > 0.95 and auc.errors == int(wrong.sum())
    assert auc.heatmap_ci[0] <= auc.heatmap <= auc.heatmap_ci[1]


def test_object_boxes_contain_the_objects(world_probe):
    world, probe = world_probe
    boxes = object_boxes(probe)
    level = torch.tensor([0.08, 0.72])[probe.attributes[:, 3]]
    off_background = (probe.images - level.view(-1, 1, 1, 1)).abs().amax(1) > 0.2  # [N, S, S]
    for i in range(len(probe)):
        x0, y0, x1, y1 = boxes[i].tolist()
        inside = off_background[i, y0:y1, x0:x1].sum()
        assert int(inside) == int(off_background[i].sum())
    with pytest.raises(NeurocoreError, match="exactly as ConceptWorld.sample"):
        object_boxes(probe.subset([1, 0]))


def test_misprediction_auroc_definition():
    from sklearn.metrics import roc_auc_score

    g = torch.Generator().manual_seed(0)
    sim, msp = torch.rand(50, generator=g), torch.rand(50, generator=g)
    ok = torch.rand(50, generator=g) > 0.3
    res = misprediction_auroc(sim, ok, msp, n_bootstrap=20, seed=1)
    assert res.heatmap == pytest.approx(roc_auc_score((~ok).numpy(), (1 - sim).numpy()))
    assert res.msp == pytest.approx(roc_auc_score((~ok).numpy(), (1 - msp).numpy()))
    assert res == misprediction_auroc(sim, ok, msp, n_bootstrap=20, seed=1)  # seeded
    with pytest.raises(NeurocoreError, match="needs right and wrong predictions"):
        misprediction_auroc(sim, torch.ones(50, dtype=torch.bool))


def test_restricted_classes_predict_among_them():
    world = ConceptWorld()
    test = world.sample(2, seed=4)
    net = DistractorNet(world).eval()
    ci = torch.rand(4, 7)
    allowed = torch.tensor([1, 3])
    res = image_heatmaps(net, "units", _labelled(test.images, colour_labels(test)), ci, classes=allowed)
    logits = net(test.images).detach()
    assert torch.equal(res.predictions, allowed[logits[:, allowed].argmax(1)])
    torch.testing.assert_close(res.msp, torch.softmax(logits[:, allowed], 1).amax(1))
