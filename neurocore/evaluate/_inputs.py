"""Input handling shared by :func:`~neurocore.evaluate.top_impact` and
:func:`~neurocore.evaluate.ablation_score`: which activations, labels, rows and units they run on."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
from torch import nn

from neurocore._errors import NeurocoreError
from neurocore._errors import positive_int as _positive_int  # noqa: F401  (imported from here by the evaluations)
from neurocore.probe._layers import eval_mode
from neurocore.probe._replace import Head
from neurocore.probe._store import ActivationStore, LayerActivations

# Temperature of the calibrated cross-entropy (Guo et al. 2017), the released code's value for ResNet-50.
TEMPERATURE = 1.1

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


def _positive_float(value, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise NeurocoreError(f"{name} must be a positive number; got {value!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise NeurocoreError(f"{name} must be a positive number; got {value!r}")
    return v


