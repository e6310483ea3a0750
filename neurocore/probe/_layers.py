"""Layers by module name, forward hooks that are always removed, and the per-neuron summary ``g``."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence

import torch
from torch import nn

from neurocore._errors import NeurocoreError, close_matches

SUMMARIES = ("mean", "max", "first")

# Which summaries each output rank accepts (ALGORITHMS.md §0). A 2-D [B, C] output has nothing left to
# reduce, so every summary leaves it unchanged: a 4-D layer and the classifier can share one call.
_ALLOWED = {4: ("mean", "max"), 3: ("first", "mean", "max"), 2: SUMMARIES}

_LIST_LIMIT = 30  # names listed in a "layer not found" message before it is cut short


def resolve_layers(model: nn.Module, layers: str | Sequence[str]) -> dict[str, nn.Module]:
    """Find modules by their dotted names, as ``model.named_modules()`` spells them.

    Args:
        model: any ``torch.nn.Module``.
        layers: one name or several (``"layer4"``, ``"features.30"``, ``"blocks.11.mlp.act"``,
            ``"encoder.layers.encoder_layer_11.mlp.1"``). Repeated names are kept once.

    Returns:
        name -> module, in the order asked for.

    Raises:
        NeurocoreError: ``model`` is not a module, no layer is given, or a name does not exist; the
            message lists close matches and the valid names under the longest existing prefix.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten())
        >>> list(resolve_layers(net, ["1", "0"]))
        ['1', '0']
    """
    if not isinstance(model, nn.Module):
        raise NeurocoreError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    names = [layers] if isinstance(layers, str) else list(layers)
    if not names:
        raise NeurocoreError("layers is empty: give at least one module name, e.g. 'layer4'")
    modules = dict(model.named_modules())
    found: dict[str, nn.Module] = {}
    for name in names:
        if not isinstance(name, str):
            raise NeurocoreError(f"layer names must be strings; got {name!r} ({type(name).__name__})")
        if name == "":
            raise NeurocoreError(
                "layer '' is the whole model: name a sub-module (for the model's output, its last layer, "
                "e.g. 'fc' or 'head')"
            )
        if name not in modules:
            raise NeurocoreError(_not_found_message(model, name, modules))
        found[name] = modules[name]
    return found


def _not_found_message(model: nn.Module, name: str, modules: Mapping[str, nn.Module]) -> str:
    valid = [n for n in modules if n]
    msg = f"layer {name!r} not found in {type(model).__name__}"
    close = close_matches(name, valid)
    if close:
        msg += f"; close matches: {', '.join(close)}"
    # The longest existing prefix tells where the name went wrong; list what is under it rather than
    # every one of a large model's hundreds of modules.
    parts = name.split(".")
    prefix = ""
    for i in range(len(parts) - 1, 0, -1):
        if ".".join(parts[:i]) in modules:
            prefix = ".".join(parts[:i])
            break
    parent = modules[prefix]
    children = [f"{prefix}.{c}" if prefix else c for c, _ in parent.named_children()]
    where = f"under {prefix!r}" if prefix else "at the top level"
    if len(valid) <= _LIST_LIMIT:
        msg += f". Valid names ({len(valid)}): {', '.join(valid)}"
    else:
        shown = children[:_LIST_LIMIT]
        more = f", ... ({len(children) - len(shown)} more)" if len(children) > len(shown) else ""
        msg += (
            f". The model has {len(valid)} named modules; {where}: {', '.join(shown)}{more}. "
            "List them all with [n for n, _ in model.named_modules()]"
        )
    return msg


def layer_summaries(summary: str | Mapping[str, str], layers: Sequence[str]) -> dict[str, str]:
    """Validate ``summary`` (one name for every layer, or layer -> name) and spell it out per layer."""
    if isinstance(summary, str):
        per_layer = {name: summary for name in layers}
    elif isinstance(summary, Mapping):
        unknown = [k for k in summary if k not in layers]
        missing = [n for n in layers if n not in summary]
        if unknown or missing:
            raise NeurocoreError(
                f"summary maps layers to summaries and must name exactly the recorded layers {list(layers)}; "
                f"missing: {missing}, not recorded: {unknown}"
            )
        per_layer = {name: summary[name] for name in layers}
    else:
        raise NeurocoreError(f"summary must be one of {SUMMARIES} or a dict layer -> summary; got {summary!r}")
    for name, s in per_layer.items():
        if s not in SUMMARIES:
            raise NeurocoreError(f"summary for layer {name!r} must be one of {SUMMARIES}; got {s!r}")
    return per_layer


def layer_output(output, layer: str) -> torch.Tensor:
    """The tensor a hooked module returned: the output itself, or the first element of a tuple/list
    (``nn.MultiheadAttention`` returns ``(output, weights)``, ``nn.LSTM`` ``(output, state)``)."""
    if isinstance(output, (tuple, list)) and output:
        output = output[0]
    if not isinstance(output, torch.Tensor):
        raise NeurocoreError(
            f"layer {layer!r} returned a {type(output).__name__}, not a tensor (nor a tuple starting with "
            "one); record a sub-module that returns a tensor"
        )
    if output.is_complex():
        raise NeurocoreError(f"layer {layer!r} returned a complex tensor; record a layer with real outputs")
    return output


def summarise(output: torch.Tensor, summary: str = "mean", layer: str = "layer") -> torch.Tensor:
    """Reduce one layer's batch output to one number per neuron (ALGORITHMS.md §0, the summary ``g``).

    Args:
        output (Tensor[B, C, H, W] | Tensor[B, T, C] | Tensor[B, C]): a conv map (channels first), a
            token sequence (batch first, as torchvision's and timm's ViTs give it), or features.
        summary: ``"mean"`` (spatial or token mean), ``"max"`` (spatial or token max) or ``"first"``
            (the first token, a ViT's CLS token; token outputs only). 2-D outputs are returned unchanged.
        layer: the layer's name, for error messages.

    Returns:
        Tensor[B, C] (float32 unless the output was float64).

    Raises:
        NeurocoreError: an unknown summary, ``"first"`` on a 4-D map, or an output that is not 2-, 3- or 4-D.

    Example:
        >>> x = torch.arange(8.).reshape(1, 2, 2, 2)
        >>> summarise(x, "mean").tolist(), summarise(x, "max").tolist()
        ([[1.5, 5.5]], [[3.0, 7.0]])
        >>> summarise(torch.rand(2, 5, 3), "first").shape
        torch.Size([2, 3])
    """
    if summary not in SUMMARIES:
        raise NeurocoreError(f"summary must be one of {SUMMARIES}; got {summary!r}")
    allowed = _ALLOWED.get(output.dim())
    if allowed is None:
        raise NeurocoreError(
            f"layer {layer!r} outputs a {output.dim()}-D tensor of shape {tuple(output.shape)}; neurocore records "
            "[B, C] features, [B, T, C] tokens and [B, C, H, W] maps: choose another layer"
        )
    if summary not in allowed:
        raise NeurocoreError(
            f"summary {summary!r} does not apply to layer {layer!r}, whose output is a {output.dim()}-D "
            f"[B, C, H, W] map of shape {tuple(output.shape)}; use one of {allowed}"
        )
    if output.dtype != torch.float64:
        # Reduce in float32: a float16 mean over thousands of cells loses digits or overflows.
        output = output.float()
    if output.dim() == 2:
        return output
    if output.dim() == 4:
        return output.mean(dim=(2, 3)) if summary == "mean" else output.amax(dim=(2, 3))
    if summary == "first":
        return output[:, 0, :]
    return output.mean(dim=1) if summary == "mean" else output.amax(dim=1)


@contextlib.contextmanager
def capture(
    modules: Mapping[str, nn.Module],
    transform: Callable[[str, torch.Tensor], torch.Tensor],
    *,
    layouts: dict[str, str] | None = None,
    batch: int | None = None,
    model: nn.Module | None = None,
) -> Iterator[dict]:
    """Forward hooks on ``modules`` that keep ``transform(name, output)`` of each, the output taken **as it
    left the module**; removed on exit, also when the forward pass raises.

    The output reaches ``transform`` in canonical layout (:mod:`neurocore.probe._layout`): ``[B, C, H, W]``,
    ``[B, T, C]`` or ``[B, C]``. Whatever ``transform`` returns is copied when it shares memory with the
    module's output, so a later in-place op of the model (``ReLU(inplace=True)``, ``out += identity``,
    ``SiLU(inplace=True)``) cannot change what was captured; reductions (means, maxima) are new tensors
    already and cost no copy.

    Args:
        modules: name -> module to hook.
        transform: ``(name, canonical output) -> what to keep``.
        layouts: name -> layout (:data:`~neurocore.probe._layout.LAYOUTS`); ``"auto"`` entries are
            resolved on the first call and written back into this dict. None: all ``"auto"``.
        batch: the input's batch size (needed to find the batch axis); None: taken as the output's axis 0.
        model: the whole model; with ``"auto"`` layouts its leaf modules are watched during this pass
            for channel evidence (:func:`~neurocore.probe._layout.channel_evidence`).

    Yields a dict ``{"outputs": {name: tensor}, "calls": {name: count}, "ambiguous": [names]}`` filled
    during the forward pass. A module called several times in one pass (torchvision's ResNet blocks reuse
    one ReLU) keeps its last call's output. ``ambiguous`` lists 3-D layers whose batch axis could not be
    told (first two sizes both equal ``batch``): their outputs are not kept; resolve them by running one
    image (see :func:`neurocore.probe._forward.hooked_forward`).
    """
    from neurocore.probe._layout import channel_evidence, check_layout, resolve_layout, to_canonical

    layouts = layouts if layouts is not None else dict.fromkeys(modules, "auto")
    state: dict = {"outputs": {}, "calls": dict.fromkeys(modules, 0), "ambiguous": [], "evidence": None}
    handles = []

    def make_hook(name):
        def hook(module, inputs, output):
            out = layer_output(output, name)
            b = batch if batch is not None else out.shape[0]
            layout = layouts.get(name, "auto")
            if layout == "auto":
                own = _own_evidence(module, out)
                layout = resolve_layout(
                    name, out.shape, b, own or state["evidence"], own=own is not None, strides=out.stride()
                )
                if layout is None:
                    state["ambiguous"].append(name)
                    state["calls"][name] += 1
                    return
                layouts[name] = layout
            else:
                check_layout(name, layout, out.shape, b)
            kept = transform(name, to_canonical(out, layout))
            if isinstance(kept, torch.Tensor) and _shares_memory(kept, out):
                kept = kept.clone()
            state["outputs"][name] = kept
            state["calls"][name] += 1

        return hook

    def watch(module, inputs, output):
        ev = channel_evidence(module, output)
        if ev is not None:
            state["evidence"] = ev

    try:
        if model is not None and any(layouts.get(name, "auto") == "auto" for name in modules):
            for m in model.modules():
                if next(m.children(), None) is None and isinstance(m, _EVIDENCE_TYPES):
                    handles.append(m.register_forward_hook(watch))
        # Registered after the watchers: a hooked leaf sees its own evidence first (see _own_evidence).
        for name, module in modules.items():
            handles.append(module.register_forward_hook(make_hook(name)))
        yield state
    finally:
        for h in handles:
            h.remove()


def _own_evidence(module, out):
    from neurocore.probe._layout import channel_evidence

    return channel_evidence(module, out)


def _shares_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    try:
        return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr() and a.numel() > 0
    except (RuntimeError, NotImplementedError):  # tensors without storage (e.g. some subclasses): copy to be safe
        return True


_EVIDENCE_TYPES = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.BatchNorm1d, nn.BatchNorm2d,
    nn.GroupNorm, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.Linear, nn.LayerNorm,
)


def model_device(model: nn.Module, device=None) -> torch.device:
    """Where the inputs go: ``device`` if given, else the device of the model's first parameter or
    buffer (CPU if none). The model is never moved: a ``device`` other than the one holding all of its
    weights is an error that says so."""
    tensors = [*model.parameters(), *model.buffers()]
    if device is None:
        return tensors[0].device if tensors else torch.device("cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise NeurocoreError(f"device must be a torch device such as 'cpu' or 'cuda:0'; got {device!r} ({exc})") from None
    check_device_available(device)
    held = {t.device for t in tensors}
    if len(held) == 1:
        (d,) = held
        if d.type != device.type or (device.index is not None and d.index != device.index):
            raise NeurocoreError(
                f"device={str(device)!r} but the model's weights are on {str(d)!r}; move the model first "
                f"(model.to({str(device)!r})) or leave device=None to follow it"
            )
    return device


def check_device_available(device) -> None:
    """Raise a clear error when ``device`` is a CUDA device and this machine has none (or not that many).

    Example:
        >>> check_device_available(torch.device("cpu"))
    """
    device = torch.device(device)
    if device.type != "cuda":
        return
    if not torch.cuda.is_available():
        why = "this torch build has no CUDA support" if torch.version.cuda is None else "no NVIDIA GPU or driver was found"
        raise NeurocoreError(
            f"device={str(device)!r} but no CUDA device is available (torch.cuda.is_available() is False: {why}); "
            "run on the CPU (device='cpu' or leave device unset) or on a machine with a GPU"
        )
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise NeurocoreError(
            f"device={str(device)!r} but this machine has {torch.cuda.device_count()} CUDA device(s) "
            f"(cuda:0..cuda:{torch.cuda.device_count() - 1})"
        )


def model_float_dtype(model: nn.Module) -> torch.dtype | None:
    """The dtype of the model's first floating parameter (images are cast to it), or None."""
    for t in model.parameters():
        if t.is_floating_point():
            return t.dtype
    return None


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """``model.eval()`` inside, every sub-module's own training flag restored on exit."""
    flags = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        yield
    finally:
        for m, flag in flags:
            m.training = flag
