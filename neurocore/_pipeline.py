"""The one explanation pipeline: record -> concept scores -> explain (one or several methods) -> save and report.

:func:`run_methods` records a model once, builds the image–concept scores once and calls every method
of the registry through the method contract; :func:`run_dissection` (used by :func:`neurocore.dissect`
and the demo) is its one-method case, and the ``neurocore explain`` command (with its aliases
``dissect``, ``hint`` and ``www``) calls :func:`run_methods`, so the order of the stages, the checks
between them and the progress bars exist once.
"""

from __future__ import annotations

import csv
import inspect
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from neurocore._errors import NeurocoreError

SKIPPED_FILE = "skipped.csv"


@dataclass(frozen=True)
class DissectionRun:
    """What :func:`run_dissection` computed.

    Attributes:
        explanations: one :class:`~neurocore.methods.NeuronExplanation` per neuron.
        store: the :class:`~neurocore.probe.ActivationStore` of the recorded layers.
        concept_scores: the :class:`~neurocore.concepts.ConceptScores` of the store's rows.
        probe: the probe dataset.
        seconds: wall-clock seconds of each stage (``recording``, which includes encoding the images
            with a vision–language model since one decode of each image feeds both; ``scores``,
            ``explanation``, and ``report`` once written).
    """

    explanations: Any
    store: Any
    concept_scores: Any
    probe: Any
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def skipped(self) -> list[tuple[int, str, str]]:
        """``(dataset index, image id, reason)`` of every probe image the recording could not read."""
        return _skipped_images(self.store, self.probe)

    def write(
        self,
        out_dir: str | os.PathLike,
        *,
        title: str = "neurocore report",
        intro: str | None = None,
        families: Mapping[str, str] | None = None,
        n_images: int = 5,
        neurons_with_images: int | None = 64,
        thumbnail_size: int = 96,
    ) -> Path:
        """Write ``explanations.csv``/``.json``, ``skipped.csv`` (the unreadable probe images: index,
        image id, reason; only the header when none) and the HTML report ``index.html`` into
        ``out_dir``; returns the report's path. Report options as
        :func:`neurocore.report.write_html_report`."""
        from neurocore.report import write_html_report

        start = time.perf_counter()
        out = Path(out_dir)
        self.explanations.save(out)
        _write_skipped(out / SKIPPED_FILE, self.skipped)
        report = write_html_report(
            self.explanations, out, probe=self.probe, store=self.store, n_images=n_images,
            neurons_with_images=neurons_with_images, thumbnail_size=thumbnail_size, title=title,
            families=families, intro=intro,
        )
        self.seconds["report"] = time.perf_counter() - start
        return report


def _skipped_images(store, probe) -> list[tuple[int, str, str]]:
    """``(dataset index, image id, reason)`` of every probe image the recording of ``store`` could not read."""
    out = []
    image_id = getattr(probe, "image_id", None)
    for entry in getattr(store, "skipped", ()):
        index, reason = int(entry[0]), str(entry[-1])
        ident = str(entry[1]) if len(entry) > 2 else (image_id(index) if callable(image_id) else str(index))
        if reason.startswith(f"{ident}: "):  # readers' errors may start with the file: say it once
            reason = reason[len(ident) + 2:]
        out.append((index, ident, reason))
    return out


def _write_skipped(path: Path, skipped) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["dataset_index", "image_id", "reason"])
        writer.writerows(skipped)


def method_settings(method) -> dict[str, Any]:
    """A method object's settings (the keywords of its ``__init__``) as JSON-ready values, for ``run.json``.

    A vision–language model object is written as its ``identity``; other objects as their ``repr``.

    Example:
        >>> from neurocore.methods import LinearExplanations
        >>> method_settings(LinearExplanations(max_length=3))["max_length"]
        3
    """
    from neurocore._io import jsonable

    out = {}
    for name in inspect.signature(type(method).__init__).parameters:
        if name == "self" or not hasattr(method, name):
            continue
        value = getattr(method, name)
        if value is not None and not isinstance(value, (str, int, float, bool, list, tuple, dict)):
            value = getattr(value, "identity", None) or (str(value) if isinstance(value, os.PathLike) else repr(value))
        out[name] = jsonable(value)
    return out


@dataclass(frozen=True)
class MethodsRun:
    """What :func:`run_methods` computed: one recording and one set of concept scores, explained by
    several methods.

    Attributes:
        explanations: method name -> its :class:`~neurocore.methods.Explanations`, in the order given.
        store: the :class:`~neurocore.probe.ActivationStore` of the recorded layers (recorded once).
        concept_scores: the image–concept :class:`~neurocore.concepts.ConceptScores` of the store's rows
            that every method other than HINT was given (None when no method needed them).
        probe: the probe dataset.
        model: the recorded model. transform: its preprocessing (None: the probe yields model inputs).
        seconds: wall-clock seconds per stage: ``recording`` (with the vision–language encoding of the
            images, one decode of each image feeding both), ``scores``, ``explain:<method>`` per method,
            ``explanation`` (all methods), and ``report`` once :meth:`write` ran.
        methods: method name -> the method object that ran (its settings; fitted state such as HINT's
            ``phi_``).
        hierarchy: HINT's :class:`~neurocore.methods.ConceptHierarchy` (None without HINT).
        hierarchy_scores: HINT's 0/1 image–concept memberships of the store's rows (None without HINT).
    """

    explanations: dict[str, Any]
    store: Any
    concept_scores: Any
    probe: Any
    model: Any = None
    transform: Any = None
    seconds: dict[str, float] = field(default_factory=dict)
    methods: dict[str, Any] = field(default_factory=dict)
    hierarchy: Any = None
    hierarchy_scores: Any = None

    @property
    def skipped(self) -> list[tuple[int, str, str]]:
        """``(dataset index, image id, reason)`` of every probe image the recording could not read."""
        return _skipped_images(self.store, self.probe)

    def manifest(self, *, model_name: str | None = None, probe_name: str | None = None) -> dict[str, Any]:
        """What ran, as written to ``run.json``: neurocore's version, the model, layers, probe (folder,
        images, skipped), the concept source, every method with its settings, and the seconds per stage.

        Args:
            model_name: how the model was named (e.g. the CLI's ``--model``); default its class name.
            probe_name: the probe folder; default the probe's ``root`` when it has one.
        """
        import neurocore
        from neurocore._io import jsonable

        root = getattr(self.probe, "root", None)
        scores = self.concept_scores
        return {
            "neurocore": neurocore.__version__,
            "model": model_name or type(self.model).__name__,
            "layers": list(self.store.layers),
            "probe": {
                "folder": probe_name if probe_name is not None else (str(root) if root is not None else None),
                "num_images": int(self.store.num_images),
                "skipped": len(self.skipped),
                "fingerprint": (getattr(self.store, "key", {}) or {}).get("probe_fingerprint"),
            },
            "concept_source": None if scores is None else {
                "source": scores.source, "num_concepts": scores.num_concepts,
            },
            "hierarchy": None if self.hierarchy is None else list(self.hierarchy.names),
            "methods": {name: {"class": type(m).__name__, "settings": method_settings(m)}
                        for name, m in self.methods.items()},
            "seconds": jsonable(dict(self.seconds)),
        }

    def write(
        self,
        out_dir: str | os.PathLike,
        *,
        model_name: str | None = None,
        probe_name: str | None = None,
        title: str = "neurocore report",
        intro: str | None = None,
        image_maps=None,
        simulation=None,
        summaries: Mapping[str, Any] | None = None,
        neurons_with_images: int = 64,
        n_images: int = 5,
        thumbnail_size: int = 96,
        links: Sequence[str] = (),
    ) -> Path:
        """Write every method's ``<method>/explanations.csv|json``, ``skipped.csv`` (index, image id,
        reason of each unreadable probe image; only the header when none), ``run.json``
        (:meth:`manifest`) and the one HTML report ``index.html`` of all methods
        (:func:`neurocore.report.write_run_report`) into ``out_dir``; returns the report's path.

        Args:
            out_dir: the output folder (created if needed).
            model_name, probe_name: as :meth:`manifest`.
            title, intro, image_maps, simulation, summaries, neurons_with_images, n_images,
                thumbnail_size: as :func:`neurocore.report.write_run_report` (``simulation``: e.g.
                :func:`neurocore.evaluate.simulation_table`'s table; also saved as ``simulation.csv``).
            links: further files of ``out_dir`` the report links to.
        """
        from neurocore._io import atomic_write
        from neurocore.report import write_run_report

        start = time.perf_counter()
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for name, ex in self.explanations.items():
            ex.save(out / name)
        _write_skipped(out / SKIPPED_FILE, self.skipped)
        files = ["run.json", SKIPPED_FILE]
        if simulation is not None:
            atomic_write(out / "simulation.csv", lambda p: simulation.to_csv(p, index=False))
            files.append("simulation.csv")
        files += [f"{name}/explanations.csv" for name in self.explanations]
        report = write_run_report(
            self.explanations, out, probe=self.probe, store=self.store, model=self.model, transform=self.transform,
            image_maps=image_maps, simulation=simulation, summaries=summaries, title=title, intro=intro,
            neurons_with_images=neurons_with_images, n_images=n_images, thumbnail_size=thumbnail_size,
            links=tuple(files) + tuple(links),
        )
        self.seconds["report"] = time.perf_counter() - start
        self.write_manifest(out, model_name=model_name, probe_name=probe_name)
        return report

    def write_manifest(self, out_dir: str | os.PathLike, **kwargs) -> Path:
        """Write :meth:`manifest` (keywords as there) to ``out_dir/run.json``; returns its path."""
        from neurocore._io import atomic_write

        path = Path(out_dir) / "run.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.manifest(**kwargs), indent=2, ensure_ascii=False)
        atomic_write(path, lambda p: p.write_text(text + "\n", encoding="utf-8"))
        return path


def _method_objects(methods) -> dict[str, Any]:
    """``methods=`` as ``{name: method object}``: a mapping is kept, names are built with default settings."""
    from neurocore.methods import get_method

    if isinstance(methods, Mapping):
        out = dict(methods)
    elif isinstance(methods, str):
        out = {methods: get_method(methods)()}
    else:
        try:
            names = list(methods)
        except TypeError:
            raise NeurocoreError(
                "methods must map names to method objects ({'clip_dissect': ClipDissect(similarity='wpmi')}) or "
                f"list registered names (['clip_dissect', 'linear']); got {type(methods).__name__}"
            ) from None
        out = {}
        for item in names:
            if isinstance(item, str):
                out[item] = get_method(item)()
            else:
                out[getattr(item, "name", type(item).__name__)] = item
    if not out:
        raise NeurocoreError("methods is empty: name at least one method, e.g. ['clip_dissect']")
    for name, m in out.items():
        if not callable(getattr(m, "explain", None)):
            raise NeurocoreError(
                f"methods[{name!r}] is a {type(m).__name__}, not a method object with explain(); build one with "
                f"neurocore.methods.get_method({name!r})(...)"
            )
    return out


def check_settings(methods: Mapping[str, Any], num_images: int) -> int:
    """Validate every method's settings (each method's own checks, which ``explain`` runs too) and return
    the top images per neuron the recording must keep for all of them.

    Args:
        methods: name -> method object.
        num_images: probe images (CLIP-Dissect's rank-reorder needs a share of them).

    Returns:
        int >= 1: the largest of what each method reads: ``required_top_k(num_images)`` where a method
        has it, else its ``n_images`` (WWW), ``top_images`` (Linear Explanations) or ``top_k`` (HINT).

    Raises:
        NeurocoreError: a method's invalid setting (the method's own message).

    Example:
        >>> from neurocore.methods import ClipDissect, LinearExplanations
        >>> check_settings({"clip_dissect": ClipDissect(similarity="wpmi"), "linear": LinearExplanations()}, 500)
        28
    """
    need = 1
    for m in methods.values():
        if callable(getattr(m, "check_settings", None)):  # the method contract's validation, before recording
            m.check_settings()
        if callable(getattr(m, "required_top_k", None)):
            need = max(need, int(m.required_top_k(num_images)))
            continue
        for attr in ("n_images", "top_images", "top_k"):
            value = getattr(m, attr, None)
            if isinstance(value, int) and not isinstance(value, bool):
                need = max(need, value)
    return need


def _is_hint(method) -> bool:
    from neurocore.methods.hint import Hint

    return isinstance(method, Hint)


def _needs_image_scores(method) -> bool:
    """Whether a method reads the image–concept scores: all but HINT (its hierarchy's memberships) and
    a method that encodes concepts with its own vision–language model (WWW with ``vlm=``)."""
    return not _is_hint(method) and getattr(method, "vlm", None) is None


def _hierarchy(hierarchy, probe, names: list[str]):
    from neurocore.methods.hint import ConceptHierarchy

    if hierarchy is None:
        raise NeurocoreError(
            f"method(s) {', '.join(names)} (HINT) need hierarchy=: a ConceptHierarchy, or the names of WordNet nodes "
            "above the probe's classes (e.g. ['animal', 'whole']); the CLI's --hint-concepts (or --groups)"
        )
    if isinstance(hierarchy, ConceptHierarchy):
        return hierarchy
    if isinstance(hierarchy, str):
        hierarchy = [hierarchy]
    classes = getattr(probe, "classes", None)
    if classes is None:
        raise NeurocoreError(
            "hierarchy= as node names needs a labelled probe with `classes` (WordNet ids: an ImageFolder with class "
            "sub-folders, or annotations=); or pass a ConceptHierarchy built with ConceptHierarchy.from_groups"
        )
    return ConceptHierarchy.from_wordnet(list(classes), [str(n) for n in hierarchy])


def run_methods(
    model,
    layers: str | Sequence[str],
    probe,
    methods,
    *,
    scores=None,
    concepts=None,
    vlm=None,
    labels: bool = False,
    class_names: Sequence[str] | None = None,
    template: str | None = None,
    hierarchy=None,
    summary: str = "mean",
    layout="auto",
    transform=None,
    batch_size: int = 64,
    device=None,
    cache_dir=None,
    num_workers: int = 0,
    engine: str = "local",
    address: str | None = None,
    progress: bool = True,
) -> MethodsRun:
    """Record ``model`` over ``probe`` once, score the probe's images against concepts once, and explain
    every neuron of ``layers`` with each of several methods.

    The recording keeps as many top images per neuron as the most demanding method reads
    (:func:`check_settings`). Every method is called through the method contract
    (``explain(store, scores, layers=..., model=..., probe=..., transform=..., progress=...)``; model,
    probe and transform as its ``needs`` names them). HINT gets the 0/1 memberships of the probe's
    labels in ``hierarchy``'s concepts (:meth:`~neurocore.methods.ConceptHierarchy.concept_scores`);
    every other method gets the image–concept scores, which come from exactly one of:

    * ``scores``: a :class:`~neurocore.concepts.ConceptScores`, or a ``Tensor[N, M]`` whose columns
      are ``concepts``. N is the number of readable probe images (the recording's rows) or of all
      probe images (rows of unreadable images are then dropped with them);
    * ``vlm``: a vision–language model (or an ``"open_clip:..."`` spec) that encodes the probe and
      ``concepts``; each probe image is decoded once for both the model and the vision–language model
      (also for CLIP-Dissect's compositional explanations);
    * ``labels=True``: the probe's class labels, one 0/1 concept per class (``class_names``, default
      the probe's ``classes``).

    None of them is needed when no method reads image–concept scores (HINT alone; WWW with its own
    ``vlm`` setting).

    Args:
        model, layers, probe, summary, layout, transform, batch_size, device, cache_dir, num_workers,
            engine, address, progress: as :func:`neurocore.probe.record` (``engine="ray"``: Ray
            workers record the shards, which meet in ``cache_dir``).
        methods: name -> method object (e.g. ``{"clip_dissect": ClipDissect(similarity="wpmi"),
            "linear": LinearExplanations()}``), or registered names (built with default settings by
            :func:`~neurocore.methods.get_method`). Their settings are checked before recording.
        template: prompt template of the concepts for ``vlm``.
        hierarchy: HINT's concepts: a :class:`~neurocore.methods.ConceptHierarchy` over the probe's
            classes, or node names (``["animal", "whole"]``) for
            :meth:`~neurocore.methods.ConceptHierarchy.from_wordnet` over ``probe.classes``. Required
            with HINT, refused without it.

    Returns:
        :class:`MethodsRun`.

    Raises:
        NeurocoreError: no or several score sources where a method needs them; a method's invalid
            setting; HINT without ``hierarchy`` or without a labelled probe; inputs of the wrong kind
            or shape (checked before recording where they can be); scores whose rows are not the
            recording's.

    Example:
        >>> from neurocore.demo import ConceptWorld, PlantedConceptNet
        >>> from neurocore.methods import WWW, ClipDissect
        >>> world = ConceptWorld(); probe = world.sample(4, seed=0)
        >>> run = run_methods(PlantedConceptNet(world), "colours", probe, {"clip_dissect": ClipDissect(similarity="wpmi"),
        ...                   "www": WWW(n_images=10)}, scores=probe.concept_scores(), progress=False)
        >>> [n.label for n in run.explanations["clip_dissect"]] == [n.label for n in run.explanations["www"]]
        True
    """
    from neurocore.concepts import ConceptScores, load_concepts
    from neurocore.probe import record

    seconds: dict[str, float] = {}
    methods = _method_objects(methods)
    top_k = check_settings(methods, _probe_length(probe, scores))
    need_scores = [name for name, m in methods.items() if _needs_image_scores(m)]
    hint_names = [name for name, m in methods.items() if _is_hint(m)]
    compositional = [name for name, m in methods.items() if getattr(m, "compositional", False) is True]
    given = sum(x for x in (scores is not None, vlm is not None, bool(labels)))
    if given > 1 or (given == 0 and need_scores):
        raise NeurocoreError(
            "give exactly one of scores= (a ConceptScores or a Tensor[N, M] of image–concept scores) and "
            "vlm= (a vision–language model or 'open_clip:NAME:TAG'), or labels=True; got "
            + {0: "neither", 2: "both"}.get(given, "all three")
            + (f" (method(s) {', '.join(need_scores)} read image–concept scores)" if given == 0 else "")
        )
    if compositional and vlm is None:
        raise NeurocoreError(
            "compositional=True needs vlm= to encode the composite texts 'c1 c2'; with a fixed score "
            "matrix use ClipDissect(compositional=True).explain(..., encode_composites=fn)"
        )
    if template is not None and vlm is None:
        raise NeurocoreError("template= applies to concepts encoded by vlm=; the given scores were computed already")
    if hierarchy is not None and not hint_names:
        raise NeurocoreError("hierarchy= holds HINT's concepts, but no HINT method is among methods: add 'hint' or drop it")
    tree = _hierarchy(hierarchy, probe, hint_names) if hint_names else None
    names = None
    given_scores = None
    if scores is not None:
        given_scores = _given_scores(scores, concepts)
        n_probe = _probe_length(probe, given_scores)
        if given_scores.num_images > n_probe:
            # fewer rows can be right (unreadable images are skipped); more never are
            raise NeurocoreError(
                f"the scores have {given_scores.num_images} rows but the probe has {n_probe} images: give one row "
                "per readable probe image, in the probe's order"
            )
    elif vlm is not None:
        if concepts is None:
            raise NeurocoreError("pass concepts= (e.g. '20k', a file path or a list of strings) for the vlm to encode")
        names = load_concepts(concepts)
        if isinstance(vlm, str):
            from neurocore.vlm import load_vlm

            vlm = load_vlm(vlm, device=device)
    elif labels:
        class_names = _class_names(probe, class_names)

    def record_probe(images):
        return record(
            model, layers, images, summary=summary, layout=layout, top_k=top_k, batch_size=batch_size,
            transform=transform, device=device, cache_dir=cache_dir, num_workers=num_workers, progress=progress,
            engine=engine, address=address,
        )

    clock = time.perf_counter()
    encode = None
    if vlm is not None and given_scores is None:
        from neurocore.vlm._embed import check_vlm, embed_images, record_and_embed

        vlm = check_vlm(vlm)
        if engine == "ray":  # Ray workers read the images themselves: the embeddings take a second pass
            store = record_probe(probe)
            images = embed_images(vlm, probe, batch_size=batch_size, num_workers=num_workers, cache_dir=cache_dir,
                                  progress=progress, engine=engine, address=address)
        else:
            # One decode of each image feeds both the model and the vision–language model.
            store, images = record_and_embed(record_probe, vlm, probe, batch_size=batch_size, num_workers=num_workers,
                                             cache_dir=cache_dir, progress=progress)
    else:
        store = record_probe(probe)
    seconds["recording"] = time.perf_counter() - clock
    clock = time.perf_counter()
    concept_scores = None
    if given_scores is not None:
        concept_scores = _align_rows(given_scores, store, _probe_length(probe, given_scores))
        if not concept_scores.image_ids and store.image_ids:
            concept_scores = replace(concept_scores, image_ids=tuple(store.image_ids))
    elif vlm is not None:
        # Encoded once: the concept scores and the composite texts' scores share the image embeddings.
        concept_scores = ConceptScores.from_image_embeddings(vlm, images, names, template=template,
                                                             cache_dir=cache_dir, progress=progress, engine=engine,
                                                             address=address)
        if compositional:
            encode = _vlm_text_scores(vlm, images, template)
    elif labels:
        if store.labels is None:
            raise NeurocoreError("labels=True needs a probe that yields (image, label) pairs")
        concept_scores = ConceptScores.from_labels(store.labels, class_names, image_ids=store.image_ids)
    hierarchy_scores = None
    if tree is not None:
        if store.labels is None:
            raise NeurocoreError(
                f"HINT ({', '.join(hint_names)}) needs each image's class: a probe that yields (image, label) pairs "
                "(an ImageFolder with class sub-folders, or annotations=)"
            )
        hierarchy_scores = tree.concept_scores(store.labels, image_ids=store.image_ids or None)
    seconds["scores"] = time.perf_counter() - clock
    inputs = {"model": model, "probe": probe, "transform": transform}
    explanations = {}
    total = time.perf_counter()
    for name, m in methods.items():
        clock = time.perf_counter()
        kwargs = {k: v for k, v in inputs.items() if k in getattr(m, "needs", ())}
        if name in compositional:
            kwargs["encode_composites"] = encode
        explanations[name] = m.explain(store, hierarchy_scores if _is_hint(m) else concept_scores,
                                       layers=list(store.layers), progress=progress, **kwargs)
        seconds[f"explain:{name}"] = time.perf_counter() - clock
    seconds["explanation"] = time.perf_counter() - total
    return MethodsRun(explanations, store, concept_scores, probe, model, transform, seconds, methods, tree,
                      hierarchy_scores)


def run_dissection(
    model,
    layers: str | Sequence[str],
    probe,
    explainer,
    *,
    scores=None,
    concepts=None,
    vlm=None,
    labels: bool = False,
    class_names: Sequence[str] | None = None,
    template: str | None = None,
    summary: str = "mean",
    layout="auto",
    transform=None,
    batch_size: int = 64,
    device=None,
    cache_dir=None,
    num_workers: int = 0,
    progress: bool = True,
) -> DissectionRun:
    """Record ``model`` over ``probe``, score the probe's images against concepts, explain every
    neuron of ``layers`` with ``explainer``: :func:`run_methods` with one method.

    The concept scores come from exactly one of ``scores``, ``vlm`` and ``labels=True`` (as
    :func:`run_methods`).

    Args:
        model, layers, probe, summary, transform, batch_size, device, cache_dir, num_workers,
            progress: as :func:`neurocore.probe.record`.
        explainer: a method object (e.g. :class:`~neurocore.methods.ClipDissect`); its settings are
            checked before recording.
        scores, concepts, vlm, labels, class_names, template: as :func:`run_methods`.

    Returns:
        :class:`DissectionRun`.

    Raises:
        NeurocoreError: as :func:`run_methods`.

    Example:
        >>> from neurocore.demo import ConceptWorld, PlantedConceptNet
        >>> from neurocore.methods import ClipDissect
        >>> world = ConceptWorld(); probe = world.sample(4, seed=0)
        >>> run = run_dissection(PlantedConceptNet(world), "colours", probe, ClipDissect(similarity="wpmi"),
        ...                      scores=probe.concept_scores(), progress=False)
        >>> run.explanations.labels
        ['red', 'green', 'blue', 'yellow']
    """
    name = getattr(explainer, "name", None) or type(explainer).__name__
    run = run_methods(
        model, layers, probe, {name: explainer}, scores=scores, concepts=concepts, vlm=vlm, labels=labels,
        class_names=class_names, template=template, summary=summary, layout=layout, transform=transform,
        batch_size=batch_size, device=device, cache_dir=cache_dir, num_workers=num_workers, progress=progress,
    )
    seconds = {k: v for k, v in run.seconds.items() if not k.startswith("explain:")}
    return DissectionRun(run.explanations[name], run.store, run.concept_scores, probe, seconds)


def _probe_length(probe, scores) -> int:
    try:
        return len(probe)
    except TypeError:
        rows = getattr(scores, "num_images", None)
        return int(rows) if rows is not None else 0


def _given_scores(scores, concepts):
    """A ConceptScores from ``scores=`` (and ``concepts=`` naming a tensor's columns)."""
    from neurocore.concepts import ConceptScores, load_concepts

    if isinstance(scores, ConceptScores):
        if concepts is not None and list(load_concepts(concepts)) != list(scores.concepts):
            raise NeurocoreError(
                "concepts differ from the given ConceptScores' concepts; pass concepts=None to use those of the scores"
            )
        return scores
    if concepts is None:
        raise NeurocoreError("scores is a tensor: pass concepts= naming its columns")
    names = load_concepts(concepts)
    if not isinstance(scores, torch.Tensor) or scores.dim() != 2 or scores.shape[1] != len(names):
        shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise NeurocoreError(f"scores must be a Tensor[N, M={len(names)}] (one column per concept); got {shape}")
    return ConceptScores.from_tensor(scores, names)


def _class_names(probe, class_names) -> tuple[str, ...]:
    """The concepts of ``labels=True``: the given names, else the probe's ``classes``; one class is
    refused (every neuron would get it)."""
    names = class_names if class_names is not None else getattr(probe, "classes", None)
    if names is None:
        raise NeurocoreError(
            "labels=True needs class names: a probe with a `classes` attribute (an ImageFolder with class "
            "sub-folders) or class_names="
        )
    names = tuple(str(n) for n in names)
    if len(names) < 2:
        raise NeurocoreError(
            f"labels=True found a single class {names[0] if names else ''!r}: every neuron would get that label. "
            "Give a probe with images of several classes (class sub-folders, or an annotations file that maps "
            "each file to its class)"
        )
    return names


def _align_rows(scores, store, num_probe: int):
    """Given scores with one row per readable probe image (the store's rows) or per probe image ->
    the store's rows."""
    n = scores.num_images
    if n == store.num_images:
        return scores
    if n == num_probe:
        keep = store.dataset_indices
        ids = tuple(scores.image_ids[i] for i in keep.tolist()) if scores.image_ids else ()
        return replace(scores, scores=scores.scores[keep].contiguous(), image_ids=ids)
    raise NeurocoreError(
        f"the recording kept {store.num_images} probe images but the scores have {n} rows (the probe has "
        f"{num_probe} images): given scores must have one row per readable probe image, or per probe image, "
        "in the probe's order"
    )


def _vlm_text_scores(vlm, images, template):
    """``texts -> Tensor[N, len(texts)]``: cosines of the probe's image embeddings ``images`` and new
    texts under ``vlm``, as :meth:`ConceptScores.from_vlm` computes them."""
    from neurocore.vlm import embed_texts

    def encode(texts):
        return images.embeddings @ embed_texts(vlm, texts, template=template, progress=False).T

    return encode
