"""Figures: the activation area chart (Linear Explanations, Oikarinen & Weng, ICML 2024, Fig. 1)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from neurocore._errors import NeurocoreError
from neurocore._errors import positive_int as _positive_int

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

