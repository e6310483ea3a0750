"""Top Impact (Linear Explanations, Oikarinen & Weng, ICML 2024, §2, eqs. 1–4): how much of a
neuron's effect on the network's loss comes from its most activating images, measured by replacing it
with zero through the neuron-replacement runner (:mod:`neurocore.probe._replace`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from neurocore._errors import NeurocoreError
from neurocore.evaluate._inputs import (
    TEMPERATURE,
    _choose_inputs,
    _evaluating,
    _positive_float,
    _positive_int,
    _progress,
    _resolve_inputs,
    _rows,
    _units,
)
from neurocore.probe._replace import Head, _Runner, head_after
from neurocore.probe._store import DEAD_THRESHOLD, dead_neurons

# Top Impact fractions of Table 1 of the paper.
DEFAULT_BETAS = (0.0003, 0.002, 0.02, 0.1, 0.5)

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
        dead (Tensor[K], bool): max activation < the dead threshold (:func:`~neurocore.probe.dead_neurons`).
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
        dead_threshold: a neuron with max activation below this is dead: reported and skipped (-inf: none; for signed layers).
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
        dead_all = dead_neurons(spec.summaries if spec.summaries is not None else split.acts, dead_threshold)
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


