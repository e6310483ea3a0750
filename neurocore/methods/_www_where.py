"""WWW's "where": class and sample heatmaps from neuron activation maps, their cosine similarity, and
the per-image pass that gives both for a labelled image set (ALGORITHMS.md §4, WWW CVPR 2024 §3.3)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from neurocore._errors import NeurocoreError
from neurocore.probe._maps import cell_maps


def _check_maps(maps: torch.Tensor) -> torch.Tensor:
    if not isinstance(maps, torch.Tensor) or maps.dim() not in (3, 4) or not maps.is_floating_point():
        got = tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__
        raise NeurocoreError(
            f"maps must be neuron activation maps, a floating Tensor[B, K, h, w] (or ViT tokens [B, T, K]); got {got}"
        )
    return cell_maps(maps)


def weighted_heatmap(maps: torch.Tensor, scores: torch.Tensor, *, top_n: int = 3, size=None) -> torch.Tensor:
    """``Σ_{k in top-n(scores)} (s_k / Σ s) · upsample(map_k)`` per image (bilinear, not thresholded).

    The top ``top_n`` neurons per row of ``scores`` (ties to the lower index); weights ``s_k / Σ s`` over
    those n (the released normalisation). When ``Σ s <= 0`` (no neuron supports the class) the heatmap
    is zero. Only the chosen maps are upsampled.

    Args:
        maps (Tensor[B, K, h, w] or tokens Tensor[B, T, K]): neuron activation maps of B images.
        scores (Tensor[B, K] or Tensor[K]): importance per image (or one row for all).
        top_n: neurons kept (WWW: 3).
        size: ``(H, W)`` to upsample to (the input size); None keeps ``(h, w)``.

    Returns:
        Tensor[B, H, W] in the maps' floating dtype.

    Example:
        >>> maps = torch.zeros(1, 3, 2, 2); maps[0, 0, 0, 0] = 1.0; maps[0, 1, 1, 1] = 1.0
        >>> weighted_heatmap(maps, torch.tensor([3.0, 1.0, 0.0]), top_n=2).tolist()
        [[[0.75, 0.0], [0.0, 0.25]]]
    """
    maps = _check_maps(maps)
    B, K, h, w = maps.shape
    if isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1:
        raise NeurocoreError(f"top_n must be an integer >= 1 (WWW: 3); got {top_n!r}")
    scores = torch.as_tensor(scores).to(maps.device, torch.float64)
    if scores.dim() == 1:
        scores = scores.expand(B, -1)
    if scores.shape != (B, K):
        raise NeurocoreError(f"scores must be a Tensor[{B}, {K}] (or Tensor[{K}]) of neuron importance; got {tuple(scores.shape)}")
    n = min(top_n, K)
    # stable descending sort: equal scores keep ascending neuron order
    order = torch.sort(-scores, dim=1, stable=True).indices[:, :n]
    s = scores.gather(1, order)
    total = s.sum(dim=1, keepdim=True)
    weights = torch.where(total > 0, s / torch.where(total > 0, total, 1.0), 0.0).to(maps.dtype)
    chosen = maps.gather(1, order[:, :, None, None].expand(B, n, h, w))
    if size is not None and tuple(size) != (h, w):
        chosen = F.interpolate(chosen, size=tuple(int(v) for v in size), mode="bilinear", align_corners=False)
    return (chosen * weights[:, :, None, None]).sum(dim=1)


def class_heatmap(
    maps: torch.Tensor, class_importance: torch.Tensor, classes: torch.Tensor, *, top_n: int = 3, size=None
) -> torch.Tensor:
    """WWW's class heatmap of each image: its neuron activation maps weighted by the **class-wise**
    importance of its (predicted) class: ``Σ_{top-n} (s_k/Σs)·upsample(NAM_k)``, ``s = class_importance[c]``.

    Args:
        maps (Tensor[B, K, h, w] or tokens Tensor[B, T, K]): the images' neuron activation maps.
        class_importance (Tensor[classes, K]): from :func:`class_importance`.
        classes (Tensor[B] int64): the class of each image (its prediction).
        top_n, size: as :func:`weighted_heatmap` (WWW: n = 3, the input size).

    Returns:
        Tensor[B, H, W].

    Raises:
        NeurocoreError: shapes that do not fit, classes out of range.

    Example:
        >>> maps = torch.rand(2, 4, 3, 3)
        >>> class_heatmap(maps, torch.rand(5, 4), torch.tensor([0, 3]), size=(12, 12)).shape
        torch.Size([2, 12, 12])
    """
    if not isinstance(class_importance, torch.Tensor) or class_importance.dim() != 2:
        raise NeurocoreError(f"class_importance must be a Tensor[classes, K]; got {getattr(class_importance, 'shape', class_importance)}")
    classes = torch.as_tensor(classes, dtype=torch.int64).reshape(-1)
    if classes.numel() and (int(classes.min()) < 0 or int(classes.max()) >= class_importance.shape[0]):
        raise NeurocoreError(f"classes must lie in [0, {class_importance.shape[0]}); got {classes.tolist()[:5]}...")
    return weighted_heatmap(maps, class_importance[classes.cpu()], top_n=top_n, size=size)


def sample_heatmap(maps: torch.Tensor, importance: torch.Tensor, *, top_n: int = 3, size=None) -> torch.Tensor:
    """WWW's sample heatmap: the same weighting as :func:`class_heatmap` with the image's **own**
    (sample-wise) importance for its predicted class.

    Args:
        maps (Tensor[B, K, h, w] or tokens Tensor[B, T, K]): the images' neuron activation maps.
        importance (Tensor[B, K]): from :func:`sample_importance`.
        top_n, size: as :func:`weighted_heatmap`.

    Returns:
        Tensor[B, H, W].

    Example:
        >>> sample_heatmap(torch.rand(2, 4, 3, 3), torch.rand(2, 4)).shape
        torch.Size([2, 3, 3])
    """
    return weighted_heatmap(maps, importance, top_n=top_n, size=size)


def heatmap_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of two heatmaps per image (WWW's uncertainty; 1 − it flags mispredictions).

    A zero heatmap has similarity 0 with anything (no evidence either way is "unlike").

    Args:
        a, b (Tensor[B, H, W]): class and sample heatmaps.

    Returns:
        Tensor[B] in [-1, 1], float32 (float64 for float64 inputs).

    Example:
        >>> x = torch.rand(2, 4, 4)
        >>> heatmap_similarity(x, 3 * x).round(decimals=5).tolist()
        [1.0, 1.0]
    """
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor) or a.shape != b.shape or a.dim() < 2:
        raise NeurocoreError(
            f"a and b must be heatmaps of one shape Tensor[B, H, W]; got {getattr(a, 'shape', a)} and {getattr(b, 'shape', b)}"
        )
    x, y = a.reshape(a.shape[0], -1).double(), b.reshape(b.shape[0], -1).double()
    num = (x * y).sum(1)
    den = x.norm(dim=1) * y.norm(dim=1)
    out = torch.where(den > 0, num / torch.where(den > 0, den, 1.0), 0.0)
    return out.to(torch.float64 if a.dtype == torch.float64 else torch.float32)


@dataclass(frozen=True)
class ImageHeatmaps:
    """What :func:`image_heatmaps` computes for a labelled image set.

    Attributes:
        similarity (Tensor[N] float32): cosine of the class and the sample heatmap per image.
        predictions (Tensor[N] int64): predicted class (argmax of the logits, restricted to
            ``classes`` when given).
        labels (Tensor[N] int64) or None: the images' labels.
        msp (Tensor[N] float32): maximum softmax probability (over the same classes).
        indices (Tensor[N] int64): dataset indices of the images.
        class_heatmaps, sample_heatmaps (Tensor[N, H, W]) or None: kept when asked for.
    """

    similarity: torch.Tensor
    predictions: torch.Tensor
    labels: torch.Tensor | None
    msp: torch.Tensor
    indices: torch.Tensor
    class_heatmaps: torch.Tensor | None = None
    sample_heatmaps: torch.Tensor | None = None

    @property
    def correct(self) -> torch.Tensor:
        """Tensor[N] bool: prediction equals the label."""
        if self.labels is None:
            raise NeurocoreError("these heatmaps were computed without labels; correctness is unknown")
        return self.predictions == self.labels


def image_heatmaps(
    model: nn.Module,
    layer: str,
    probe,
    class_importance: torch.Tensor,
    *,
    transform: Callable | None = None,
    classes: torch.Tensor | None = None,
    top_n: int = 3,
    method: str = "auto",
    head=None,
    batch_size: int = 32,
    device=None,
    keep_heatmaps: bool = False,
    progress: bool = False,
) -> ImageHeatmaps:
    """Class and sample heatmaps of every probe image and their similarity, batched (WWW §3.3).

    Per image: one pass gives the layer's neuron activation maps, the logits (prediction, MSP) and the
    sample-wise importance for the prediction (:func:`sample_importance`'s rule); the class heatmap
    weights the same maps by ``class_importance`` of the predicted class. Heatmaps are upsampled to the
    input's size.

    Args:
        model, layer, method, head, device: as :func:`class_importance`.
        probe: a dataset yielding ``(image, label)`` or images.
        class_importance (Tensor[classes, K]): from :func:`class_importance` on the training images.
        transform: the model's preprocessing.
        classes (Tensor[C'] int64) or None: restrict predictions (and the MSP's softmax) to these
            logits, e.g. Tiny ImageNet's 200 of ImageNet's 1000; labels are then indices into the
            model's logits as well. None: all logits.
        top_n: neurons per heatmap (WWW: 3).
        batch_size: images per pass.
        keep_heatmaps: also return the N heatmaps of each kind (memory: N·H·W floats each).
        progress: show a progress bar.

    Returns:
        :class:`ImageHeatmaps`.

    Raises:
        NeurocoreError: as :func:`class_importance`, a ``class_importance`` whose K differs from the layer's.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
        >>> probe = [(torch.rand(3, 8, 8), i % 2) for i in range(4)]
        >>> res = image_heatmaps(net, "1", probe, torch.rand(2, 4))
        >>> res.similarity.shape, res.msp.shape
        (torch.Size([4]), torch.Size([4]))
    """
    from neurocore.methods._www_why import _check_method, batch_importance, resolve_head
    from neurocore.probe._data import iter_batches

    first = next(iter(iter_batches(probe, 1, transform)), None)
    if first is None:
        raise NeurocoreError("the probe has no readable image")
    head = resolve_head(model, layer, head, first.images)
    method = _check_method(method, head)
    sub = None if classes is None else torch.as_tensor(classes, dtype=torch.int64)
    sims, preds, labels, msps, idx, ch, sh = [], [], [], [], [], [], []
    batches = iter_batches(probe, batch_size, transform)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc=f"heatmaps ({layer})", unit="batch")
    layouts = {layer: "auto"}
    for batch in batches:
        x = batch.images
        if sub is None:
            res = batch_importance(model, layer, x, None, method=method, head=head, device=device, layouts=layouts)
            logits = res.logits
        else:
            # prediction among the allowed classes: one pass for the logits, then the importance for it
            first_pass = batch_importance(model, layer, x, None, method=method, head=head, device=device, layouts=layouts)
            logits = first_pass.logits[:, sub]
            target = sub[logits.argmax(1)]
            if bool((target == first_pass.targets).all()):  # the overall argmax is an allowed class everywhere
                res = first_pass
            else:
                res = batch_importance(model, layer, x, target, method=method, head=head, device=device, layouts=layouts)
        pred = res.targets
        maps = cell_maps(res.activations)
        if class_importance.shape[1] != maps.shape[1]:
            raise NeurocoreError(
                f"class_importance has K={class_importance.shape[1]} neurons but layer {layer!r} has {maps.shape[1]}: "
                "compute it for this layer"
            )
        size = x.shape[-2:]
        c_map = class_heatmap(maps, class_importance, pred, top_n=top_n, size=size)
        s_map = sample_heatmap(maps, res.importance, top_n=top_n, size=size)
        sims.append(heatmap_similarity(c_map, s_map))
        preds.append(pred)
        msps.append(torch.softmax(logits.double(), dim=1).amax(1).float())
        labels.append(batch.labels)
        idx.append(batch.indices)
        if keep_heatmaps:
            ch.append(c_map)
            sh.append(s_map)
    has_labels = all(t is not None for t in labels)
    return ImageHeatmaps(
        similarity=torch.cat(sims),
        predictions=torch.cat(preds),
        labels=torch.cat(labels).to(torch.int64) if has_labels else None,
        msp=torch.cat(msps),
        indices=torch.cat(idx),
        class_heatmaps=torch.cat(ch) if keep_heatmaps else None,
        sample_heatmaps=torch.cat(sh) if keep_heatmaps else None,
    )
