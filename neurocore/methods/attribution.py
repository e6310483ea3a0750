"""Input-attribution baselines beside WWW and HINT (ALGORITHMS.md §5; the analysis report's comparison of
LIME with Grad-CAM, Score-CAM and Ablation-CAM): per-image "where" maps for a target class, from the
maintained libraries (``grad-cam`` and ``lime``), never re-implemented here.

Install with ``pip install neurocore[attribution]``.
"""

from __future__ import annotations

from collections.abc import Callable

import functools

import numpy as np
import torch
from torch import nn

from neurocore._errors import NeurocoreError, close_matches

METHODS = ("gradcam", "scorecam", "ablationcam", "lime")
_CAM_CLASSES = {"gradcam": "GradCAM", "scorecam": "ScoreCAM", "ablationcam": "AblationCAM"}
# every accepted spelling (compared case-insensitively) -> the name in METHODS
_SPELLINGS = {**{m: m for m in METHODS}, "grad-cam": "gradcam", "score-cam": "scorecam", "ablation-cam": "ablationcam"}

__all__ = ["METHODS", "attribute", "method_name"]


def method_name(method, name: str = "method") -> str:
    """The attribution method named by ``method``, as spelled in :data:`METHODS`.

    The one normalisation of method names, shared by :func:`attribute` and
    :func:`neurocore.report.image_maps`: the names of :data:`METHODS` and the papers' hyphenated
    spellings (``"grad-cam"``, ``"score-cam"``, ``"ablation-cam"``), in any case (``"Grad-CAM"``).

    Args:
        method: the name to normalise.
        name: the parameter named in the error message (default ``"method"``).

    Returns:
        str: one of :data:`METHODS`.

    Raises:
        NeurocoreError: not a string, or no accepted spelling (with close matches).

    Example:
        >>> method_name("Grad-CAM"), method_name("scorecam")
        ('gradcam', 'scorecam')
    """
    if isinstance(method, str) and method.lower() in _SPELLINGS:
        return _SPELLINGS[method.lower()]
    near = close_matches(method.lower(), _SPELLINGS) if isinstance(method, str) else []
    raise NeurocoreError(
        f"{name} must name methods among {list(_SPELLINGS)} (any case); got {method!r}"
        + (f" (close matches: {', '.join(near)})" if near else "")
    )


def _missing(package: str, exc: ImportError) -> NeurocoreError:
    return NeurocoreError(
        f"the attribution baselines need the '{package}' package, which is not installed ({exc}); "
        "install the extra: pip install 'neurocore[attribution]'"
    )


def _check(model, images, targets) -> torch.Tensor:
    if not isinstance(model, nn.Module):
        raise NeurocoreError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point():
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise NeurocoreError(f"images must be a floating Tensor[B, C, H, W] of model inputs (already transformed); got {got}")
    t = torch.as_tensor(targets, dtype=torch.int64).reshape(-1)
    if t.numel() == 1 and images.shape[0] > 1:
        t = t.expand(images.shape[0])
    if t.numel() != images.shape[0]:
        raise NeurocoreError(f"targets must hold one class index per image ({images.shape[0]}) or one for all; got {t.numel()}")
    return t


def _check_outputs(model, images, targets, method: str, layer: str | None, module) -> None:
    """One hooked forward pass of the first image (eval mode): ``targets`` must be indices of the model's
    outputs, and a CAM's layer must output channels-first maps ``[B, C, H, W]`` (grad-cam's input)."""
    from neurocore.probe._forward import hooked_forward
    from neurocore.probe._layers import eval_mode
    from neurocore.probe._layout import from_canonical

    modules = {} if module is None else {layer: module}
    layouts = dict.fromkeys(modules, "auto")
    device = next((p.device for p in model.parameters()), images.device)
    with eval_mode(model):
        kept, _, logits = hooked_forward(model, modules, images[:1], layouts=layouts, device=device,
                                         where="the first image (attribute's check of targets and layer)")
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise NeurocoreError(f"model must return logits [B, classes] (a classifier); got {got} for one image: "
                             "explain a classifier, or wrap the model so that it returns its class scores")
    classes = int(logits.shape[1])
    bad = (targets < 0) | (targets >= classes)
    if bool(bad.any()):
        where = bad.nonzero().reshape(-1)
        raise NeurocoreError(
            f"targets must be class indices in [0, {classes}) (the model's {classes} outputs); got "
            f"{sorted(set(targets[where].tolist()))[:8]} at image(s) {where.tolist()[:8]}: pass each image's class "
            "index among the model's outputs (negative indices are not counted from the end)"
        )
    if module is not None and layouts[layer] != "NCHW":
        shape = tuple(from_canonical(kept[layer], layouts[layer]).shape)
        tokens = " (tokens: attribute passes no reshape to grad-cam, so ViT blocks cannot be used)" if len(shape) == 3 else ""
        raise NeurocoreError(
            f"layer {layer!r} outputs shape {shape} for one image (layout {layouts[layer]!r}){tokens}, but {method!r} "
            "needs spatial maps [B, C, H, W] with channels first: choose a convolutional layer, e.g. the last conv block"
        )


class _WithDevice(torch.nn.Module):
    """``model`` as it is, plus one empty parameter that says which device it runs on."""

    def __init__(self, model, device):
        super().__init__()
        self.model = model
        self.device_marker = torch.nn.Parameter(torch.empty(0, device=device), requires_grad=False)

    def forward(self, x):
        return self.model(x)


def _cam(model, images, targets, method, module, batch_size) -> np.ndarray:
    try:
        import pytorch_grad_cam
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise _missing("grad-cam", exc) from exc
    cls = getattr(pytorch_grad_cam, _CAM_CLASSES[method])
    kwargs = {"batch_size": batch_size} if method == "ablationcam" else {}
    if next(model.parameters(), None) is None:
        # grad-cam takes its device from the model's first parameter; a model without any (fixed filters,
        # a planted model) runs through a wrapper holding one empty parameter on the images' device.
        model = _WithDevice(model, images.device)
    with cls(model=model, target_layers=[module], **kwargs) as cam:
        if method == "gradcam":
            # BaseCAM's switch: gradients reach the layer even when nothing before it has parameters
            cam.compute_input_gradient = True
        if method == "scorecam":
            cam.batch_size = batch_size  # Score-CAM reads this attribute for its masked forward passes
        out = []
        for s in range(0, images.shape[0], batch_size):
            chunk = images[s : s + batch_size]
            out.append(cam(input_tensor=chunk, targets=[ClassifierOutputTarget(int(c)) for c in targets[s : s + batch_size]]))
    return np.concatenate(out, axis=0)


def _lime(model, images, targets, *, num_samples, batch_size, seed, segmentation_fn, progress) -> np.ndarray:
    try:
        from lime import lime_image
        from lime.wrappers.scikit_image import SegmentationAlgorithm
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise _missing("lime", exc) from exc
    device = next(iter(model.parameters()), torch.empty(0)).device

    def classify(batch: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(batch, dtype=images.dtype).permute(0, 3, 1, 2).to(device)
        with torch.no_grad():
            return torch.softmax(model(x).float(), dim=1).cpu().numpy()

    if segmentation_fn is None:
        quickshift = SegmentationAlgorithm("quickshift", kernel_size=4, max_dist=200, ratio=0.2, random_seed=seed)

        def segmentation_fn(image):  # quickshift works in Lab: give it the image rescaled to [0, 1]
            lo, hi = image.min(), image.max()
            return quickshift((image - lo) / (hi - lo) if hi > lo else image * 0)

    out = []
    library_bar = lime_image.tqdm
    if not progress:  # lime 0.2.0.1 draws a bar per image and has no switch for it
        lime_image.tqdm = functools.partial(library_bar, disable=True)
    try:
        explained = []
        for i in range(images.shape[0]):
            image = images[i].detach().permute(1, 2, 0).cpu().double().numpy()
            explainer = lime_image.LimeImageExplainer(random_state=seed)
            explained.append(explainer.explain_instance(
                image, classify, labels=(int(targets[i]),), top_labels=None, hide_color=0, num_samples=num_samples,
                batch_size=batch_size, segmentation_fn=segmentation_fn, random_seed=seed,
            ))
    finally:
        lime_image.tqdm = library_bar
    for i, exp in enumerate(explained):
        weights = np.zeros(int(exp.segments.max()) + 1)
        for segment, w in exp.local_exp[int(targets[i])]:
            weights[segment] = w
        heat = np.clip(weights[exp.segments], 0, None)
        out.append(heat / heat.max() if heat.max() > 0 else heat)
    return np.stack(out).astype(np.float32)


def attribute(
    model: nn.Module,
    images: torch.Tensor,
    targets,
    *,
    method: str = "gradcam",
    layer: str | None = None,
    batch_size: int = 32,
    num_samples: int = 1000,
    seed: int = 0,
    segmentation_fn: Callable | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Per-image attribution maps of a target class, in [0, 1] at the input size.

    * ``"gradcam"``, ``"scorecam"``, ``"ablationcam"``: ``pytorch_grad_cam``'s ``GradCAM``, ``ScoreCAM``,
      ``AblationCAM`` on ``layer`` with ``ClassifierOutputTarget(target)``; the library's own scaling
      (``map − min``, divided by its max) and resizing to the input size. Batched by ``batch_size``.
    * ``"lime"``: ``lime``'s ``LimeImageExplainer`` (seeded) on the softmax of the model, quickshift
      superpixels (``kernel_size=4, max_dist=200, ratio=0.2``, the library's defaults) of the image
      rescaled to [0, 1], hidden superpixels set to 0 (the mean colour of a normalised input); the map is
      each superpixel's positive weight for the target, divided by the largest (all zero when no
      superpixel supports the target). One image at a time (LIME's design); ``batch_size`` is its batch
      of perturbed images.

    The model is put in eval mode (the library does it) and returned to its previous mode afterwards.

    Args:
        model: a classifier returning logits ``[B, classes]``.
        images (Tensor[B, C, H, W]): transformed model inputs.
        targets (Tensor[B] int64, or one int for all): the class explained in each image, in ``[0, classes)``.
        method: one of :data:`METHODS`, or a spelling :func:`method_name` accepts (``"grad-cam"``, ``"Grad-CAM"``).
        layer: the CAM's target layer, a dotted module name (``"layer4"``) whose output is a channels-first
            map ``[B, C, H, W]``; required for CAMs, unused by LIME.
        batch_size: images per CAM pass (Score-/Ablation-CAM: masked copies per pass); LIME's perturbation batch.
        num_samples: LIME's perturbed samples per image (its default 1000).
        seed: LIME's seed (its sampler and quickshift).
        segmentation_fn: LIME's superpixels, ``image (H, W, C) -> int array (H, W)``; None: quickshift as above.
        progress: LIME's own progress bar per image (off by default).

    Returns:
        Tensor[B, H, W] float32 in [0, 1], on the CPU.

    Raises:
        NeurocoreError: an unknown method, a missing ``layer`` for a CAM, a wrong layer name (with close
            matches), a layer without channels-first spatial maps (``[B, C]`` features, ``[B, T, C]`` tokens,
            channels-last maps; checked on one hooked forward pass of the first image), targets outside
            ``[0, classes)`` of the model's output, bad shapes, or the ``attribution`` extra not installed.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
        >>> maps = attribute(net, torch.rand(2, 3, 16, 16), torch.tensor([0, 1]), method="gradcam", layer="0")
        >>> maps.shape, bool(maps.min() >= 0) and bool(maps.max() <= 1)
        (torch.Size([2, 16, 16]), True)
    """
    method = method_name(method)
    targets = _check(model, images, targets)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise NeurocoreError(f"batch_size must be an integer >= 1; got {batch_size!r}")
    if images.shape[0] == 0:
        return torch.zeros(0, *images.shape[2:])
    was_training = model.training
    try:
        module = None
        if method != "lime":
            if layer is None:
                raise NeurocoreError(f"method {method!r} needs layer=, the name of the CAM's target layer (e.g. the last conv block)")
            from neurocore.probe._layers import resolve_layers

            module = resolve_layers(model, [layer])[layer]
        _check_outputs(model, images, targets, method, layer, module)
        if method == "lime":
            maps = _lime(model, images, targets, num_samples=num_samples, batch_size=batch_size, seed=seed,
                         segmentation_fn=segmentation_fn, progress=progress)
        else:
            maps = _cam(model, images, targets, method, module, batch_size)
    finally:
        model.train(was_training)
    return torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32)).clamp_(0, 1)
