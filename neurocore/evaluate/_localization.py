"""Weakly supervised localisation at dataset level: masks or "where" maps -> boxes -> IoU with the
ground-truth boxes -> the share of images with IoU >= 0.5, with the whole-image box beside it.

The generic part (:func:`mask_boxes`, :func:`box_iou`, :func:`localize`) takes any per-image cell mask
or score map (HINT's concept cell maps, WWW heatmaps, Grad-CAM); :func:`localization_accuracy` is
HINT's protocol (ALGORITHMS.md §3.6): concept classifiers trained on the top p% neurons by Φ.
Boxes are ``(x0, y0, x1, y1)`` in inclusive pixel coordinates (Tiny-ImageNet's and ImageNet's box files).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from neurocore._errors import NeurocoreError

DEFAULT_PERCENTS = (10, 20, 40, 80, 100)


def _sizes(image_sizes, n: int) -> torch.Tensor:
    t = torch.as_tensor(image_sizes, dtype=torch.int64)
    if t.dim() == 1 and t.numel() == 2:
        t = t.expand(n, 2)
    if t.shape != (n, 2) or (t < 1).any():
        raise NeurocoreError(f"image_sizes must be (H, W) or Tensor[{n}, 2] of positive sizes; got shape {tuple(t.shape)}")
    return t


def mask_boxes(masks: torch.Tensor, image_sizes) -> torch.Tensor:
    """The bounding box of each cell mask upsampled (nearest) to its image.

    Args:
        masks (BoolTensor[B, h, w]): predicted cells.
        image_sizes: ``(H, W)`` of every image, or ``Tensor[B, 2]`` per image: the frame of the boxes.

    Returns:
        Tensor[B, 4] int64 ``(x0, y0, x1, y1)`` inclusive; ``(-1, -1, -1, -1)`` for an empty mask.

    Example:
        >>> m = torch.zeros(1, 2, 2, dtype=torch.bool); m[0, 0, 1] = True
        >>> mask_boxes(m, (8, 8)).tolist()
        [[4, 0, 7, 3]]
    """
    if not isinstance(masks, torch.Tensor) or masks.dim() != 3:
        raise NeurocoreError("masks must be a BoolTensor[B, h, w]")
    b, h, w = masks.shape
    sizes = _sizes(image_sizes, b)
    out = torch.full((b, 4), -1, dtype=torch.int64)
    for i in range(b):
        H, W = sizes[i].tolist()
        up = F.interpolate(masks[i : i + 1, None].float(), size=(H, W), mode="nearest")[0, 0] > 0.5
        rows, cols = up.any(1).nonzero().reshape(-1), up.any(0).nonzero().reshape(-1)
        if rows.numel():
            out[i] = torch.stack([cols.min(), rows.min(), cols.max(), rows.max()])
    return out


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of paired boxes in inclusive pixel coordinates (areas count pixels: ``(x1 − x0 + 1)(y1 − y0 + 1)``).

    Args:
        a, b (Tensor[B, 4]): boxes ``(x0, y0, x1, y1)``; a box with ``x0 < 0`` is empty (IoU 0).

    Returns:
        Tensor[B] float64.

    Example:
        >>> box_iou(torch.tensor([[0, 0, 3, 3]]), torch.tensor([[0, 0, 1, 3]])).tolist()
        [0.5]
    """
    a, b = torch.as_tensor(a).reshape(-1, 4).double(), torch.as_tensor(b).reshape(-1, 4).double()
    if a.shape != b.shape:
        raise NeurocoreError(f"box_iou needs paired boxes of one shape; got {tuple(a.shape)} and {tuple(b.shape)}")
    iw = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0]) + 1).clamp(min=0)
    ih = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1]) + 1).clamp(min=0)
    inter = iw * ih
    area = lambda t: (t[:, 2] - t[:, 0] + 1).clamp(min=0) * (t[:, 3] - t[:, 1] + 1).clamp(min=0)
    union = area(a) + area(b) - inter
    iou = torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(union))
    return torch.where((a[:, 0] < 0) | (b[:, 0] < 0), torch.zeros_like(iou), iou)


def whole_image_boxes(image_sizes, n: int | None = None) -> torch.Tensor:
    """The whole-image box of every image: ``(0, 0, W − 1, H − 1)``, Tensor[B, 4] int64.

    Example:
        >>> whole_image_boxes((4, 6), 1).tolist()
        [[0, 0, 5, 3]]
    """
    t = torch.as_tensor(image_sizes, dtype=torch.int64)
    sizes = _sizes(t, n if n is not None else (1 if t.dim() == 1 else t.shape[0]))
    zeros = torch.zeros(sizes.shape[0], dtype=torch.int64)
    return torch.stack([zeros, zeros, sizes[:, 1] - 1, sizes[:, 0] - 1], dim=1)


def centred_boxes(image_sizes, fraction: float = 0.8, n: int | None = None) -> torch.Tensor:
    """A centred box covering ``fraction`` of each side (a prior-only baseline), Tensor[B, 4] int64.

    Example:
        >>> centred_boxes((10, 10), 0.8, 1).tolist()
        [[1, 1, 8, 8]]
    """
    whole = whole_image_boxes(image_sizes, n).double()
    W, H = whole[:, 2] + 1, whole[:, 3] + 1
    mx, my = (W * (1 - fraction) / 2).round(), (H * (1 - fraction) / 2).round()
    return torch.stack([mx, my, W - 1 - mx, H - 1 - my], dim=1).long()


@dataclass(frozen=True)
class Localization:
    """Localisation of one set of predicted masks against ground-truth boxes.

    Attributes:
        iou (Tensor[B]): each image's best IoU over its ground-truth boxes.
        accuracy: share of images with IoU >= ``iou_threshold``.
        whole_image: the same share for the whole-image box (the baseline always reported beside it).
        full_grid: share of images whose predicted box spans the whole image.
        empty: share of images with no predicted cell.
        boxes (Tensor[B, 4]): the predicted boxes.
    """

    iou: torch.Tensor
    accuracy: float
    whole_image: float
    full_grid: float
    empty: float
    boxes: torch.Tensor


def _best_iou(pred: torch.Tensor, truth) -> torch.Tensor:
    """Per image the max IoU over its ground-truth boxes (``truth``: Tensor[B, 4] or a list of [n_i, 4])."""
    if isinstance(truth, torch.Tensor) and truth.dim() == 2:
        return box_iou(pred, truth)
    out = torch.zeros(pred.shape[0], dtype=torch.float64)
    for i, t in enumerate(truth):
        t = torch.as_tensor(t).reshape(-1, 4)
        out[i] = box_iou(pred[i : i + 1].expand(t.shape[0], 4), t).max() if t.numel() else 0.0
    return out


def localize(masks: torch.Tensor, boxes, image_sizes, iou_threshold: float = 0.5) -> Localization:
    """Score predicted cell masks as boxes: upsample each mask to its image, take its bounding box, IoU
    with the ground truth (the best of an image's boxes), share with IoU >= ``iou_threshold``.

    Args:
        masks (BoolTensor[B, h, w]): predicted cells (for a score map, threshold it first).
        boxes: ground truth, Tensor[B, 4] or a list of Tensor[n_i, 4] (inclusive pixel coordinates).
        image_sizes: ``(H, W)`` or Tensor[B, 2]: the frame the boxes are in.
        iou_threshold: 0.5 (the standard CorLoc criterion).

    Returns:
        :class:`Localization` (with the whole-image baseline).

    Example:
        >>> m = torch.zeros(2, 2, 2, dtype=torch.bool); m[:, 0, 0] = True
        >>> loc = localize(m, torch.tensor([[0, 0, 3, 3], [0, 0, 7, 7]]), (8, 8))
        >>> loc.accuracy, loc.whole_image
        (0.5, 0.5)
    """
    b = masks.shape[0]
    if len(boxes) != b:
        raise NeurocoreError(f"boxes must hold one entry per mask ({b}); got {len(boxes)}")
    sizes = _sizes(image_sizes, b)
    pred = mask_boxes(masks, sizes)
    iou = _best_iou(pred, boxes)
    whole = whole_image_boxes(sizes)
    whole_iou = _best_iou(whole, boxes)
    full = (pred == whole).all(1)
    frac = lambda t: float(t.double().mean()) if b else float("nan")
    return Localization(iou, frac(iou >= iou_threshold), frac(whole_iou >= iou_threshold), frac(full),
                        frac(pred[:, 0] < 0), pred)


def localization_accuracy(
    train_cells: torch.Tensor,
    train_labels: torch.Tensor,
    phi: torch.Tensor,
    test_maps: torch.Tensor,
    boxes,
    image_sizes,
    *,
    percents: Sequence[float] = DEFAULT_PERCENTS,
    classifier: str = "logistic",
    max_cells: int = 2000,
    cell_threshold: float = 0.5,
    iou_threshold: float = 0.5,
    seed: int = 0,
):
    """HINT's weakly supervised localisation of one concept at dataset level (ALGORITHMS.md §3.6).

    For each p in ``percents``: fit the concept classifier on the top p% neurons by Φ (ties: lower
    unit first; at least one neuron), apply it to every cell of each test image's feature map, cells
    with probability > ``cell_threshold`` form the mask; :func:`localize` gives the box, its IoU and the
    share of images with IoU >= ``iou_threshold``. The whole-image box is always reported beside it.

    Args:
        train_cells (Tensor[R, C]), train_labels (BoolTensor[R]): cells and whether each is a
            responsible cell of the concept (HINT's :func:`~neurocore.methods.hint.cell_dataset`, one column).
        phi (Tensor[C]): the neurons' contributions to the concept (a column of Φ; or ``|α|``, random).
        test_maps (Tensor[B, C, h, w]): feature maps of the test images (the concept's images).
        boxes: their ground-truth boxes (Tensor[B, 4] or a list of Tensor[n_i, 4]), inclusive pixels.
        image_sizes: ``(H, W)`` or Tensor[B, 2], the boxes' frame.
        percents: shares of neurons, in percent.
        classifier: ``"logistic"`` or ``"sgd"`` (:func:`~neurocore.methods.hint.fit_concept_classifiers`).
        max_cells: positives and negatives of the classifier. seed: its sampling seed.

    Returns:
        ``pandas.DataFrame`` indexed by ``percent`` with columns ``neurons, accuracy, whole_image,
        full_grid, empty, mean_iou, f1``.

    Raises:
        NeurocoreError: mismatched shapes, percents outside (0, 100].

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> cells = torch.cat([torch.randn(100, 4, generator=g) + torch.tensor([4., 0, 0, 0]), torch.randn(100, 4, generator=g)])
        >>> labels = torch.arange(200) < 100
        >>> maps = 0.1 * torch.randn(2, 4, 4, 4, generator=g); maps[:, 0, :2, :2] += 8  # the object: the top-left quarter
        >>> table = localization_accuracy(cells, labels, torch.tensor([1., 0, 0, 0]), maps,
        ...                               torch.tensor([[0, 0, 15, 15]] * 2), (32, 32), percents=(25, 100))
        >>> table["accuracy"].tolist(), table["whole_image"].tolist()
        ([1.0, 1.0], [0.0, 0.0])
    """
    import pandas as pd

    from neurocore.methods.hint import fit_concept_classifiers

    phi = torch.as_tensor(phi).reshape(-1)
    c = train_cells.shape[1]
    if phi.numel() != c or test_maps.dim() != 4 or test_maps.shape[1] != c or train_labels.shape[0] != train_cells.shape[0]:
        raise NeurocoreError(
            f"phi must be Tensor[C], test_maps [B, C, h, w] and train_labels [R] for train_cells [R, C] = "
            f"{tuple(train_cells.shape)}; got {tuple(phi.shape)}, {tuple(test_maps.shape)}, {tuple(train_labels.shape)}"
        )
    rows = []
    for p in percents:
        keep = top_neurons(phi, p)
        k = int(keep.sum())
        clf = fit_concept_classifiers(train_cells, train_labels.reshape(-1, 1).bool(), ["concept"],
                                      classifier=classifier, neurons=keep, max_cells=max_cells, seed=seed)
        masks = clf.cell_scores(test_maps)[:, 0] > cell_threshold
        loc = localize(masks, boxes, image_sizes, iou_threshold)
        rows.append({"percent": p, "neurons": k, "accuracy": loc.accuracy, "whole_image": loc.whole_image,
                     "full_grid": loc.full_grid, "empty": loc.empty, "mean_iou": float(loc.iou.mean()),
                     "f1": float(clf.f1[0])})
    return pd.DataFrame(rows).set_index("percent")


# ---- HINT's concept maps for any images (the "where" benchmark's HINT rows) ----------------------


def top_neurons(phi: torch.Tensor, percent: float) -> torch.Tensor:
    """The top ``percent`` % neurons by contribution Φ, per concept (HINT's localisation, ALGORITHMS.md §3.6).

    ``k = max(1, round(C · percent / 100))`` neurons with the largest Φ; ties: the lower unit first.

    Args:
        phi (Tensor[C] or Tensor[C, E]): contributions of C neurons (to one concept, or to each of E:
            HINT's Φ, neurons × concepts).
        percent: in (0, 100].

    Returns:
        BoolTensor[C] for a Tensor[C], BoolTensor[E, C] for a Tensor[C, E]: the layout of
        :func:`~neurocore.methods.hint.fit_concept_classifiers`' ``neurons=``.

    Raises:
        NeurocoreError: ``percent`` outside (0, 100], a Φ that is not 1-D or 2-D.

    Example:
        >>> top_neurons(torch.tensor([0.1, 0.5, 0.5, 0.0]), 50).tolist()
        [False, True, True, False]
        >>> top_neurons(torch.tensor([[1., 0.], [0., 1.], [2., 0.]]), 34).tolist()
        [[False, False, True], [False, True, False]]
    """
    try:
        ok = not isinstance(percent, (bool, str)) and 0 < float(percent) <= 100
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise NeurocoreError(f"percents must lie in (0, 100]; got {percent!r}")
    phi = torch.as_tensor(phi)
    if phi.dim() not in (1, 2) or phi.shape[0] == 0:
        raise NeurocoreError(f"phi must be a Tensor[C] or Tensor[C, E] of contributions; got shape {tuple(phi.shape)}")
    cols = phi.double().reshape(phi.shape[0], -1).T  # [E, C]
    c = cols.shape[1]
    k = max(1, int(round(c * float(percent) / 100)))
    keep = torch.zeros(cols.shape, dtype=torch.bool)
    for e in range(cols.shape[0]):
        # a stable sort of -Φ keeps the lower unit first among ties
        keep[e, torch.sort(-cols[e], stable=True).indices[:k]] = True
    return keep[0] if phi.dim() == 1 else keep


def concept_localizers(cells: torch.Tensor, labels: torch.Tensor, concepts: Sequence[str], phi: torch.Tensor, *,
                       percent: float = 80, classifier: str = "logistic", max_cells: int = 2000, seed: int = 0):
    """HINT's localisation classifiers: each concept's classifier refitted on its top ``percent`` % neurons
    by Φ (ALGORITHMS.md §3.6; the paper's localisation uses 80 %).

    Args:
        cells (Tensor[R, C]), labels (BoolTensor[R, E]): training cells and their concepts
            (:func:`~neurocore.methods.hint.cell_dataset` or :meth:`~neurocore.methods.hint.Hint.layer_cells`
            on training images, never the images to be localised).
        concepts: the E concept names.
        phi (Tensor[C, E]): contributions (``Hint.phi_[layer]``, :func:`~neurocore.methods.hint.shapley_contributions`, ...).
        percent: share of neurons kept per concept, in (0, 100]; 100 keeps all.
        classifier, max_cells, seed: as :func:`~neurocore.methods.hint.fit_concept_classifiers`.

    Returns:
        :class:`~neurocore.methods.hint.ConceptClassifiers` (weights zero outside each concept's top neurons).

    Raises:
        NeurocoreError: Φ not [C, E] for these cells and concepts, ``percent`` outside (0, 100].

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> cells = torch.cat([torch.randn(100, 4, generator=g) + torch.tensor([4., 0, 0, 0]), torch.randn(100, 4, generator=g)])
        >>> labels = (torch.arange(200) < 100).reshape(-1, 1)
        >>> clf = concept_localizers(cells, labels, ["a"], torch.tensor([[1.], [0.], [0.], [0.]]), percent=25)
        >>> clf.weight[0, 1:].tolist(), bool(clf.weight[0, 0] > 0)
        ([0.0, 0.0, 0.0], True)
    """
    from neurocore.methods.hint import fit_concept_classifiers

    phi = torch.as_tensor(phi)
    if phi.dim() != 2 or phi.shape != (cells.shape[1], len(concepts)):
        raise NeurocoreError(
            f"phi must be Tensor[C, E] = [{cells.shape[1]}, {len(concepts)}] (neurons x concepts) for these cells and "
            f"concepts; got {tuple(phi.shape)}"
        )
    return fit_concept_classifiers(cells, labels, list(concepts), classifier=classifier, neurons=top_neurons(phi, percent),
                                   max_cells=max_cells, seed=seed)


def concept_maps(classifiers, maps: torch.Tensor, concepts) -> torch.Tensor:
    """HINT's map of each image's concept: its concept classifier applied to every cell of the image's
    feature map, ``σ(αᵀ z_cell + β)`` (ALGORITHMS.md §3.6). Cells with probability > 0.5 are the concept's
    region (``concept_maps(...) > 0.5``, a BoolTensor the "where" benchmark takes as it is); the
    probabilities themselves are a score map.

    Args:
        classifiers: :class:`~neurocore.methods.hint.ConceptClassifiers` fitted on the layer's cells
            (:func:`concept_localizers`, ``Hint.classifiers_[layer]``).
        maps (Tensor[B, C, h, w]): the images' feature maps at that layer (e.g.
            :func:`~neurocore.probe.spatial_maps`).
        concepts: one concept name for every image, or a sequence of B names (each image's own concept,
            e.g. :func:`most_specific_concepts`).

    Returns:
        Tensor[B, h, w] float32 in [0, 1], at the layer's resolution (the benchmark upsamples it).

    Raises:
        NeurocoreError: a concept the classifiers do not have (with close matches), a wrong number of
            names, maps whose channels differ from the classifiers'.

    Example:
        >>> from neurocore.methods.hint import ConceptClassifiers
        >>> clf = ConceptClassifiers(("a", "b"), torch.tensor([[10., 0.], [0., 10.]]), torch.tensor([-5., -5.]),
        ...                          torch.ones(2), torch.ones(2, dtype=torch.int64))
        >>> z = torch.zeros(2, 2, 1, 2); z[:, 0, 0, 0] = 1; z[:, 1, 0, 1] = 1
        >>> (concept_maps(clf, z, ["a", "b"]) > 0.5).tolist()
        [[[True, False]], [[False, True]]]
    """
    from neurocore._errors import close_matches

    names = [concepts] * maps.shape[0] if isinstance(concepts, str) else [str(c) for c in concepts]
    if len(names) != maps.shape[0]:
        raise NeurocoreError(f"concepts must be one name or one per image ({maps.shape[0]}); got {len(names)}")
    index = {c: e for e, c in enumerate(classifiers.concepts)}
    for c in dict.fromkeys(names):
        if c not in index:
            near = close_matches(c, list(index))
            raise NeurocoreError(
                f"concept {c!r} has no classifier (concepts: {len(index)})"
                + (f"; close matches: {', '.join(near)}" if near else "") + ": fit the classifiers on a hierarchy with it"
            )
    scores = classifiers.cell_scores(maps)  # [B, E, h, w]
    pick = torch.tensor([index[c] for c in names], dtype=torch.int64)
    return scores[torch.arange(maps.shape[0]), pick]


def most_specific_concepts(hierarchy, labels) -> list[str]:
    """Each image's most specific concept of a hierarchy: the node above its leaf class with the fewest
    leaves (ties: the later node, i.e. the deeper one, nodes being root first).

    Args:
        hierarchy: :class:`~neurocore.methods.hint.ConceptHierarchy`.
        labels (Tensor[N] int64): leaf class indices.

    Returns:
        list of N concept names.

    Raises:
        NeurocoreError: a class under no node of the hierarchy (HINT has no concept to localise for it).

    Example:
        >>> from neurocore.methods.hint import ConceptHierarchy
        >>> h = ConceptHierarchy.from_groups(["a", "b", "c"], {"all": ["a", "b", "c"], "ab": ["a", "b"]})
        >>> most_specific_concepts(h, torch.tensor([0, 2]))
        ['ab', 'all']
    """
    member = hierarchy.membership(labels) > 0.5  # [N, E]
    sizes = torch.tensor([len(n.leaves) for n in hierarchy.nodes], dtype=torch.float64)
    # fewest leaves first, then the later node: sizes minus a fraction growing with the node index
    rank = torch.where(member, sizes - torch.arange(len(sizes)) / (len(sizes) + 1.0), torch.full_like(sizes, float("inf")))
    if member.shape[0] and not bool(member.any(1).all()):
        i = int((~member.any(1)).nonzero()[0])
        raise NeurocoreError(f"labels[{i}] (class {hierarchy.leaves[int(torch.as_tensor(labels).reshape(-1)[i])]!r}) lies "
                             "under no concept of the hierarchy: add a root node or leave the image out")
    return [hierarchy.names[int(e)] for e in rank.argmin(1)]
