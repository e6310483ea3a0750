"""The "where" benchmark over maps from any source (WWW heatmaps, HINT concept regions, Grad-CAM,
Score-CAM, Ablation-CAM, LIME): localisation accuracy (the box of the map above a threshold chosen on a
held-out split, IoU >= 0.5) and the pointing game, with the whole-image box beside them.

Maps are ``Tensor[B, h, w]``: floating score maps (each min-max normalised per image before the
threshold, which is a fraction of the normalised range) or boolean region masks (used as they are; no
threshold). Maps smaller than the image are upsampled to it (bilinear for scores, nearest for masks).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from neurocore._errors import NeurocoreError
from neurocore.evaluate._localization import _best_iou, _sizes, mask_boxes, whole_image_boxes

DEFAULT_THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 20))


def _image_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if not isinstance(maps, torch.Tensor) or maps.dim() != 3:
        got = tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__
        raise NeurocoreError(f"maps must be a Tensor[B, h, w] (score maps or boolean regions); got {got}")
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

    Example:
        >>> m = torch.zeros(2, 4, 4); m[0, 0, 0] = 1; m[1, 3, 3] = 1
        >>> pointing_game(m, torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1]]), (4, 4)).tolist()
        [True, False]
    """
    if len(truth) != maps.shape[0]:
        raise NeurocoreError(f"truth must hold one entry per map ({maps.shape[0]}); got {len(truth)}")
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
    (:func:`pointing_game`). A ``whole image`` row is always added: the whole-image box, and the image
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
        NeurocoreError: maps of different N, an empty held-out or test split, bad shapes.

    Example:
        >>> m = torch.zeros(4, 8, 8); m[:, :4, :4] = 1.0
        >>> t = where_benchmark({"planted": m}, torch.tensor([[0, 0, 3, 3]] * 4), (8, 8))
        >>> t.loc["planted", ["accuracy", "pointing"]].tolist(), float(t.loc["whole image", "accuracy"])
        ([1.0, 1.0], 0.0)
    """
    import pandas as pd

    if not maps:
        raise NeurocoreError("maps must hold at least one name -> Tensor[N, h, w]")
    n = len(boxes)
    if heldout is None:
        heldout = torch.arange(n) < n // 2
    heldout = torch.as_tensor(heldout, dtype=torch.bool).reshape(-1)
    if heldout.numel() != n or not heldout.any() or heldout.all():
        raise NeurocoreError(f"heldout must be a BoolTensor[{n}] with both held-out and scored images; got {heldout.tolist()[:8]}...")
    test = (~heldout).nonzero().reshape(-1)
    pick = lambda truth, idx: truth[idx] if isinstance(truth, torch.Tensor) else [truth[i] for i in idx.tolist()]
    seconds = dict(seconds or {})
    size = _size(image_size)
    rows = []
    for name, m in maps.items():
        if not isinstance(m, torch.Tensor) or m.dim() != 3 or m.shape[0] != n:
            raise NeurocoreError(f"maps[{name!r}] must be a Tensor[{n}, h, w] (one map per box); got {getattr(m, 'shape', type(m))}")
        if m.dtype == torch.bool:
            t = float("nan")
            pred = map_boxes(m[test], size)
        else:
            t = choose_threshold(m[heldout], pick(boxes, heldout.nonzero().reshape(-1)), size, thresholds, iou_threshold)
            pred = map_boxes(m[test], size, t)
        iou = _best_iou(pred, pick(boxes, test))
        truth = truth_masks[test] if truth_masks is not None else pick(boxes, test)
        hits = _in_truth(map_points(m[test], size), truth, int(tolerance))
        rows.append({"method": name, "threshold": t, "accuracy": float((iou >= iou_threshold).double().mean()),
                     "mean_iou": float(iou.mean()), "pointing": float(hits.double().mean()),
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
