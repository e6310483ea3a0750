"""The analysis report's summaries of neuron explanations as tables (paper: analysis-report.txt §1):
the highest similarity per layer (which layers are most interpretable), the concepts of the top-50
neurons by similarity, and the effect of the probe-set size on the labels."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from neurocore._errors import NeurocoreError


def _runs(explanations) -> dict:
    from neurocore.methods._base import Explanations

    if isinstance(explanations, Explanations):
        return {explanations.method: explanations}
    if isinstance(explanations, Mapping) and explanations and all(isinstance(e, Explanations) for e in explanations.values()):
        return dict(explanations)
    raise NeurocoreError(
        f"explanations must be an Explanations or a non-empty mapping name -> Explanations (one per model); got {type(explanations).__name__}"
    )


def _usable(n) -> bool:
    return not n.dead and n.label is not None and n.label != "" and not math.isnan(float(n.similarity))


def highest_similarity(explanations):
    """The highest similarity of any (live, labelled) neuron in each layer: the report's "which layers are
    most interpretable" table (its Fig. 1 table: FC, layer 4, layer 3 by model).

    Args:
        explanations: one :class:`~neurocore.methods.Explanations` or ``{model name: Explanations}``.

    Returns:
        ``pandas.DataFrame`` indexed by ``layer`` (first-appearance order), one column per run (the
        method's name for a single one); NaN where a run lacks the layer or has no usable neuron there.

    Raises:
        NeurocoreError: not explanations.

    Example:
        >>> from neurocore.methods import Explanations, NeuronExplanation
        >>> e = Explanations("clip_dissect", tuple(NeuronExplanation(l, u, "dog", s) for l, u, s in
        ...     [("layer4", 0, 0.2), ("layer4", 1, 0.3), ("fc", 0, 0.5)]))
        >>> highest_similarity({"resnet": e})["resnet"].tolist()
        [0.3, 0.5]
    """
    import pandas as pd

    runs = _runs(explanations)
    layers = list(dict.fromkeys(layer for e in runs.values() for layer in e.layers))
    table = {}
    for name, e in runs.items():
        best = {layer: float("nan") for layer in layers}
        for n in e:
            if _usable(n) and not float(n.similarity) <= best[n.layer]:
                best[n.layer] = float(n.similarity)
        table[name] = [best[layer] for layer in layers]
    return pd.DataFrame(table, index=pd.Index(layers, name="layer"))


def top_concept_counts(explanations, layer: str, top: int = 50):
    """How many of a layer's ``top`` neurons by similarity carry each label (the report's Appendix A:
    "count of concepts in top-50 neurons with the highest similarity in FC").

    Neurons are ranked by similarity (descending; ties: lower unit first); dead and unlabelled neurons
    are skipped. The number of rows is the number of unique concepts among them.

    Args:
        explanations: :class:`~neurocore.methods.Explanations` holding ``layer``.
        layer: the layer summarised. top: neurons kept (the report: 50).

    Returns:
        ``pandas.DataFrame`` indexed by ``concept`` with columns ``count`` and ``units`` (the units,
        best first), sorted by descending count, ties by concept name.

    Raises:
        NeurocoreError: a layer not in the explanations, ``top < 1``.

    Example:
        >>> from neurocore.methods import Explanations, NeuronExplanation
        >>> e = Explanations("clip_dissect", tuple(NeuronExplanation("fc", u, d, s) for u, d, s in
        ...     [(0, "dog", 0.9), (1, "cat", 0.8), (2, "dog", 0.7), (3, "fish", 0.1)]))
        >>> top_concept_counts(e, "fc", top=3)["count"].to_dict()
        {'dog': 2, 'cat': 1}
    """
    import pandas as pd

    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise NeurocoreError(f"top must be an integer >= 1 (the report: 50); got {top!r}")
    neurons = [n for n in _runs(explanations).popitem()[1].layer(layer) if _usable(n)]
    neurons.sort(key=lambda n: (-float(n.similarity), n.unit))
    groups: dict[str, list[int]] = {}
    for n in neurons[:top]:
        groups.setdefault(n.label, []).append(n.unit)
    rows = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    return pd.DataFrame({"count": [len(u) for _, u in rows], "units": [tuple(u) for _, u in rows]},
                        index=pd.Index([c for c, _ in rows], name="concept", dtype=object))


def probe_size_effect(method, store, scores, sizes: Sequence[int] = (100, 200, 500, 1000), *,
                      layers: Sequence[str] | None = None, repeats: int = 1, seed: int = 0):
    """The effect of the probe-set size on labels: explain from n random probe images and compare with
    the labels from all N images (the report: similarities grow from 20 to 1000 images).

    For each layer and each n (sizes above N are dropped; N itself is always included): ``repeats``
    seeded random subsets of n images; ``agreement`` = share of the neurons (live and labelled on all N
    images) whose label from the subset equals their label from all images; ``mean_similarity`` = mean
    similarity of those neurons' subset explanations.

    Args:
        method: an explainer working from activations and concept scores alone (``ClipDissect()``,
            ``LinearExplanations()``: ``method.explain(store, scores)``).
        store (ActivationStore): the activations of all N images. scores (ConceptScores): their concept scores.
        sizes: the subset sizes n.
        layers: layers of the store (None: all).
        repeats: subsets per n (averaged). seed: the subsets' seed.

    Returns:
        ``pandas.DataFrame`` with a (``layer``, ``n``) index and columns ``agreement, mean_similarity, neurons``.

    Raises:
        NeurocoreError: mismatched store and scores, sizes < 1.

    Example:
        >>> from neurocore.methods import ClipDissect
        >>> from neurocore.probe import ActivationStore
        >>> from neurocore.concepts import ConceptScores
        >>> s = torch.rand(40, 3); store = ActivationStore.from_tensor(s * 2, "fc", top_k=10)
        >>> table = probe_size_effect(ClipDissect(), store, ConceptScores.from_tensor(s, ["a", "b", "c"]), (20,))
        >>> float(table.loc[("fc", 40), "agreement"])
        1.0
    """
    import pandas as pd

    from neurocore.concepts import ConceptScores
    from neurocore.probe import ActivationStore

    n_all = store.num_images
    if scores.num_images != n_all:
        raise NeurocoreError(f"scores must have one row per stored image ({n_all}); got {scores.num_images}")
    if any(isinstance(n, bool) or int(n) < 1 for n in sizes):
        raise NeurocoreError(f"sizes must be integers >= 1; got {list(sizes)}")
    ns = sorted({int(n) for n in sizes if int(n) < n_all} | {n_all})
    gen = torch.Generator().manual_seed(int(seed))
    rows = []
    for layer in layers or list(store.layers):
        acts = store[layer].summaries
        top_k = store[layer].top_values.shape[0]

        def explain(idx):
            sub = ActivationStore.from_tensor(acts[idx], layer, top_k=min(top_k, len(idx)))
            return {n.unit: n for n in method.explain(sub, ConceptScores.from_tensor(scores.scores[idx], scores.concepts))}

        full = explain(torch.arange(n_all))
        units = [u for u, n in full.items() if _usable(n)]
        for n in ns:
            agree, sims = [], []
            for _ in range(1 if n == n_all else repeats):
                idx = torch.arange(n_all) if n == n_all else torch.randperm(n_all, generator=gen)[:n].sort().values
                sub = explain(idx)
                agree += [sub[u].label == full[u].label for u in units]
                sims += [float(sub[u].similarity) for u in units]
            rows.append({"layer": layer, "n": n, "agreement": sum(agree) / len(agree) if agree else float("nan"),
                         "mean_similarity": sum(sims) / len(sims) if sims else float("nan"), "neurons": len(units)})
    return pd.DataFrame(rows).set_index(["layer", "n"])
