"""``layer_gradients``: the gradient of chosen logits with respect to one layer's output as it left the
module, batched, with optional backward rules per activation type (guided backprop); every hook is
removed and every flag restored, also when the model raises.

Why not captum: ``captum.attr.LayerGradientXActivation`` / ``LayerActivation`` hook the layer's output
and read it after the forward pass; when a ``ReLU(inplace=True)``, ``out += identity`` or an in-place
SiLU follows the layer, that tensor has been overwritten (and its autograd node rebased), so both the
activation and the gradient they return belong to the post-activation value. captum's guided backprop
uses full backward hooks, which refuse in-place activations, and knows only ``nn.ReLU``. HINT (and
WWW's activation x gradient) need the value as it left the module and a rule per activation type, so
this is a small runner on ``torch.autograd`` itself.
"""

from __future__ import annotations

import contextlib
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from neurocore._errors import NeurocoreError
from neurocore.probe._layers import eval_mode, layer_output, model_device, model_float_dtype, resolve_layers
from neurocore.probe._forward import hooked_forward
from neurocore.probe._layout import channel_evidence, check_layout, layer_layouts, resolve_layout, to_canonical

Rule = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""A backward rule: ``rule(output, grad_output) -> grad`` for one activation module. ``output`` is the
module's output as it left the module, ``grad_output`` the gradient arriving from above; the returned
gradient then goes through the module's own backward (for ReLU and ReLU6 that is the same mask again,
so the rule alone decides what is passed down)."""

RULES = ("guided",)


def guided_relu(output: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Guided backprop at a ReLU (Springenberg et al. 2015): ``1[out > 0] · max(g, 0)``."""
    return grad.clamp(min=0) * (output > 0)


def guided_relu6(output: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Guided backprop at a ReLU6: ``1[0 < out < 6] · max(g, 0)`` (ReLU6's own gradient mask)."""
    return grad.clamp(min=0) * ((output > 0) & (output < 6))


GUIDED_RULES: dict[type, Rule] = {nn.ReLU: guided_relu, nn.ReLU6: guided_relu6}

# Activation modules that keep their ordinary gradient under rule="guided": named in a warning.
_SKIP_ACTIVATIONS = (nn.MultiheadAttention, nn.Softmax, nn.Softmin, nn.LogSoftmax, nn.Softmax2d)

# Functional activations that no module hook can see (torchvision's DenseNet and Inception call
# F.relu in their forward); the forward pass is watched for them under rule="guided".
_FUNCTIONAL = {
    F.relu: "relu", torch.relu: "relu", torch.relu_: "relu", torch.Tensor.relu: "relu",
    torch.Tensor.relu_: "relu", F.relu_: "relu", F.relu6: "relu6", F.hardtanh: "hardtanh",
    F.silu: "silu", F.gelu: "gelu", F.hardswish: "hardswish", F.mish: "mish", F.elu: "elu",
    F.leaky_relu: "leaky_relu", F.selu: "selu", F.celu: "celu", F.softplus: "softplus",
}


@dataclass(frozen=True)
class LayerGradients:
    """What :func:`layer_gradients` returns.

    Attributes:
        activations (Tensor[B, ...]): the layer's output as it left the module (before any later in-place op).
        gradients (Tensor[B, ...]): the gradient of each image's chosen logit(s) with respect to it.
        logits (Tensor[B, classes]): the model's output (its first element when it returns a tuple).
        layer: the layer's name.
        rule: the backward rule used (``None``: plain gradients; ``"guided"``).
    """

    activations: torch.Tensor
    gradients: torch.Tensor
    logits: torch.Tensor
    layer: str
    rule: str | None = None

    def __len__(self) -> int:
        return self.activations.shape[0]


def layer_gradients(
    model: nn.Module,
    layer: str,
    images: torch.Tensor,
    targets,
    *,
    rule: str | None = None,
    rules: Mapping[type, Rule] | None = None,
    batch_size: int = 32,
    device=None,
    create_graph: bool = False,
    layout: str = "auto",
) -> LayerGradients:
    """The gradient of chosen logits with respect to a layer's output, as it left the module.

    ``gradients[i] = ∂ score_i / ∂ z_i`` where ``z_i`` is ``layer``'s output for image ``i`` *before*
    any in-place op that follows the module (``ReLU(inplace=True)``, ``out += identity``): the output
    is cloned as it leaves the module and the model continues on the clone. One backward pass per
    batch gives exact per-image gradients because images do not interact in ``eval()`` mode (the
    gradient of ``Σ_i score_i`` at image ``i``'s cells is ``∂ score_i / ∂ z_i``); BatchNorm in train
    mode would mix the batch, so the model runs in ``eval()`` with every module's flag restored. Only
    the captured output is differentiated (``torch.autograd.grad``), so parameters' ``.grad`` and
    ``requires_grad`` are never touched (a frozen model works too). Every hook is removed also
    when the model raises (KeyboardInterrupt included).

    ``rule="guided"`` (guided backprop, HINT's default, ALGORITHMS.md §3): at every ``nn.ReLU`` the
    gradient passed down is ``1[out > 0] · max(g, 0)``, at every ``nn.ReLU6`` ``1[0 < out < 6] · max(g, 0)``,
    in-place modules included (forward hooks route their output through the rule). Other activation
    modules (SiLU, GELU, Hardswish, ...) and functional activations called in ``forward`` (``F.relu``)
    keep their ordinary gradient, with a warning naming them. ``rules`` adds or overrides rules per
    module type (subclasses match): ``{nn.SiLU: my_rule}`` with ``my_rule(output, grad) -> grad``.

    Args:
        model: any ``torch.nn.Module`` whose forward takes a batch of images.
        layer: one module name, as ``model.named_modules()`` spells it; it must run exactly once per
            forward pass (a shared module, such as torchvision ResNet blocks' ReLU, runs twice).
        images (Tensor[N, ...] floating): the model's inputs, batch first.
        targets: what is differentiated, per image: ``Tensor[N]`` of class indices (integers, also one
            ``int`` for every image), ``Tensor[N, classes]`` of weights on the logits (``score_i =
            Σ_c w_ic · logit_ic``), or a callable ``logits (Tensor[b, classes]) -> Tensor[b]``.
        rule: ``None`` (plain gradients, default) or ``"guided"``.
        rules: extra backward rules ``{module type: rule}``, applied with ``rule`` or alone.
        batch_size: images per forward and backward pass.
        device: where the inputs go; default: the device of the model's weights (never moved).
        create_graph: keep the graph of the gradients (for a further backward): then every tensor of
            the result stays on the model's device in its dtype, attached to the graph.
        layout: where the batch and channels sit in the layer's output (see
            :func:`~neurocore.probe.record`); ``"auto"`` decides from the module itself.

    Returns:
        :class:`LayerGradients`; ``activations`` and ``gradients`` are the layer's output and its
        gradient in canonical layout (``[N, C, H, W]`` maps, channels-last outputs permuted; ``[N, T, C]``
        tokens, sequence-first ones transposed; ``[N, C]``), float32 on CPU (float64 when the layer
        computes in float64), ``logits`` likewise.

    Raises:
        NeurocoreError: a wrong layer name (with close matches), a layer that never runs, runs
            several times per forward pass or does not lead to the logits, a layer or model output whose first dimension is not the
            batch, non-floating or empty images, targets of the wrong length, shape, dtype or range
            (naming the number of classes), an unknown rule, bad argument values.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(inplace=True), nn.Linear(3, 2))
        >>> res = layer_gradients(net, "0", torch.randn(5, 4), torch.tensor([0, 1, 1, 0, 1]))
        >>> res.gradients.shape
        torch.Size([5, 3])
        >>> expected = net[2].weight.detach()[[0, 1, 1, 0, 1]] * (res.activations > 0)
        >>> torch.allclose(res.gradients, expected), bool((res.activations < 0).any())  # before the ReLU
        (True, True)
    """
    module = resolve_layers(model, layer)[layer] if isinstance(layer, str) else None
    if module is None:
        raise NeurocoreError(f"layer must be one module name (a string); got {layer!r}")
    if not isinstance(images, torch.Tensor):
        raise NeurocoreError(
            f"images must be a Tensor[N, ...] batch of inputs; got {type(images).__name__} "
            "(stack a list with torch.stack(images))"
        )
    if images.dim() == 0 or images.shape[0] == 0:
        raise NeurocoreError(f"images is empty (shape {tuple(images.shape)}): give at least one image")
    if not images.is_floating_point():
        raise NeurocoreError(
            f"images must be floating point (the gradient needs real-valued inputs); got {images.dtype}. "
            "Convert with images.float() (and scale uint8 images to [0, 1] as the model expects)"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise NeurocoreError(f"batch_size must be an integer >= 1; got {batch_size!r}")
    n = images.shape[0]
    targets = _check_targets(targets, n)
    table = _rule_table(rule, rules)
    device = model_device(model, device)
    dtype = model_float_dtype(model)

    layouts = layer_layouts(layout, [layer])
    if layouts[layer] == "auto":
        # The recording's layout rules (batch axis from the batch size, channel axis from the modules that
        # set the channels), from one gradient-free pass over the first two images.
        with eval_mode(model):
            hooked_forward(model, {layer: module}, images[:2], keep=lambda name, out: None, layouts=layouts,
                           device=device, dtype=dtype, where=f"images 0..{min(2, n) - 1}")
    acts, grads, logits = [], [], []
    with eval_mode(model), _rules_applied(model, table) as spy:
        for start in range(0, n, batch_size):
            x = images[start : start + batch_size].to(device)
            if dtype is not None:
                x = x.to(dtype)
            t = targets if callable(targets) else targets[start : start + batch_size]
            z, g, out = _batch(model, module, layer, x, t, start, create_graph, layouts)
            keep = (lambda v: v) if create_graph else _to_cpu
            acts.append(keep(z))
            grads.append(keep(g))
            logits.append(keep(out))
    if rule is not None:  # a rule family (guided) is meant for every activation: say which ones it missed
        _warn_unruled(model, table, spy.seen)
    try:
        result = LayerGradients(torch.cat(acts), torch.cat(grads), torch.cat(logits), layer, rule)
    except RuntimeError as exc:
        shapes = sorted({tuple(a.shape[1:]) for a in acts})
        raise NeurocoreError(
            f"layer {layer!r} gave outputs of different shapes across batches ({shapes}, after the batch "
            "dimension); give images of one size"
        ) from exc
    return result


# ----------------------------------------------------------------------------------------------


def _to_cpu(t: torch.Tensor) -> torch.Tensor:
    t = t.detach()
    return t.to("cpu", torch.float64 if t.dtype == torch.float64 else torch.float32)


def _check_targets(targets, n: int):
    """Targets checked for everything that is known before the model runs; returns them normalised."""
    if callable(targets) and not isinstance(targets, torch.Tensor):
        return targets
    if isinstance(targets, bool):
        raise NeurocoreError(f"targets must be class indices, logit weights or a callable; got {targets!r}")
    if isinstance(targets, int):
        targets = torch.full((n,), targets, dtype=torch.int64)
    if not isinstance(targets, torch.Tensor):
        try:
            targets = torch.as_tensor(targets)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise NeurocoreError(
                "targets must be a Tensor[N] of class indices, a Tensor[N, classes] of logit weights or a "
                f"callable logits -> Tensor[N]; got {type(targets).__name__}"
            ) from exc
    if targets.dtype == torch.bool or targets.is_complex():
        raise NeurocoreError(f"targets must be integer class indices or real logit weights; got {targets.dtype}")
    if targets.dim() not in (1, 2):
        raise NeurocoreError(
            f"targets must be Tensor[N] class indices or Tensor[N, classes] logit weights; got shape "
            f"{tuple(targets.shape)}"
        )
    if targets.shape[0] != n:
        raise NeurocoreError(
            f"targets has {targets.shape[0]} rows but images has {n}: give one target per image"
        )
    if targets.dim() == 1:
        if targets.is_floating_point():
            raise NeurocoreError(
                f"targets of shape [N] are class indices and must be integers; got {targets.dtype}. "
                "For weights on the logits give a Tensor[N, classes]"
            )
        targets = targets.to(torch.int64)
        if (targets < 0).any():
            raise NeurocoreError(f"targets must be class indices >= 0; got {targets[targets < 0][:5].tolist()}")
    elif not targets.is_floating_point():
        raise NeurocoreError(
            f"targets of shape [N, classes] are weights on the logits and must be floating point; got "
            f"{targets.dtype}. For class indices give a Tensor[N]"
        )
    return targets


def _check_against_logits(targets, logits: torch.Tensor, start: int):
    """Checks that need the number of classes (the model's output)."""
    classes = logits.shape[1]
    if targets.dim() == 1:
        bad = targets >= classes
        if bad.any():
            rows = (bad.nonzero().reshape(-1)[:5] + start).tolist()
            raise NeurocoreError(
                f"targets must be class indices in [0, {classes}) (the model outputs {classes} logits); "
                f"got {targets[bad][:5].tolist()} at images {rows}"
            )
    elif targets.shape[1] != classes:
        raise NeurocoreError(
            f"targets of shape [N, classes] must have one weight per logit: the model outputs {classes} "
            f"logits; got {targets.shape[1]} columns"
        )


def _model_logits(output, b: int, need_2d: bool) -> torch.Tensor:
    if isinstance(output, (tuple, list)) and output:
        output = output[0]
    if not isinstance(output, torch.Tensor):
        raise NeurocoreError(
            f"the model returned a {type(output).__name__}, not a tensor of logits (nor a tuple starting with "
            "one); wrap it so that forward returns Tensor[B, classes], or give a callable targets"
        )
    if output.dim() == 0 or output.shape[0] != b:
        raise NeurocoreError(
            f"the model's output has shape {tuple(output.shape)} for a batch of {b} images; its first "
            "dimension must be the batch"
        )
    if need_2d and output.dim() != 2:
        raise NeurocoreError(
            f"the model's output has shape {tuple(output.shape)}, not [B, classes] logits: class-index and "
            "weight targets need 2-D logits; give a callable targets (output -> Tensor[B]) instead"
        )
    return output


def _batch(model, module, layer, x, targets, start, create_graph, layouts):
    """One forward and one backward pass: (z, ∂score/∂z, logits) for one batch, z and the gradient in
    canonical layout ([B, C, H, W], [B, T, C], [B, C])."""
    b = x.shape[0]
    state = {"z": None, "calls": 0}

    def hook(mod, inputs, output):
        state["calls"] += 1
        y = layer_output(output, layer)
        # Differentiate a copy that only this runner holds: the model goes on with a second copy, so
        # in-place ops that follow (ReLU(inplace=True), `+=`) change neither its value nor its node.
        torch.set_grad_enabled(True)
        z = y.clone() if y.requires_grad else y.detach().clone().requires_grad_(True)
        state["z"] = z
        return _replace_first(output, z.clone())

    # Without create_graph nothing upstream of the layer is differentiated: run it without a graph
    # (the hook turns grad mode on; the enclosing context restores the caller's mode).
    upstream = torch.enable_grad() if create_graph else torch.no_grad()
    handle = module.register_forward_hook(hook)
    try:
        with torch.inference_mode(False), upstream:
            if x.is_inference():  # made under the caller's inference_mode: autograd cannot save it
                x = x.clone()
            try:
                output = model(x)
            except Exception as exc:
                if hasattr(exc, "add_note"):  # Python >= 3.11; keeps the exception's type
                    exc.add_note(f"neurocore: while running the model on images {start}..{start + b - 1}, "
                                 f"input shape {tuple(x.shape)}")
                raise
            if state["calls"] == 0:
                raise NeurocoreError(
                    f"layer {layer!r} never ran during the forward pass of {type(model).__name__} (defined but "
                    "unused, or skipped by the model's forward); choose a module that runs"
                )
            if state["calls"] > 1:
                raise NeurocoreError(
                    f"layer {layer!r} ran {state['calls']} times in one forward pass (a module shared by several "
                    "places, such as the ReLU of a torchvision ResNet block); its gradient would mix those "
                    "uses: choose a module that runs once (e.g. the block itself, or its bn2)"
                )
            z = state["z"]
            if z.dim() == 0:
                raise NeurocoreError(f"layer {layer!r} outputs a 0-D tensor; choose a layer with a batch axis")
            if layouts[layer] == "auto":
                found = resolve_layout(layer, z.shape, b, channel_evidence(module, z), own=True, strides=z.stride())
                if found is None:
                    raise NeurocoreError(
                        f"layer {layer!r} outputs shape {tuple(z.shape)} for a batch of {b} images: tokens [B, T, C] and "
                        f"sequence-first [T, B, C] cannot be told apart; pass layout='NLC' or 'LNC'"
                    )
                layouts[layer] = found
            else:
                check_layout(layer, layouts[layer], z.shape, b)
            logits = _model_logits(output, b, need_2d=not callable(targets))
            if callable(targets):
                score = targets(logits)
                if not isinstance(score, torch.Tensor) or score.shape != (b,):
                    got = tuple(score.shape) if isinstance(score, torch.Tensor) else type(score).__name__
                    raise NeurocoreError(
                        f"a callable targets must map the logits of a batch of {b} images to a Tensor[{b}] (one "
                        f"score per image); got {got}"
                    )
            else:
                _check_against_logits(targets, logits, start)
                t = targets.to(logits.device)
                if t.dim() == 1:
                    score = logits.gather(1, t[:, None]).reshape(b)
                else:
                    score = (logits * t.to(logits.dtype)).sum(dim=1)
            unused = NeurocoreError(
                f"the chosen logits do not depend differentiably on layer {layer!r}: its output is not used on "
                "the way to the logits (a side branch), or the forward detaches it or runs under "
                "torch.no_grad; choose a layer on the path to the output"
            )
            if not score.requires_grad:
                raise unused
            # A sum over images: each image's cells receive only its own score's gradient (no
            # interaction in eval mode).
            (g,) = torch.autograd.grad(score.sum(), z, create_graph=create_graph, allow_unused=True)
            if g is None:
                raise unused
    finally:
        handle.remove()
    lay = layouts[layer]
    return (
        to_canonical(z if create_graph else z.detach(), lay),
        to_canonical(g, lay),
        (logits if create_graph else logits.detach()),
    )


def _replace_first(output, new: torch.Tensor):
    if isinstance(output, torch.Tensor):
        return new
    items = list(output)
    items[0] = new
    if isinstance(output, list):
        return items
    return type(output)(*items) if hasattr(output, "_fields") else tuple(items)  # namedtuples too


# ---- backward rules ----------------------------------------------------------------------------


class _RuleFunction(torch.autograd.Function):
    """Identity forward (a copy, so later in-place ops leave the saved output alone); backward: the rule."""

    @staticmethod
    def forward(ctx, output, rule):
        ctx.rule = rule
        ctx.save_for_backward(output)  # saved, not copied: a later in-place change is caught by autograd
        return output.clone()

    @staticmethod
    def backward(ctx, grad):
        (output,) = ctx.saved_tensors
        return ctx.rule(output, grad), None


def _rule_table(rule, rules) -> dict[type, Rule]:
    if rule is not None and rule not in RULES:
        raise NeurocoreError(f"rule must be None (plain gradients) or one of {RULES}; got {rule!r}")
    table: dict[type, Rule] = dict(GUIDED_RULES) if rule == "guided" else {}
    if rules is not None:
        if not isinstance(rules, Mapping):
            raise NeurocoreError(f"rules must be a dict {{module type: rule(output, grad) -> grad}}; got {rules!r}")
        for kind, fn in rules.items():
            if not (isinstance(kind, type) and issubclass(kind, nn.Module)) or not callable(fn):
                raise NeurocoreError(
                    "rules must map nn.Module subclasses to callables rule(output, grad) -> grad; got "
                    f"{kind!r}: {fn!r}"
                )
        table.update(rules)
    return table


def _rule_for(module: nn.Module, table: Mapping[type, Rule]) -> Rule | None:
    for kind in type(module).__mro__:  # the most specific type given wins
        if kind in table:
            return table[kind]
    return None


class _FunctionalSpy(TorchFunctionMode):
    """Counts functional activations called outside the modules whose rules (or warnings) cover them."""

    def __init__(self):
        super().__init__()
        self.depth = 0
        self.seen: Counter = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if self.depth == 0:
            name = _FUNCTIONAL.get(func)
            if name is not None:
                self.seen[name] += 1
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def _rules_applied(model: nn.Module, table: Mapping[type, Rule]) -> Iterator[_FunctionalSpy]:
    """Forward hooks routing each rule module's output through its rule; all removed on exit."""
    spy = _FunctionalSpy()
    if not table:
        yield spy
        return
    handles = []

    def enter(module, inputs):
        spy.depth += 1

    def leave(module, inputs, output):
        spy.depth -= 1

    def make_hook(rule):
        def hook(module, inputs, output):
            y = layer_output(output, type(module).__name__)
            if not (y.requires_grad and torch.is_grad_enabled()):
                return None  # upstream of the layer: nothing is differentiated here
            return _replace_first(output, _RuleFunction.apply(y, rule))

        return hook

    try:
        for module in model.modules():
            rule = _rule_for(module, table)
            if rule is not None:
                handles.append(module.register_forward_hook(make_hook(rule)))
            if rule is not None or _is_activation(module):
                handles.append(module.register_forward_pre_hook(enter))
                handles.append(module.register_forward_hook(leave))
        with spy:
            yield spy
    finally:
        for h in handles:
            h.remove()


def _is_activation(module: nn.Module) -> bool:
    kind = type(module)
    if isinstance(module, _SKIP_ACTIVATIONS):
        return False
    return kind.__module__ == "torch.nn.modules.activation" or ".activations" in kind.__module__


def _warn_unruled(model: nn.Module, table: Mapping[type, Rule], functional: Counter) -> None:
    other = Counter(
        type(m).__name__ for m in model.modules() if _rule_for(m, table) is None and _is_activation(m)
    )
    if not other and not functional:
        return
    ruled = ", ".join(sorted(k.__name__ for k in table))
    parts = []
    if other:
        parts.append("activation modules " + ", ".join(f"{k} (x{v})" for k, v in sorted(other.items())))
    if functional:
        parts.append(
            "functional activations called in forward "
            + ", ".join(f"{k} (x{v} calls)" for k, v in sorted(functional.items()))
        )
    warnings.warn(
        f"the backward rules apply to {ruled} modules only; the model's {' and '.join(parts)} keep their "
        "ordinary gradient (add rules={type: rule} for module types)",
        stacklevel=3,
    )
