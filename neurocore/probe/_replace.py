"""The rest of a network after one layer (:class:`Head`, :func:`head_after`) and the neuron-replacement
runner: logits of the network with neurons of one layer replaced, batched over neurons and images.

Linear Explanations (Oikarinen & Weng, ICML 2024) measures what a neuron does for the network by
replacing its activation and looking at the change in the network's loss and accuracy: by zero in
Top Impact (§2, eqs. 1–4), by a simulated value in the ablation score (§4, eq. 12). Both need "the rest
of the network" after the layer: a :class:`Head`. :func:`head_after` finds one for common architectures.

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

Every pass over the model goes through :func:`~neurocore.probe._forward.hooked_forward`, so the layer's
output is the one that left the module (copied before any later in-place op) and in canonical layout
(channels-last maps and sequence-first tokens are permuted; replacements are written back in the
module's own layout).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from neurocore._errors import NeurocoreError
from neurocore.probe._data import iter_batches
from neurocore.probe._forward import hooked_forward
from neurocore.probe._layers import eval_mode, layer_output, model_device, model_float_dtype, resolve_layers, summarise
from neurocore.probe._layout import from_canonical, to_canonical
from neurocore.probe._maps import Selection

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
    modules = resolve_layers(model, layer)
    candidates = _candidate_heads(model, layer)
    if not candidates:
        return Head(layer)
    x = example if example is not None else _dummy_input(model)
    if x is None:
        return Head(layer)
    device, dtype = model_device(model), model_float_dtype(model)
    x = x.to(device=device, dtype=dtype if dtype is not None else x.dtype)
    layouts = {layer: "auto"}
    try:
        with eval_mode(model):
            outputs, _, logits = hooked_forward(model, modules, x, layouts=layouts, where="a check input")
    except NeurocoreError as exc:
        warnings.warn(f"{exc}; using the generic hook head after {layer!r}", stacklevel=2)
        return Head(layer)
    except Exception as exc:  # the model cannot run the check input: say why, and fall back to the hook head
        warnings.warn(
            f"the model could not run on a {tuple(x.shape)} check input to find the head after {layer!r} "
            f"({type(exc).__name__}: {exc}); using the generic hook head. Pass example= (one real input) to check the "
            "known heads",
            stacklevel=2,
        )
        return Head(layer)
    z = from_canonical(outputs[layer], layouts[layer]).clone()  # heads take the module's own layout
    logits = logits.clone()
    known_failed = False
    failures = []
    with eval_mode(model), torch.no_grad():
        for build, known in candidates:
            try:
                head = build(z, logits)
                ok = head is not None and _close(head.forward(z), logits)
                if not ok:
                    failures.append("its logits differ from the model's")
            except Exception as exc:  # a candidate that cannot even run on this output is not the head
                ok = False
                failures.append(f"{type(exc).__name__}: {exc}")
            if ok:
                return head
            known_failed |= known
    if not known_failed:  # only guesses (timm's forward_head) were tried: the layer is simply elsewhere
        return Head(layer)
    warnings.warn(
        f"the known head of {type(model).__name__} after {layer!r} does not reproduce the model's logits "
        f"({'; '.join(failures)[:300]}); using the generic (slower) hook head",
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


class ReplacementRunner:
    """Logits of a network with neurons of one layer replaced, batched over neurons and images."""

    def __init__(self, head: Head, model, inputs, probe, transform, dataset_indices, labels, batch_size, temperature):
        self.head, self.model, self.probe, self.transform = head, model, probe, transform
        self.batch_size, self.temperature = batch_size, temperature
        self.kind = head.kind
        self.linear = isinstance(head.pooled, nn.Linear)
        self.labels = labels
        self.dataset_indices = dataset_indices
        # The layer's layout, resolved by the first pass over the model; tensors given as `inputs` are
        # taken as canonical ([B, C, H, W], [B, T, C], [B, C]).
        self.layouts = {head.layer: "auto"}
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
            base = self.head.forward(self._native(z)) if self.kind == "map" else logits
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
                logits = self.head.pooled(x) if self.kind == "pooled" else self.head.forward(self._native(x))
                c, k = self._ce_correct(logits.unsqueeze(0), split.labels[pos].to(logits.device))
                ce.append(c[0].cpu())
                correct.append(k[0].cpu())
        split.base_ce, split.base_correct = torch.cat(ce), torch.cat(correct)

    def _check_head(self, z, logits):
        mine = self.head.pooled(self._reduce(z)) if self.kind == "pooled" else (self.head.forward(self._native(z)) if self.kind == "map" else logits)
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
        for batch in iter_batches(Selection(self.probe, indices), self.batch_size, self.transform, skipped=skipped):
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
        """The layer's output (canonical layout, copied as it left the module) and the model's logits."""
        outputs, _, logits = hooked_forward(
            self.model, {self.head.layer: self.module}, self._images(images), layouts=self.layouts,
            where="the evaluated images", require_once=True,
        )
        return outputs[self.head.layer], logits.detach().clone()

    def _native(self, z: torch.Tensor) -> torch.Tensor:
        """A canonical layer output in the module's own layout (what ``Head.forward`` takes)."""
        layout = self.layouts[self.head.layer]
        return z if layout == "auto" else from_canonical(z, layout)

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
            return self.head.forward(self._native(replaced.reshape(J * B, *x.shape[1:]))).view(J, B, -1)
        return self._hooked(x, units, values)

    def _hooked(self, images, units, values):
        J, B = values.shape
        summary = self.head.summary
        if self.layouts[self.head.layer] == "auto":
            self._run(images)
        layout = self.layouts[self.head.layer]

        def hook(module, inputs, output):
            out = to_canonical(layer_output(output, self.head.layer), layout)
            new = from_canonical(_replace_grouped(out, units, values, summary), layout).contiguous()
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


_Runner = ReplacementRunner  # the name the evaluation modules use
