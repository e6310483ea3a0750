"""HINT (Wang et al., "HINT: Hierarchical Neuron Concept Explainer", CVPR 2022; ``hint.txt``;
ALGORITHMS.md §3): which neurons, together, detect a hierarchical concept, and where.

1. Layer saliency of each image's class at a layer (:func:`layer_saliency`); cells whose aggregated,
   normalised saliency exceeds t are the **responsible regions** (:func:`responsible_regions`) of
   every concept on the class's path to the root of a **concept hierarchy**
   (:class:`ConceptHierarchy`); other cells are background.
2. Per concept e a linear **concept classifier** ``L_e(r) = σ(αᵀr + β)`` over cells' C-dim feature
   vectors: positives = responsible cells of e's images, negatives = other concepts' responsible
   cells and background cells, balanced by seeded sampling (:func:`fit_concept_classifiers`; logistic
   regression, or the released ``SGDClassifier(loss="modified_huber", alpha=0.01)``); held-out F1.
3. **Contributions** Φ (neurons × concepts, paper Eq. 2): Monte-Carlo permutation Shapley values of
   each neuron in ``L_e`` on e's cells, features outside the coalition taken from other cells,
   ``φ_{d,e} = mean_r |mean_perm Δ|`` (:func:`shapley_contributions`, on the
   :func:`neurocore.ops.shapley_permutation` kernel with the sigmoid link); baselines ``|α|``
   (:func:`coefficient_contributions`) and random (:func:`random_contributions`).
4. Per concept its top-N **collaborative** neurons (:func:`collaborative_neurons`); neurons in the
   top-N of several concepts are **multimodal** (:func:`multimodal_neurons`).
5. Weakly supervised localisation: :func:`neurocore.evaluate.localization_accuracy`.

The registered method ``hint`` (:class:`Hint`) returns :class:`~neurocore.methods.Explanations`: per
neuron every concept ranked by Φ (Φ as scores), label = the concept it contributes to most.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from neurocore._errors import NeurocoreError
from neurocore.methods._base import Explanations, NeuronExplanation, probe_identity, register_method, top_image_refs
from neurocore.methods._hint_hierarchy import PAPER_NODES, ConceptHierarchy, ConceptNode, concept_hierarchy
from neurocore.methods._hint_saliency import (
    AGGREGATIONS,
    SALIENCY_METHODS,
    aggregate_saliency,
    layer_saliency,
    normalise_saliency,
    require_responsible_regions,
    responsible_regions,
)

CLASSIFIERS = ("logistic", "sgd")
CONTRIBUTIONS = ("shapley", "coefficient", "random", "released")
TARGETS = ("auto", "label", "predicted", "logit_sum", "imagenet")

__all__ = [
    "Hint",
    "hint",
    "layer_saliency",
    "responsible_regions",
    "require_responsible_regions",
    "resolve_target",
    "aggregate_saliency",
    "normalise_saliency",
    "ConceptHierarchy",
    "ConceptNode",
    "concept_hierarchy",
    "PAPER_NODES",
    "ConceptClassifiers",
    "cell_dataset",
    "fit_concept_classifiers",
    "shapley_contributions",
    "coefficient_contributions",
    "random_contributions",
    "released_contributions",
    "collaborative_neurons",
    "multimodal_neurons",
    "contribution_matrix",
    "association_figure",
    "SALIENCY_METHODS",
    "AGGREGATIONS",
    "CLASSIFIERS",
    "CONTRIBUTIONS",
    "TARGETS",
]


# ---- cells and classifiers ---------------------------------------------------------------------


def cell_dataset(maps: torch.Tensor, regions: torch.Tensor, membership: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cells of feature maps as samples: each responsible cell carries its image's concepts, each
    background cell none (ALGORITHMS.md §3.3).

    Args:
        maps (Tensor[B, C, h, w]): feature maps (:func:`layer_saliency`'s first output).
        regions (BoolTensor[B, h, w]): responsible cells (:func:`responsible_regions`).
        membership (Tensor[B, E]): 1 where image b belongs to concept e (e.g.
            :meth:`ConceptHierarchy.membership` or a :class:`~neurocore.concepts.ConceptScores` matrix;
            values > 0.5 count).

    Returns:
        ``(cells, labels)``: ``Tensor[B·h·w, C]`` float32 (image-major, then row-major cells) and
        ``BoolTensor[B·h·w, E]``.

    Raises:
        NeurocoreError: shapes that do not match.

    Example:
        >>> maps = torch.arange(8.).view(1, 2, 2, 2)
        >>> regions = torch.tensor([[[True, False], [False, False]]])
        >>> cells, labels = cell_dataset(maps, regions, torch.tensor([[1.]]))
        >>> cells[0].tolist(), labels[:, 0].tolist()
        ([0.0, 4.0], [True, False, False, False])
    """
    if maps.dim() != 4 or regions.shape != (maps.shape[0], *maps.shape[2:]) or membership.shape[0] != maps.shape[0]:
        raise NeurocoreError(
            f"maps must be [B, C, h, w], regions [B, h, w] and membership [B, E] with one B; got "
            f"{tuple(maps.shape)}, {tuple(regions.shape)}, {tuple(membership.shape)}"
        )
    b, c = maps.shape[:2]
    cells = maps.permute(0, 2, 3, 1).reshape(-1, c).float()
    member = membership > 0.5  # [B, E]
    labels = regions.reshape(b, -1, 1) & member[:, None, :]
    return cells, labels.reshape(-1, member.shape[1])


@dataclass(frozen=True)
class ConceptClassifiers:
    """Linear concept classifiers ``L_e(r) = σ(weight[e] · r + bias[e])`` over a layer's cells.

    Attributes:
        concepts: the concepts, in row order.
        weight (Tensor[E, C]), bias (Tensor[E]): the classifiers (zero weights outside ``neurons``).
        f1 (Tensor[E]): held-out F1 of each classifier (NaN when a concept had too few cells).
        counts (Tensor[E] int64): positive cells available per concept.
        kind: ``"logistic"`` or ``"sgd"``.
    """

    concepts: tuple[str, ...]
    weight: torch.Tensor
    bias: torch.Tensor
    f1: torch.Tensor
    counts: torch.Tensor
    kind: str = "logistic"

    def cell_scores(self, maps: torch.Tensor) -> torch.Tensor:
        """Each concept's cell map: ``σ(weight · z + bias)`` at every cell.

        Args:
            maps (Tensor[B, C, h, w]): feature maps of the layer the classifiers were fitted on.

        Returns:
            Tensor[B, E, h, w] float32 in [0, 1].
        """
        if maps.dim() != 4 or maps.shape[1] != self.weight.shape[1]:
            raise NeurocoreError(
                f"maps must be [B, {self.weight.shape[1]}, h, w] (the classifiers' channels); got {tuple(maps.shape)}"
            )
        logits = torch.einsum("bchw,ec->behw", maps.float(), self.weight.float()) + self.bias.float().view(1, -1, 1, 1)
        return torch.sigmoid(logits)


def _sample(idx: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    if idx.numel() <= n:
        return idx
    return idx[torch.randperm(idx.numel(), generator=gen)[:n]]


def _classifier(kind: str, seed: int):
    if kind == "logistic":
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(max_iter=1000)
    if kind == "sgd":
        from sklearn.linear_model import SGDClassifier

        return SGDClassifier(loss="modified_huber", alpha=0.01, random_state=seed)
    raise NeurocoreError(f"classifier must be one of {CLASSIFIERS}; got {kind!r}")


def fit_concept_classifiers(
    cells: torch.Tensor,
    labels: torch.Tensor,
    concepts: Sequence[str],
    *,
    classifier: str = "logistic",
    neurons: torch.Tensor | None = None,
    max_cells: int = 2000,
    test_size: float = 0.25,
    min_cells: int = 4,
    seed: int = 0,
) -> ConceptClassifiers:
    """Fit one linear classifier per concept on cells, with a held-out F1 (ALGORITHMS.md §3.3).

    For concept e: positives = cells with ``labels[:, e]`` (responsible cells of e's images), negatives =
    every other cell (other concepts' responsible cells and background); up to ``max_cells`` of each,
    drawn without replacement from a generator seeded with ``seed`` (the released code samples with
    replacement and without a seed). A stratified share ``test_size`` is held out for F1.

    Args:
        cells (Tensor[R, C]): cell features (:func:`cell_dataset`).
        labels (BoolTensor[R, E]): concept membership of each cell.
        concepts: the E concept names.
        classifier: ``"logistic"`` (scikit-learn's ``LogisticRegression``, default) or ``"sgd"``
            (``SGDClassifier(loss="modified_huber", alpha=0.01)``, as released).
        neurons (BoolTensor[E, C] or [C]): features each classifier may use (the top-p% neurons of
            localisation); None: all. Unused features get weight 0.
        max_cells: cap on positives and on negatives per concept.
        test_size: held-out share for F1.
        min_cells: a concept with fewer positive (or negative) cells gets zero weights, bias 0 and F1 NaN.
        seed: sampling, split and SGD seed.

    Returns:
        :class:`ConceptClassifiers`.

    Raises:
        NeurocoreError: mismatched shapes, unknown classifier, bad numbers.

    Example:
        >>> cells = torch.cat([torch.randn(50, 3) + torch.tensor([3., 0, 0]), torch.randn(50, 3)])
        >>> labels = torch.cat([torch.ones(50, 1), torch.zeros(50, 1)]).bool()
        >>> clf = fit_concept_classifiers(cells, labels, ["a"])
        >>> bool(clf.weight[0, 0] > clf.weight[0, 1].abs()), bool(clf.f1[0] > 0.8)
        (True, True)
    """
    from sklearn.metrics import f1_score
    from sklearn.model_selection import train_test_split

    if cells.dim() != 2 or labels.dim() != 2 or labels.shape[0] != cells.shape[0] or labels.shape[1] != len(concepts):
        raise NeurocoreError(
            f"cells must be [R, C] and labels [R, E] with E = len(concepts) = {len(concepts)}; got "
            f"{tuple(cells.shape)} and {tuple(labels.shape)}"
        )
    if classifier not in CLASSIFIERS:
        raise NeurocoreError(f"classifier must be one of {CLASSIFIERS}; got {classifier!r}")
    if not 0 < test_size < 1:
        raise NeurocoreError(f"test_size must be in (0, 1); got {test_size!r}")
    if isinstance(max_cells, bool) or not isinstance(max_cells, int) or max_cells < 2:
        raise NeurocoreError(f"max_cells must be an integer >= 2; got {max_cells!r}")
    e_count, c = labels.shape[1], cells.shape[1]
    if neurons is not None:
        neurons = torch.as_tensor(neurons, dtype=torch.bool)
        neurons = neurons.expand(e_count, c) if neurons.dim() == 1 else neurons
        if neurons.shape != (e_count, c):
            raise NeurocoreError(f"neurons must be a bool mask [C] or [E, C] = [{e_count}, {c}]; got {tuple(neurons.shape)}")
    gen = torch.Generator().manual_seed(int(seed))
    weight = torch.zeros(e_count, c, dtype=torch.float64)
    bias = torch.zeros(e_count, dtype=torch.float64)
    f1 = torch.full((e_count,), float("nan"), dtype=torch.float64)
    by_concept = labels.bool().T.contiguous()  # [E, R]: a contiguous row per concept (fast nonzero)
    counts = by_concept.sum(1)
    for e in range(e_count):
        pos = _sample(by_concept[e].nonzero().reshape(-1), max_cells, gen)
        neg = _sample((~by_concept[e]).nonzero().reshape(-1), max_cells, gen)
        if pos.numel() < min_cells or neg.numel() < min_cells:
            continue
        cols = torch.arange(c) if neurons is None else neurons[e].nonzero().reshape(-1)
        if cols.numel() == 0:
            continue
        rows = torch.cat([pos, neg])
        x = cells[rows][:, cols].double().numpy()
        y = torch.cat([torch.ones(pos.numel()), torch.zeros(neg.numel())]).numpy()
        split_seed = int(torch.randint(2**31 - 1, (1,), generator=gen))
        x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_size, stratify=y, random_state=split_seed)
        model = _classifier(classifier, split_seed).fit(x_tr, y_tr)
        weight[e, cols] = torch.as_tensor(model.coef_[0], dtype=torch.float64)
        bias[e] = float(model.intercept_[0])
        f1[e] = f1_score(y_te, model.predict(x_te), zero_division=0.0)
    return ConceptClassifiers(tuple(concepts), weight.float(), bias.float(), f1.float(), counts, classifier)


# ---- contributions -----------------------------------------------------------------------------


def _concept_rows(by_concept: torch.Tensor, e: int, max_cells: int, gen: torch.Generator) -> torch.Tensor:
    return _sample(by_concept[e].nonzero().reshape(-1), max_cells, gen)


def shapley_contributions(
    classifiers: ConceptClassifiers,
    cells: torch.Tensor,
    labels: torch.Tensor,
    *,
    permutations: int = 64,
    max_cells: int = 500,
    link: str = "sigmoid",
    seed: int = 0,
    engine: str = "local",
    shards: int | None = None,
    address: str | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Φ: each neuron's Shapley contribution to each concept classifier (paper Eq. 2, ALGORITHMS.md §3.4).

    For concept e, on up to ``max_cells`` of its cells r (seeded sample): Monte-Carlo permutation
    Shapley values of ``L_e`` (:func:`neurocore.ops.shapley_permutation`), features outside the
    coalition taken from another cell (a seeded random cell of the whole set, per r), the same
    ``permutations`` seeded permutations for every concept; ``φ_{d,e} = mean_r |mean_perm Δ_{d,e}(r)|``.
    Each concept is one kernel call with its own classifier (one output) on its own cells.

    Sharding (``engine="ray"``): a permutation's walk couples all neurons (the classifier's value after
    neuron d switches depends on every neuron switched before it), so a range of neurons could not be
    computed without walking every permutation in full: each task would repeat the whole work. Φ's
    columns are independent instead: the seeded draws (cells, backgrounds, permutations) are made
    here once, in the same order as locally, and Ray tasks compute contiguous ranges of concepts
    (:func:`neurocore.scale.map_neuron_ranges`), each concept with the same kernel call as the local
    run. Φ therefore equals the local Φ bit for bit for any number of shards.

    Args:
        classifiers: from :func:`fit_concept_classifiers`.
        cells (Tensor[R, C]), labels (BoolTensor[R, E]): the cells (:func:`cell_dataset`).
        permutations: permutations sampled (:func:`neurocore.ops.sample_permutations`).
        max_cells: cells per concept.
        link: ``"sigmoid"`` (the classifier's probability, default) or ``"identity"`` (the logit; then
            Φ has the closed form ``mean_r |α_d (r_d − b_d)|``).
        seed: cells, backgrounds and permutations.
        engine: ``"local"`` or ``"ray"`` (concept ranges in Ray tasks, see above; ``pip install
            neurocore[ray]``).
        shards: concept ranges with ``engine="ray"``; None = one per CPU of the Ray cluster.
        address: with ``engine="ray"``, the cluster to join (None: a local one; ``"auto"``; ``"host:port"``).
        progress: with ``engine="ray"``, a bar over finished ranges.

    Returns:
        Tensor[C, E] float32 ≥ 0 (zeros for a concept without cells).

    Raises:
        NeurocoreError: a bad link, permutation count, shapes or engine settings.

    Example:
        >>> cells, labels = torch.randn(40, 3), torch.rand(40, 1) > 0.5
        >>> clf = ConceptClassifiers(("a",), torch.tensor([[2., 0., -1.]]), torch.zeros(1), torch.ones(1), labels.sum(0))
        >>> phi = shapley_contributions(clf, cells, labels)
        >>> phi.shape, bool(phi[1, 0] == 0), bool(phi[0, 0] > phi[2, 0])
        (torch.Size([3, 1]), True, True)
    """
    from neurocore import ops
    from neurocore.scale._neurons import check_engine, map_neuron_ranges

    check_engine(engine, shards, address, "shapley_contributions")
    if link not in ("sigmoid", "identity"):
        raise NeurocoreError(f"link must be 'sigmoid' or 'identity'; got {link!r}")
    if isinstance(permutations, bool) or not isinstance(permutations, int) or permutations < 1:
        raise NeurocoreError(f"permutations must be an integer >= 1; got {permutations!r}")
    e_count, c = classifiers.weight.shape
    if cells.shape[1] != c or labels.shape != (cells.shape[0], e_count):
        raise NeurocoreError(
            f"cells must be [R, {c}] and labels [R, {e_count}] (the classifiers' channels and concepts); got "
            f"{tuple(cells.shape)}, {tuple(labels.shape)}"
        )
    gen = torch.Generator().manual_seed(int(seed))
    perms = ops.sample_permutations(permutations, c, seed=int(torch.randint(2**31 - 1, (1,), generator=gen)))
    phi = torch.zeros(c, e_count)
    r_total = cells.shape[0]
    by_concept = labels.bool().T.contiguous()
    rows = [_concept_rows(by_concept, e, max_cells, gen) for e in range(e_count)]
    # Background of each cell: another cell (a random shift, never the cell itself).
    backs = [(r + torch.randint(1, max(r_total, 2), r.shape, generator=gen)) % r_total for r in rows]
    shared = (cells.float(), classifiers.weight.float(), classifiers.bias.float(), rows, backs, perms, link)
    for units, cols in map_neuron_ranges(_phi_job, e_count, shared, engine=engine, shards=shards, address=address,
                                         progress=progress, desc="Φ concepts"):
        phi[:, units.start : units.stop] = cols
    return phi


def _phi_job(units: range, shared) -> torch.Tensor:
    """Φ's columns of concepts ``units`` (a :func:`~neurocore.scale.map_neuron_ranges` job): one
    kernel call per concept, so a column never depends on which concepts share its range."""
    from neurocore import ops

    cells, weight, bias, rows, backs, perms, link = shared
    out = torch.zeros(cells.shape[1], len(units))
    for j, e in enumerate(units):
        if rows[e].numel():
            phi = ops.shapley_permutation(cells[rows[e]], weight[e : e + 1], bias[e : e + 1], cells[backs[e]], perms, link)
            out[:, j] = phi[:, 0, :].abs().mean(0)
    return out


def coefficient_contributions(classifiers: ConceptClassifiers) -> torch.Tensor:
    """The ``|α|`` baseline of Φ (paper Fig. 4c): ``|weight|ᵀ``, Tensor[C, E].

    Example:
        >>> clf = ConceptClassifiers(("a",), torch.tensor([[2., -3.]]), torch.zeros(1), torch.ones(1), torch.ones(1))
        >>> coefficient_contributions(clf).tolist()
        [[2.0], [3.0]]
    """
    return classifiers.weight.abs().T.contiguous()


def random_contributions(num_neurons: int, num_concepts: int, seed: int = 0) -> torch.Tensor:
    """The random baseline of Φ: uniform scores, Tensor[C, E], seeded.

    Example:
        >>> torch.equal(random_contributions(3, 2, seed=1), random_contributions(3, 2, seed=1))
        True
    """
    return torch.rand(num_neurons, num_concepts, generator=torch.Generator().manual_seed(int(seed)))


def released_contributions(cells: torch.Tensor, labels: torch.Tensor, *, max_cells: int = 2000, seed: int = 0,
                           n_estimators: int = 100) -> torch.Tensor:
    """Φ as the authors released it: per concept an XGBoost classifier on balanced cells, explained by
    TreeSHAP (``shap.TreeExplainer``); Φ = mean |SHAP value| over the concept's cells.

    Needs the optional extra ``neurocore[hint-released]`` (``xgboost``, ``shap``). ``XGBClassifier`` with
    the library's defaults (as released) but ``n_estimators`` trees, one thread and ``random_state=seed``;
    ``shap.TreeExplainer``'s exact path-dependent TreeSHAP of the margin (log-odds) output.

    Args:
        cells (Tensor[R, C]), labels (BoolTensor[R, E]): the cells (:func:`cell_dataset`).
        max_cells: positives and negatives per concept (seeded sample).
        seed: sampling and XGBoost seed.
        n_estimators: trees per classifier.

    Returns:
        Tensor[C, E] float32.

    Raises:
        NeurocoreError: xgboost or shap is not installed (with the install command).

    Example:
        >>> cells = torch.randn(200, 3); labels = (cells[:, :1] > 0)
        >>> phi = released_contributions(cells, labels, n_estimators=10)
        >>> int(phi[:, 0].argmax())
        0
    """
    try:
        import shap
        import xgboost
    except ImportError as exc:
        raise NeurocoreError(
            f"contribution='released' needs xgboost and shap ({exc}); install them with "
            "pip install 'neurocore[hint-released]'"
        ) from None
    gen = torch.Generator().manual_seed(int(seed))
    by_concept = labels.bool().T.contiguous()
    e_count = by_concept.shape[0]
    phi = torch.zeros(cells.shape[1], e_count)
    for e in range(e_count):
        pos = _sample(by_concept[e].nonzero().reshape(-1), max_cells, gen)
        neg = _sample((~by_concept[e]).nonzero().reshape(-1), max_cells, gen)
        if pos.numel() < 2 or neg.numel() < 2:
            continue
        x = cells[torch.cat([pos, neg])].double().numpy()
        y = torch.cat([torch.ones(pos.numel()), torch.zeros(neg.numel())]).numpy()
        model = xgboost.XGBClassifier(n_estimators=n_estimators, random_state=seed, n_jobs=1).fit(x, y)
        values = shap.TreeExplainer(model).shap_values(cells[pos].double().numpy())
        phi[:, e] = torch.as_tensor(abs(values).mean(0), dtype=torch.float32)
    return phi


# ---- collaborative and multimodal neurons ------------------------------------------------------


def contribution_matrix(explanations: Explanations, layer: str | None = None):
    """Φ back from HINT's explanations: a ``pandas.DataFrame`` (rows: units of ``layer``, columns: concepts).

    Example:
        >>> ex = Explanations("hint", (NeuronExplanation("l", 0, "a", 0.3, ("a", "b"), (0.3, 0.1)),))
        >>> float(contribution_matrix(ex).loc[0, "b"])
        0.1
    """
    import pandas as pd

    layer = layer or (explanations.layers[0] if explanations.layers else None)
    rows = {n.unit: dict(zip(n.concepts, n.scores)) for n in explanations if n.layer == layer}
    concepts = list(explanations.params.get("concepts") or dict.fromkeys(c for r in rows.values() for c in r))
    return pd.DataFrame.from_dict(rows, orient="index", columns=concepts).sort_index().fillna(0.0)


def collaborative_neurons(phi, concepts: Sequence[str] | None = None, top_n: int = 10):
    """Each concept's top-N neurons by Φ (its collaborative neurons), as a table.

    Args:
        phi: Tensor[C, E] (with ``concepts``) or the DataFrame of :func:`contribution_matrix`.
        concepts: the E concept names (for a tensor).
        top_n: neurons per concept.

    Returns:
        ``pandas.DataFrame`` with columns ``concept, rank, unit, phi`` (rank 1 = largest Φ).

    Example:
        >>> collaborative_neurons(torch.tensor([[0.1], [0.5], [0.3]]), ["a"], top_n=2)["unit"].tolist()
        [1, 2]
    """
    import pandas as pd

    table = _phi_frame(phi, concepts)
    rows = []
    for concept in table.columns:
        col = table[concept].sort_values(ascending=False, kind="stable")
        for rank, (unit, value) in enumerate(col.iloc[:top_n].items(), start=1):
            rows.append({"concept": concept, "rank": rank, "unit": int(unit), "phi": float(value)})
    return pd.DataFrame(rows, columns=["concept", "rank", "unit", "phi"])


def multimodal_neurons(phi, concepts: Sequence[str] | None = None, top_n: int = 10, min_concepts: int = 2):
    """Neurons among the top-N collaborative neurons of at least ``min_concepts`` concepts.

    Returns:
        ``pandas.DataFrame`` with columns ``unit, num_concepts, concepts`` (a ``"; "``-joined list),
        most concepts first.

    Example:
        >>> phi = torch.tensor([[0.9, 0.8], [0.1, 0.0], [0.0, 0.1]])
        >>> multimodal_neurons(phi, ["a", "b"], top_n=1)["unit"].tolist()
        [0]
    """
    import pandas as pd

    top = collaborative_neurons(phi, concepts, top_n)
    groups = top.groupby("unit")["concept"].apply(list)
    rows = [{"unit": int(u), "num_concepts": len(c), "concepts": "; ".join(c)} for u, c in groups.items()
            if len(c) >= min_concepts]
    out = pd.DataFrame(rows, columns=["unit", "num_concepts", "concepts"])
    return out.sort_values(["num_concepts", "unit"], ascending=[False, True], kind="stable").reset_index(drop=True)


def _phi_frame(phi, concepts):
    import pandas as pd

    if isinstance(phi, pd.DataFrame):
        return phi
    if not isinstance(phi, torch.Tensor) or phi.dim() != 2:
        raise NeurocoreError("phi must be a Tensor[C, E] or the DataFrame of contribution_matrix()")
    if concepts is None or len(concepts) != phi.shape[1]:
        raise NeurocoreError(f"concepts must name the {phi.shape[1]} columns of phi")
    return pd.DataFrame(phi.double().numpy(), columns=list(concepts))


def association_figure(phi, concepts: Sequence[str] | None = None, top_n: int = 10, path=None):
    """The neuron–concept association figure (paper Fig. 3): Φ of the union of every concept's top-N
    neurons, as a heat map (matplotlib).

    Args:
        phi: Tensor[C, E] with ``concepts``, or :func:`contribution_matrix`'s DataFrame.
        top_n: collaborative neurons per concept shown.
        path: where to save the PNG (None: not saved).

    Returns:
        The ``matplotlib.figure.Figure``.

    Example:
        >>> fig = association_figure(torch.rand(6, 2), ["a", "b"], top_n=2)
        >>> len(fig.axes) >= 1
        True
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    table = _phi_frame(phi, concepts)
    units = list(dict.fromkeys(collaborative_neurons(table, None, top_n)["unit"].tolist()))
    sub = table.loc[units].T
    fig, ax = plt.subplots(figsize=(max(4, 0.3 * len(units) + 2), max(2.5, 0.35 * len(sub) + 1)))
    im = ax.imshow(sub.to_numpy(), aspect="auto", cmap="viridis")
    ax.set_yticks(range(len(sub.index)), [str(c) for c in sub.index])
    ax.set_xticks(range(len(units)), [str(u) for u in units], rotation=90, fontsize=7)
    ax.set_xlabel("neuron")
    ax.set_title(f"HINT: neuron–concept contributions Φ (top {top_n} per concept)")
    fig.colorbar(im, ax=ax, label="Φ")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    plt.close(fig)
    return fig


# ---- the method --------------------------------------------------------------------------------


def _model_outputs(model, probe, transform) -> int:
    """The model's number of outputs (logits), from one forward pass of the probe's first image."""
    from neurocore.probe._maps import _input_tensor

    if len(probe) == 0:
        raise NeurocoreError("the probe is empty: HINT needs probe images")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    with torch.no_grad():
        out = model(_input_tensor(probe, 0, transform)[None].to(device))
    return int(out.shape[-1])


def resolve_target(target, model, probe, transform=None):
    """HINT's ``target`` as the logit each image's saliency differentiates (ALGORITHMS.md §3.1).

    ``"auto"`` (:class:`Hint`'s default, and the CLI's ``--target auto``) picks the paper's choice, the
    logit of each image's class, wherever the model's logits can be matched to the probe's classes
    (``probe.classes``, as :class:`~neurocore.probe.ImageFolder` has them):

    * a 1000-output model and classes that are all ImageNet WordNet ids (``n02084071``...): each
      class's ImageNet logit (the list ``[imagenet index of class 0, ...]``, as ``"imagenet"`` does);
    * a model with exactly one output per probe class: ``"label"`` (the class index is the logit);
    * otherwise (e.g. a 24-output model on 6 unrelated classes): an error, since a class index would
      pick an unrelated logit: choose ``"predicted"`` or ``"logit_sum"``.

    ``"imagenet"`` insists on the first case. ``"label"``, ``"predicted"``, ``"logit_sum"`` and explicit
    sequences come back unchanged.

    Args:
        target: ``"auto"``, ``"imagenet"``, ``"label"``, ``"predicted"``, ``"logit_sum"`` or a sequence
            mapping class labels to logit indices.
        model: the classifier (``forward`` returns ``Tensor[B, outputs]``); run once on one probe image
            to count its outputs (only for ``"auto"`` and ``"imagenet"``).
        probe: the labelled probe (``probe.classes``: its class names, in label order).
        transform: the model's preprocessing when the probe yields PIL images.

    Returns:
        ``"label"``, ``"predicted"``, ``"logit_sum"`` or a ``list[int]`` (class label -> logit index).

    Raises:
        NeurocoreError: an unknown target; ``"auto"``/``"imagenet"`` on a probe without ``classes``;
            ``"imagenet"`` without a 1000-output model and WordNet-id classes; ``"auto"`` when the
            model's outputs are neither the probe's classes nor ImageNet's.

    Example:
        >>> from neurocore.demo import ConceptWorld, ConceptWorldCNN
        >>> world = ConceptWorld(); probe = world.sample(1, seed=0)
        >>> resolve_target("auto", ConceptWorldCNN(len(world.classes)), probe)  # one output per class
        'label'
        >>> resolve_target("auto", ConceptWorldCNN(6), probe)
        Traceback (most recent call last):
        ...
        neurocore._errors.NeurocoreError: target='auto': the model has 6 outputs but the probe has 24 classes, ...
    """
    if not isinstance(target, str):
        try:
            return [int(t) for t in target]
        except (TypeError, ValueError):
            raise NeurocoreError(
                f"target must be one of {TARGETS} or a sequence mapping class labels to logit indices; got {target!r}"
            ) from None
    if target in ("label", "predicted", "logit_sum"):
        return target
    if target not in ("auto", "imagenet"):
        raise NeurocoreError(f"target must be one of {TARGETS} or a sequence mapping class labels to logits; got {target!r}")
    classes = getattr(probe, "classes", None)
    if classes is None:
        raise NeurocoreError(
            f"target={target!r} matches the model's logits to the probe's class names, but the probe "
            f"({type(probe).__name__}) has no `classes`: pass target='label' if its labels are the model's logit "
            "indices, else target='predicted' (the model's top class) or 'logit_sum'"
        )
    from neurocore.concepts import imagenet_wnids

    classes = [str(c) for c in classes]
    outputs = _model_outputs(model, probe, transform)
    index = {w: i for i, w in enumerate(imagenet_wnids())}
    if target == "imagenet" or (outputs == 1000 and classes and all(c in index for c in classes)):
        missing = [c for c in classes if c not in index]
        if missing or outputs != 1000:
            raise NeurocoreError(
                f"target='imagenet' needs a 1000-class ImageNet model (this one has {outputs} outputs) and classes "
                f"that are ImageNet WordNet ids (not: {missing[:5]}); use target='label', 'predicted' or 'logit_sum'"
            )
        return [index[c] for c in classes]
    if outputs != len(classes):
        raise NeurocoreError(
            f"target='auto': the model has {outputs} outputs but the probe has {len(classes)} classes, which are not "
            "all ImageNet WordNet ids of a 1000-class model, so no logit is known to be a class's: say which logit to "
            "explain with target='predicted' (the model's top class) or target='logit_sum' (CLI: --target predicted "
            "or logit_sum)"
        )
    return "label"


def _targets(target, probe, indices: list[int], model, images: torch.Tensor, logits_fn) -> torch.Tensor:
    if isinstance(target, str):
        if target == "label":
            labels = []
            for i in indices:
                item = probe[i]
                if not isinstance(item, (tuple, list)) or len(item) < 2:
                    raise NeurocoreError(
                        f"target='label' needs a labelled probe (items (image, class index)); probe item {i} is "
                        f"{type(item).__name__}: label the probe or use target='predicted'"
                    )
                labels.append(int(item[1]))
            return torch.tensor(labels, dtype=torch.int64)
        if target == "predicted":
            return logits_fn().argmax(1)
        if target == "logit_sum":
            return None  # handled by the caller: weights of ones
        raise NeurocoreError(f"target must be one of {TARGETS} or a sequence mapping class labels to logits; got {target!r}")
    mapping = torch.as_tensor(list(target), dtype=torch.int64)
    labels = _targets("label", probe, indices, model, images, logits_fn)
    if int(labels.max()) >= mapping.numel():
        raise NeurocoreError(f"target maps {mapping.numel()} class labels to logits; the probe has label {int(labels.max())}")
    return mapping[labels]


@register_method("hint")
class Hint:
    """HINT (Wang et al. 2022): neurons' contributions to hierarchical concepts through concept
    classifiers on responsible regions (module docstring; ALGORITHMS.md §3).

    ``explain`` takes the store (for each neuron's top images), a 0/1 image–concept matrix (a concept
    hierarchy's :meth:`ConceptHierarchy.concept_scores`, or any ConceptScores: values > 0.5 count), the
    model and the probe (images and their class labels). Per layer it draws up to
    ``images_per_concept`` images of every concept (seeded), computes their layer saliency and
    responsible regions, fits the concept classifiers and Φ, and labels every neuron with the concept
    it contributes to most (Φ as ``similarity``; every concept ranked by Φ in ``concepts``/``scores``;
    ``""`` and ``interpretable=False`` when all Φ are 0). A layer where no image has a responsible
    region (flat saliency, e.g. the layer a global average pool follows) is refused with an error
    (:func:`require_responsible_regions`) rather than answered with empty labels. ``params`` hold the
    settings (``target`` as resolved by :func:`resolve_target`), the concepts, each classifier's held-out F1
    (``f1``) and the collaborative neurons per concept (``collaborative``: layer → concept → units).
    After ``explain``, the fitted state is kept as scikit-learn keeps it: ``classifiers_`` (layer →
    :class:`ConceptClassifiers`, to apply to new feature maps), ``phi_`` (layer → Tensor[C, E]) and ``target_``
    (the resolved target).

    Args:
        saliency: :func:`layer_saliency` method (``"guided_backprop"``, as released).
        aggregation, threshold: of :func:`responsible_regions` (``"norm"``, 0.5).
        classifier: ``"logistic"`` or ``"sgd"`` (released).
        contribution: ``"shapley"`` (default), ``"coefficient"`` (``|α|``), ``"random"``, ``"released"``
            (XGBoost + TreeSHAP, optional extra).
        target: which logit the saliency differentiates: ``"auto"`` (default: the class's logit where
            the model's logits are the probe's classes or ImageNet's, else an error; see
            :func:`resolve_target`), ``"imagenet"`` (ImageNet's logit of each WordNet-id class),
            ``"label"`` (the probe's class label as the logit index, the paper's), ``"predicted"`` (the model's top class), ``"logit_sum"`` (the sum of all logits: for
            models whose outputs are not the probe's classes), or a sequence mapping class labels to
            logit indices (e.g. Tiny-ImageNet's 200 labels to ImageNet's 1000 logits).
        images_per_concept: images drawn per concept.
        max_cells: positives and negatives per classifier.
        permutations, shapley_cells: permutations and cells per concept of the Shapley estimate.
        top_n: collaborative neurons per concept.
        batch_size: images per saliency pass.
        seed: every random choice.
        top_k: top images listed per neuron.
        engine: ``"local"`` or ``"ray"``: Φ (``contribution="shapley"``) computed by Ray tasks over
            contiguous concept ranges after the classifiers are fitted once here (see
            :func:`shapley_contributions` for why concepts, not neurons, are sharded); Φ and the
            explanations equal the local ones bit for bit. ``pip install neurocore[ray]``.
        shards: concept ranges with ``engine="ray"``; None = one per CPU of the Ray cluster.
        address: with ``engine="ray"``, the cluster to join (None: a local one; ``"auto"``; ``"host:port"``).
    """

    needs = frozenset({"store", "scores", "model", "probe", "transform"})

    def __init__(self, saliency: str = "guided_backprop", aggregation: str = "norm", threshold: float = 0.5,
                 classifier: str = "logistic", contribution: str = "shapley", target="auto",
                 images_per_concept: int = 50, max_cells: int = 2000, permutations: int = 64,
                 shapley_cells: int = 500, top_n: int = 10, batch_size: int = 32, seed: int = 0, top_k: int = 10,
                 engine: str = "local", shards: int | None = None, address: str | None = None):
        self.saliency = saliency
        self.aggregation = aggregation
        self.threshold = threshold
        self.classifier = classifier
        self.contribution = contribution
        self.target = target
        self.images_per_concept = images_per_concept
        self.max_cells = max_cells
        self.permutations = permutations
        self.shapley_cells = shapley_cells
        self.top_n = top_n
        self.batch_size = batch_size
        self.seed = seed
        self.top_k = top_k
        self.engine = engine
        self.shards = shards
        self.address = address

    def _engine(self) -> dict:
        """The engine settings (they never change the result, so they stay out of ``params``)."""
        from neurocore.scale._neurons import check_engine

        check_engine(self.engine, self.shards, self.address, "Hint")
        return {"engine": self.engine, "shards": self.shards, "address": self.address}

    def check_settings(self) -> None:
        """Validate the settings, engine ones included (the method contract's check, run by ``explain`` and,
        before recording, by :func:`neurocore.run_methods`); raises :class:`~neurocore.NeurocoreError`."""
        self._settings()
        self._engine()

    def _settings(self) -> dict:
        if self.saliency not in SALIENCY_METHODS:
            raise NeurocoreError(f"saliency must be one of {SALIENCY_METHODS}; got {self.saliency!r}")
        if self.aggregation not in AGGREGATIONS:
            raise NeurocoreError(f"aggregation must be one of {AGGREGATIONS}; got {self.aggregation!r}")
        if self.classifier not in CLASSIFIERS:
            raise NeurocoreError(f"classifier must be one of {CLASSIFIERS}; got {self.classifier!r}")
        if self.contribution not in CONTRIBUTIONS:
            raise NeurocoreError(f"contribution must be one of {CONTRIBUTIONS}; got {self.contribution!r}")
        for name in ("images_per_concept", "max_cells", "permutations", "shapley_cells", "top_n", "batch_size", "top_k"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise NeurocoreError(f"{name} must be an integer >= 1; got {v!r}")
        if isinstance(self.target, str) and self.target not in TARGETS:
            raise NeurocoreError(
                f"target must be one of {TARGETS} or a sequence mapping class labels to logits; got {self.target!r}"
            )
        target = self.target if isinstance(self.target, str) else resolve_target(self.target, None, None)
        return dict(saliency=self.saliency, aggregation=self.aggregation, threshold=self.threshold,
                    classifier=self.classifier, contribution=self.contribution, target=target,
                    images_per_concept=self.images_per_concept, max_cells=self.max_cells,
                    permutations=self.permutations, shapley_cells=self.shapley_cells, top_n=self.top_n,
                    batch_size=self.batch_size, seed=self.seed, top_k=self.top_k)

    def layer_cells(self, model, layer: str, probe, indices: Sequence[int], membership: torch.Tensor, *,
                    transform=None):
        """Feature maps, responsible regions and cells of probe images ``indices`` at ``layer``.

        ``target="auto"``/``"imagenet"`` are resolved with the model and probe (:func:`resolve_target`).

        Returns:
            ``(maps [B, C, h, w], regions [B, h, w], cells [B·h·w, C], labels [B·h·w, E])``.

        Raises:
            NeurocoreError: a target that cannot be resolved; a layer without any responsible region
                (:func:`require_responsible_regions`: flat saliency, e.g. right before a global average
                pool: choose an earlier layer).
        """
        from neurocore.probe._maps import _input_tensor

        indices = [int(i) for i in indices]
        images = torch.stack([_input_tensor(probe, i, transform) for i in indices])

        def logits():
            with torch.no_grad():
                return torch.cat([model(images[s : s + self.batch_size]) for s in range(0, len(images), self.batch_size)])

        target = resolve_target(self.target, model, probe, transform)
        targets = _targets(target, probe, indices, model, images, logits)
        kwargs = {"batch_size": self.batch_size}
        if self.saliency == "smoothgrad":
            kwargs["seed"] = self.seed
        if targets is None:  # logit_sum: weights of ones on every logit (layer_gradients' weight targets)
            from neurocore.probe import layer_gradients

            classes = logits().shape[1]
            weights = torch.ones(len(indices), classes)
            if self.saliency not in ("gradient", "gradient_x_input", "guided_backprop"):
                raise NeurocoreError("target='logit_sum' supports saliency gradient, gradient_x_input, guided_backprop")
            res = layer_gradients(model, layer, images, weights, batch_size=self.batch_size,
                                  rule="guided" if self.saliency == "guided_backprop" else None)
            maps = res.activations
            sal = res.gradients * maps if self.saliency == "gradient_x_input" else res.gradients
        else:
            maps, sal = layer_saliency(model, layer, images, targets, self.saliency, **kwargs)
        regions = responsible_regions(sal, self.aggregation, self.threshold)
        require_responsible_regions(regions, sal, layer, method=self.saliency, aggregation=self.aggregation,
                                    threshold=self.threshold)
        cells, labels = cell_dataset(maps, regions, membership)
        return maps, regions, cells, labels

    def explain(self, store, scores, layers=None, *, model=None, probe=None, transform=None, progress=False) -> Explanations:
        """Explain every neuron of ``layers`` (default: all of the store's) by its contributions to the
        concepts of ``scores``; see the class docstring. Same inputs and seed, same output."""
        from tqdm.auto import tqdm

        from neurocore._alignment import check_same_images

        settings = self._settings()
        engine = self._engine()
        if model is None or probe is None:
            raise NeurocoreError("HINT runs the model on the probe images: pass model= and probe= to explain()")
        check_same_images(store, scores, "the activation store", "scores",
                          "record and score the same probe images, in the same order")
        settings["target"] = self.target_ = resolve_target(self.target, model, probe, transform)
        layer_names = list(store.layers) if layers is None else [layers] if isinstance(layers, str) else list(layers)
        concepts = tuple(scores.concepts)
        member = scores.scores > 0.5  # [N, E], rows = store rows
        gen = torch.Generator().manual_seed(int(self.seed))
        chosen: set[int] = set()
        for e in range(member.shape[1]):
            rows = member[:, e].nonzero().reshape(-1)
            chosen.update(_sample(rows, self.images_per_concept, gen).tolist())
        rows = torch.tensor(sorted(chosen), dtype=torch.int64)
        dataset_idx = (store.dataset_indices[rows] if store.dataset_indices is not None else rows).tolist()
        neurons, f1s, collab = [], {}, {}
        self.classifiers_: dict[str, ConceptClassifiers] = {}
        self.phi_: dict[str, torch.Tensor] = {}
        for layer in tqdm(layer_names, desc="HINT", unit="layer", disable=not progress):
            la = store[layer]
            _, _, cells, labels = self.layer_cells(model, layer, probe, dataset_idx, member[rows].float(),
                                                   transform=transform)
            phi, clf = _contributions(cells, labels, concepts, settings, engine, progress=progress)
            self.classifiers_[layer], self.phi_[layer] = clf, phi
            f1s[layer] = {c: float(v) for c, v in zip(concepts, clf.f1.tolist())}
            table = collaborative_neurons(phi, concepts, self.top_n)
            collab[layer] = {c: table.loc[table.concept == c, "unit"].tolist() for c in concepts}
            for k in range(phi.shape[0]):
                order = sorted(range(len(concepts)), key=lambda e: (-float(phi[k, e]), e))
                best = float(phi[k, order[0]]) if concepts else 0.0
                label = concepts[order[0]] if concepts and best > 0 else ""
                refs = top_image_refs(store, la.top_indices[: self.top_k, k].tolist())
                neurons.append(NeuronExplanation(
                    layer=layer, unit=k, description=label, similarity=best if label else float("nan"),
                    concepts=tuple(concepts[e] for e in order), scores=tuple(float(phi[k, e]) for e in order),
                    dead=bool(la.dead()[k]), label=label, interpretable=bool(label), **refs,
                ))
        params = {**settings, "concepts": list(concepts), "f1": f1s, "collaborative": collab,
                  "images": len(rows), "probe": probe_identity(store)}
        return Explanations("hint", tuple(neurons), params)


def _contributions(cells, labels, concepts, settings, engine=None, progress=False):
    clf = fit_concept_classifiers(cells, labels, concepts, classifier=settings["classifier"],
                                  max_cells=settings["max_cells"], seed=settings["seed"])
    kind = settings["contribution"]
    if kind == "shapley":
        phi = shapley_contributions(clf, cells, labels, permutations=settings["permutations"],
                                    max_cells=settings["shapley_cells"], seed=settings["seed"],
                                    progress=progress and bool(engine) and engine["engine"] == "ray", **(engine or {}))
    elif kind == "coefficient":
        phi = coefficient_contributions(clf)
    elif kind == "random":
        phi = random_contributions(cells.shape[1], len(concepts), settings["seed"])
    else:
        phi = released_contributions(cells, labels, max_cells=settings["max_cells"], seed=settings["seed"])
    return phi, clf


def hint(model, layers, probe, scores, *, transform=None, batch_size: int = 64, progress: bool = True, **settings) -> Explanations:
    """HINT in one call: record ``layers`` over ``probe`` (each neuron's top images), then
    :meth:`Hint.explain` with ``scores`` (e.g. ``hierarchy.concept_scores(labels)``).

    Args:
        model: the classifier. layers: module name(s). probe: labelled dataset (items ``(image, label)``).
        scores: :class:`~neurocore.concepts.ConceptScores` of the probe's images (0/1).
        transform: the model's preprocessing when the probe yields PIL images.
        batch_size: images per recording pass. progress: progress bars.
        **settings: :class:`Hint`'s settings.

    Returns:
        :class:`~neurocore.methods.Explanations` (method ``"hint"``).

    Example:
        >>> from neurocore.demo import ConceptWorld, PlantedConceptNet
        >>> world = ConceptWorld(); probe = world.sample(2, seed=0)
        >>> scores = probe.concept_scores()
        >>> ex = hint(PlantedConceptNet(world), "colours", probe, scores, target="logit_sum",
        ...           saliency="gradient_x_input", progress=False, images_per_concept=8, permutations=8)
        >>> len(ex), ex.method
        (4, 'hint')
    """
    from neurocore.probe import record

    names = [layers] if isinstance(layers, str) else list(layers)
    method = Hint(**settings)
    method.check_settings()
    store = record(model, names, probe, transform=transform, batch_size=batch_size, progress=progress)
    if not scores.image_ids and store.image_ids:
        from dataclasses import replace

        scores = replace(scores, image_ids=tuple(store.image_ids))
    return method.explain(store, scores, model=model, probe=probe, transform=transform, progress=progress)
