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
