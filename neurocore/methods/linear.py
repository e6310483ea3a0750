"""Linear Explanations (Oikarinen, Weng et al., ICML 2024; paper: linear-explanations.txt; ALGORITHMS.md §2).

A neuron's explanation is a short weighted sum of concepts, ``bias + Σ w_j·P(c_j | x)``, that predicts
its activation over the whole probe set (not only its top images). The pipeline:

1. a concept activation matrix ``P`` (N×M): labels (:func:`neurocore.concepts.label_concept_matrix`,
   LE(Label)) or calibrated vision–language probabilities
   (:func:`neurocore.concepts.calibrated_matrix`, LE(SigLIP));
2. :func:`filter_concepts`: keep concepts present in the probe set (top-5 mean ≥ 0.5, std ≥ 1e-5);
3. :func:`split_indices`: a seeded 70/10/20 train/val/test split of the probe images;
4. per neuron, an elastic net on the standardised train split (:func:`elastic_net`), its concepts
   ranked by signed weight (:func:`rank_concepts`), then a greedy forward selection of at most 10
   concepts scored by validation correlation (:func:`greedy_search`, closed-form least squares from
   Gram statistics);
5. :class:`~neurocore.methods.Explanations` with the selected concepts, their least-squares weights and
   intercept, the validation correlation and the test correlation of the fitted explanation on the
   explainer's own ``P``.

:class:`LinearExplanations` (registered as ``"linear"``) holds the settings; :func:`explain_linear` is
the one-call form.
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Sequence

import torch

from neurocore import ops
from neurocore._errors import NeurocoreError
from neurocore.concepts._scores import ConceptScores
from neurocore._alignment import check_same_images
from neurocore._split import Split, split_indices
from neurocore.methods._base import Explanations, NeuronExplanation, probe_identity, register_method, top_image_refs
from neurocore.methods._linear_learn import DEFAULT_ETA, DEFAULT_LAM, GreedyResult, elastic_net, greedy_search, rank_concepts
from neurocore.probe._store import DEAD_THRESHOLD, ActivationStore, dead_neurons
from neurocore.scale._neurons import check_engine

__all__ = [
    "LinearExplanations",
    "explain_linear",
    "filter_concepts",
    "split_indices",
    "Split",
    "describe_linear",
    "elastic_net",
    "rank_concepts",
    "greedy_search",
    "GreedyResult",
]

_CHUNK_ELEMENTS = 1 << 22  # elements per streamed chunk of P


# ----------------------------------------------------------------------------------------------
# Concept filter


def filter_concepts(P, top: int = 5, min_top_mean: float = 0.5, min_std: float = 1e-5) -> torch.Tensor:
    """Which concepts LE keeps: those present in the probe set and not constant.

    Concept j is kept when the mean of its ``top`` largest values over the images is ``>= min_top_mean``
    and its standard deviation over the images (unbiased, computed in float64) is ``>= min_std``
    (paper §5 "Concept set"; ALGORITHMS.md §2). With fewer than ``top`` images, all of them are used.

    Args:
        P (Tensor[N, M]): concept activations (probabilities or 0/1 labels), or :class:`ConceptScores`.
        top: how many of each concept's largest values are averaged.
        min_top_mean: the threshold on that mean.
        min_std: the threshold on the standard deviation.

    Returns:
        Tensor[M] bool: True for the concepts to keep.

    Raises:
        NeurocoreError: P is not 2-D, has no images, or contains NaN.

    Example:
        >>> P = torch.tensor([[0.9, 0.2, 0.7], [0.8, 0.1, 0.7], [0.1, 0.3, 0.7]])
        >>> filter_concepts(P, top=2)  # concept 1 never reaches 0.5; concept 2 is constant
        tensor([ True, False, False])
    """
    P = P.scores if isinstance(P, ConceptScores) else torch.as_tensor(P)
    if P.dim() != 2 or P.shape[0] == 0:
        raise NeurocoreError(f"P must be a Tensor[N, M] with N >= 1 images; got shape {tuple(P.shape)}")
    if top < 1:
        raise NeurocoreError(f"top must be >= 1; got {top}")
    N, M = P.shape
    top_mean = torch.empty(M, dtype=torch.float64)
    std = torch.empty(M, dtype=torch.float64)
    cols = max(1, _CHUNK_ELEMENTS // max(1, N))
    for start in range(0, M, cols):
        block = P[:, start : start + cols].to("cpu", torch.float64)
        if torch.isnan(block).any():
            raise NeurocoreError("P contains NaN; concept activations must be finite")
        values, _ = ops.topk(block, top)
        top_mean[start : start + cols] = values.mean(0)
        std[start : start + cols] = block.std(0) if N > 1 else torch.zeros(block.shape[1], dtype=torch.float64)
    return (top_mean >= min_top_mean) & (std >= min_std)


# ----------------------------------------------------------------------------------------------
# The train/val/test split lives in neurocore._split (simulation scoring uses it too); importable
# from here as before.

# ----------------------------------------------------------------------------------------------
# The method


def describe_linear(concepts: Sequence[str], weights: Sequence[float]) -> str:
    """The text of a linear explanation: ``"0.523·dog + 0.31·wolf - 0.12·cat"``.

    Terms in the given (selection) order, each weight with 3 significant digits (``format(w, ".3g")``),
    joined by ``" + "``, or ``" - "`` with the weight's magnitude when it is negative; a leading negative
    weight keeps its sign (``"-0.12·cat"``). The intercept is not part of the text (it is
    :attr:`NeuronExplanation.bias`). No concepts give ``""``.

    Example:
        >>> describe_linear(["dog", "wolf", "cat"], [0.5234, 0.31, -0.12])
        '0.523·dog + 0.31·wolf - 0.12·cat'
    """
    text = ""
    for i, (c, w) in enumerate(zip(concepts, weights)):
        w = float(w)
        if i == 0:
            text = f"{w:.3g}·{c}"
        else:
            text += f" {'-' if w < 0 else '+'} {abs(w):.3g}·{c}"
    return text


@register_method("linear")
class LinearExplanations:
    """Linear Explanations: each neuron as a sparse weighted sum of concepts (ALGORITHMS.md §2).

    Settings only; :meth:`explain` does the work. Defaults are the published ones.

    Args:
        lam: elastic-net strength λ (released code: 0.05/0.99 ≈ 0.0505, on standardised data).
        eta: elastic-net mixing η (1 = lasso; paper 0.99).
        max_length: at most this many concepts per explanation (paper v = 10).
        width: candidates tried per greedy round, from the top of the ranking (paper r = 10).
        tolerance: minimal gain in validation correlation to add a concept; candidates below it are
            banned for the rest of the search (paper ε = 0.02).
        seed: the seed of the 70/10/20 split when ``split`` is None.
        split: a :class:`Split`, or the path of one saved with :meth:`Split.save`; None draws
            ``split_indices(N, seed)``.
        filter: apply :func:`filter_concepts` (False uses every concept).
        dead_threshold: a neuron whose maximal activation over the probe set is below this is dead: it
            is flagged and gets an empty explanation (paper C.2: 0.01).
        top_images: how many of each neuron's most activating images to list in the result.
        neuron_block: neurons whose elastic nets are solved together (:func:`elastic_net`'s
            ``chunk_size``); the unit of Ray sharding for that step. The weights depend on it in the
            last bits only (rounding), never on the engine or the number of shards.
        engine: ``"local"`` (one process) or ``"ray"``: the per-neuron work runs in Ray tasks by
            contiguous neuron ranges (:func:`neurocore.scale.map_neuron_ranges`; ``pip install
            neurocore[ray]``). What all neurons share (the split, the concept filter, the
            standardised Gram matrix ``G`` and cross-products of the elastic net, the greedy search's
            Gram statistics) is computed once on the driver; Ray tasks solve runs of whole
            ``neuron_block`` blocks of elastic nets, then the greedy rounds of neuron ranges. The
            explanations equal the local ones bit for bit (same concepts, weights, order) for any
            ``shards``.
        shards: neuron ranges with ``engine="ray"``; None = one per CPU of the Ray cluster.
        address: with ``engine="ray"``, the cluster to join: None starts a local one (or uses the
            one already initialised), ``"auto"`` or ``"host:port"`` joins ``ray start --head``'s.

    A misspelt setting raises :class:`~neurocore.methods.UnknownSettingError` (a ``TypeError``)
    naming its close matches: ``LinearExplanations(max_lenght=3)`` suggests ``max_length``.
    """

    name = "linear"
    needs = frozenset({"store", "scores"})

    def __init__(
        self,
        lam: float = DEFAULT_LAM,
        eta: float = DEFAULT_ETA,
        max_length: int = 10,
        width: int = 10,
        tolerance: float = 0.02,
        seed: int = 0,
        split: Split | str | os.PathLike | None = None,
        filter: bool = True,
        dead_threshold: float = DEAD_THRESHOLD,
        top_images: int = 10,
        neuron_block: int = 1024,
        engine: str = "local",
        shards: int | None = None,
        address: str | None = None,
    ):
        self.lam = lam
        self.eta = eta
        self.max_length = max_length
        self.width = width
        self.tolerance = tolerance
        self.seed = seed
        self.split = split
        self.filter = filter
        self.dead_threshold = dead_threshold
        self.top_images = top_images
        self.neuron_block = neuron_block
        self.engine = engine
        self.shards = shards
        self.address = address

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in inspect.signature(type(self).__init__).parameters if k != "self")
        return f"LinearExplanations({args})"

    def explain(
        self,
        store: ActivationStore,
        concept_scores: ConceptScores,
        layers: str | Sequence[str] | None = None,
        progress: bool = False,
        *,
        model=None,
        probe=None,
        transform=None,
    ) -> Explanations:
        """Explain every neuron of the given layers.

        Args:
            store: recorded activations; the rows of every layer's ``summaries (Tensor[N, K])`` are
                the probe images, aligned with the rows of ``concept_scores``.
            concept_scores: the concept activation matrix ``P (Tensor[N, M])``: 0/1 labels or
                calibrated probabilities (not raw cosines: see :func:`~neurocore.concepts.calibrated_matrix`).
            layers: layer name(s) of ``store`` to explain; None = all.
            progress: show progress bars.
            model, probe, transform: accepted for the method contract (``needs`` does not name
                them) and ignored.

        Returns:
            :class:`Explanations` (method ``"linear"``): per neuron ``is_linear=True``, ``concepts`` in
            selection order, ``scores`` their least-squares weights (raw activation units per unit of
            concept probability), ``bias``, ``description`` as :func:`describe_linear`, ``similarity``
            and ``metrics["val_corr"]`` the validation correlation, ``metrics["test_corr"]`` the test
            correlation of the explanation on this ``P``. A neuron where no concept correlates
            positively gets an empty explanation (``description ""``, ``bias`` its train mean,
            correlations 0: a constant prediction explains none of the variation; ``interpretable=False``);
            a dead neuron (max activation < ``dead_threshold``) is flagged ``dead=True``, not explained,
            with NaN correlations. ``label`` is the concept of largest ``|weight|`` ("" for none); top
            images are the store's top-k rows (``top_images``), their ``top_dataset_indices`` and
            ``top_image_ids``. ``params`` holds the settings, the split (:meth:`Split.to_dict`:
            seed, fractions, the indices and the digest of the image ids it was drawn for;
            ``"split_path"`` when it was read from a file), ``"concepts"`` (every concept of
            ``concept_scores``) and the concept counts, ``"concept_source"``/``"concept_key"`` (the
            ``source`` and ``key`` of ``concept_scores``, e.g. its calibration) and ``"probe"``
            (:func:`~neurocore.methods.probe_identity` of the store).

        Raises:
            NeurocoreError: store and scores with different images (another number, or other ids:
                the message names the first row that differs), a split drawn for other images,
                unknown layers, non-finite activations, a bad split, no concept passing the filter,
                or invalid settings.
        """
        self.check_settings()
        if not isinstance(store, ActivationStore):
            raise NeurocoreError(
                f"store must be an ActivationStore (from neurocore.probe.record or ActivationStore.from_tensor); "
                f"got {type(store).__name__}"
            )
        if not isinstance(concept_scores, ConceptScores):
            raise NeurocoreError(
                f"concept_scores must be ConceptScores; got {type(concept_scores).__name__}: wrap a tensor with "
                "ConceptScores.from_tensor(P, concept_names)"
            )
        layer_names = list(store.layers) if layers is None else ([layers] if isinstance(layers, str) else list(layers))
        if not layer_names:
            raise NeurocoreError("layers is empty: name at least one recorded layer")
        layer_acts = [store[name] for name in layer_names]  # unknown names raise with the list
        P = concept_scores.scores
        N = P.shape[0]
        check_same_images(
            store, concept_scores, "the activation store", "concept_scores",
            "record and score the same probe set (pass image_ids= to ActivationStore.from_tensor / "
            "ConceptScores.from_tensor so that this is checked by id)",
        )
        split, split_path = self._resolve_split(store if store.image_ids else concept_scores)
        if self.filter:
            keep = filter_concepts(P)
            if not keep.any():
                raise NeurocoreError(
                    f"no concept of the {P.shape[1]} passes LE's filter (mean of its top-5 values >= 0.5 and std "
                    ">= 1e-5). P must hold probabilities or 0/1 labels: calibrate cosines with "
                    "neurocore.concepts.calibrated_matrix, or pass filter=False"
                )
        else:
            keep = torch.ones(P.shape[1], dtype=torch.bool)
        keep_idx = keep.nonzero().flatten()
        names = [concept_scores.concepts[j] for j in keep_idx.tolist()]
        P_train = _take(P, split.train, keep_idx)
        P_val = _take(P, split.val, keep_idx)

        neurons: list[NeuronExplanation] = []
        bar = _progress(layer_acts, progress and len(layer_acts) > 1)
        for la in bar:
            neurons += self._explain_layer(la, P, P_train, P_val, keep_idx, names, split, progress, store)

        params = {
            "lam": self.lam,
            "eta": self.eta,
            "max_length": self.max_length,
            "width": self.width,
            "tolerance": self.tolerance,
            "seed": self.seed,
            "filter": bool(self.filter),
            "dead_threshold": self.dead_threshold,
            "neuron_block": self.neuron_block,
            "layers": layer_names,
            "num_concepts": int(P.shape[1]),
            "num_concepts_kept": int(keep_idx.numel()),
            "concept_source": concept_scores.source,
            "concept_key": dict(concept_scores.key),
            "split": split.to_dict(),
            "split_path": split_path,
            "concepts": list(concept_scores.concepts),
            "probe": probe_identity(store),
        }
        return Explanations(method=self.name, neurons=tuple(neurons), params=params)

    # -- helpers --------------------------------------------------------------------------------

    def check_settings(self) -> None:
        """Validate the settings (the method contract's check, run by ``explain`` and, before recording, by
        :func:`neurocore.run_methods`); raises :class:`~neurocore.NeurocoreError` naming the setting."""
        checks = [
            ("lam", self.lam, isinstance(self.lam, (int, float)) and self.lam >= 0, "a number >= 0"),
            ("eta", self.eta, isinstance(self.eta, (int, float)) and 0 <= self.eta <= 1, "a number in [0, 1]"),
            ("max_length", self.max_length, isinstance(self.max_length, int) and self.max_length >= 1, "an int >= 1"),
            ("width", self.width, isinstance(self.width, int) and self.width >= 1, "an int >= 1"),
            ("tolerance", self.tolerance, isinstance(self.tolerance, (int, float)) and self.tolerance >= 0, "a number >= 0"),
            ("top_images", self.top_images, isinstance(self.top_images, int) and self.top_images >= 0, "an int >= 0"),
            ("dead_threshold", self.dead_threshold, isinstance(self.dead_threshold, (int, float)), "a number"),
            ("neuron_block", self.neuron_block, isinstance(self.neuron_block, int) and self.neuron_block >= 1, "an int >= 1"),
        ]
        for name, value, ok, expected in checks:
            if not ok or isinstance(value, bool):
                raise NeurocoreError(f"LinearExplanations setting {name} must be {expected}; got {value!r}")
        check_engine(self.engine, self.shards, self.address, "LinearExplanations")

    def _resolve_split(self, images) -> tuple[Split, str | None]:
        """The split in effect, checked against ``images`` (the store, or the scores when only they
        have image ids): same number of images, same ids when both sides know them."""
        split, path = self.split, None
        if split is None:
            split = split_indices(images, seed=self.seed)
        elif isinstance(split, (str, os.PathLike)):
            path = str(split)
            split = Split.load(split)
        elif not isinstance(split, Split):
            raise NeurocoreError(f"split must be a Split, the path of a saved one, or None; got {type(split).__name__}")
        split.check_images(images, "the probe set")
        for part in ("train", "val", "test"):
            if getattr(split, part).numel() < 2:
                raise NeurocoreError(
                    f"the split's {part} part has {getattr(split, part).numel()} image(s); LE needs at least 2 in "
                    f"each part (a correlation needs 2 points): use a larger probe set (N >= 20 with 70/10/20)"
                )
        return split, path

    def _explain_layer(self, la, P, P_train, P_val, keep_idx, names, split, progress, store) -> list[NeuronExplanation]:
        A = la.summaries
        if not torch.isfinite(A).all():
            raise NeurocoreError(f"activations of layer {la.layer!r} contain NaN or inf; check the model and inputs")
        K = A.shape[1]
        dead = dead_neurons(A, self.dead_threshold)
        alive = (~dead).nonzero().flatten()
        results: list[GreedyResult] = []
        test_corr = torch.zeros(0, dtype=torch.float64)
        if alive.numel():
            Y_train = A.index_select(0, split.train).index_select(1, alive)
            Y_val = A.index_select(0, split.val).index_select(1, alive)
            engine = {"engine": self.engine, "shards": self.shards, "address": self.address}
            weights = elastic_net(P_train, Y_train, lam=self.lam, eta=self.eta, chunk_size=self.neuron_block,
                                  progress=progress and self.engine == "ray", **engine)
            ranking = rank_concepts(weights)
            results = list(
                greedy_search(
                    P_train,
                    P_val,
                    Y_train,
                    Y_val,
                    ranking,
                    max_length=self.max_length,
                    width=self.width,
                    tolerance=self.tolerance,
                    progress=progress,
                    **engine,
                )
            )
            if len(results) != alive.numel():
                raise RuntimeError(f"greedy_search returned {len(results)} results for {alive.numel()} neurons")
            test_corr = _test_correlations(P, A.index_select(1, alive), split.test, keep_idx, results)

        top_k = min(self.top_images, la.top_indices.shape[0])
        neurons = []
        position = {int(k): i for i, k in enumerate(alive.tolist())}
        for k in range(K):
            refs = top_image_refs(store, la.top_indices[:top_k, k].tolist())
            if k not in position:
                neurons.append(
                    NeuronExplanation(
                        la.layer, k, "", math.nan, is_linear=True, interpretable=False, dead=True,
                        metrics={"val_corr": math.nan, "test_corr": math.nan}, **refs,
                    )
                )
                continue
            i = position[k]
            r = results[i]
            idx = [int(j) for j in _as_list(r.concepts)]
            w = [float(x) for x in _as_list(r.weights)][: len(idx)]
            concepts = tuple(names[j] for j in idx)
            val_corr = float(r.val_corr) if idx else 0.0
            neurons.append(
                NeuronExplanation(
                    la.layer,
                    k,
                    describe_linear(concepts, w),
                    val_corr,
                    concepts=concepts,
                    scores=tuple(w),
                    bias=float(r.bias),
                    is_linear=True,
                    interpretable=bool(idx),
                    metrics={"val_corr": val_corr, "test_corr": float(test_corr[i])},
                    **refs,
                )
            )
        return neurons


def explain_linear(
    store_or_acts,
    concept_scores: ConceptScores,
    layers: str | Sequence[str] | None = None,
    progress: bool = False,
    **settings,
) -> Explanations:
    """Linear Explanations in one call: ``LinearExplanations(**settings).explain(...)``.

    Args:
        store_or_acts: an :class:`ActivationStore`, or the summarised activations ``Tensor[N, K]`` of one
            layer (named ``"layer"`` in the result).
        concept_scores: the concept activation matrix (see :meth:`LinearExplanations.explain`).
        layers: layer name(s) to explain; None = all.
        progress: show progress bars.
        **settings: :class:`LinearExplanations` settings (``lam``, ``eta``, ``max_length``, ``width``,
            ``tolerance``, ``seed``, ``split``, ``filter``, ``dead_threshold``, ``top_images``,
            ``neuron_block``, ``engine``, ``shards``, ``address``).

    Raises:
        UnknownSettingError: an unknown setting (a ``TypeError`` naming its close matches).
        NeurocoreError: any error of :meth:`LinearExplanations.explain`.

    Example:
        >>> P = torch.bernoulli(torch.full((300, 20), 0.3))
        >>> acts = 0.7 * P[:, 3] + 0.2 * P[:, 10] + 0.01 * torch.randn(300)
        >>> scores = ConceptScores.from_tensor(P, [f"c{j}" for j in range(20)])
        >>> e = explain_linear(acts[:, None], scores)
        >>> e[0].concepts
        ('c3', 'c10')
    """
    explainer = LinearExplanations(**settings)  # an unknown setting raises here, naming its close matches
    if isinstance(store_or_acts, ActivationStore):
        store = store_or_acts
    elif isinstance(store_or_acts, torch.Tensor):
        if store_or_acts.dim() != 2:
            raise NeurocoreError(
                f"store_or_acts must be an ActivationStore or a Tensor[N, K] of summarised activations; got "
                f"shape {tuple(store_or_acts.shape)}"
            )
        store = ActivationStore.from_tensor(store_or_acts, top_k=max(1, min(100, store_or_acts.shape[0])))
    else:
        raise NeurocoreError(f"store_or_acts must be an ActivationStore or a Tensor[N, K]; got {type(store_or_acts).__name__}")
    return explainer.explain(store, concept_scores, layers=layers, progress=progress)


def _take(P: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """``P[rows][:, cols]`` as one float32 copy, gathered in row chunks (no full-size temporaries)."""
    if cols.numel() == P.shape[1] and torch.equal(cols, torch.arange(P.shape[1])):
        return P.index_select(0, rows).to(torch.float32)
    out = torch.empty(rows.numel(), cols.numel(), dtype=torch.float32)
    step = max(1, _CHUNK_ELEMENTS // max(1, P.shape[1]))
    for start in range(0, rows.numel(), step):
        block = P.index_select(0, rows[start : start + step])
        out[start : start + step] = block.index_select(1, cols)
    return out


def _test_correlations(P, Y, test, keep_idx, results) -> torch.Tensor:
    """Pearson correlation on the test split between each neuron's activations ``Y[:, i]`` and its
    explanation ``bias + P[:, S_i] · w_i`` (0 when either is constant, e.g. an empty explanation)."""
    used = sorted({int(j) for r in results for j in _as_list(r.concepts)})
    K = len(results)
    pred = torch.zeros(test.numel(), K, dtype=torch.float64)
    if used:
        column = {j: u for u, j in enumerate(used)}
        W = torch.zeros(len(used), K, dtype=torch.float64)
        for i, r in enumerate(results):
            for j, w in zip(_as_list(r.concepts), _as_list(r.weights)):
                W[column[int(j)], i] = float(w)
        P_test = _take(P, test, keep_idx[torch.tensor(used, dtype=torch.int64)]).double()
        pred = P_test @ W  # the bias shifts the prediction only: it cannot change a correlation
    y = Y.index_select(0, test).double()
    pc = pred - pred.mean(0)
    yc = y - y.mean(0)
    denom = (pc.pow(2).sum(0) * yc.pow(2).sum(0)).sqrt()
    corr = (pc * yc).sum(0) / denom.clamp_min(torch.finfo(torch.float64).tiny)
    # Exactly constant columns, not a small denominator: a rounded mean leaves noise that correlates at random.
    constant = (pred.amax(0) == pred.amin(0)) | (y.amax(0) == y.amin(0))
    return torch.where(constant, torch.zeros_like(corr), corr)


def _as_list(x) -> list:
    if isinstance(x, torch.Tensor):
        return x.flatten().tolist()
    return list(x)


def _progress(items, enabled: bool):
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc="layers", unit="layer")
