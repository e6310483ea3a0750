"""WWW's "why": neuron importance for a class (ALGORITHMS.md §4, WWW CVPR 2024 §3.2).

The importance of neuron k for class c on image x is activation × gradient of the class logit at the
layer's pooled output: ``a_k(x) · ∂ logit_c / ∂ a_k``. When the rest of the network is global pooling
followed by one linear layer (ResNet's ``avgpool → fc``, a ViT's CLS token → ``head``, timm's
EfficientNet ``bn2 → global_pool → classifier``), that is exactly ``a_k · W[c, k]`` with ``a_k`` the
pooled feature: one forward pass, no backward. Otherwise it is computed with autograd through
:func:`neurocore.probe.layer_gradients` as ``Σ_cells z · ∂ logit_c / ∂ z`` over the layer's map (or
tokens), which equals the pooled form whenever the head pools by the mean (or reads the CLS token).
Shapley values proper are an option: permutation sampling over the pooled features with the head's
softmax (:func:`neurocore.ops.shapley_permutation`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from neurocore._errors import NeurocoreError
from neurocore.probe._data import iter_batches
from neurocore.probe._forward import hooked_forward
from neurocore.probe._gradients import layer_gradients
from neurocore.probe._layers import eval_mode, model_device, model_float_dtype, resolve_layers, summarise
from neurocore.probe._replace import Head, head_after

IMPORTANCE_METHODS = ("auto", "closed_form", "autograd", "shapley")


@dataclass(frozen=True)
class ImportanceBatch:
    """One pass over a batch: what importance and heatmaps need.

    Attributes:
        activations (Tensor[B, ...] float32, CPU): the layer's output (canonical layout).
        importance (Tensor[B, K] float32, CPU): each image's neuron importance for its target class.
        logits (Tensor[B, classes] float32, CPU): the model's output.
        targets (Tensor[B] int64): the class each importance is for.
    """

    activations: torch.Tensor
    importance: torch.Tensor
    logits: torch.Tensor
    targets: torch.Tensor


def linear_head(head: Head | None) -> nn.Linear | None:
    """The ``nn.Linear`` that a "pooled" head applies to the pooled features, or None."""
    if head is not None and head.kind == "pooled" and isinstance(head.pooled, nn.Linear):
        return head.pooled
    return None


def resolve_head(model: nn.Module, layer: str, head: Head | None, example: torch.Tensor | None = None) -> Head:
    """``head`` when given (its layer must be ``layer``), else :func:`~neurocore.probe.head_after`."""
    if head is None:
        return head_after(model, layer, example=example)
    if not isinstance(head, Head):
        raise NeurocoreError(f"head must be a neurocore.probe.Head or None; got {type(head).__name__}")
    if head.layer != layer:
        raise NeurocoreError(f"head is the head after {head.layer!r}, but layer is {layer!r}; give the head of that layer")
    return head


def _check_method(method: str, head: Head) -> str:
    if method not in IMPORTANCE_METHODS:
        raise NeurocoreError(f"method must be one of {IMPORTANCE_METHODS}; got {method!r}")
    lin = linear_head(head)
    if method in ("closed_form", "shapley") and lin is None:
        raise NeurocoreError(
            f"method={method!r} needs a head that is global pooling followed by one nn.Linear after layer "
            f"{head.layer!r}; the head found is of kind {head.kind!r}. Use method='autograd' (or 'auto'), or pass "
            "head=neurocore.probe.Head(layer, forward=..., pooled=<the linear layer>)"
        )
    if method == "auto":
        return "closed_form" if lin is not None else "autograd"
    return method


def _token_or_map_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over everything but the batch and channel axes of a canonical output."""
    if t.dim() == 4:
        return t.sum(dim=(2, 3))
    if t.dim() == 3:
        return t.sum(dim=1)
    return t


def batch_importance(
    model: nn.Module,
    layer: str,
    images: torch.Tensor,
    targets: torch.Tensor | None,
    *,
    method: str,
    head: Head,
    device=None,
    layouts: dict | None = None,
    permutations: torch.Tensor | None = None,
    background: torch.Tensor | None = None,
) -> ImportanceBatch:
    """Importance of every neuron of ``layer`` for each image's target class (its predicted class when
    ``targets`` is None), with the layer's output and the logits, from one pass over ``images``."""
    method = _check_method(method, head)
    layouts = layouts if layouts is not None else {layer: "auto"}
    device = model_device(model, device)
    dtype = model_float_dtype(model)
    if method == "autograd":
        chosen = targets
        if chosen is None:
            def chosen(logits):  # the predicted class's logit (argmax is not differentiated)
                return logits.gather(1, logits.detach().argmax(1, keepdim=True))[:, 0]
        res = layer_gradients(model, layer, images, chosen, batch_size=images.shape[0], device=device, layout=layouts[layer])
        imp = _token_or_map_sum(res.activations.double() * res.gradients.double()).float()
        logits = res.logits.float()
        t = targets if targets is not None else logits.argmax(1)
        return ImportanceBatch(res.activations.float(), imp, logits, t.to(torch.int64))
    modules = resolve_layers(model, layer)
    with eval_mode(model):
        outs, _, logits = hooked_forward(
            model, modules, images, keep=lambda n, o: o.detach().to("cpu", torch.float32), layouts=layouts,
            device=device, dtype=dtype, where="the given images",
        )
    z = outs[layer]
    logits = logits.detach().to("cpu", torch.float32)
    if isinstance(logits, torch.Tensor) and logits.dim() != 2:
        raise NeurocoreError(f"the model's output must be [B, classes] logits; got shape {tuple(logits.shape)}")
    t = (targets if targets is not None else logits.argmax(1)).to(torch.int64)
    pooled = summarise(z, head.summary, layer) if z.dim() > 2 else z
    lin = linear_head(head)
    W = lin.weight.detach().to("cpu", torch.float32)
    if method == "closed_form":
        imp = pooled * W[t]
    else:  # shapley
        from neurocore import ops

        b = lin.bias.detach().to("cpu", torch.float32) if lin.bias is not None else torch.zeros(W.shape[0])
        bg = torch.zeros_like(pooled) if background is None else background.to(pooled).expand_as(pooled).contiguous()
        imp = torch.empty_like(pooled)
        for s in range(0, pooled.shape[0], 8):  # phi is [rows, classes, K]: keep it a few MB
            phi = ops.shapley_permutation(pooled[s : s + 8].contiguous(), W, b, bg[s : s + 8].contiguous(), permutations, "softmax")
            imp[s : s + 8] = phi[torch.arange(phi.shape[0]), t[s : s + 8]]
    return ImportanceBatch(z, imp, logits, t)


def _batches(probe, batch_size, transform, labels, progress, desc):
    batches = iter_batches(probe, batch_size, transform)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc=desc, unit="batch")
    for batch in batches:
        y = batch.labels if labels is None else labels[batch.indices]
        yield batch, y


def class_importance(
    model: nn.Module,
    layer: str,
    probe,
    *,
    transform: Callable | None = None,
    labels: torch.Tensor | None = None,
    method: str = "auto",
    head: Head | None = None,
    batch_size: int = 64,
    device=None,
    n_permutations: int = 64,
    seed: int = 0,
    progress: bool = False,
) -> torch.Tensor:
    """Class-wise neuron importance (WWW §3.2): for every class c, the mean over the images labelled c
    of ``a_k · ∂ logit_c / ∂ a_k`` at ``layer``'s pooled output.

    ``method="auto"`` takes the exact closed form ``a_k · W[c, k]`` when the head after ``layer`` is
    global pooling then one linear layer (:func:`~neurocore.probe.head_after`; one forward pass, no
    backward: the per-class sums of pooled features times ``W``), else autograd, batched
    (:func:`~neurocore.probe.layer_gradients`; ``Σ_cells z · ∂ logit_c / ∂ z``, equal to the pooled form
    for mean pooling and for a ViT's CLS token). ``"shapley"``: permutation Shapley values of the pooled
    features under the head's softmax (background: zero features; ``n_permutations`` seeded
    permutations), averaged the same way. The released code runs one image at a time; batching gives
    the same numbers (benchmarks/RESULTS.md has the time ratio).

    Args:
        model: the classifier (run in eval mode, flags restored).
        layer: the module whose output is pooled by the head (EfficientNet-Lite0: ``"bn2"``, 1280×7×7).
        probe: a dataset yielding ``(image, label)`` (the training images), or images with ``labels=``.
        transform: the model's preprocessing, applied to each item's image.
        labels (Tensor[N] int64) or None: class of each probe image (default: the probe's own labels).
        method: ``"auto"``, ``"closed_form"``, ``"autograd"`` or ``"shapley"``.
        head: the head after ``layer`` (default: found by :func:`~neurocore.probe.head_after`).
        batch_size: images per pass.
        device: where the model runs (default: its parameters' device).
        n_permutations, seed: permutations for ``"shapley"``.
        progress: show a progress bar.

    Returns:
        Tensor[classes, K] float32 on the CPU; classes without images get a zero row.

    Raises:
        NeurocoreError: a probe without labels, labels outside the model's classes, ``closed_form`` or
            ``shapley`` without a linear pooled head, an unknown method.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
        >>> probe = [(torch.rand(3, 8, 8), i % 2) for i in range(6)]
        >>> head = Head("1", forward=lambda z: net[4](z.mean((2, 3))), pooled=net[4])
        >>> a = class_importance(net, "1", probe, head=head)
        >>> torch.allclose(a, class_importance(net, "1", probe, head=head, method="autograd"), atol=1e-6)
        True
    """
    head = resolve_head(model, layer, head, _first_input(probe, transform))
    method = _check_method(method, head)
    perms = _permutations(method, model, layer, probe, transform, n_permutations, seed, head)
    sums = counts = None
    layouts = {layer: "auto"}
    pooled_sums = None
    for batch, y in _batches(probe, batch_size, transform, labels, progress, f"class importance ({layer})"):
        if y is None:
            raise NeurocoreError(
                "class_importance needs each image's class: give a probe yielding (image, label) or labels=Tensor[N]"
            )
        y = torch.as_tensor(y, dtype=torch.int64)
        if method == "closed_form":
            # a_k · W[c, k] averaged over class c = (mean pooled feature of class c)_k · W[c, k]
            res = batch_importance(model, layer, batch.images, y, method=method, head=head, device=device, layouts=layouts)
            z = res.activations
            pooled = (summarise(z, head.summary, layer) if z.dim() > 2 else z).double()
            classes = res.logits.shape[1]
            if pooled_sums is None:
                pooled_sums = torch.zeros(classes, pooled.shape[1], dtype=torch.float64)
                counts = torch.zeros(classes, dtype=torch.float64)
            _check_labels(y, classes)
            pooled_sums.index_add_(0, y, pooled)
            counts.index_add_(0, y, torch.ones(y.shape[0], dtype=torch.float64))
            continue
        res = batch_importance(model, layer, batch.images, y, method=method, head=head, device=device, layouts=layouts,
                               permutations=perms)
        classes = res.logits.shape[1]
        _check_labels(y, classes)
        if sums is None:
            sums = torch.zeros(classes, res.importance.shape[1], dtype=torch.float64)
            counts = torch.zeros(classes, dtype=torch.float64)
        sums.index_add_(0, y, res.importance.double())
        counts.index_add_(0, y, torch.ones(y.shape[0], dtype=torch.float64))
    if counts is None:
        raise NeurocoreError("the probe has no readable image; class_importance needs the training images")
    if method == "closed_form":
        W = linear_head(head).weight.detach().to("cpu", torch.float64)
        sums = pooled_sums * W
    return (sums / counts.clamp(min=1)[:, None]).float()


def sample_importance(
    model: nn.Module,
    layer: str,
    images: torch.Tensor,
    *,
    targets: torch.Tensor | None = None,
    method: str = "auto",
    head: Head | None = None,
    batch_size: int = 64,
    device=None,
    n_permutations: int = 64,
    seed: int = 0,
) -> torch.Tensor:
    """Sample-wise neuron importance (WWW §3.2): per image, ``a_k · ∂ logit_c / ∂ a_k`` for the image's
    predicted class c (or ``targets``), computed as :func:`class_importance` does for one image.

    Args:
        model, layer, method, head, batch_size, device, n_permutations, seed: as :func:`class_importance`.
        images (Tensor[B, ...]): the model's inputs (preprocessed).
        targets (Tensor[B] int64) or None: the class per image (default: the predicted class).

    Returns:
        Tensor[B, K] float32 on the CPU.

    Raises:
        NeurocoreError: as :func:`class_importance`.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
        >>> sample_importance(net, "1", torch.rand(3, 3, 8, 8)).shape
        torch.Size([3, 4])
    """
    if not isinstance(images, torch.Tensor) or images.dim() < 2 or images.shape[0] == 0:
        raise NeurocoreError(f"images must be a non-empty Tensor[B, ...] of model inputs; got {getattr(images, 'shape', images)}")
    head = resolve_head(model, layer, head, images[:1])
    method = _check_method(method, head)
    perms = None
    if method == "shapley":
        from neurocore import ops

        k = batch_importance(model, layer, images[:1], None, method="closed_form", head=head, device=device).importance.shape[1]
        perms = ops.sample_permutations(n_permutations, k, seed)
    out = []
    layouts = {layer: "auto"}
    for s in range(0, images.shape[0], batch_size):
        t = None if targets is None else torch.as_tensor(targets, dtype=torch.int64)[s : s + batch_size]
        out.append(batch_importance(model, layer, images[s : s + batch_size], t, method=method, head=head, device=device,
                                    layouts=layouts, permutations=perms).importance)
    return torch.cat(out)


def _check_labels(y: torch.Tensor, classes: int) -> None:
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= classes):
        raise NeurocoreError(f"labels must be class indices in [0, {classes}) (the model's logits); got {int(y.min())}..{int(y.max())}")


def _first_input(probe, transform) -> torch.Tensor | None:
    try:
        batch = next(iter(iter_batches(probe, 1, transform)))
    except StopIteration:
        return None
    return batch.images


def _permutations(method, model, layer, probe, transform, n_permutations, seed, head):
    if method != "shapley":
        return None
    from neurocore import ops

    if isinstance(n_permutations, bool) or not isinstance(n_permutations, int) or n_permutations < 1:
        raise NeurocoreError(f"n_permutations must be an integer >= 1; got {n_permutations!r}")
    x = _first_input(probe, transform)
    k = batch_importance(model, layer, x, None, method="closed_form", head=head).importance.shape[1]
    return ops.sample_permutations(n_permutations, k, seed)
