"""HINT's layer saliency and responsible regions (ALGORITHMS.md §3.1–3.2; paper ``hint.txt`` §3.1).

Everything runs on :func:`neurocore.probe.layer_gradients`, which differentiates the layer's output
*as it left the module* (captum's layer attributions read it after a following ``ReLU(inplace=True)``
has overwritten it) and applies the guided rule to ``nn.ReLU`` and ``nn.ReLU6`` with every hook
removed, also when the model raises. SmoothGrad and integrated gradients are loops over it, in the
authors' definitions (captum's ``NoiseTunnel`` uses a fixed noise std, and its layer integrated
gradients integrate in the layer's space, not the input's).
"""

from __future__ import annotations

import torch

from neurocore._errors import NeurocoreError

SALIENCY_METHODS = ("gradient", "gradient_x_input", "guided_backprop", "smoothgrad", "integrated_gradients")
AGGREGATIONS = ("norm", "filter_norm", "sum", "max", "abs_sum", "abs_max")

# Options each method takes (beyond batch_size, device, layout, which all take).
_OPTIONS = {
    "gradient": {},
    "gradient_x_input": {},
    "guided_backprop": {},
    "smoothgrad": {"samples": 50, "sigma": 0.15, "seed": 0},
    "integrated_gradients": {"steps": 25},
}
_COMMON = {"batch_size": 32, "device": None, "layout": "auto"}


def layer_saliency(model, layer: str, images: torch.Tensor, targets: torch.Tensor, method: str = "guided_backprop",
                   **options) -> tuple[torch.Tensor, torch.Tensor]:
    """HINT's saliency of a layer's feature map for each image's target class.

    ``s = ∂f_y/∂z`` with ``z`` the layer's output as it left the module (before any in-place op that
    follows it) and ``f_y`` the pre-softmax logit of image's target ``y`` (ALGORITHMS.md §3.1):

    * ``"gradient"``: ``s``;
    * ``"gradient_x_input"``: ``s ⊙ z`` (at the layer);
    * ``"guided_backprop"`` (the released code's default): at every ``nn.ReLU`` the gradient passed
      down is ``1[out > 0] · max(g, 0)``, at every ``nn.ReLU6`` ``1[0 < out < 6] · max(g, 0)``; other
      activations keep their ordinary gradient, with a warning naming them;
    * ``"smoothgrad"``: the mean of the plain ``s`` over ``samples`` noisy copies of each image, noise
      std = ``sigma × (max − min)`` of that image, drawn from a CPU generator seeded with ``seed``;
    * ``"integrated_gradients"`` (the authors' definition, in *input* space, zero baseline):
      ``z(x) ⊙ mean_{α ∈ linspace(0, 1, steps)} ∂f_y/∂z |_(α·x)``, both ends included.

    Own code on :func:`~neurocore.probe.layer_gradients` rather than captum's layer attributions: see
    the module docstring. One forward and one backward per batch (per sample or step for SmoothGrad and
    integrated gradients); the model comes back exactly as it was.

    Args:
        model: the classifier (``forward`` returns ``Tensor[B, classes]`` logits).
        layer: module name of the layer (``model.named_modules()``).
        images (Tensor[B, 3, H, W] float): preprocessed images.
        targets (Tensor[B] int64): each image's class index (the logit differentiated).
        method: one of :data:`SALIENCY_METHODS`.
        **options: ``samples=50, sigma=0.15, seed=0`` (smoothgrad), ``steps=25``
            (integrated_gradients), and for every method ``batch_size=32`` (images per pass),
            ``device`` (default: the model's) and ``layout`` (see :func:`~neurocore.probe.record`).

    Returns:
        ``(feature_maps, saliency)``: both ``Tensor[B, C, h, w]`` float32 on the CPU; the feature
        maps are always the clean images' ``z(x)``.

    Raises:
        NeurocoreError: an unknown method or option, bad option values, and everything
            :func:`~neurocore.probe.layer_gradients` refuses (wrong layer name, targets out of range...).

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        ...                     nn.Linear(4, 2))
        >>> z, s = layer_saliency(net, "0", torch.rand(2, 3, 8, 8), torch.tensor([0, 1]))
        >>> z.shape, s.shape, bool((s >= 0).all())  # guided: no negative gradient passes a ReLU
        (torch.Size([2, 4, 8, 8]), torch.Size([2, 4, 8, 8]), True)
    """
    from neurocore.probe import layer_gradients

    if method not in _OPTIONS:
        raise NeurocoreError(f"method must be one of {SALIENCY_METHODS}; got {method!r}")
    allowed = {**_COMMON, **_OPTIONS[method]}
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise NeurocoreError(
            f"layer_saliency(method={method!r}) has no option {', '.join(map(repr, unknown))}; its options are: "
            f"{', '.join(allowed)}"
        )
    opts = {**allowed, **options}
    run = dict(batch_size=opts["batch_size"], device=opts["device"], layout=opts["layout"])
    if not isinstance(targets, torch.Tensor) or targets.dim() != 1 or targets.is_floating_point():
        raise NeurocoreError(
            f"targets must be a Tensor[B] int64 of class indices; got "
            f"{tuple(targets.shape) if isinstance(targets, torch.Tensor) else type(targets).__name__}"
        )

    if method in ("gradient", "gradient_x_input", "guided_backprop"):
        res = layer_gradients(model, layer, images, targets, rule="guided" if method == "guided_backprop" else None,
                              **run)
        sal = res.gradients * res.activations if method == "gradient_x_input" else res.gradients
        return _maps(res.activations, layer), _maps(sal, layer)

    clean = layer_gradients(model, layer, images, targets, **run)
    z = _maps(clean.activations, layer)
    if method == "smoothgrad":
        samples, sigma, seed = opts["samples"], opts["sigma"], opts["seed"]
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise NeurocoreError(f"samples must be an integer >= 1; got {samples!r}")
        if not isinstance(sigma, (int, float)) or sigma < 0:
            raise NeurocoreError(f"sigma must be a number >= 0 (noise std as a share of each image's range); got {sigma!r}")
        gen = torch.Generator().manual_seed(int(seed))
        flat = images.detach().reshape(images.shape[0], -1)
        spread = (flat.max(1).values - flat.min(1).values).view(-1, *([1] * (images.dim() - 1)))
        std = (float(sigma) * spread).cpu()
        total = torch.zeros_like(z)
        for _ in range(samples):
            noise = torch.randn(images.shape, generator=gen, dtype=torch.float32) * std
            noisy = images + noise.to(images.device, images.dtype)
            total += _maps(layer_gradients(model, layer, noisy, targets, **run).gradients, layer)
        return z, total / samples

    steps = opts["steps"]
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise NeurocoreError(f"steps must be an integer >= 1; got {steps!r}")
    total = torch.zeros_like(z)
    for alpha in torch.linspace(0, 1, steps).tolist():
        total += _maps(layer_gradients(model, layer, images * alpha, targets, **run).gradients, layer)
    return z, z * (total / steps)


def _maps(t: torch.Tensor, layer: str) -> torch.Tensor:
    if t.dim() != 4:
        raise NeurocoreError(
            f"layer {layer!r} gives outputs of shape {tuple(t.shape)}; HINT needs convolutional feature maps "
            "[B, C, h, w]: choose a convolutional layer"
        )
    return t


def aggregate_saliency(saliency: torch.Tensor, aggregation: str = "norm") -> torch.Tensor:
    """ζ: a saliency map over channels, per cell (ALGORITHMS.md §3.2).

    ``norm`` (L2 over channels, the default), ``filter_norm`` (L2 of the positive part), ``sum`` and
    ``max`` (signed), ``abs_sum``, ``abs_max``.

    Args:
        saliency (Tensor[B, C, h, w]): the layer saliency.
        aggregation: one of :data:`AGGREGATIONS`.

    Returns:
        Tensor[B, h, w] in saliency's dtype.

    Raises:
        NeurocoreError: an unknown aggregation or a tensor that is not 4-D.

    Example:
        >>> aggregate_saliency(torch.tensor([[[[3.]], [[-4.]]]]), "norm").item()
        5.0
    """
    if not isinstance(saliency, torch.Tensor) or saliency.dim() != 4:
        raise NeurocoreError(
            "saliency must be a Tensor[B, C, h, w]; got "
            f"{tuple(saliency.shape) if isinstance(saliency, torch.Tensor) else type(saliency).__name__}"
        )
    if aggregation == "norm":
        return saliency.norm(dim=1)
    if aggregation == "filter_norm":
        return saliency.clamp(min=0).norm(dim=1)
    if aggregation == "sum":
        return saliency.sum(1)
    if aggregation == "max":
        return saliency.amax(1)
    if aggregation == "abs_sum":
        return saliency.abs().sum(1)
    if aggregation == "abs_max":
        return saliency.abs().amax(1)
    raise NeurocoreError(f"aggregation must be one of {AGGREGATIONS}; got {aggregation!r}")


def normalise_saliency(maps: torch.Tensor) -> torch.Tensor:
    """Each image's ``h×w`` map scaled once: ``clip((a − min a) / (p99(a) − min a), 0, 1)``.

    p99 is the 99th percentile with linear interpolation (``torch.quantile``'s and numpy's default).
    When ``p99 ≤ min`` (a flat or near-flat map) ``max − min`` is the divisor; when ``max == min``
    the map is all zeros (no cell stands out). ALGORITHMS.md §3.2.

    Args:
        maps (Tensor[B, h, w]): aggregated saliency.

    Returns:
        Tensor[B, h, w] float in [0, 1] (float64 for float64 input, float32 otherwise).

    Example:
        >>> normalise_saliency(torch.tensor([[[0., 1.], [2., 2.]]]))
        tensor([[[0.0000, 0.5000],
                 [1.0000, 1.0000]]])
    """
    if not isinstance(maps, torch.Tensor) or maps.dim() != 3:
        raise NeurocoreError("maps must be a Tensor[B, h, w]")
    dtype = torch.float64 if maps.dtype == torch.float64 else torch.float32
    a = maps.reshape(maps.shape[0], -1).to(dtype)
    if a.shape[1] == 0:
        return a.reshape(maps.shape)
    lo = a.min(1).values
    hi = a.max(1).values
    p99 = torch.quantile(a, 0.99, dim=1, interpolation="linear")
    denom = torch.where(p99 > lo, p99 - lo, hi - lo)
    flat = hi == lo
    out = ((a - lo[:, None]) / torch.where(flat, torch.ones_like(denom), denom)[:, None]).clamp(0, 1)
    out[flat] = 0.0
    return out.reshape(maps.shape)


def responsible_regions(saliency: torch.Tensor, aggregation: str = "norm", threshold: float = 0.5) -> torch.Tensor:
    """Cells responsible for the target class: aggregated, normalised saliency strictly above ``threshold``.

    ζ over channels (:func:`aggregate_saliency`), then each image's map scaled once
    (:func:`normalise_saliency`); cells with value ``> threshold`` (strict) are responsible regions of
    every concept on the image's class's path to the root, the rest is background (paper §3.1,
    ALGORITHMS.md §3.2). A flat map has no responsible cell.

    Args:
        saliency (Tensor[B, C, h, w]): from :func:`layer_saliency`.
        aggregation: ``"norm"`` (default), ``"filter_norm"``, ``"sum"``, ``"max"``, ``"abs_sum"``, ``"abs_max"``.
        threshold: t in [0, 1]; 0.5 is the released code's.

    Returns:
        BoolTensor[B, h, w].

    Raises:
        NeurocoreError: an unknown aggregation, a threshold outside [0, 1], a tensor that is not 4-D.

    Example:
        >>> s = torch.zeros(1, 2, 2, 2); s[0, 0, 0, 0] = 1.0; s[0, 1, 1, 1] = 0.4
        >>> responsible_regions(s).tolist()
        [[[True, False], [False, False]]]
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
        raise NeurocoreError(f"threshold must be a number in [0, 1]; got {threshold!r}")
    return normalise_saliency(aggregate_saliency(saliency, aggregation)) > threshold


def require_responsible_regions(regions: torch.Tensor, saliency: torch.Tensor, layer: str, *, method: str,
                                aggregation: str, threshold: float, images: str = "probe") -> None:
    """Refuse a layer where no image has a responsible region (ALGORITHMS.md §3.2): HINT's one check,
    shared by :meth:`~neurocore.methods.hint.Hint.layer_cells` (hence ``Hint.explain``, ``hint()``, the
    CLI and sweeps) and :func:`~neurocore.evaluate.hint_concept_maps`.

    Without responsible cells every concept classifier lacks positives: F1 NaN, Φ all 0 and every
    neuron unlabelled, a result that looks like a finding but is none. The commonest cause is a flat
    saliency map: at the layer a global average pool follows (resnet's ``layer4``, the demo CNN's
    ``block4``) a logit's gradient is the same at every cell, so :func:`normalise_saliency` maps it to 0.

    Args:
        regions (BoolTensor[B, h, w]): :func:`responsible_regions` of the images.
        saliency (Tensor[B, C, h, w]): the saliency they came from.
        layer: the layer's name (for the message). method, aggregation, threshold: the settings used.
        images: what the images are, for the message (``"probe"``, ``"training"``).

    Raises:
        NeurocoreError: when ``regions`` has no True cell; it says whether the saliency is flat (choose
            an earlier layer) or no cell passes ``threshold`` (lower it).

    Example:
        >>> s = torch.ones(2, 3, 4, 4)  # the same saliency at every cell
        >>> require_responsible_regions(responsible_regions(s), s, "layer4", method="gradient",
        ...                             aggregation="norm", threshold=0.5)
        Traceback (most recent call last):
        ...
        neurocore._errors.NeurocoreError: no probe cell of layer 'layer4' is a responsible region: ...
    """
    if bool(regions.any()):
        return
    agg = aggregate_saliency(saliency, aggregation).flatten(1)
    if bool((agg.amax(1) == agg.amin(1)).all()):
        raise NeurocoreError(
            f"no {images} cell of layer {layer!r} is a responsible region: the {method!r} saliency (aggregated by "
            f"{aggregation!r}) is flat there, the same at every cell of every image, as at the layer right before a "
            "global average pool, where a logit's gradient is the same at every cell; HINT would fit no concept "
            "classifier and label no neuron: choose an earlier layer (one whose cells the following layers weigh "
            "differently)"
        )
    raise NeurocoreError(
        f"no {images} cell of layer {layer!r} is a responsible region: no cell's normalised {aggregation!r} saliency "
        f"exceeds threshold={threshold!r}: lower the threshold (0.5 is the released code's)"
    )
