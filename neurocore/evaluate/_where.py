"""The "where" benchmark over maps from any source (WWW heatmaps, HINT concept regions, Grad-CAM,
Score-CAM, Ablation-CAM, LIME): localisation accuracy (the box of the map above a threshold chosen on a
held-out split, IoU >= 0.5) and the pointing game, with the whole-image box beside them.

HINT's row (:func:`hint_concept_maps`): concept classifiers fitted on training images (HINT's responsible
regions, Φ, the top 80 % neurons by Φ), applied to the scored images' feature maps for each image's concept:
the cells with probability > 0.5 as a region (HINT's own localisation, ALGORITHMS.md §3.6) and the
probabilities as a score map.

Maps are ``Tensor[B, h, w]``: floating score maps (each min-max normalised per image before the
threshold, which is a fraction of the normalised range) or boolean region masks (used as they are; no
threshold). Maps smaller than the image are upsampled to it (bilinear for scores, nearest for masks).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from neurocore._errors import NeurocoreError
from neurocore.evaluate._localization import (
    _best_iou,
    _sizes,
    concept_localizers,
    concept_maps,
    mask_boxes,
    whole_image_boxes,
)

DEFAULT_THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 20))


def _check_finite(maps: torch.Tensor, name: str) -> None:
    """Raise naming ``name[i]`` for the first score map with NaN or infinite pixels (they have no box or maximum)."""
    if maps.dtype == torch.bool or not maps.is_floating_point():
        return
    bad = (~torch.isfinite(maps.detach())).reshape(maps.shape[0], -1).sum(1)
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        raise NeurocoreError(
            f"{name}[{i}] holds NaN or infinite values ({int(bad[i])} of {maps[i].numel()} pixels): score maps must be "
            "finite; fix the method that made them, or replace the values (torch.nan_to_num) knowingly"
        )


def _check_boxes(boxes, size: tuple[int, int], name: str = "boxes") -> None:
    """Ground-truth boxes (Tensor[N, 4], or a list of Tensor[n_i, 4]) must be integer ``(x0, y0, x1, y1)``
    inclusive pixel coordinates inside the ``size = (H, W)`` image: ``0 <= x0 <= x1 < W``, ``0 <= y0 <= y1 < H``."""
    H, W = size
    rule = (f"boxes are (x0, y0, x1, y1) in inclusive pixel coordinates of the {H}x{W} image, 0 <= x0 <= x1 < W = {W} "
            f"and 0 <= y0 <= y1 < H = {H}: give boxes at the image size (rescale them with the images), not inverted")
    if isinstance(boxes, torch.Tensor):
        groups = [(name, boxes, False)]
    elif isinstance(boxes, Sequence) and not isinstance(boxes, str):
        groups = [(f"{name}[{i}]", b, True) for i, b in enumerate(boxes)]
    else:
        raise NeurocoreError(f"{name} must be an integer Tensor[N, 4] or a list of Tensor[n_i, 4]; got {type(boxes).__name__}")
    for label, b, listed in groups:
        try:
            t = torch.as_tensor(b)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise NeurocoreError(f"{label} must be an integer Tensor[{'n_i' if listed else 'N'}, 4] of boxes; got {b!r} ({exc})") from exc
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise NeurocoreError(f"{label} must be an integer tensor of inclusive pixel coordinates; got dtype {t.dtype}: "
                                 "round the boxes and pass boxes.long()")
        if listed and t.dim() == 1 and t.numel() in (0, 4):
            t = t.reshape(-1, 4)
        if t.dim() != 2 or t.shape[1] != 4:
            raise NeurocoreError(f"{label} must be a Tensor[{'n_i' if listed else 'N'}, 4] of (x0, y0, x1, y1) boxes; "
                                 f"got shape {tuple(t.shape)}")
        bad = (t[:, 0] < 0) | (t[:, 1] < 0) | (t[:, 2] < t[:, 0]) | (t[:, 3] < t[:, 1]) | (t[:, 2] >= W) | (t[:, 3] >= H)
        if bool(bad.any()):
            j = int(bad.nonzero()[0])
            raise NeurocoreError(f"{label}[{j}] = {t[j].tolist()} is not a box inside the image: {rule}")


def _check_masks(masks, n: int, size: tuple[int, int], name: str) -> None:
    if not isinstance(masks, torch.Tensor) or masks.dtype != torch.bool or tuple(masks.shape) != (n, *size):
        got = f"{masks.dtype} {tuple(masks.shape)}" if isinstance(masks, torch.Tensor) else type(masks).__name__
        raise NeurocoreError(f"{name} must be a BoolTensor[{n}, {size[0]}, {size[1]}] of object pixels at the image size; "
                             f"got {got}")


def _check_truth(truth, n: int, size: tuple[int, int], name: str) -> None:
    """``truth``: boxes (see :func:`_check_boxes`) or BoolTensor[n, H, W] object masks."""
    if isinstance(truth, torch.Tensor) and truth.dtype == torch.bool and truth.dim() == 3:
        _check_masks(truth, n, size, name)
    else:
        _check_boxes(truth, size, name)


def _image_maps(maps: torch.Tensor, size: tuple[int, int], name: str = "maps") -> torch.Tensor:
    if not isinstance(maps, torch.Tensor) or maps.dim() != 3:
        got = tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__
        raise NeurocoreError(f"maps must be a Tensor[B, h, w] (score maps or boolean regions); got {got}")
    _check_finite(maps, name)
    if maps.dtype == torch.bool:
        if tuple(maps.shape[1:]) != size:
            maps = F.interpolate(maps[:, None].float(), size=size, mode="nearest")[:, 0] > 0.5
        return maps
    m = maps.detach().double()
    if tuple(m.shape[1:]) != size:
        m = F.interpolate(m[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    lo = m.amin(dim=(1, 2), keepdim=True)
    hi = m.amax(dim=(1, 2), keepdim=True)
    # a constant map carries no location: all zero, so every threshold leaves it empty
    return torch.where(hi > lo, (m - lo) / (hi - lo).clamp(min=1e-300), torch.zeros_like(m))


def _size(image_size) -> tuple[int, int]:
    s = _sizes(image_size, 1)[0].tolist()
    return int(s[0]), int(s[1])


def map_boxes(maps: torch.Tensor, image_size, threshold: float = 0.5) -> torch.Tensor:
    """The bounding box of each map's pixels at or above ``threshold`` of its normalised range.

    Args:
        maps (Tensor[B, h, w]): score maps (min-max normalised per image, upsampled bilinearly to the
            image) or BoolTensor regions (upsampled nearest; ``threshold`` unused).
        image_size: ``(H, W)`` of the images (one size for all).
        threshold: in (0, 1]; 0.5 keeps pixels at least halfway between the map's min and max.

    Returns:
        Tensor[B, 4] int64 ``(x0, y0, x1, y1)`` inclusive; ``-1`` rows for empty maps (constant score maps).

    Raises:
        NeurocoreError: a threshold outside (0, 1], maps not ``[B, h, w]``, a score map with NaN or
            infinite values (naming ``maps[i]``).

    Example:
        >>> m = torch.zeros(1, 4, 4); m[0, 1:3, 2] = 1.0
        >>> map_boxes(m, (4, 4)).tolist()
        [[2, 1, 2, 2]]
    """
    if not 0 < float(threshold) <= 1:
        raise NeurocoreError(f"threshold must lie in (0, 1]; got {threshold!r}")
    size = _size(image_size)
    m = _image_maps(maps, size)
    mask = m if m.dtype == torch.bool else (m >= float(threshold)) & (m > 0)
    return mask_boxes(mask, size)


def _in_truth(points: torch.Tensor, truth, tolerance: int) -> torch.Tensor:
    """points (Tensor[B, 2] int64 (x, y)); truth Tensor[B, 4] boxes, list of [n_i, 4], or BoolTensor[B, H, W] masks."""
    b = points.shape[0]
    hit = torch.zeros(b, dtype=torch.bool)
    if isinstance(truth, torch.Tensor) and truth.dtype == torch.bool and truth.dim() == 3:
        H, W = truth.shape[1:]
        ys, xs = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
        for i in range(b):
            if points[i, 0] < 0:
                continue
            near = ((xs - points[i, 0]) ** 2 + (ys - points[i, 1]) ** 2) <= tolerance**2
            hit[i] = bool((truth[i] & near).any())
        return hit
    for i in range(b):
        t = torch.as_tensor(truth[i]).reshape(-1, 4)
        if points[i, 0] < 0 or t.numel() == 0:
            continue
        x, y = points[i].tolist()
        dx = (t[:, 0] - x).clamp(min=0) + (x - t[:, 2]).clamp(min=0)
        dy = (t[:, 1] - y).clamp(min=0) + (y - t[:, 3]).clamp(min=0)
        hit[i] = bool(((dx**2 + dy**2) <= tolerance**2).any())
    return hit


def map_points(maps: torch.Tensor, image_size) -> torch.Tensor:
    """Each map's maximum point ``(x, y)`` at the image size, Tensor[B, 2] int64; ties go to the first
    pixel in row-major order; ``(-1, -1)`` for a constant map (it points nowhere).

    For boolean regions the point is the region's first pixel in row-major order.

    Example:
        >>> m = torch.zeros(1, 4, 4); m[0, 2, 1] = 1.0
        >>> map_points(m, (4, 4)).tolist()
        [[1, 2]]
    """
    size = _size(image_size)
    m = _image_maps(maps, size).double()
    flat = m.reshape(m.shape[0], -1)
    idx = flat.argmax(dim=1)  # the first maximum
    pts = torch.stack([idx % size[1], idx // size[1]], dim=1)
    empty = flat.amax(dim=1) <= 0
    pts[empty] = -1
    return pts


def pointing_game(maps: torch.Tensor, truth, image_size, *, tolerance: int = 0) -> torch.Tensor:
    """The pointing game (Zhang et al., "Top-down neural attention by excitation backprop", 2016): a hit
    when the map's maximum lies in the object (within ``tolerance`` pixels of it).

    Args:
        maps (Tensor[B, h, w]): score maps or boolean regions (see :func:`map_points`).
        truth: ground truth, boxes Tensor[B, 4] (inclusive), a list of Tensor[n_i, 4], or object masks
            BoolTensor[B, H, W].
        image_size: ``(H, W)``.
        tolerance: pixels (the original uses 15 on ImageNet-sized images; 0 here: small images).

    Returns:
        BoolTensor[B]: hits (a constant map is a miss).

    Raises:
        NeurocoreError: ``truth`` of another length than ``maps``; boxes that are not integer, not
            ``[n, 4]``, outside the image or inverted (naming ``truth[i]`` and the box); masks not
            ``BoolTensor[B, H, W]``; score maps with NaN or infinite values.

    Example:
        >>> m = torch.zeros(2, 4, 4); m[0, 0, 0] = 1; m[1, 3, 3] = 1
        >>> pointing_game(m, torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1]]), (4, 4)).tolist()
        [True, False]
    """
    if len(truth) != maps.shape[0]:
        raise NeurocoreError(f"truth must hold one entry per map ({maps.shape[0]}); got {len(truth)}")
    _check_truth(truth, int(maps.shape[0]), _size(image_size), "truth")
    return _in_truth(map_points(maps, image_size), truth, int(tolerance))


def choose_threshold(maps: torch.Tensor, boxes, image_size, thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                     iou_threshold: float = 0.5) -> float:
    """The threshold with the highest localisation accuracy on (held-out) images; ties: the lowest.

    Example:
        >>> m = torch.zeros(1, 4, 4); m[0, :2, :2] = 1.0; m[0, 2:, 2:] = 0.4
        >>> choose_threshold(m, torch.tensor([[0, 0, 1, 1]]), (4, 4), thresholds=(0.3, 0.6))
        0.6
    """
    if not len(thresholds):
        raise NeurocoreError("thresholds must hold at least one value in (0, 1]")
    _check_boxes(boxes, _size(image_size))
    best, best_acc = None, -1.0
    for t in thresholds:
        acc = float((_best_iou(map_boxes(maps, image_size, t), boxes) >= iou_threshold).double().mean())
        if acc > best_acc:
            best, best_acc = float(t), acc
    return best


def where_benchmark(
    maps: Mapping[str, torch.Tensor],
    boxes,
    image_size,
    *,
    heldout: torch.Tensor | None = None,
    truth_masks: torch.Tensor | None = None,
    seconds: Mapping[str, float] | None = None,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    iou_threshold: float = 0.5,
    tolerance: int = 0,
):
    """Localisation accuracy and the pointing game of several "where" maps on the same images.

    For each source: the threshold is chosen on the ``heldout`` images (:func:`choose_threshold`; boolean
    regions have none), the box of the map above it is compared with the ground truth on the other
    images (IoU >= ``iou_threshold``: a hit), and the map's maximum is checked against the object
    (:func:`pointing_game`; NaN for boolean regions, which have no maximum: score the map they were
    thresholded from instead, as HINT's ``hint scores`` beside its ``hint regions``). A ``whole image`` row is always added: the whole-image box, and the image
    centre as its point.

    Args:
        maps: name -> Tensor[N, h, w] (score maps or BoolTensor regions) of the same N images.
        boxes: ground truth, Tensor[N, 4] inclusive or a list of Tensor[n_i, 4].
        image_size: ``(H, W)`` of the images.
        heldout (BoolTensor[N]) or None: the images that choose the threshold; None: the first half
            (``N // 2``) chooses, the rest is scored.
        truth_masks (BoolTensor[N, H, W]) or None: object pixels for the pointing game (exact on the
            concept world); None: the boxes.
        seconds: name -> seconds per image to make that source's maps (reported; NaN when absent).
        thresholds: candidates in (0, 1]. iou_threshold: 0.5. tolerance: the pointing game's, pixels.

    Returns:
        ``pandas.DataFrame`` indexed by ``method`` with columns ``threshold, accuracy, mean_iou,
        pointing, seconds_per_image, images`` (``images``: scored, not held out).

    Raises:
        NeurocoreError: maps of different N, an empty held-out or test split, bad shapes; boxes that are not
            integer, outside the image or inverted (naming ``boxes[i]``, or ``boxes[i][j]`` in a list, and the
            box); a score map with NaN or infinite values (naming ``maps[name][i]``); ``truth_masks`` not
            ``BoolTensor[N, H, W]``.

    Example:
        >>> m = torch.zeros(4, 8, 8); m[:, :4, :4] = 1.0
        >>> t = where_benchmark({"planted": m}, torch.tensor([[0, 0, 3, 3]] * 4), (8, 8))
        >>> t.loc["planted", ["accuracy", "pointing"]].tolist(), float(t.loc["whole image", "accuracy"])
        ([1.0, 1.0], 0.0)
    """
    import pandas as pd

    if not maps:
        raise NeurocoreError("maps must hold at least one name -> Tensor[N, h, w]")
    size = _size(image_size)
    _check_boxes(boxes, size)
    n = len(boxes)
    if truth_masks is not None:
        _check_masks(truth_masks, n, size, "truth_masks")
    if heldout is None:
        heldout = torch.arange(n) < n // 2
    heldout = torch.as_tensor(heldout, dtype=torch.bool).reshape(-1)
    if heldout.numel() != n or not heldout.any() or heldout.all():
        raise NeurocoreError(f"heldout must be a BoolTensor[{n}] with both held-out and scored images; got {heldout.tolist()[:8]}...")
    test = (~heldout).nonzero().reshape(-1)
    pick = lambda truth, idx: truth[idx] if isinstance(truth, torch.Tensor) else [truth[i] for i in idx.tolist()]
    seconds = dict(seconds or {})
    rows = []
    for name, m in maps.items():
        if not isinstance(m, torch.Tensor) or m.dim() != 3 or m.shape[0] != n:
            raise NeurocoreError(f"maps[{name!r}] must be a Tensor[{n}, h, w] (one map per box); got {getattr(m, 'shape', type(m))}")
        _check_finite(m, f"maps[{name!r}]")
        if m.dtype == torch.bool:
            t = float("nan")
            pred = map_boxes(m[test], size)
        else:
            t = choose_threshold(m[heldout], pick(boxes, heldout.nonzero().reshape(-1)), size, thresholds, iou_threshold)
            pred = map_boxes(m[test], size, t)
        iou = _best_iou(pred, pick(boxes, test))
        truth = truth_masks[test] if truth_masks is not None else pick(boxes, test)
        if m.dtype == torch.bool:
            pointing = float("nan")  # a region has no maximum to point with
        else:
            pointing = float(_in_truth(map_points(m[test], size), truth, int(tolerance)).double().mean())
        rows.append({"method": name, "threshold": t, "accuracy": float((iou >= iou_threshold).double().mean()),
                     "mean_iou": float(iou.mean()), "pointing": pointing,
                     "seconds_per_image": float(seconds.get(name, float("nan"))), "images": int(test.numel())})
    whole = whole_image_boxes(size, int(test.numel()))
    iou = _best_iou(whole, pick(boxes, test))
    centre = torch.tensor([[(size[1] - 1) // 2, (size[0] - 1) // 2]] * int(test.numel()), dtype=torch.int64)
    truth = truth_masks[test] if truth_masks is not None else pick(boxes, test)
    hits = _in_truth(centre, truth, int(tolerance))
    rows.append({"method": "whole image", "threshold": float("nan"), "accuracy": float((iou >= iou_threshold).double().mean()),
                 "mean_iou": float(iou.mean()), "pointing": float(hits.double().mean()), "seconds_per_image": 0.0,
                 "images": int(test.numel())})
    return pd.DataFrame(rows).set_index("method")


@dataclass(frozen=True)
class HintConceptMaps:
    """HINT's concept maps of some images (:func:`hint_concept_maps`).

    Attributes:
        scores (Tensor[B, h, w] float32): each image's concept classifier's probability at every cell of
            the layer's map.
        regions (BoolTensor[B, h, w]): ``scores > 0.5``: the concept's region (HINT's localisation).
        concepts (tuple[str, ...]): the concept localised in each image.
        classifiers: the :class:`~neurocore.methods.hint.ConceptClassifiers` applied (top ``percent`` % neurons).
        phi (Tensor[C, E]): Φ of the training cells.
        fit_seconds: saliency, classifiers and Φ on the training images (once).
        map_seconds: feature maps and classifiers on the B images (all of them).
    """

    scores: torch.Tensor
    regions: torch.Tensor
    concepts: tuple[str, ...]
    classifiers: Any
    phi: torch.Tensor
    fit_seconds: float
    map_seconds: float


def hint_concept_maps(
    model,
    layer: str,
    train_images: torch.Tensor,
    train_targets: torch.Tensor,
    train_membership: torch.Tensor,
    concepts: Sequence[str],
    images: torch.Tensor,
    image_concepts,
    *,
    method=None,
    percent: float = 80,
) -> HintConceptMaps:
    """HINT's "where" for new images: fit on training images, map each scored image's concept.

    On the training images (never the scored ones), with the settings of ``method`` (a
    :class:`~neurocore.methods.hint.Hint`; default ``Hint()``: guided backprop, norm, t = 0.5, logistic
    regression, Shapley Φ): layer saliency of each image's target logit, responsible regions, the
    cells of every concept (:func:`~neurocore.methods.hint.cell_dataset`), the concept classifiers and
    Φ; then each concept's classifier refitted on its top ``percent`` % neurons by Φ
    (:func:`~neurocore.evaluate.concept_localizers`, ALGORITHMS.md §3.6). On the scored images: the
    layer's feature maps (:func:`~neurocore.probe.spatial_maps`) and each image's concept classifier
    at every cell (:func:`~neurocore.evaluate.concept_maps`).

    Args:
        model: the classifier (logits ``[B, classes]``).
        layer: module name of the explained layer (a ``[B, C, h, w]`` output).
        train_images (Tensor[N, 3, H, W]): preprocessed training images.
        train_targets (Tensor[N] int64): the logit differentiated for each (its class's logit index).
        train_membership (Tensor[N, E]): 1 where training image n belongs to concept e
            (:meth:`~neurocore.methods.hint.ConceptHierarchy.membership`).
        concepts: the E concept names (e.g. ``hierarchy.names``).
        images (Tensor[B, 3, H, W]): the preprocessed images to localise in.
        image_concepts: one concept name for all, or one per image
            (:func:`~neurocore.evaluate.most_specific_concepts`).
        method: a :class:`~neurocore.methods.hint.Hint` whose settings are used; None: the defaults.
        percent: neurons kept per concept by Φ, in (0, 100] (the paper's localisation: 80).

    Returns:
        :class:`HintConceptMaps` (maps at the layer's resolution; the "where" benchmark upsamples them).

    Raises:
        NeurocoreError: bad HINT settings, mismatched shapes, an unknown concept, a wrong layer, a layer
            without responsible regions (flat saliency, e.g. the layer a global average pool follows).

    Example:
        >>> from neurocore.demo import ConceptWorld, PlantedConceptNet
        >>> from neurocore.methods.hint import Hint
        >>> world = ConceptWorld(); train = world.sample(1, seed=0); test = world.sample(1, seed=1).subset(range(4))
        >>> colour = train.attributes[:, 1]  # concept = the object's colour; logit = its colour unit
        >>> hm = hint_concept_maps(PlantedConceptNet(world), "colours", train.images, colour,
        ...                        F.one_hot(colour, 4), world.colours, test.images,
        ...                        [world.colours[c] for c in test.attributes[:, 1]],
        ...                        method=Hint(saliency="gradient_x_input", contribution="coefficient"))
        >>> hm.scores.shape, map_boxes(hm.regions, (32, 32)).tolist() == test.boxes.tolist()  # the planted boxes
        (torch.Size([4, 32, 32]), True)
    """
    from neurocore.methods.hint import (
        Hint,
        _contributions,
        cell_dataset,
        layer_saliency,
        require_responsible_regions,
        responsible_regions,
    )
    from neurocore.probe import spatial_maps

    settings = (method if method is not None else Hint())._settings()
    if isinstance(settings["target"], list) or settings["target"] not in ("auto", "label"):
        raise NeurocoreError(
            f"method.target must be 'auto' or 'label' here (train_targets give each training image's logit); got "
            f"{settings['target']!r}"
        )
    concepts = [str(c) for c in concepts]
    train_targets = torch.as_tensor(train_targets, dtype=torch.int64).reshape(-1)
    train_membership = torch.as_tensor(train_membership)
    n = train_images.shape[0] if isinstance(train_images, torch.Tensor) else -1
    if n < 1 or train_targets.numel() != n or train_membership.shape != (n, len(concepts)):
        raise NeurocoreError(
            f"train_images must be a Tensor[N, 3, H, W] with train_targets [N] and train_membership [N, E = {len(concepts)}]; "
            f"got {getattr(train_images, 'shape', type(train_images).__name__)}, {tuple(train_targets.shape)}, "
            f"{tuple(train_membership.shape)}"
        )
    clock = time.perf_counter()
    options = {"batch_size": settings["batch_size"]}
    if settings["saliency"] == "smoothgrad":
        options["seed"] = settings["seed"]
    maps, sal = layer_saliency(model, layer, train_images, train_targets, settings["saliency"], **options)
    regions = responsible_regions(sal, settings["aggregation"], settings["threshold"])
    require_responsible_regions(regions, sal, layer, method=settings["saliency"], aggregation=settings["aggregation"],
                                threshold=settings["threshold"], images="training")
    if not bool((train_membership > 0.5).any()):
        raise NeurocoreError("train_membership has no 1s: no training image belongs to a concept; give each its concepts")
    cells, labels = cell_dataset(maps, regions, train_membership.float())
    phi, _ = _contributions(cells, labels, concepts, settings)
    clf = concept_localizers(cells, labels, concepts, phi, percent=percent, classifier=settings["classifier"],
                             max_cells=settings["max_cells"], seed=settings["seed"])
    fit_seconds = time.perf_counter() - clock
    clock = time.perf_counter()
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[0] == 0:
        raise NeurocoreError(f"images must be a non-empty Tensor[B, 3, H, W]; got {getattr(images, 'shape', type(images).__name__)}")
    test_maps = spatial_maps(model, layer, images, range(images.shape[0]), batch_size=settings["batch_size"])
    if test_maps.dim() != 4:
        raise NeurocoreError(f"layer {layer!r} must give [B, C, h, w] maps; got {tuple(test_maps.shape)}")
    names = [image_concepts] * images.shape[0] if isinstance(image_concepts, str) else [str(c) for c in image_concepts]
    scores = concept_maps(clf, test_maps, names)
    return HintConceptMaps(scores, scores > 0.5, tuple(names), clf, phi, fit_seconds, time.perf_counter() - clock)
