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

from neurocore._errors import NeurocoreError

METHODS = ("gradcam", "scorecam", "ablationcam", "lime")
_CAM_CLASSES = {"gradcam": "GradCAM", "scorecam": "ScoreCAM", "ablationcam": "AblationCAM"}

__all__ = ["METHODS", "attribute"]


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
        targets (Tensor[B] int64, or one int for all): the class explained in each image.
        method: one of :data:`METHODS`.
        layer: the CAM's target layer, a dotted module name (``"layer4"``); required for CAMs, unused by LIME.
        batch_size: images per CAM pass (Score-/Ablation-CAM: masked copies per pass); LIME's perturbation batch.
        num_samples: LIME's perturbed samples per image (its default 1000).
        seed: LIME's seed (its sampler and quickshift).
        segmentation_fn: LIME's superpixels, ``image (H, W, C) -> int array (H, W)``; None: quickshift as above.
        progress: LIME's own progress bar per image (off by default).

    Returns:
        Tensor[B, H, W] float32 in [0, 1], on the CPU.

    Raises:
        NeurocoreError: an unknown method, a missing ``layer`` for a CAM, a wrong layer name (with close
            matches), bad shapes, or the ``attribution`` extra not installed.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
        >>> maps = attribute(net, torch.rand(2, 3, 16, 16), torch.tensor([0, 1]), method="gradcam", layer="0")
        >>> maps.shape, bool(maps.min() >= 0) and bool(maps.max() <= 1)
        (torch.Size([2, 16, 16]), True)
    """
    if method not in METHODS:
        raise NeurocoreError(f"method must be one of {METHODS}; got {method!r}")
    targets = _check(model, images, targets)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise NeurocoreError(f"batch_size must be an integer >= 1; got {batch_size!r}")
    if images.shape[0] == 0:
        return torch.zeros(0, *images.shape[2:])
    was_training = model.training
    try:
        if method == "lime":
            maps = _lime(model, images, targets, num_samples=num_samples, batch_size=batch_size, seed=seed,
                         segmentation_fn=segmentation_fn, progress=progress)
        else:
            if layer is None:
                raise NeurocoreError(f"method {method!r} needs layer=, the name of the CAM's target layer (e.g. the last conv block)")
            from neurocore.probe._layers import resolve_layers

            module = resolve_layers(model, [layer])[layer]
            maps = _cam(model, images, targets, method, module, batch_size)
    finally:
        model.train(was_training)
    return torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32)).clamp_(0, 1)
