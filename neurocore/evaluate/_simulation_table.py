"""Simulation scores of several methods' explanations in one table, by a simulator that is not the explainer.

Linear Explanations' simulation (Oikarinen & Weng, ICML 2024, §4; ALGORITHMS.md §2) scores any
method's explanation ``E = {(w_j, c_j)}`` by how well ``s(x) = Σ_j w_j·P_sim(c_j|x)`` predicts the
neuron: the correlation score (eq. 10) and the ablation score (eqs. 11–14), implemented once in
:mod:`neurocore.evaluate._simulation`. :func:`simulation_table` runs them over every method × layer
on the same held-out split with one simulator, which must be a *different* model than the one whose
concept scores the explainer used (the paper's requirement 2 of a simulator: an explainer simulated by
its own model scores too high). Given a vision–language model, the simulator encodes the union of the
concepts every method uses, so methods whose concepts come from different concept sets
(CLIP-Dissect's, WWW's, HINT's hierarchy) are scored by one simulator alike.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Mapping
from dataclasses import replace
from types import SimpleNamespace

import torch

from neurocore._alignment import check_same_images
from neurocore._errors import NeurocoreError, close_matches
from neurocore._split import Split, split_indices
from neurocore.concepts._calibrate import calibration_preset
from neurocore.concepts._scores import ConceptScores
from neurocore.evaluate._simulation import (
    SAME_SOURCE_WARNING,
    ablation_score,
    correlation_score,
    explainer_source,
    explanation_concepts,
    simulator_matrix,
)
from neurocore.methods._base import Explanations
from neurocore.probe._store import ActivationStore

__all__ = ["simulation_table", "TABLE_COLUMNS"]

# The columns of simulation_table(), in order; the ablation columns are added with ablation=True.
TABLE_COLUMNS = (
    "method", "layer", "simulator", "explainer_source", "neurons", "scored", "no_concepts", "missing_concepts",
    "dead", "correlation", "correlation_sem", "test_images",
)
ABLATION_COLUMNS = ("ablation", "ablation_sem", "ablation_scored")

_WWW_NONE = "none"  # WWW's label of a neuron with no concept (neurocore.methods.www.NONE)
_MISSING_WARNING = r"\d+ neuron\(s\) use concepts the simulator does not score"


def simulation_table(
    explanations: Mapping[str, Explanations],
    store,
    simulator,
    *,
    probe=None,
    model=None,
    transform=None,
    split=None,
    ablation: bool = False,
    template: str | None = None,
    seed: int = 0,
    progress: bool = False,
    calibration="preset",
    scaling: str = "optim",
    strict: bool = False,
    batch_size: int = 64,
    cache_dir=None,
    labels=None,
):
    """Correlation (and ablation) simulation scores of every method's explanations, one row per method × layer.

    The simulator predicts each neuron from its explanation, ``s(x) = Σ_j w_j·P_sim(c_j|x)`` (paper
    eq. 9; a single label is ``{(1, c)}``), and each row averages, over the layer's neurons, the
    Pearson correlation of ``s`` and the activation on the split's test images (eq. 10,
    :func:`~neurocore.evaluate.correlation_score`) and, with ``ablation=True``, the ablation score
    (eqs. 11–14, :func:`~neurocore.evaluate.ablation_score`, ``(c, d)`` fitted on the val images). Every
    method is scored by the same simulator on the same split. Neurons without concepts (WWW's
    ``"none"``, HINT neurons with no positive contribution, empty descriptions) are counted in
    ``no_concepts`` and score 0 (they predict a constant); dead neurons (max activation < 0.01) and
    neurons whose concepts the simulator does not score are left out of the means and counted.

    Args:
        explanations: method name -> :class:`~neurocore.methods.Explanations` (e.g.
            ``{"clip_dissect": ..., "www": ...}``), all explained from ``store``'s images (checked against
            ``params["probe"]``, :func:`~neurocore.methods.probe_identity`, when they carry it).
        store: the :class:`~neurocore.probe.ActivationStore` the explanations were made from; every
            explained layer must be in it.
        simulator: the simulator, one of

            * :class:`~neurocore.concepts.ConceptScores`: the simulator model's concept *probabilities*
              over the store's images, rows aligned with the store
              (:func:`~neurocore.evaluate.simulator_matrix` of its cosines, or a 0/1 label matrix); used
              as given: neurons whose concepts it lacks are counted in ``missing_concepts``;
            * a vision–language model (:class:`~neurocore.vlm.VisionLanguageModel`) or an
              ``"open_clip:NAME:TAG"`` spec (:func:`~neurocore.vlm.load_vlm`): it encodes ``probe``'s
              images (the store's rows) and the union of the concepts the explanations use
              (:func:`~neurocore.evaluate.explanation_concepts`), then ``calibration`` turns the cosines
              into probabilities.
        probe: the dataset the store was recorded from (``store.dataset_indices`` maps rows to its
            items). Needed with a model simulator, and for ablation unless the store's summaries are
            the head's pooled features.
        model: the explained network (needed for ablation).
        transform: the transform the store was recorded with (for ablation's forward passes).
        split: a :class:`~neurocore.Split` of the store's images: its ``test`` part is scored, ablation
            fits ``(c, d)`` on its ``val`` part. Default (None): ``split_indices(store, seed)``, the
            published 70/10/20 split, as Linear Explanations draws it with the same seed. When an
            explanation was fitted on a split (``params["split"]``, Linear Explanations) whose train or
            val rows fall in this test part, a warning (``strict``: an error) says so.
        ablation: also compute the ablation score (needs ``model``; one forward pass per neuron batch,
            per Adam step with ``scaling="optim"``: slow outside the penultimate layer).
        template: prompt with ``"{}"`` for a model simulator's concept texts (``"a photo of a {}"``);
            None encodes the concepts as they are.
        seed: seed of the default split.
        progress: a tqdm bar over methods × layers (and the model simulator's encoding).
        calibration: how a model simulator's cosines become probabilities ``sigmoid(a·(S + b))`` (eq. 8):
            ``"preset"`` (default) the published ``(a, b)`` of the simulator's model
            (:func:`~neurocore.concepts.calibration_preset`), or the cosines as they are when it has
            none; ``(a, b)`` given; None the cosines as they are. Ignored for a ConceptScores simulator.
        scaling: the ablation's ``(c, d)``: ``"optim"`` (paper default) or ``"norm"`` (closed form).
        strict: raise instead of warning when an explainer used the simulator's own concept source, or
            was fitted on rows of the test split.
        batch_size: images per batch (encoding, ablation).
        cache_dir: folder for the model simulator's cached embeddings (None: no caching).
        labels (Tensor[N], int64): the classes ablation's cross-entropy is taken against; default: the
            store's labels (those the probe yielded).

    Returns:
        pandas.DataFrame, one row per method × layer (methods in the mapping's order, layers in each
        explanation's order), columns :data:`TABLE_COLUMNS`: ``method``, ``layer``, ``simulator`` (the
        simulator's source: ``vlm.identity`` or ``ConceptScores.source``), ``explainer_source`` (the
        explainer's ``params["concept_source"]``; ``""`` when not recorded, e.g. HINT's labelled
        concepts), ``neurons``, ``scored`` (neurons in the correlation mean), ``no_concepts``,
        ``missing_concepts``, ``dead``, ``correlation`` (mean over scored neurons; NaN when none),
        ``correlation_sem`` (its standard error), ``test_images``; with ``ablation=True`` also
        ``ablation``, ``ablation_sem``, ``ablation_scored``. ``table.attrs`` holds the provenance:
        ``"split"`` (:meth:`~neurocore.Split.to_dict`), ``"simulator"``, ``"calibration"``
        (``{"a", "b"}`` or None) and, for ablation, ``"scaling"``.

    Raises:
        NeurocoreError: ``explanations`` not a non-empty mapping of Explanations; explanations of
            another probe than the store or of layers it lacks; a model simulator without ``probe``;
            ``ablation=True`` without ``model``; a split of other images; a simulator of other images;
            with ``strict=True``, an explainer whose concept source is the simulator's, or whose fitting
            split overlaps the test split.

    Warns:
        UserWarning: an explainer's concept source is the simulator's (the option to change is named);
            an explanation fitted on rows of the test split; no calibration preset for the simulator.

    Example:
        >>> from neurocore.methods import NeuronExplanation
        >>> P = torch.rand(50, 2)
        >>> store = ActivationStore.from_tensor(torch.stack([P[:, 1], P[:, 0]], 1), layer="fc")
        >>> right = Explanations("a", (NeuronExplanation("fc", 0, "sky", 1.0), NeuronExplanation("fc", 1, "dog", 1.0)))
        >>> wrong = Explanations("b", (NeuronExplanation("fc", 0, "dog", 1.0), NeuronExplanation("fc", 1, "sky", 1.0)))
        >>> t = simulation_table({"right": right, "wrong": wrong}, store, ConceptScores.from_tensor(P, ["dog", "sky"]))
        >>> t[["method", "scored"]].values.tolist(), (t.correlation > 0.99).tolist()
        ([['right', 2], ['wrong', 2]], [True, False])
    """
    import pandas as pd
    from tqdm.auto import tqdm

    methods = _check_explanations(explanations)
    if not isinstance(store, ActivationStore):
        raise NeurocoreError(
            f"store must be the ActivationStore the explanations were made from; got {type(store).__name__}"
        )
    if not isinstance(ablation, bool):
        raise NeurocoreError(f"ablation must be True or False; got {ablation!r}")
    if ablation and model is None:
        raise NeurocoreError("ablation=True replaces neurons inside the network: pass model= (the explained network)")
    for name, ex in methods.items():
        _check_probe(name, ex, store)
        missing = [layer for layer in ex.layers if layer not in store.layers]
        if missing:
            hint = close_matches(missing[0], list(store.layers))
            raise NeurocoreError(
                f"explanations[{name!r}] explain layer(s) {missing} that the store did not record "
                f"(it has {list(store.layers)}" + (f"; close: {hint}" if hint else "") + "): record them, or "
                "pass the store the explanations were made from"
            )
    methods = {name: _without_none_labels(ex) for name, ex in methods.items()}
    split = _resolve_split(split, store, seed)
    sim, calib = _resolve_simulator(simulator, methods, store, probe, template, calibration, batch_size, cache_dir,
                                    progress)
    for name, ex in methods.items():
        _check_distinct(name, ex, sim.source, strict)
        _check_fitting_split(name, ex, split, strict)

    pairs = [(name, layer) for name, ex in methods.items() for layer in ex.layers]
    rows = []
    for name, layer in tqdm(pairs, desc="simulation", unit="layer", disable=not progress):
        ex = methods[name]
        with warnings.catch_warnings():
            # Both are reported by this table (the same-source check above, the missing_concepts column).
            warnings.filterwarnings("ignore", message=re.escape(SAME_SOURCE_WARNING))
            warnings.filterwarnings("ignore", message=_MISSING_WARNING)
            corr = correlation_score(ex, store, sim, split, layer=layer, missing="nan")
            abl = None
            if ablation:
                abl = ablation_score(ex, store, sim, val=split.val, test=split.test, model=model, probe=probe,
                                     transform=transform, labels=labels, layer=layer, scaling=scaling, missing="nan",
                                     batch_size=batch_size, progress=False)
        status = corr.status
        row = {
            "method": name,
            "layer": layer,
            "simulator": sim.source,
            "explainer_source": explainer_source(ex) or "",
            "neurons": len(status),
            "scored": int(corr.scored.sum()),
            "no_concepts": status.count("empty"),
            "missing_concepts": status.count("missing_concepts"),
            "dead": status.count("dead"),
            "correlation": corr.mean,
            "correlation_sem": corr.sem,
            "test_images": int(split.test.numel()),
        }
        if abl is not None:
            row.update(ablation=abl.mean, ablation_sem=abl.sem, ablation_scored=int(abl.scored.sum()))
        rows.append(row)
    columns = list(TABLE_COLUMNS) + (list(ABLATION_COLUMNS) if ablation else [])
    table = pd.DataFrame(rows, columns=columns)
    table.attrs.update(split=split.to_dict(), simulator=sim.source, calibration=calib)
    if ablation:
        table.attrs["scaling"] = scaling
    return table


# ----------------------------------------------------------------------------------------------
# Inputs


def _check_explanations(explanations) -> dict[str, Explanations]:
    if isinstance(explanations, Explanations):
        raise NeurocoreError(
            "explanations must map method names to Explanations; got one Explanations: wrap it, "
            f"{{{explanations.method!r}: explanations}}"
        )
    if not isinstance(explanations, Mapping) or not explanations:
        raise NeurocoreError(
            "explanations must be a non-empty mapping of method name -> Explanations "
            f"(e.g. {{'clip_dissect': ex}}); got {type(explanations).__name__}"
            + (" (empty)" if isinstance(explanations, Mapping) else "")
        )
    out = {}
    for name, ex in explanations.items():
        if not isinstance(ex, Explanations):
            raise NeurocoreError(f"explanations[{name!r}] must be Explanations; got {type(ex).__name__}")
        if not ex.neurons:
            raise NeurocoreError(f"explanations[{name!r}] is empty: there is no neuron to score")
        out[str(name)] = ex
    return out


def _check_probe(name: str, ex: Explanations, store) -> None:
    """The explanations' recorded probe (``params["probe"]``) must be the store's images."""
    identity = ex.params.get("probe") if hasattr(ex.params, "get") else None
    if not isinstance(identity, Mapping) or identity.get("num_images") is None:
        return  # hand-made explanations carry no probe identity: nothing to compare
    recorded = SimpleNamespace(num_images=int(identity["num_images"]), image_ids=(),
                               image_ids_sha256=identity.get("image_ids_sha256"))
    check_same_images(
        recorded, store, f"the probe of explanations[{name!r}]", "the store",
        "pass the store the explanations were made from (or explain again from this store)",
    )


def _without_none_labels(ex: Explanations) -> Explanations:
    """WWW labels a neuron with no concept ``"none"``: a placeholder, not a concept to simulate."""
    if ex.method != "www":
        return ex
    neurons = tuple(
        replace(n, description="") if not n.is_linear and not n.concepts and n.description == _WWW_NONE else n
        for n in ex.neurons
    )
    return replace(ex, neurons=neurons)


def _resolve_split(split, store, seed) -> Split:
    if split is None:
        return split_indices(store, seed=seed)
    if not isinstance(split, Split):
        raise NeurocoreError(
            f"split must be a Split of the store's images (split_indices(store, seed), or Split.load(path)) or None; "
            f"got {type(split).__name__}"
        )
    split.check_images(store if store.image_ids else store.num_images, "the store")
    return split


def _first_image(probe):
    item = probe[0]
    return item[0] if isinstance(item, (tuple, list)) else item


def _resolve_simulator(simulator, methods, store, probe, template, calibration, batch_size, cache_dir, progress):
    """``(ConceptScores of probabilities aligned with the store, calibration dict or None)``."""
    if isinstance(simulator, ConceptScores):
        check_same_images(
            store, simulator, "the store", "the simulator's concept scores",
            "score the store's images, in its order, with the simulator model (or pass the model itself as simulator=)",
        )
        used = list(dict.fromkeys(c for ex in methods.values() for c in explanation_concepts(ex)))
        if used and not set(used) & set(simulator.concepts):
            # Every row would be NaN (no neuron's concepts are scored): say so instead of a table of NaN.
            raise NeurocoreError(
                f"the simulator's concept scores share no concept with the explanations (explanations: "
                f"{used[:4]}...; simulator: {list(simulator.concepts)[:4]}...): score the explanations' concepts with "
                "the simulator model (WordNet ids such as 'n01443537' and their names such as 'goldfish' differ; "
                "neurocore.concepts.display_class_names maps ids to names), or pass the model itself as simulator="
            )
        return simulator, (dict(simulator.key["calibration"]) if "calibration" in simulator.key else None)
    from neurocore.vlm._embed import ImageEmbeddings, check_vlm, embed_images

    if isinstance(simulator, str):
        from neurocore.vlm import load_vlm

        simulator = load_vlm(simulator)
    if not all(hasattr(simulator, m) for m in ("encode_images", "encode_texts", "identity", "preprocess")):
        raise NeurocoreError(
            "simulator must be ConceptScores (the simulator's probabilities over the store's images), a "
            "vision–language model (neurocore.vlm.VisionLanguageModel) or an 'open_clip:NAME:TAG' spec; "
            f"got {type(simulator).__name__}"
        )
    vlm = check_vlm(simulator)
    if probe is None:
        raise NeurocoreError(
            "simulator is a vision–language model, which must encode the probe images: pass probe= (the dataset "
            "the store was recorded from), or pass ConceptScores the simulator computed as simulator="
        )
    concepts = list(dict.fromkeys(c for ex in methods.values() for c in explanation_concepts(ex)))
    if not concepts:
        raise NeurocoreError("no explanation names a concept: there is nothing for the simulator to score")
    rows = store.dataset_indices if store.dataset_indices is not None else torch.arange(store.num_images)
    if isinstance(_first_image(probe), torch.Tensor):
        from neurocore.methods._www_what import embed_probe_images

        emb = embed_probe_images(vlm, probe, rows.tolist(), batch_size=batch_size)
        images = ImageEmbeddings(emb, rows.clone(), tuple(store.image_ids), {"vlm": vlm.identity, "rows": "store"})
    else:
        full = embed_images(vlm, probe, batch_size=batch_size, cache_dir=cache_dir, progress=progress)
        where = {int(i): r for r, i in enumerate(full.indices.tolist())}
        absent = [int(i) for i in rows.tolist() if int(i) not in where]
        if absent:
            raise NeurocoreError(
                f"{len(absent)} of the store's images (dataset indices {absent[:5]}) could not be encoded by the "
                "simulator; pass the probe the store was recorded from"
            )
        pick = torch.tensor([where[int(i)] for i in rows.tolist()], dtype=torch.int64)
        images = ImageEmbeddings(full.embeddings[pick], rows.clone(), tuple(full.image_ids[r] for r in pick.tolist()),
                                 full.key)
    # A concept that is a WordNet id (a class folder such as 'n01443537', the labels of --labels) is encoded by
    # its WordNet name: the text encoder knows 'goldfish', not the id. The columns keep the explanations' names.
    from dataclasses import replace

    from neurocore.concepts import display_class_names

    texts = list(display_class_names(concepts))
    cosines = ConceptScores.from_image_embeddings(vlm, images, texts, template=template, cache_dir=cache_dir,
                                                  progress=progress)
    cosines = replace(cosines, concepts=tuple(concepts))
    check_same_images(store, cosines, "the store", "the simulator's encoding of probe",
                      "pass the probe the store was recorded from")
    a_b = _calibration(calibration, vlm.identity)
    if a_b is None:
        return cosines, None
    return simulator_matrix(cosines, *a_b), {"a": a_b[0], "b": a_b[1]}


def _calibration(calibration, identity: str):
    if calibration is None:
        return None
    if isinstance(calibration, str):
        if calibration != "preset":
            raise NeurocoreError(f"calibration must be 'preset', (a, b) or None; got {calibration!r}")
        try:
            return tuple(calibration_preset(identity))
        except NeurocoreError:
            warnings.warn(
                f"no published calibration for the simulator {identity!r}: its cosines are used as they are. "
                "Pass calibration=(a, b) (fit them with neurocore.concepts.calibrate) for probabilities",
                stacklevel=4,
            )
            return None
    try:
        a, b = (float(v) for v in calibration)
    except (TypeError, ValueError):
        raise NeurocoreError(f"calibration must be 'preset', (a, b) or None; got {calibration!r}") from None
    if not (math.isfinite(a) and math.isfinite(b)):
        raise NeurocoreError(f"calibration (a, b) must be finite; got {calibration!r}")
    return a, b


def _check_distinct(name: str, ex: Explanations, simulator_source: str, strict: bool) -> None:
    source = explainer_source(ex)
    if source is None or source != simulator_source or simulator_source == "tensor":
        return
    message = (
        f"explanations[{name!r}] come from concept scores of {source!r}, the simulator's own source: an explainer "
        "simulated by its own model scores too high (the paper requires a different simulator). Pass simulator= "
        "another model (the paper's simulator: ViT-SO400M-14-SigLIP-384)"
    )
    if strict:
        raise NeurocoreError(message + ", or strict=False to only warn")
    warnings.warn(message, stacklevel=3)


def _check_fitting_split(name: str, ex: Explanations, split: Split, strict: bool) -> None:
    """An explanation fitted on rows (Linear Explanations' train/val) must not be scored on them."""
    fitted = ex.params.get("split") if hasattr(ex.params, "get") else None
    if not isinstance(fitted, Mapping):
        return
    try:
        fitted = Split.from_dict(dict(fitted))
    except NeurocoreError:
        return
    if fitted.num_images != split.num_images:
        return  # another probe: _check_probe has compared the explanations' images with the store's
    used = torch.cat([fitted.train, fitted.val])
    overlap = int(torch.isin(split.test, used).sum())
    if not overlap:
        return
    message = (
        f"{overlap} of the {split.test.numel()} test images were used to fit explanations[{name!r}] (its "
        "params['split']), so its scores are inflated: pass "
        f"split=Split.from_dict(explanations[{name!r}].params['split']), or seed= the seed it was fitted with"
    )
    if strict:
        raise NeurocoreError(message)
    warnings.warn(message, stacklevel=3)
