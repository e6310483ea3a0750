"""Replacing neurons inside a network, Top Impact, and the activation area chart.

Linear Explanations (Oikarinen & Weng, ICML 2024) measures what a neuron does for the network by
replacing its activation and looking at the change in the network's loss and accuracy: by zero in
Top Impact (§2, eqs. 1–4), by a simulated value in the ablation score (§4, eq. 12; see
:func:`neurocore.evaluate.ablation_score`). Both need "the rest of the network" after the layer: a
:class:`Head`. :func:`head_after` finds one for common architectures.

Three ways to run the rest of the network, fastest first (:attr:`Head.kind`):

* ``"pooled"``: the head first reduces the layer's output to one number per channel (global average
  pooling of a CNN map, the CLS token of a ViT) and then applies ``pooled`` to the ``[B, C]`` vector.
  Replacing a neuron's whole map by a value ``v`` makes its pooled feature exactly ``v``, so the
  replacement is done on the pooled features, never on maps. When ``pooled`` is an ``nn.Linear``
  (ResNet's ``fc``), replacing feature k changes the logits by ``(v − p_k)·W[:, k]``: a rank-one update.
* ``"map"``: ``forward`` maps the layer's output to logits; channel k's whole map is set to ``v``
  (for tokens: the CLS token's feature under summary ``"first"``, every token's under ``"mean"``).
* ``"hook"``: the whole model is re-run with a forward hook that replaces the layer's output. Always
  correct, slowest (each replaced neuron costs a full forward pass), and it needs the probe images.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from neurocore._errors import NeurocoreError
from neurocore.probe._data import iter_batches
from neurocore.probe._layers import capture, eval_mode, layer_output, model_device, model_float_dtype, resolve_layers, summarise
from neurocore.probe._store import DEAD_THRESHOLD, ActivationStore, LayerActivations

# Temperature of the calibrated cross-entropy (Guo et al. 2017), the released code's value for ResNet-50.
TEMPERATURE = 1.1
# Top Impact fractions of Table 1 of the paper.
DEFAULT_BETAS = (0.0003, 0.002, 0.02, 0.1, 0.5)

_HEAD_SUMMARIES = ("mean", "max", "first")


# ----------------------------------------------------------------------------------------------
# Heads


@dataclass(frozen=True)
class Head:
    """The rest of a network after one layer: how the logits follow from that layer's output.

    Attributes:
        layer: the layer's module name (``model.named_modules()`` spelling).
        forward: ``layer output (Tensor[B, ...]) -> logits (Tensor[B, classes])``, or None.
        pooled: when the head starts by reducing the output with ``summary`` (global average pooling,
            CLS token): ``pooled features (Tensor[B, C]) -> logits``. None when it does not.
        summary: the head's reduction of a ``[B, C, H, W]`` map (``"mean"``, ``"max"``) or ``[B, T, C]``
            tokens (``"mean"``, ``"max"``, ``"first"``); also the neuron's activation in ablations. A 2-D
            ``[B, C]`` output is not reduced.

    :attr:`kind` is ``"pooled"`` when ``pooled`` is set, else ``"map"`` when ``forward`` is set, else
    ``"hook"`` (re-run the whole model with a replacing forward hook; needs the model and the images).

    Example:
        >>> fc = nn.Linear(4, 3)
        >>> head = Head("features", forward=lambda z: fc(z.mean((2, 3))), pooled=fc)
        >>> head.kind, head.forward(torch.rand(2, 4, 5, 5)).shape
        ('pooled', torch.Size([2, 3]))
    """

    layer: str
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None
    pooled: Callable[[torch.Tensor], torch.Tensor] | None = None
    summary: str = "mean"

    def __post_init__(self):
        if not isinstance(self.layer, str) or not self.layer:
            raise NeurocoreError(f"Head.layer must be a module name; got {self.layer!r}")
        for name in ("forward", "pooled"):
            value = getattr(self, name)
            if value is not None and not callable(value):
                raise NeurocoreError(f"Head.{name} must be callable or None; got {type(value).__name__}")
        if self.summary not in _HEAD_SUMMARIES:
            raise NeurocoreError(f"Head.summary must be one of {_HEAD_SUMMARIES}; got {self.summary!r}")

    @property
    def kind(self) -> str:
        if self.pooled is not None:
            return "pooled"
        return "map" if self.forward is not None else "hook"


def _resnet_forward(model, z):
    return model.fc(torch.flatten(model.avgpool(z), 1))


def _tv_vit_forward(model, z):
    return model.heads(z[:, 0])


def _timm_pooled_map(model, p):
    return model.forward_head(p[:, :, None, None])


def _timm_pooled_tokens(model, p):
    return model.forward_head(p[:, None, :])


def _timm_conv_head_forward(model, z):
    return model.forward_head(model.bn2(z))


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-4) -> bool:
    if a.shape != b.shape:
        return False
    scale = 1.0 + float(a.detach().abs().max()) if a.numel() else 1.0
    return bool((a.detach().float() - b.detach().float()).abs().max() <= rtol * scale) if a.numel() else True


def head_after(model: nn.Module, layer: str, *, example: torch.Tensor | None = None) -> Head:
    """The rest of ``model`` after ``layer``, as a :class:`Head` (fastest kind that is known to be exact).

    Recognised (each checked numerically on ``example``: the head applied to the layer's output must
    reproduce the model's logits, else the generic fallback is used with a warning):

    * torchvision ResNet, ``layer4``: ``avgpool → flatten → fc`` (pooled; ``fc`` is linear).
    * torchvision VisionTransformer, ``encoder``: CLS token → ``heads`` (pooled, summary ``"first"``).
    * timm models (``forward_features``/``forward_head``) when ``layer`` is the module whose output
      ``forward_features`` returns (EfficientNet ``bn2``, ResNet ``layer4``, ViT ``norm``): the head is
      ``model.forward_head``; it is "pooled" when it depends on the map only through its spatial mean
      (or on tokens only through the CLS token), with the classifier used directly when it is linear.
    * timm EfficientNet ``conv_head``: ``bn2 → forward_head`` (map: the activation of ``bn2`` sits
      before the pooling, so the pooled shortcut does not apply).
    * anything else: ``Head(layer)`` of kind ``"hook"``, which re-runs the whole model with a forward
      hook replacing the layer's output: correct for any layer, but each replaced neuron costs a full
      forward pass over the images, and it needs the probe images rather than recorded activations.

    Args:
        model: the network (its training flags are restored after the check, which runs in eval mode).
        layer: the module name.
        example: ``Tensor[B, 3, H, W]`` input for the check; default: one seeded random image of the
            model's input size (timm's ``pretrained_cfg``; 64×64 for torchvision ResNets).

    Raises:
        NeurocoreError: ``layer`` is not a module of ``model`` (with close matches).

    Example:
        >>> import torchvision
        >>> net = torchvision.models.resnet18(num_classes=10)
        >>> head = head_after(net, "layer4")
        >>> head.kind, head.pooled is net.fc
        ('pooled', True)
    """
    module = resolve_layers(model, layer)[layer]
    candidates = _candidate_heads(model, layer)
    if not candidates:
        return Head(layer)
    x = example if example is not None else _dummy_input(model)
    if x is None:
        return Head(layer)
    device, dtype = model_device(model), model_float_dtype(model)
    x = x.to(device=device, dtype=dtype if dtype is not None else x.dtype)
    with eval_mode(model), torch.no_grad(), capture({layer: module}, lambda name, out: out) as state:
        logits = model(x)
    z = state["outputs"].get(layer)
    if z is None:
        warnings.warn(f"layer {layer!r} did not run in the forward pass; using the generic hook head", stacklevel=2)
        return Head(layer)
    known_failed = False
    with eval_mode(model), torch.no_grad():
        for build, known in candidates:
            try:
                head = build(z, logits)
                ok = head is not None and _close(head.forward(z), logits)
            except Exception:  # a candidate that cannot even run on this output is not the head
                ok = False
            if ok:
                return head
            known_failed |= known
    if not known_failed:  # only guesses (timm's forward_head) were tried: the layer is simply elsewhere
        return Head(layer)
    warnings.warn(
        f"the known head of {type(model).__name__} after {layer!r} does not reproduce the model's logits; "
        "using the generic (slower) hook head",
        stacklevel=2,
    )
    return Head(layer)


def _dummy_input(model) -> torch.Tensor | None:
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    size = cfg.get("input_size") if isinstance(cfg, dict) else None
    img_size = getattr(getattr(model, "patch_embed", None), "img_size", None)  # timm ViTs built at another size
    if isinstance(img_size, (tuple, list)) and len(img_size) == 2:
        size = (3, int(img_size[0]), int(img_size[1]))
    if size is None and hasattr(model, "image_size"):  # torchvision ViT
        size = (3, int(model.image_size), int(model.image_size))
    if size is None:
        size = (3, 64, 64)
    g = torch.Generator().manual_seed(0)
    return torch.randn((1, *size), generator=g)


def _candidate_heads(model, layer) -> list[tuple[Callable, bool]]:
    """``(build(z, logits) -> Head | None, known)``: known heads of an architecture's layer, and guesses."""
    out: list[tuple[Callable, bool]] = []
    try:
        import torchvision

        if isinstance(model, torchvision.models.ResNet) and layer == "layer4":
            out.append((lambda z, y: Head(layer, forward=partial(_resnet_forward, model), pooled=model.fc), True))
        if isinstance(model, torchvision.models.VisionTransformer) and layer == "encoder":
            heads = model.heads
            lin = [m for m in heads.children()]
            pooled = lin[0] if len(lin) == 1 and isinstance(lin[0], nn.Linear) else heads
            out.append((lambda z, y: Head(layer, forward=partial(_tv_vit_forward, model), pooled=pooled, summary="first"), True))
    except ImportError:  # torchvision is optional for this
        pass
    # timm: forward_features ends with a top-level child (bn2, norm, layer4...); forward_head takes its output
    if hasattr(model, "forward_features") and hasattr(model, "forward_head") and "." not in layer:
        out.append((partial(_timm_head, model, layer), False))
        if layer == "conv_head" and hasattr(model, "bn2"):
            out.append((lambda z, y: Head(layer, forward=partial(_timm_conv_head_forward, model)), True))
    return out


def _timm_head(model, layer, z, model_logits) -> Head | None:
    forward = model.forward_head
    logits = forward(z)
    if not _close(logits, model_logits):
        return None  # the layer is not where forward_features ends
    clf = model.get_classifier() if hasattr(model, "get_classifier") else None
    g = torch.Generator().manual_seed(1)
    if z.dim() == 4:
        flat = z.mean(dim=(2, 3), keepdim=True).expand_as(z).contiguous()
        if _close(forward(flat), logits):
            pooled: Callable = partial(_timm_pooled_map, model)
            p = z.mean(dim=(2, 3))
            if isinstance(clf, nn.Linear) and _close(clf(p), pooled(p)):
                pooled = clf
            if _close(pooled(p), logits):
                return Head(layer, forward=forward, pooled=pooled, summary="mean")
    elif z.dim() == 3 and z.shape[1] > 1:
        other = z.clone()
        other[:, 1:] = torch.randn(other[:, 1:].shape, generator=g).to(z)
        if _close(forward(other), logits):
            pooled = partial(_timm_pooled_tokens, model)
            p = z[:, 0]
            if isinstance(clf, nn.Linear) and _close(clf(p), pooled(p)):
                pooled = clf
            if _close(pooled(p), logits):
                return Head(layer, forward=forward, pooled=pooled, summary="first")
    return Head(layer, forward=forward)


# ----------------------------------------------------------------------------------------------
# Replacing neurons, batched over neurons


def replace_units(z: torch.Tensor, units: torch.Tensor, values: torch.Tensor, summary: str = "mean") -> torch.Tensor:
    """Copies of a layer's output with one neuron replaced in each copy.

    Copy j has neuron ``units[j]`` set to ``values[j]`` on every image: the whole ``[H, W]`` map of a
    conv channel (so its spatial mean and max equal the value), the feature of the CLS token of
    ``[B, T, C]`` tokens under summary ``"first"`` or of every token otherwise, the feature of ``[B, C]``.

    Args:
        z (Tensor[B, C, H, W] | Tensor[B, T, C] | Tensor[B, C]): the layer's output.
        units (Tensor[J], int64): the neuron of each copy.
        values (Tensor[J, B]): the value each copy's neuron takes on each image (differentiable).
        summary: as :attr:`Head.summary`.

    Returns:
        Tensor[J, B, ...]: z with the replacements (the input is not modified).

    Example:
        >>> z = torch.zeros(2, 3, 2, 2)
        >>> out = replace_units(z, torch.tensor([1]), torch.tensor([[5.0, 7.0]]))
        >>> out.shape, out[0, :, 1].mean((1, 2)).tolist(), float(out[0, :, 0].abs().sum())
        (torch.Size([1, 2, 3, 2, 2]), [5.0, 7.0], 0.0)
    """
    mask, vals = _unit_mask(z, units, values, summary)
    return torch.where(mask, vals.to(z.dtype), z.unsqueeze(0))


def _unit_mask(z: torch.Tensor, units, values: torch.Tensor, summary: str):
    """Broadcastable ``mask [J, 1, ...]`` of the replaced cells and ``values [J, B, 1...]`` for a batch
    ``z [B, ...]``."""
    units = torch.as_tensor(units, device=z.device).long()
    values = values.to(z.device)
    if z.dim() == 4:
        mask = F.one_hot(units, z.shape[1]).bool()[:, None, :, None, None]
        return mask, values[:, :, None, None, None]
    if z.dim() == 3:
        tokens = torch.zeros(z.shape[1], dtype=torch.bool, device=z.device)
        if summary == "first":
            tokens[0] = True
        else:
            tokens[:] = True
        mask = F.one_hot(units, z.shape[2]).bool()[:, None, None, :] & tokens[None, None, :, None]
        return mask, values[:, :, None, None]
    if z.dim() == 2:
        return F.one_hot(units, z.shape[1]).bool()[:, None, :], values[:, :, None]
    raise NeurocoreError(f"layer outputs must be [B, C], [B, T, C] or [B, C, H, W]; got shape {tuple(z.shape)}")


@dataclass
class _Split:
    """The images of one split, with everything the unmodified network gives for them."""

    rows: torch.Tensor  # [n] rows of the caller's arrays
    acts: torch.Tensor  # [n, C] float32 CPU: the neurons' activations (the head's reduction)
    labels: torch.Tensor  # [n] int64 CPU
    base_ce: torch.Tensor  # [n] float32 CPU: CE(f(x)/T, y)
    base_correct: torch.Tensor  # [n] bool CPU
    feats: torch.Tensor | None  # [n, ...] CPU inputs of `logits` (pooled features or maps); None: stream


class _Selection(torch.utils.data.Dataset):
    def __init__(self, dataset, indices: list[int]):
        self.dataset, self.indices = dataset, indices

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        return self.dataset[self.indices[i]]


class _Runner:
    """Logits of a network with neurons of one layer replaced, batched over neurons and images."""

    def __init__(self, head: Head, model, inputs, probe, transform, dataset_indices, labels, batch_size, temperature):
        self.head, self.model, self.probe, self.transform = head, model, probe, transform
        self.batch_size, self.temperature = batch_size, temperature
        self.kind = head.kind
        self.linear = isinstance(head.pooled, nn.Linear)
        self.labels = labels
        self.dataset_indices = dataset_indices
        if self.kind == "hook" and (model is None or probe is None):
            raise NeurocoreError(
                f"the head after {head.layer!r} is the generic hook head, which re-runs the model: pass model= and "
                "probe= (the images), or a Head with `forward`/`pooled` (see neurocore.evaluate.head_after)"
            )
        if inputs is None and probe is None:
            raise NeurocoreError("give the layer's outputs (a store, summaries or a tensor) or probe= with the images")
        if probe is not None and model is None:
            raise NeurocoreError("probe= needs model= to compute the layer's outputs")
        self.inputs = None if self.kind == "hook" else inputs
        if self.inputs is None and probe is None:
            raise NeurocoreError(f"a {self.kind!r} head needs the layer outputs or the probe images")
        if model is not None:
            self.device, self.dtype = model_device(model), model_float_dtype(model)
            self.module = resolve_layers(model, head.layer)[head.layer]
        else:
            self.device, self.dtype = _callable_device(head, inputs)
            self.module = None

    # -- the unmodified network ---------------------------------------------------------------

    def prepare(self, rows: torch.Tensor) -> _Split:
        rows = rows.long().cpu()
        if self.inputs is not None:
            return self._prepare_inputs(rows)
        return self._prepare_probe(rows)

    def _reduce(self, z: torch.Tensor) -> torch.Tensor:
        return summarise(z, self.head.summary, self.head.layer) if z.dim() > 2 else z.float()

    def _prepare_inputs(self, rows) -> _Split:
        if self.labels is None:
            raise NeurocoreError("labels are needed (pass labels=, or a store recorded from a labelled probe)")
        feats, acts = [], []
        for start in range(0, len(rows), self.batch_size):
            x = self.inputs[rows[start : start + self.batch_size]]
            a = self._reduce(x)
            acts.append(a.cpu())
            feats.append(a.cpu() if self.kind == "pooled" else x.cpu())
        split = _Split(rows, _cat(acts), self.labels[rows].long().cpu(), None, None, _cat(feats))
        self._base(split)
        return split

    def _prepare_probe(self, rows) -> _Split:
        acts, feats, labels, ce, correct = [], [], [], [], []
        checked = False
        for pos, images, lab in self._probe_batches(rows):
            z, logits = self._run(images)
            a = self._reduce(z)
            acts.append(a.cpu())
            y = self._labels_for(pos, rows, lab)
            labels.append(y)
            if not checked:
                self._check_head(z, logits)
                checked = True
            if self.kind == "pooled":
                feats.append(a.cpu())
                continue
            base = self.head.forward(z) if self.kind == "map" else logits
            c, k = self._ce_correct(base.unsqueeze(0), y.to(base.device))
            ce.append(c[0].cpu())
            correct.append(k[0].cpu())
        split = _Split(rows, _cat(acts), torch.cat(labels), None, None, _cat(feats) if feats else None)
        if self.kind == "pooled":
            self._base(split)
        else:
            split.base_ce, split.base_correct = torch.cat(ce), torch.cat(correct)
        return split

    def _labels_for(self, pos, rows, batch_labels):
        if self.labels is not None:
            return self.labels[rows[pos]].long().cpu()
        if batch_labels is None:
            raise NeurocoreError("labels are needed: pass labels=, or a probe that yields (image, label)")
        return batch_labels.long().cpu()

    def _base(self, split: _Split) -> None:
        ce, correct = [], []
        with torch.no_grad():
            for pos, x in self.chunks(split):
                logits = self.head.pooled(x) if self.kind == "pooled" else self.head.forward(x)
                c, k = self._ce_correct(logits.unsqueeze(0), split.labels[pos].to(logits.device))
                ce.append(c[0].cpu())
                correct.append(k[0].cpu())
        split.base_ce, split.base_correct = torch.cat(ce), torch.cat(correct)

    def _check_head(self, z, logits):
        mine = self.head.pooled(self._reduce(z)) if self.kind == "pooled" else (self.head.forward(z) if self.kind == "map" else logits)
        if not _close(mine, logits, rtol=1e-3):
            raise NeurocoreError(
                f"the head after {self.head.layer!r} does not reproduce the model's logits from the layer's output "
                f"(max difference {float((mine.float() - logits.float()).abs().max()):.3g}); build it with "
                "neurocore.evaluate.head_after(model, layer) or pass Head(layer) for the generic hook head"
            )

    def _ce_correct(self, logits: torch.Tensor, y: torch.Tensor):
        """logits [J, B, classes], y [B] -> CE(logits/T, y) [J, B] (float32) and correct [J, B]."""
        J, B, classes = logits.shape
        if B and (int(y.max()) >= classes or int(y.min()) < 0):
            raise NeurocoreError(f"labels must be class indices in [0, {classes}); got values up to {int(y.max())}")
        flat = logits.float().reshape(J * B, classes) / self.temperature
        ce = F.cross_entropy(flat, y.repeat(J), reduction="none").view(J, B)
        correct = logits.argmax(dim=-1) == y[None, :]
        return ce, correct

    # -- iteration over a split -----------------------------------------------------------------

    def _probe_batches(self, rows) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
        indices = self.dataset_indices[rows].tolist() if self.dataset_indices is not None else rows.tolist()
        skipped: list = []
        for batch in iter_batches(_Selection(self.probe, indices), self.batch_size, self.transform, skipped=skipped):
            if skipped:
                break
            yield batch.indices, batch.images, batch.labels
        if skipped:
            i, why = skipped[0]
            raise NeurocoreError(
                f"probe image {indices[i]} could not be read ({why}); every evaluated row needs its image. Pass the "
                "store's rows only (store.dataset_indices maps rows to dataset indices)"
            )

    def _images(self, images):
        x = images.to(self.device)
        if self.dtype is not None and x.is_floating_point():
            x = x.to(self.dtype)
        return x

    def _run(self, images):
        with capture({self.head.layer: self.module}, lambda name, out: out) as state:
            with torch.no_grad():
                logits = self.model(self._images(images))
        calls = state["calls"][self.head.layer]
        if calls != 1:
            raise NeurocoreError(
                f"layer {self.head.layer!r} ran {calls} times in one forward pass of {type(self.model).__name__} "
                "(unused, or a shared module such as torchvision's per-block ReLU); replacing its output would not "
                "replace one neuron: choose a module that runs once"
            )
        return state["outputs"][self.head.layer], logits

    def chunks(self, split: _Split) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(positions in the split, input of :meth:`logits`) per batch of images."""
        if split.feats is not None:
            for start in range(0, len(split.rows), self.batch_size):
                stop = min(start + self.batch_size, len(split.rows))
                x = split.feats[start:stop].to(self.device)
                if self.dtype is not None and x.is_floating_point():
                    x = x.to(self.dtype)
                yield torch.arange(start, stop), x
            return
        for pos, images, _ in self._probe_batches(split.rows):
            if self.kind == "hook":
                yield pos, self._images(images)
            else:
                yield pos, self._run(images)[0]

    # -- replaced network ---------------------------------------------------------------------

    def logits(self, x: torch.Tensor, units: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Logits [J, B, classes] with neuron units[j] set to values[j] (Tensor[J, B]) in copy j."""
        units = units.to(x.device).long()
        values = values.to(x.device)
        J, B = values.shape
        if self.kind == "pooled":
            if self.linear:
                # Rank-one update: fc(p with p_k := v) = fc(p) + (v − p_k)·W[:, k]
                W = self.head.pooled.weight
                base = self.head.pooled(x)
                delta = values.to(W.dtype) - x[:, units].T.to(W.dtype)
                return base.unsqueeze(0) + delta.unsqueeze(-1) * W[:, units].T.unsqueeze(1)
            replaced = replace_units(x, units, values, "mean")
            return self.head.pooled(replaced.reshape(J * B, -1)).view(J, B, -1)
        if self.kind == "map":
            replaced = replace_units(x, units, values, self.head.summary)
            return self.head.forward(replaced.reshape(J * B, *x.shape[1:])).view(J, B, -1)
        return self._hooked(x, units, values)

    def _hooked(self, images, units, values):
        J, B = values.shape
        summary = self.head.summary

        def hook(module, inputs, output):
            out = layer_output(output, self.head.layer)
            new = _replace_grouped(out, units, values, summary)
            if isinstance(output, (tuple, list)):
                return type(output)([new, *output[1:]])
            return new

        x = images.unsqueeze(0).expand(J, *images.shape).reshape(J * B, *images.shape[1:])
        handle = self.module.register_forward_hook(hook)
        try:
            logits = self.model(x)
        finally:
            handle.remove()
        return logits.view(J, B, -1)


def _replace_grouped(out: torch.Tensor, units, values: torch.Tensor, summary: str) -> torch.Tensor:
    """``out [J*B, ...]`` is the layer's output on J stacked copies of a batch; set unit j in copy j.

    The hook path keeps the tensor the network computed (rather than broadcasting one copy) so that
    the result stays part of the forward pass's graph."""
    J = values.shape[0]
    grouped = out.reshape(J, out.shape[0] // J, *out.shape[1:])
    mask, vals = _unit_mask(grouped[0], units, values, summary)
    return torch.where(mask, vals.to(out.dtype), grouped).reshape(out.shape)


def _cat(parts: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(parts) if parts else torch.empty(0)


def _callable_device(head: Head, inputs) -> tuple[torch.device, torch.dtype | None]:
    """Where a model-less head computes (its parameters' device and dtype), else the inputs' device."""
    for fn in (head.pooled, head.forward):
        if isinstance(fn, nn.Module):
            for p in fn.parameters():
                return p.device, (p.dtype if p.is_floating_point() else None)
    if isinstance(inputs, torch.Tensor):
        return inputs.device, None
    return torch.device("cpu"), None


# ----------------------------------------------------------------------------------------------
# Shared input handling for top_impact and ablation_score


@dataclass
class _Inputs:
    layer: str
    inputs: torch.Tensor | None  # [N, ...] layer outputs or pooled features
    summaries: torch.Tensor | None  # [N, K] the store's summaries (ordering, dead neurons)
    summary: str | None  # the store's summary name
    labels: torch.Tensor | None
    dataset_indices: torch.Tensor | None
    num_rows: int | None


def _resolve_inputs(acts, layer, labels, probe) -> _Inputs:
    summaries = summary = dataset_indices = inputs = None
    store_labels = None
    if isinstance(acts, ActivationStore):
        if layer is None:
            if len(acts.layers) != 1:
                raise NeurocoreError(f"the store has layers {list(acts.layers)}: pass layer=")
            layer = next(iter(acts.layers))
        la = acts[layer]
        summaries, summary = la.summaries, la.summary
        dataset_indices, store_labels = acts.dataset_indices, acts.labels
    elif isinstance(acts, LayerActivations):
        if layer is not None and layer != acts.layer:
            raise NeurocoreError(f"layer={layer!r} but the activations are of layer {acts.layer!r}")
        layer = acts.layer
        summaries, summary = acts.summaries, acts.summary
    elif acts is not None:
        if not isinstance(acts, torch.Tensor):
            raise NeurocoreError(
                f"acts must be an ActivationStore, LayerActivations, a Tensor of layer outputs or None; got {type(acts).__name__}"
            )
        if acts.dim() < 2:
            raise NeurocoreError(f"layer outputs must be a Tensor[N, ...]; got shape {tuple(acts.shape)}")
        if not torch.isfinite(acts).all():
            raise NeurocoreError("the layer outputs contain NaN or inf")
        inputs = acts.detach()
    if summaries is not None:
        if not torch.isfinite(summaries).all():
            raise NeurocoreError(f"the activations of layer {layer!r} contain NaN or inf")
        inputs = summaries
    if labels is None:
        labels = store_labels
    if labels is not None:
        labels = torch.as_tensor(labels).long().cpu()
        if labels.dim() != 1:
            raise NeurocoreError(f"labels must be a Tensor[N] of class indices; got shape {tuple(labels.shape)}")
    n = inputs.shape[0] if inputs is not None else (len(probe) if probe is not None else None)
    if labels is not None and n is not None and labels.shape[0] != n:
        raise NeurocoreError(f"labels has {labels.shape[0]} entries but there are {n} rows")
    return _Inputs(layer, inputs, summaries, summary, labels, dataset_indices, n)


def _choose_inputs(spec: _Inputs, head: Head, probe) -> torch.Tensor | None:
    """What the runner reads the layer's output from: recorded summaries stand in for it only when the
    head pools them first with the same summary; otherwise the probe images are run again."""
    if spec.summaries is None:
        return spec.inputs
    usable = head.kind == "pooled" and spec.summary in (head.summary, "given")
    if usable:
        return spec.summaries
    if probe is not None:
        return None
    if head.kind != "pooled":
        raise NeurocoreError(
            f"recorded summaries stand in for the layer's output only when the head starts with global pooling; "
            f"the head after {head.layer!r} is of kind {head.kind!r}: pass probe= (the images); the store's "
            "summaries then order the images and mark dead neurons"
        )
    raise NeurocoreError(
        f"the activations were summarised with {spec.summary!r} but the head after {head.layer!r} pools with "
        f"{head.summary!r}: record the layer with summary={head.summary!r}, or pass probe= (the images)"
    )


def _rows(rows, n: int, what: str) -> torch.Tensor:
    if rows is None:
        return torch.arange(n)
    if not isinstance(rows, torch.Tensor):
        rows = list(rows)
        if not rows:
            raise NeurocoreError(f"{what} is empty: give at least one row index")
    rows = torch.as_tensor(rows)
    if rows.dtype == torch.bool:
        if rows.shape != (n,):
            raise NeurocoreError(f"{what} as a mask must be a bool Tensor[{n}]; got shape {tuple(rows.shape)}")
        return rows.nonzero().flatten()
    if rows.is_floating_point() or rows.dim() != 1:
        raise NeurocoreError(f"{what} must be a 1-D sequence of row indices (or a bool mask); got shape {tuple(rows.shape)}, dtype {rows.dtype}")
    rows = rows.long().cpu()
    if rows.numel() == 0:
        raise NeurocoreError(f"{what} is empty: give at least one row index")
    if int(rows.min()) < 0 or int(rows.max()) >= n:
        raise NeurocoreError(f"{what} indexes rows 0..{n - 1}; got values from {int(rows.min())} to {int(rows.max())}")
    if rows.unique().numel() != rows.numel():
        raise NeurocoreError(f"{what} repeats row indices; give each row once")
    return rows


def _progress(iterable, progress: bool, desc: str, total=None):
    if not progress:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total)


# ----------------------------------------------------------------------------------------------
# Top Impact


@dataclass(frozen=True)
class TopImpact:
    """Top Impact of each neuron (paper §2, eqs. 1–4).

    Attributes:
        layer: the layer.
        units: the neurons, in the order of the rows below.
        betas: the fractions β of most activating images.
        top_impact (Tensor[K, len(betas)], float64): ``TI_k(β)``; NaN for dead neurons and neurons
            whose zero-ablation changes nothing (Σ|I_k| = 0).
        total_impact (Tensor[K], float64): ``Σ_x I_k(x)``: the neuron's net contribution to the model's
            accuracy and loss, as a fraction of the model's totals (positive: the neuron helps).
        dead (Tensor[K], bool): max activation < the dead threshold.
        status: per neuron ``"ok"``, ``"dead"`` or ``"no_effect"``.
        impacts (Tensor[n, K], float64) or None: ``I_k(x)`` per evaluated image (``return_impacts=True``).
    """

    layer: str
    units: tuple[int, ...]
    betas: tuple[float, ...]
    top_impact: torch.Tensor
    total_impact: torch.Tensor
    dead: torch.Tensor
    status: tuple[str, ...]
    impacts: torch.Tensor | None = None

    def mean(self) -> dict[float, float]:
        """β -> average ``TI(β)`` over the neurons that have one (dead and no-effect neurons skipped)."""
        ok = torch.isfinite(self.top_impact[:, 0]) if self.top_impact.numel() else torch.zeros(0, dtype=torch.bool)
        return {b: (float(self.top_impact[ok, i].mean()) if ok.any() else math.nan) for i, b in enumerate(self.betas)}

    def to_pandas(self):
        """One row per neuron: ``layer, unit, status, dead, total_impact, top_impact:<β>...``."""
        import pandas as pd

        data = {
            "layer": [self.layer] * len(self.units),
            "unit": list(self.units),
            "status": list(self.status),
            "dead": self.dead.tolist(),
            "total_impact": self.total_impact.tolist(),
        }
        for i, b in enumerate(self.betas):
            data[f"top_impact:{b:g}"] = self.top_impact[:, i].tolist()
        return pd.DataFrame(data)


def top_impact_from_impacts(impacts: torch.Tensor, acts: torch.Tensor, betas: Sequence[float] = DEFAULT_BETAS) -> torch.Tensor:
    """``TI_k(β) = Σ_{i ≤ ⌊β·n⌋} |I_k(x_(i))| / Σ_x |I_k(x)|``, images ordered by activation, highest first.

    Ties in activation keep the lower image index first. A neuron whose impacts are all zero gets NaN.

    Args:
        impacts (Tensor[n, K]): per-image impact ``I_k(x)`` (paper eq. 1).
        acts (Tensor[n, K]): the neurons' summarised activations on the same images.
        betas: fractions in [0, 1].

    Returns:
        Tensor[K, len(betas)], float64.

    Example:
        >>> impacts = torch.tensor([[0.1], [0.3], [-0.2], [0.4]])
        >>> acts = torch.tensor([[4.0], [3.0], [2.0], [1.0]])
        >>> top_impact_from_impacts(impacts, acts, [0.25, 0.5, 1.0])
        tensor([[0.1000, 0.4000, 1.0000]], dtype=torch.float64)
    """
    betas = _betas(betas)
    if impacts.shape != acts.shape or impacts.dim() != 2:
        raise NeurocoreError(f"impacts and acts must both be Tensor[n, K]; got {tuple(impacts.shape)} and {tuple(acts.shape)}")
    n = impacts.shape[0]
    order = torch.sort(acts.double(), dim=0, descending=True, stable=True).indices
    mags = impacts.double().abs().gather(0, order)
    cum = torch.cat([torch.zeros(1, mags.shape[1], dtype=torch.float64), mags.cumsum(0)])
    total = cum[-1]
    # floor(β·n) images; the small slack keeps 0.29·100 = 28.999… at 29
    counts = torch.tensor([min(n, int(math.floor(b * n + 1e-9))) for b in betas])
    out = (cum[counts] / total).T
    out[total == 0] = math.nan
    return out.contiguous()


def _betas(betas) -> tuple[float, ...]:
    betas = tuple(float(b) for b in betas)
    if not betas or any(not (0.0 <= b <= 1.0) for b in betas):
        raise NeurocoreError(f"betas must be fractions in [0, 1]; got {betas}")
    return betas


def top_impact(
    acts=None,
    *,
    model: nn.Module | None = None,
    layer: str | None = None,
    labels=None,
    probe=None,
    transform: Callable | None = None,
    head: Head | None = None,
    units=None,
    rows=None,
    betas: Sequence[float] = DEFAULT_BETAS,
    temperature: float = TEMPERATURE,
    neuron_batch: int = 64,
    batch_size: int = 256,
    dead_threshold: float = DEAD_THRESHOLD,
    return_impacts: bool = False,
    progress: bool = True,
) -> TopImpact:
    """Top Impact: how much of a neuron's effect on the network comes from its most activating images.

    Each neuron is zero-ablated (its whole map set to 0) in turn. Per image (paper eqs. 1–3):
    ``I_k(x) = (ΔAcc_k(x) − ΔL_k(x)) / 2`` with ``ΔAcc_k(x) = ([f(x) right] − [f_~k(x) right]) / Σ_D [f right]``
    and ``ΔL_k(x) = (L(f(x)) − L(f_~k(x))) / Σ_D L(f)``, L the cross-entropy of ``logits / temperature``
    (positive impact: the neuron helps). ``TI_k(β)`` is the share of ``Σ|I_k|`` carried by the
    ``⌊β·|D|⌋`` most activating images (eq. 4; images ordered by the neuron's summarised activation,
    ties to the lower row). A neuron whose images all count equally has ``TI(β) = β``.

    Neurons are ablated ``neuron_batch`` at a time: the image batch is copied once per neuron (pooled
    heads only copy ``[B, C]`` features; linear pooled heads need no copy at all).

    Args:
        acts: where the layer's output comes from: an :class:`ActivationStore` / :class:`LayerActivations`
            whose summaries are the head's pooled features (pooled heads only; their summaries also order
            the images and mark dead neurons), a ``Tensor[N, ...]`` of the layer's outputs, or None with
            ``probe`` (the model is run; needed for heads that are not pooled, e.g. ``layer3``).
        model: the network (needed unless ``head`` and layer outputs are given).
        layer: the layer; default: the store's only layer / the head's layer.
        labels (Tensor[N]): class labels; default: the store's, or the probe's.
        probe: a dataset of images (or ``(image, label)``), rows in the store's order
            (``store.dataset_indices`` maps rows to dataset indices). Not run when a store's summaries
            already are the head's pooled features.
        transform: applied to each probe image.
        head: the rest of the network (:class:`Head`); default :func:`head_after` ``(model, layer)``.
        units: the neurons to evaluate; default all.
        rows: the images D (row indices or a bool mask); default all rows.
        betas: the fractions β (default: Table 1's 0.0003, 0.002, 0.02, 0.1, 0.5).
        temperature: cross-entropy temperature (1.1, the paper's calibration for ResNet-50).
        neuron_batch: neurons ablated together.
        batch_size: images per batch.
        dead_threshold: a neuron with max activation below this is dead: reported and skipped.
        return_impacts: keep the per-image impacts ``Tensor[n, K]``.
        progress: a tqdm bar over neuron batches.

    Returns:
        :class:`TopImpact`.

    Raises:
        NeurocoreError: missing inputs, mismatched shapes, labels out of range, a model that classifies
            none of the images correctly or has zero loss (the normalisations of eqs. 2–3 are undefined).

    Example:
        >>> fc = nn.Linear(4, 3)
        >>> feats, labels = torch.rand(50, 4), torch.randint(0, 3, (50,))
        >>> labels[:5] = fc(feats[:5]).argmax(1)  # some images right, so ΔAcc is defined
        >>> ti = top_impact(feats, head=Head("feat", pooled=fc), labels=labels, progress=False)
        >>> ti.top_impact.shape, bool((ti.top_impact[:, -1] <= 1).all())
        (torch.Size([4, 5]), True)
    """
    betas = _betas(betas)
    _positive_int(neuron_batch, "neuron_batch")
    _positive_int(batch_size, "batch_size")
    temperature = _positive_float(temperature, "temperature")
    if layer is None and head is not None:
        layer = head.layer
    spec = _resolve_inputs(acts, layer, labels, probe)
    if spec.layer is None:
        raise NeurocoreError("pass layer= (the module name) or a head")
    if spec.num_rows is None:
        raise NeurocoreError("give the layer outputs (acts=) or the probe images (probe=)")
    if head is None:
        if model is None:
            raise NeurocoreError("pass model= (to find the head after the layer) or head=")
        head = head_after(model, spec.layer)
    elif head.layer != spec.layer:
        raise NeurocoreError(f"head is for layer {head.layer!r} but layer {spec.layer!r} was asked for")
    inputs = _choose_inputs(spec, head, probe)
    rows = _rows(rows, spec.num_rows, "rows")
    with _evaluating(model, head):
        runner = _Runner(head, model, inputs, probe, transform, spec.dataset_indices, spec.labels, batch_size, temperature)
        with torch.no_grad():
            split = runner.prepare(rows)
        C = split.acts.shape[1]
        units_t = _units(units, C)
        order_acts = spec.summaries[rows] if spec.summaries is not None else split.acts
        if spec.summaries is not None and spec.summaries.shape[1] != C:
            raise NeurocoreError(f"the store has {spec.summaries.shape[1]} neurons but the layer output has {C}")
        dead_all = (spec.summaries.amax(0) if spec.summaries is not None else split.acts.amax(0)) < dead_threshold
        dead = dead_all[units_t]
        total_correct = float(split.base_correct.double().sum())
        total_loss = float(split.base_ce.double().sum())
        if total_correct == 0:
            raise NeurocoreError(
                f"the model classifies none of the {len(rows)} images correctly, so ΔAcc (normalised by the number of "
                "correct predictions, paper eq. 2) is undefined; check the labels' class order and the preprocessing"
            )
        if total_loss <= 0:
            raise NeurocoreError("the model's total loss on the images is 0, so ΔL (paper eq. 3) is undefined")
        live = units_t[~dead]
        n = len(rows)
        impacts = torch.full((n, len(units_t)), math.nan, dtype=torch.float64)
        col = {int(u): i for i, u in enumerate(units_t.tolist())}
        batches = [live[i : i + neuron_batch] for i in range(0, len(live), neuron_batch)]
        with torch.no_grad():
            for ub in _progress(batches, progress, f"top impact {spec.layer}"):
                J = len(ub)
                imp = torch.empty(n, J, dtype=torch.float64)
                for pos, x in runner.chunks(split):
                    zeros = torch.zeros(J, len(pos))
                    logits = runner.logits(x, ub, zeros)
                    ce, correct = runner._ce_correct(logits, split.labels[pos].to(logits.device))
                    d_acc = (split.base_correct[pos].double()[None] - correct.cpu().double()) / total_correct
                    d_loss = (split.base_ce[pos].double()[None] - ce.cpu().double()) / total_loss
                    imp[pos] = ((d_acc - d_loss) / 2).T
                for j, u in enumerate(ub.tolist()):
                    impacts[:, col[u]] = imp[:, j]
    ti = torch.full((len(units_t), len(betas)), math.nan, dtype=torch.float64)
    alive = ~dead
    if alive.any():
        ti[alive] = top_impact_from_impacts(impacts[:, alive], order_acts[:, units_t[alive]], betas)
    total = impacts.sum(0)
    status = tuple(
        "dead" if bool(dead[i]) else ("no_effect" if not math.isfinite(float(ti[i, 0])) else "ok") for i in range(len(units_t))
    )
    return TopImpact(
        layer=spec.layer,
        units=tuple(int(u) for u in units_t),
        betas=betas,
        top_impact=ti,
        total_impact=total,
        dead=dead,
        status=status,
        impacts=impacts if return_impacts else None,
    )


@contextlib.contextmanager
def _evaluating(model, head: Head):
    """Eval mode for the model and for any module the head calls (dropout off, batch-norm statistics
    frozen), every training flag restored on exit."""
    modules = [m for m in (model, head.pooled, head.forward) if isinstance(m, nn.Module)]
    with contextlib.ExitStack() as stack:
        for m in modules:
            stack.enter_context(eval_mode(m))
        yield


def _units(units, C: int) -> torch.Tensor:
    if units is None:
        return torch.arange(C)
    u = torch.as_tensor(units).long().flatten()
    if u.numel() == 0:
        raise NeurocoreError("units is empty: give at least one neuron index")
    if int(u.min()) < 0 or int(u.max()) >= C:
        raise NeurocoreError(f"units must be neuron indices in [0, {C}); got values from {int(u.min())} to {int(u.max())}")
    if u.unique().numel() != u.numel():
        raise NeurocoreError("units repeats neuron indices; give each once")
    return u


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise NeurocoreError(f"{name} must be an integer >= 1; got {value!r}")
    return value


def _positive_float(value, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise NeurocoreError(f"{name} must be a positive number; got {value!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise NeurocoreError(f"{name} must be a positive number; got {value!r}")
    return v


# ----------------------------------------------------------------------------------------------
# Area chart


def activation_area_chart(
    acts,
    labels,
    names: Sequence[str] | None = None,
    *,
    buckets: int = 8,
    columns: Sequence[str] | None = None,
    top: int = 6,
    ax=None,
    path: str | os.PathLike | None = None,
):
    """Which classes (or concepts) a neuron responds to, across its whole activation range (paper Fig. 3).

    The range ``[0, max]`` of the neuron's activations is cut into ``buckets`` equal intervals
    ``[lo, hi)`` (the last one also holds the max); for each, the fraction of its images that belong
    to each class / superclass. Images with negative activation lie outside the chart (their count is
    in ``table.attrs["negative"]``). With a multi-label matrix (classes plus superclasses) an image
    counts for every column it belongs to, so fractions of overlapping columns add to more than 1: pick
    disjoint ``columns`` for a stacked plot.

    Args:
        acts (Tensor[N]): one neuron's summarised activations.
        labels: ``Tensor[N]`` class indices, a ``Tensor[N, M]`` 0/1 (or [0, 1]) concept matrix, or
            :class:`~neurocore.concepts.ConceptScores` (e.g. a label matrix with superclasses).
        names: the M column names (default: the ConceptScores' concepts, else ``"0"``, ``"1"``...).
        buckets: number of activation intervals (8 in the paper).
        columns: the columns to tabulate (names); default: the ``top`` columns with the highest peak
            fraction over the buckets.
        top: how many columns the default picks.
        ax: a matplotlib Axes to draw a stacked area chart on (percent of images per bucket).
        path: save the chart there (a new figure is made when ``ax`` is None).

    Returns:
        pandas.DataFrame, one row per bucket: ``lower, upper, count``, one fraction column per chosen
        column (NaN for an empty bucket), and ``other`` (images in none of the chosen columns).

    Raises:
        NeurocoreError: mismatched lengths, non-finite or no positive activations, unknown column names,
            or plotting asked for without matplotlib installed.

    Example:
        >>> acts = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
        >>> labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 1])
        >>> t = activation_area_chart(acts, labels, ["cat", "dog"], buckets=2)
        >>> t[["lower", "upper", "count", "cat", "dog", "other"]].values.tolist()
        [[0.0, 4.0, 4.0, 1.0, 0.0, 0.0], [4.0, 8.0, 5.0, 0.0, 1.0, 0.0]]
    """
    import pandas as pd

    from neurocore.concepts._scores import ConceptScores

    _positive_int(buckets, "buckets")
    a = torch.as_tensor(acts).detach().double().cpu()
    if a.dim() == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.dim() != 1:
        raise NeurocoreError(f"acts must be one neuron's activations, a Tensor[N]; got shape {tuple(a.shape)}")
    if not torch.isfinite(a).all():
        raise NeurocoreError("acts contain NaN or inf")
    if isinstance(labels, ConceptScores):
        names = labels.concepts if names is None else names
        matrix = labels.scores.double()
    else:
        lab = torch.as_tensor(labels).detach().cpu()
        if lab.dim() == 1:
            if lab.is_floating_point():
                raise NeurocoreError("1-D labels must be integer class indices")
            M = len(names) if names is not None else (int(lab.max()) + 1 if lab.numel() else 0)
            if lab.numel() and (int(lab.min()) < 0 or int(lab.max()) >= M):
                raise NeurocoreError(f"labels must be class indices in [0, {M}); got values up to {int(lab.max())}")
            matrix = F.one_hot(lab.long(), M).double()
        elif lab.dim() == 2:
            matrix = lab.double()
        else:
            raise NeurocoreError(f"labels must be a Tensor[N] or Tensor[N, M]; got shape {tuple(lab.shape)}")
    if matrix.shape[0] != a.shape[0]:
        raise NeurocoreError(f"labels have {matrix.shape[0]} rows but acts has {a.shape[0]}")
    names = [str(i) for i in range(matrix.shape[1])] if names is None else [str(n) for n in names]
    if len(names) != matrix.shape[1]:
        raise NeurocoreError(f"names has {len(names)} entries but the labels have {matrix.shape[1]} columns")
    if not torch.isfinite(matrix).all() or matrix.numel() and (matrix.min() < 0 or matrix.max() > 1):
        raise NeurocoreError("a concept matrix must hold values in [0, 1]")
    top_value = float(a.max()) if a.numel() else 0.0
    if top_value <= 0:
        raise NeurocoreError("the neuron has no positive activation: the chart spans [0, max activation]")
    edges = torch.linspace(0.0, top_value, buckets + 1, dtype=torch.float64)
    edges[-1] = top_value
    keep = a >= 0
    which = torch.bucketize(a[keep], edges[1:-1], right=True)
    sub = matrix[keep]
    counts = torch.bincount(which, minlength=buckets).double()
    sums = torch.zeros(buckets, matrix.shape[1], dtype=torch.float64).index_add_(0, which, sub)
    frac = sums / counts[:, None]  # NaN rows for empty buckets
    if columns is None:
        peak = torch.nan_to_num(frac, nan=-1.0).amax(0)
        order = torch.sort(peak, descending=True, stable=True).indices[: max(0, int(top))]
        chosen = sorted(order.tolist())
    else:
        index = {n: i for i, n in enumerate(names)}
        unknown = [c for c in columns if str(c) not in index]
        if unknown:
            raise NeurocoreError(f"columns {unknown} are not among the label names (e.g. {names[:5]})")
        chosen = [index[str(c)] for c in columns]
    in_any = (sub[:, chosen] > 0).any(1).double() if chosen else torch.zeros(sub.shape[0], dtype=torch.float64)
    other = 1.0 - torch.zeros(buckets, dtype=torch.float64).index_add_(0, which, in_any) / counts
    table = pd.DataFrame({"lower": edges[:-1].tolist(), "upper": edges[1:].tolist(), "count": counts.tolist()})
    for j in chosen:
        table[names[j]] = frac[:, j].tolist()
    table["other"] = other.tolist()
    table.attrs["negative"] = int((~keep).sum())
    if ax is not None or path is not None:
        _plot_area(table, [names[j] for j in chosen], ax, path)
    return table


def _plot_area(table, cols, ax, path):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise NeurocoreError("plotting the area chart needs matplotlib: pip install matplotlib") from None
    fig = None
    if ax is None:
        fig = Figure(figsize=(7, 4))
        ax = fig.add_subplot()
    centres = ((table["lower"] + table["upper"]) / 2).tolist()
    x = [float(table["lower"].iloc[0])] + centres + [float(table["upper"].iloc[-1])]
    series = []
    for c in list(cols) + ["other"]:
        y = [0.0 if math.isnan(v) else 100.0 * v for v in table[c].tolist()]
        series.append([y[0]] + y + [y[-1]])  # the paper's figure extends the end buckets to 0 and the max
    ax.stackplot(x, series, labels=list(cols) + ["other"])
    ax.set_xlim(x[0], x[-1])
    ax.set_xlabel("activation")
    ax.set_ylabel("% of inputs")
    ax.legend(loc="upper left", fontsize="small")
    if path is not None:
        (fig or ax.figure).savefig(path, bbox_inches="tight")
