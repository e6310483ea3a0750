"""The "where" benchmark: planted maps with known answers, and the concept world's planted boxes."""

import math

import pytest
import torch

from neurocore import NeurocoreError
from neurocore.evaluate import choose_threshold, map_boxes, map_points, pointing_game, where_benchmark


def test_map_boxes_threshold_and_normalisation():
    m = torch.zeros(1, 8, 8) + 2.0  # an offset the min-max normalisation removes
    m[0, 1:3, 1:3] = 12.0
    m[0, 5:7, 5:7] = 6.0
    assert map_boxes(m, (8, 8), 0.6).tolist() == [[1, 1, 2, 2]]
    assert map_boxes(m, (8, 8), 0.4).tolist() == [[1, 1, 6, 6]]
    assert map_boxes(torch.ones(1, 4, 4), (8, 8)).tolist() == [[-1, -1, -1, -1]]  # constant: empty
    # a 2x2 map upsampled (bilinear, align_corners=False) to 8x8: 1.0 on the top-left 2x2, 0.875 next to it
    small = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    assert map_boxes(small, (8, 8), 0.9).tolist() == [[0, 0, 1, 1]]
    assert map_boxes(small, (8, 8), 0.85).tolist() == [[0, 0, 2, 2]]
    region = torch.zeros(1, 2, 2, dtype=torch.bool); region[0, 1, 1] = True
    assert map_boxes(region, (8, 8)).tolist() == [[4, 4, 7, 7]]
    with pytest.raises(NeurocoreError, match="threshold must lie in"):
        map_boxes(m, (8, 8), 0.0)


def test_pointing_game_boxes_masks_tolerance_and_ties():
    m = torch.zeros(3, 6, 6); m[0, 1, 1] = 1; m[1, 5, 5] = 1; m[2, 0, 3] = 1; m[2, 4, 0] = 1  # tie: first row-major
    boxes = torch.tensor([[0, 0, 2, 2]] * 3)
    assert map_points(m, (6, 6)).tolist() == [[1, 1], [5, 5], [3, 0]]
    assert pointing_game(m, boxes, (6, 6)).tolist() == [True, False, False]
    assert pointing_game(m, boxes, (6, 6), tolerance=1).tolist() == [True, False, True]
    masks = torch.zeros(3, 6, 6, dtype=torch.bool); masks[:, 5, 5] = True
    assert pointing_game(m, masks, (6, 6)).tolist() == [False, True, False]
    assert pointing_game(torch.zeros(1, 6, 6), boxes[:1], (6, 6)).tolist() == [False]


def test_choose_threshold_on_heldout_and_benchmark_known_answers():
    # the object: the top-left 4x4; every map also has a weaker blob at the bottom right (0.5 of the peak)
    n = 6
    maps = torch.zeros(n, 8, 8); maps[:, :4, :4] = 1.0; maps[:, 6:, 6:] = 0.5
    boxes = torch.tensor([[0, 0, 3, 3]] * n)
    assert choose_threshold(maps, boxes, (8, 8), thresholds=(0.3, 0.5, 0.7)) == 0.7
    wrong = torch.zeros(n, 8, 8); wrong[:, 6:, 6:] = 1.0
    region = torch.zeros(n, 2, 2, dtype=torch.bool); region[:, 0, 0] = True
    table = where_benchmark({"good": maps, "wrong": wrong, "region": region}, boxes, (8, 8),
                            thresholds=(0.3, 0.5, 0.7), seconds={"good": 0.25})
    assert table.loc["good", "threshold"] == 0.7 and table.loc["good", "accuracy"] == 1.0
    assert table.loc["good", "pointing"] == 1.0 and table.loc["good", "mean_iou"] == 1.0
    assert table.loc["wrong", "accuracy"] == 0.0 and table.loc["wrong", "pointing"] == 0.0
    assert table.loc["region", "accuracy"] == 1.0 and math.isnan(table.loc["region", "threshold"])
    assert table.loc["whole image", "accuracy"] == 0.0  # IoU 16/64
    assert table.loc["good", "seconds_per_image"] == 0.25 and math.isnan(table.loc["wrong", "seconds_per_image"])
    assert (table["images"] == n - n // 2).all()
    # the threshold is chosen on the held-out images only: there, a lower threshold wins
    mixed = maps.clone(); mixed[:3, 6:, 6:] = 0.0; mixed[:3, :4, 4:] = 0.6  # held-out: object spans 4x8
    hb = torch.cat([torch.tensor([[0, 0, 7, 3]] * 3), boxes[3:]])
    t = where_benchmark({"m": mixed}, hb, (8, 8), heldout=torch.arange(n) < 3, thresholds=(0.3, 0.7))
    assert t.loc["m", "threshold"] == 0.3 and t.loc["m", "accuracy"] == 0.0


def test_benchmark_errors():
    boxes = torch.tensor([[0, 0, 1, 1]] * 2)
    with pytest.raises(NeurocoreError, match="heldout must be"):
        where_benchmark({"a": torch.rand(2, 4, 4)}, boxes, (4, 4), heldout=torch.tensor([True, True]))
    with pytest.raises(NeurocoreError, match=r"maps\['a'\] must be a Tensor\[2, h, w\]"):
        where_benchmark({"a": torch.rand(3, 4, 4)}, boxes, (4, 4))


def test_concept_world_planted_boxes():
    """On the concept world: a colour detector's Grad-CAM and WWW sample heatmap find the planted object."""
    pytest.importorskip("pytorch_grad_cam", reason="needs the attribution extra (grad-cam)")
    from neurocore.demo import ConceptWorld
    from neurocore.demo._www import DistractorNet, colour_labels
    from neurocore.methods.attribution import attribute
    from neurocore.methods.www import sample_heatmap

    world = ConceptWorld()
    images = world.sample(1, seed=4)
    net = DistractorNet(world)
    x, labels = images.images, colour_labels(images)
    grad = attribute(net, x, labels, method="gradcam", layer="units")
    with torch.no_grad():
        maps = net.units(x)
    importance = maps.mean(dim=(2, 3)) * net.fc.weight[labels]
    www1 = sample_heatmap(maps, importance, top_n=1, size=x.shape[-2:])  # the colour unit alone
    www3 = sample_heatmap(maps, importance, top_n=3, size=x.shape[-2:])  # WWW's n = 3 adds background units
    truth = images.masks
    table = where_benchmark({"gradcam": grad, "www1": www1, "www3": www3}, images.boxes, x.shape[-2:], truth_masks=truth)
    assert table.loc["gradcam", "accuracy"] == 1.0 and table.loc["gradcam", "pointing"] == 1.0
    assert table.loc["www1", "accuracy"] == 1.0 and table.loc["www1", "pointing"] == 1.0
    # the background units' weight (0.1 of the colour's) spreads n = 3 heatmaps beyond the object
    assert 0.5 <= table.loc["www3", "accuracy"] < 1.0 and table.loc["www3", "pointing"] == 1.0
    assert table.loc["whole image", "accuracy"] < table.loc["gradcam", "accuracy"]


# ---- HINT's rows: concept maps from fitted concept classifiers -------------------------------------


def test_top_neurons_ties_and_layouts():
    from neurocore.evaluate import top_neurons

    phi = torch.tensor([0.2, 0.9, 0.2, 0.0, 0.5])
    assert top_neurons(phi, 40).tolist() == [False, True, False, False, True]
    assert top_neurons(phi, 60).tolist() == [True, True, False, False, True]  # tie at 0.2: the lower unit
    assert top_neurons(phi, 1).tolist() == [False, True, False, False, False]  # at least one neuron
    both = top_neurons(torch.stack([phi, phi.flip(0)], dim=1), 20)  # [C, E] -> [E, C]
    assert both.tolist() == [[False, True, False, False, False], [False, False, False, True, False]]
    for bad in (0, 101, True, "80"):
        with pytest.raises(NeurocoreError, match=r"percents must lie in \(0, 100\]"):
            top_neurons(phi, bad)


def test_concept_maps_pick_each_images_concept():
    from neurocore.evaluate import concept_maps, most_specific_concepts
    from neurocore.methods.hint import ConceptClassifiers, ConceptHierarchy

    # channel 0 detects concept "a", channel 1 concept "b": a planted classifier pair
    clf = ConceptClassifiers(("a", "b"), torch.tensor([[8.0, 0.0], [0.0, 8.0]]), torch.tensor([-4.0, -4.0]),
                             torch.ones(2), torch.ones(2, dtype=torch.int64))
    z = torch.zeros(3, 2, 2, 2); z[:, 0, 0, 0] = 1.0; z[:, 1, 1, 1] = 1.0
    regions = concept_maps(clf, z, ["a", "b", "a"]) > 0.5
    assert regions[0].nonzero().tolist() == [[0, 0]] and regions[1].nonzero().tolist() == [[1, 1]]
    assert torch.equal(regions[2], regions[0])
    assert torch.allclose(concept_maps(clf, z, "b")[:, 1, 1], torch.sigmoid(torch.tensor(4.0)).expand(3))
    with pytest.raises(NeurocoreError, match="concept 'c' has no classifier"):
        concept_maps(clf, z, "c")
    with pytest.raises(NeurocoreError, match=r"one per image \(3\); got 2"):
        concept_maps(clf, z, ["a", "b"])
    h = ConceptHierarchy.from_groups(["x", "y", "z"], {"all": ["x", "y", "z"], "xy": ["x", "y"], "x only": ["x"]})
    assert most_specific_concepts(h, torch.tensor([0, 1, 2])) == ["x only", "xy", "all"]
    with pytest.raises(NeurocoreError, match="under no concept"):
        most_specific_concepts(h.select(["xy"]), torch.tensor([2]))


def test_hint_rows_on_planted_colour_units():
    """HINT on the planted colour detectors: fitted on one set of concept-world images, its concept map
    of each new image's colour must box the planted object exactly (the colour unit fires on the object's
    pixels only), and the benchmark scores it as it scores any map: accuracy and pointing 1."""
    import torch.nn.functional as F

    from neurocore.demo import ConceptWorld, PlantedConceptNet
    from neurocore.evaluate import hint_concept_maps
    from neurocore.methods.hint import Hint

    world = ConceptWorld()
    train, test = world.sample(1, seed=0), world.sample(1, seed=1).subset(range(12))
    colour = train.attributes[:, 1]
    method = Hint(saliency="gradient_x_input", contribution="coefficient", seed=0)
    hm = hint_concept_maps(PlantedConceptNet(world), "colours", train.images, colour, F.one_hot(colour, 4),
                           world.colours, test.images, [world.colours[c] for c in test.attributes[:, 1]], method=method)
    assert hm.regions.shape == test.masks.shape and hm.concepts[0] == world.colours[int(test.attributes[0, 1])]
    assert bool((hm.classifiers.f1 > 0.9).all())
    # the planted boxes, up to the thin tips of triangles and diamonds whose few pixels of colour keep the
    # soft colour unit below the classifier's 0.5 (measured: 8 of 12 boxes exact, the lowest IoU 0.80)
    from neurocore.evaluate import box_iou

    iou = box_iou(map_boxes(hm.regions, (32, 32)), test.boxes)
    assert bool((iou >= 0.75).all()) and int((iou == 1).sum()) >= 6, iou.tolist()
    # another colour's classifier points away from the object: the image's concept matters
    wrong = [world.colours[(c + 1) % 4] for c in test.attributes[:, 1]]
    from neurocore.evaluate import concept_maps

    with torch.no_grad():
        off = concept_maps(hm.classifiers, PlantedConceptNet(world).colours(test.images), wrong) > 0.5
    assert not bool(off.any())
    table = where_benchmark({"hint regions": hm.regions, "hint scores": hm.scores}, test.boxes, (32, 32),
                            truth_masks=test.masks)
    assert table.loc["hint regions", "accuracy"] == 1.0 and math.isnan(table.loc["hint regions", "pointing"])
    assert table.loc["hint scores", "accuracy"] == 1.0 and table.loc["hint scores", "pointing"] == 1.0
    assert table.loc["whole image", "accuracy"] < 1.0


def test_hint_flat_saliency_layer_is_refused():
    # right before global average pooling a logit's gradient is the same at every cell: no responsible region
    from torch import nn

    from neurocore.evaluate import hint_concept_maps

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    x = torch.rand(6, 3, 8, 8)
    with pytest.raises(NeurocoreError, match="no training cell of layer '0' is a responsible region"):
        hint_concept_maps(net, "0", x, torch.zeros(6, dtype=torch.long), torch.ones(6, 1), ["all"], x, "all")


@pytest.mark.parametrize("bad,match", [
    ([0, 0, 30, 30], r"boxes\[1\] = \[0, 0, 30, 30\].*x0 <= x1 < W = 8"),  # outside the 8x8 image
    ([3, 3, 0, 0], r"boxes\[1\] = \[3, 3, 0, 0\].*y0 <= y1 < H = 8"),  # inverted
    ([-1, 0, 2, 2], r"boxes\[1\] = \[-1, 0, 2, 2\]"),  # negative
])
def test_boxes_outside_the_image_or_inverted_are_refused(bad, match):
    # before the fix every one of these was scored silently
    m = torch.zeros(4, 8, 8); m[:, :4, :4] = 1.0
    boxes = torch.tensor([[0, 0, 3, 3], bad, [0, 0, 3, 3], [0, 0, 3, 3]])
    with pytest.raises(NeurocoreError, match=match):
        where_benchmark({"planted": m}, boxes, (8, 8))
    with pytest.raises(NeurocoreError, match=match.replace("boxes", "truth")):
        pointing_game(m, boxes, (8, 8))
    listed = [b.reshape(1, 4) for b in boxes]
    listed[1] = torch.tensor([[0, 0, 3, 3], bad])  # the second box of image 1
    with pytest.raises(NeurocoreError, match=match.replace(r"boxes\[1\]", r"boxes\[1\]\[1\]")):
        where_benchmark({"planted": m}, listed, (8, 8))
    with pytest.raises(NeurocoreError, match=match):
        choose_threshold(m, boxes, (8, 8))


def test_float_boxes_and_bad_shapes_are_refused():
    m = torch.zeros(2, 8, 8); m[:, :4, :4] = 1.0
    with pytest.raises(NeurocoreError, match=r"boxes must be an integer .*float32.*\.long\(\)"):
        where_benchmark({"planted": m}, torch.tensor([[0.0, 0.0, 3.0, 3.0]] * 2), (8, 8), heldout=torch.tensor([True, False]))
    with pytest.raises(NeurocoreError, match=r"truth\[0\] must be an integer"):
        pointing_game(m, [torch.tensor([[0.5, 0, 3, 3]]), torch.tensor([[0, 0, 3, 3]])], (8, 8))
    with pytest.raises(NeurocoreError, match=r"truth must be .*\[N, 4\].*\(2, 3\)"):
        pointing_game(m, torch.tensor([[0, 0, 3]] * 2), (8, 8))
    with pytest.raises(NeurocoreError, match=r"truth_masks must be a BoolTensor\[2, 8, 8\]"):
        where_benchmark({"planted": m}, torch.tensor([[0, 0, 3, 3]] * 2), (8, 8), heldout=torch.tensor([True, False]),
                        truth_masks=torch.zeros(2, 4, 4, dtype=torch.bool))
    # valid edge cases stay valid: a one-pixel box at the last pixel, an image without boxes
    ok = [torch.tensor([[7, 7, 7, 7]]), torch.zeros(0, 4, dtype=torch.int64)]
    assert pointing_game(m, ok, (8, 8)).tolist() == [False, False]


def test_nan_maps_are_refused_naming_the_map_and_image():
    m = torch.zeros(4, 8, 8); m[:, :4, :4] = 1.0
    boxes = torch.tensor([[0, 0, 3, 3]] * 4)
    partly = m.clone(); partly[2, 5, 5] = float("nan")
    with pytest.raises(NeurocoreError, match=r"maps\['lime'\]\[2\] holds NaN"):
        where_benchmark({"planted": m, "lime": partly}, boxes, (8, 8))
    with pytest.raises(NeurocoreError, match=r"maps\[0\] holds NaN"):
        map_boxes(torch.full((1, 4, 4), float("nan")), (8, 8))
    with pytest.raises(NeurocoreError, match=r"maps\[3\] holds"):
        inf = m.clone(); inf[3, 0, 0] = float("inf")
        pointing_game(inf, boxes, (8, 8))
