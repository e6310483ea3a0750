"""The one dissection pipeline: record -> concept scores -> explain -> save and report.

:func:`neurocore.dissect`, the ``neurocore dissect`` command and the demo all call
:func:`run_dissection` (and :meth:`DissectionRun.write` when they write files), so the order of the
stages, the checks between them and the progress bars exist once.
"""

from __future__ import annotations

import csv
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
        out = []
        image_id = getattr(self.probe, "image_id", None)
        for entry in getattr(self.store, "skipped", ()):
            index, reason = int(entry[0]), str(entry[-1])
            ident = str(entry[1]) if len(entry) > 2 else (image_id(index) if callable(image_id) else str(index))
            if reason.startswith(f"{ident}: "):  # readers' errors may start with the file: say it once
                reason = reason[len(ident) + 2:]
            out.append((index, ident, reason))
        return out

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
        with open(out / SKIPPED_FILE, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["dataset_index", "image_id", "reason"])
            writer.writerows(self.skipped)
        report = write_html_report(
            self.explanations, out, probe=self.probe, store=self.store, n_images=n_images,
            neurons_with_images=neurons_with_images, thumbnail_size=thumbnail_size, title=title,
            families=families, intro=intro,
        )
        self.seconds["report"] = time.perf_counter() - start
        return report


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
    neuron of ``layers`` with ``explainer``.

    The concept scores come from exactly one of:

    * ``scores``: a :class:`~neurocore.concepts.ConceptScores`, or a ``Tensor[N, M]`` whose columns
      are ``concepts``. N is the number of readable probe images (the recording's rows) or of all
      probe images (rows of unreadable images are then dropped with them);
    * ``vlm``: a vision–language model (or an ``"open_clip:..."`` spec) that encodes the probe and
      ``concepts`` (the probe images are encoded once, also for compositional explanations);
    * ``labels=True``: the probe's class labels, one 0/1 concept per class (``class_names``, default
      the probe's ``classes``).

    Args:
        model, layers, probe, summary, transform, batch_size, device, cache_dir, num_workers,
            progress: as :func:`neurocore.probe.record`.
        explainer: a method object with ``required_top_k(num_images)`` and ``explain(store,
            concept_scores, layers=..., progress=..., encode_composites=...)`` (e.g.
            :class:`~neurocore.methods.ClipDissect`); its settings are checked before recording.
        template: prompt template of the concepts for ``vlm``.

    Returns:
        :class:`DissectionRun`.

    Raises:
        NeurocoreError: no or several score sources; inputs of the wrong kind or shape (checked
            before recording where they can be); scores whose rows are not the recording's.
    """
    from neurocore.concepts import ConceptScores, load_concepts
    from neurocore.probe import record

    seconds: dict[str, float] = {}
    top_k = explainer.required_top_k(_probe_length(probe, scores))  # validates the settings
    compositional = bool(getattr(explainer, "compositional", False))
    given = sum(x for x in (scores is not None, vlm is not None, bool(labels)))
    if given != 1:
        raise NeurocoreError(
            "give exactly one of scores= (a ConceptScores or a Tensor[N, M] of image–concept scores) and "
            f"vlm= (a vision–language model or 'open_clip:NAME:TAG'); got {'neither' if given == 0 else 'both'}"
        )
    if compositional and vlm is None:
        raise NeurocoreError(
            "compositional=True needs vlm= to encode the composite texts 'c1 c2'; with a fixed score "
            "matrix use ClipDissect(compositional=True).explain(..., encode_composites=fn)"
        )
    if template is not None and vlm is None:
        raise NeurocoreError("template= applies to concepts encoded by vlm=; the given scores were computed already")
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
    else:
        class_names = _class_names(probe, class_names)

    def record_probe(images):
        return record(
            model, layers, images, summary=summary, layout=layout, top_k=max(1, top_k), batch_size=batch_size, transform=transform,
            device=device, cache_dir=cache_dir, num_workers=num_workers, progress=progress,
        )

    clock = time.perf_counter()
    encode = None
    if vlm is not None and given_scores is None:
        from neurocore.vlm._embed import check_vlm, record_and_embed

        vlm = check_vlm(vlm)
        # One decode of each image feeds both the model and the vision–language model.
        store, images = record_and_embed(record_probe, vlm, probe, batch_size=batch_size, num_workers=num_workers,
                                         cache_dir=cache_dir, progress=progress)
    else:
        store = record_probe(probe)
    seconds["recording"] = time.perf_counter() - clock
    clock = time.perf_counter()
    if given_scores is not None:
        concept_scores = _align_rows(given_scores, store, _probe_length(probe, given_scores))
    elif vlm is not None:
        # Encoded once: the concept scores and the composite texts' scores share the image embeddings.
        concept_scores = ConceptScores.from_image_embeddings(vlm, images, names, template=template,
                                                             cache_dir=cache_dir, progress=progress)
        if compositional:
            encode = _vlm_text_scores(vlm, images, template)
    else:
        if store.labels is None:
            raise NeurocoreError("labels=True needs a probe that yields (image, label) pairs")
        concept_scores = ConceptScores.from_labels(store.labels, class_names, image_ids=store.image_ids)
    seconds["scores"] = time.perf_counter() - clock
    clock = time.perf_counter()
    explanations = explainer.explain(store, concept_scores, layers=list(store.layers), progress=progress,
                                     encode_composites=encode)
    seconds["explanation"] = time.perf_counter() - clock
    return DissectionRun(explanations, store, concept_scores, probe, seconds)


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
