"""The one hooked forward pass behind every model-touching step of neurocore.

Recording (:func:`~neurocore.probe.record`), spatial maps and crops, head discovery
(:func:`~neurocore.probe.head_after`) and the neuron-replacement runner all run the model through
:func:`hooked_forward`: inputs moved to the model's device and dtype, forward hooks on the chosen modules
that take each output as it left the module (copied before any later in-place op) in canonical layout,
hooks removed in ``finally``, model errors annotated with where in the probe they happened.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from neurocore._errors import NeurocoreError
from neurocore.probe._layers import capture


def _keep_copy(name: str, out: torch.Tensor) -> torch.Tensor:
    return out.detach()


def hooked_forward(
    model: nn.Module,
    modules: Mapping[str, nn.Module],
    images: torch.Tensor,
    *,
    keep: Callable[[str, torch.Tensor], torch.Tensor] = _keep_copy,
    layouts: dict[str, str] | None = None,
    device=None,
    dtype: torch.dtype | None = None,
    where: str = "the given images",
    grad: bool = False,
    require_once: bool = False,
) -> tuple[dict[str, torch.Tensor], dict[str, int], torch.Tensor]:
    """Run ``model`` once on ``images`` with hooks on ``modules``.

    Args:
        model: the network (its mode is the caller's business: callers wrap this in ``eval_mode``).
        modules: name -> module, from :func:`~neurocore.probe.resolve_layers`.
        images (Tensor[B, ...]): the model's inputs (moved to ``device``, floating ones cast to ``dtype``).
        keep: ``(name, canonical output) -> kept value``; default: the output itself (copied when it
            shares memory with the model's tensor, so later in-place ops cannot change it).
        layouts: name -> layout; ``"auto"`` entries are resolved on this call and written back (a 3-D
            output whose batch axis is ambiguous is resolved by one extra pass over the first image).
        device: where the inputs go; None: where they are.
        dtype: the floating dtype of the model (inputs are cast); None: unchanged.
        where: what the images are, for error messages (``"batch 3 (dataset indices 192..255)"``).
        grad: run with autograd (else ``torch.inference_mode``).
        require_once: each module must run exactly once (neuron replacement needs it).

    Returns:
        ``(kept, calls, logits)``: name -> kept value, name -> number of calls, and the model's output.

    Raises:
        NeurocoreError: a module that never runs (or, with ``require_once``, runs several times), a
            layout that does not fit the output. Exceptions of the model itself keep their type and get
            a note naming ``where`` and the input shape.

    Example:
        >>> model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(inplace=True), nn.Linear(3, 2))
        >>> kept, calls, logits = hooked_forward(model, {"0": model[0]}, torch.randn(5, 4))
        >>> kept["0"].shape, calls, logits.shape, bool((kept["0"] < 0).any())  # copied before the in-place ReLU
        (torch.Size([5, 3]), {'0': 1}, torch.Size([5, 2]), True)
    """
    layouts = layouts if layouts is not None else dict.fromkeys(modules, "auto")
    x = images if device is None else images.to(device)
    if dtype is not None and x.is_floating_point():
        x = x.to(dtype)
    state, logits = _run(model, modules, keep, layouts, x, where, grad)
    if state["ambiguous"]:
        # [T, B, C] or [B, T, C] with T == B: one image tells the batch axis apart.
        probe_layouts = {name: "auto" for name in state["ambiguous"]}
        probe_modules = {name: modules[name] for name in state["ambiguous"]}
        single, _ = _run(model, probe_modules, keep, probe_layouts, x[:1], where, grad)
        for name in state["ambiguous"]:
            if probe_layouts[name] == "auto":
                raise NeurocoreError(
                    f"layer {name!r}: the batch axis of its output cannot be found (sizes of axes 0 and 1 both equal "
                    "the batch size, also for one image); pass layout={name!r: 'NLC'} or 'LNC'"
                )
            layouts[name] = probe_layouts[name]
        state, logits = _run(model, modules, keep, layouts, x, where, grad)
    never = [name for name, calls in state["calls"].items() if calls == 0]
    if never:
        raise NeurocoreError(
            f"layer(s) {never} never ran during the forward pass of {type(model).__name__} (defined but unused, "
            "or skipped by the model's forward); choose modules that run"
        )
    if require_once:
        many = {name: calls for name, calls in state["calls"].items() if calls > 1}
        if many:
            name, calls = next(iter(many.items()))
            raise NeurocoreError(
                f"layer {name!r} ran {calls} times in one forward pass of {type(model).__name__} (a shared module "
                "such as torchvision's per-block ReLU); replacing or differentiating its output would not address one "
                "neuron: choose a module that runs once"
            )
    return state["outputs"], state["calls"], logits


def _run(model, modules, keep, layouts, x, where, grad):
    with capture(modules, keep, layouts=layouts, batch=x.shape[0], model=model) as state:
        try:
            if grad:
                logits = model(x)
            else:
                with torch.inference_mode():
                    logits = model(x)
        except NeurocoreError:
            raise
        except Exception as exc:
            if hasattr(exc, "add_note"):  # Python >= 3.11; keeps the exception's type
                exc.add_note(f"neurocore: while running the model on probe {where}, input shape {tuple(x.shape)}")
            raise
    return state, logits
