"""WWW's report page (ALGORITHMS.md §4): per neuron its major and minor concepts with example images and
crops, and per image its class and sample heatmaps side by side with their similarity."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from neurocore._errors import NeurocoreError
from neurocore.report._html import (
    _CSS,
    EXAMPLE_CSS,
    _e,
    _num,
    _to_pil,
    figure_strip,
    page_head,
    require_method,
    write_page,
)


@dataclass(frozen=True)
class NeuronExamples:
    """A neuron's example images (its top probe images) and the crops WWW's minor concepts come from.

    Attributes:
        images (Tensor[k, 3, H, W]): the images as the model saw them (normalised inputs are min-max
            scaled for display, as :func:`~neurocore.report.write_html_report` does).
        crops (Tensor[k, 3, H, W]) or None: the crop around the neuron's highest cell in each image
            (:func:`neurocore.probe.crops`).
        captions: one caption per image (image ids).

    Example:
        >>> len(NeuronExamples(torch.rand(2, 3, 8, 8), None, ("a.png", "b.png")).images)
        2
    """

    images: torch.Tensor
    crops: torch.Tensor | None = None
    captions: tuple[str, ...] = ()


@dataclass(frozen=True)
class HeatmapExample:
    """One image with WWW's class heatmap and sample heatmap (both at the image's size).

    Attributes:
        image (Tensor[3, H, W]): the model's input.
        class_heatmap, sample_heatmap (Tensor[H, W]): from :func:`neurocore.methods.www.class_heatmap`
            and :func:`~neurocore.methods.www.sample_heatmap`.
        similarity: their cosine (:func:`~neurocore.methods.www.heatmap_similarity`).
        caption: the image's id, prediction and label.

    Example:
        >>> HeatmapExample(torch.rand(3, 8, 8), torch.rand(8, 8), torch.rand(8, 8), 0.9, "a.png").similarity
        0.9
    """

    image: torch.Tensor
    class_heatmap: torch.Tensor
    sample_heatmap: torch.Tensor
    similarity: float
    caption: str = ""


def heatmap_overlay(image, heatmap: torch.Tensor, *, alpha: float = 0.5):
    """A PIL image: ``heatmap`` (min-max scaled, matplotlib's ``jet`` colour map, upsampled bilinearly to
    the image's size) blended over ``image``.

    Args:
        image: PIL image or Tensor[3, H, W] (scaled for display as the HTML report does).
        heatmap (Tensor[h, w]): any real values; a constant map shows as the map's lowest colour.
        alpha: weight of the heatmap's colour (0.5).

    Returns:
        ``PIL.Image.Image`` of the image's size.

    Example:
        >>> heatmap_overlay(torch.rand(3, 8, 8), torch.rand(4, 4)).size
        (8, 8)
    """
    import numpy as np
    import PIL.Image
    import torch.nn.functional as F
    from matplotlib import colormaps

    pil = _to_pil(image)
    w, h = pil.size
    m = torch.nan_to_num(torch.as_tensor(heatmap, dtype=torch.float32).detach().cpu())
    m = F.interpolate(m[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
    lo, hi = float(m.min()), float(m.max())
    m = (m - lo) / (hi - lo) if hi > lo else torch.zeros_like(m)
    colour = colormaps["jet"](m.numpy())[..., :3] * 255.0
    out = (1 - alpha) * np.asarray(pil).astype(np.float32) + alpha * colour
    return PIL.Image.fromarray(out.clip(0, 255).astype(np.uint8), "RGB")


def _concept_list(pairs) -> str:
    if pairs is None:
        return "<span class='meta'>not computed</span>"
    if not pairs:
        return "none"
    return ", ".join(f"<code>{_e(c)}</code> ({_num(s)})" for c, s in pairs)


def write_www_report(
    explanations,
    out_dir: str | os.PathLike,
    examples: Mapping[int, NeuronExamples] | None = None,
    heatmaps: Sequence[HeatmapExample] = (),
    *,
    layer: str | None = None,
    max_neurons: int = 64,
    thumbnail_size: int = 96,
    title: str = "neurocore: WWW",
    intro: str | None = None,
    links: Sequence[str] = (),
    filename: str = "index.html",
) -> Path:
    """Write WWW's self-contained HTML page (thumbnails are embedded PNGs/JPEGs).

    Per neuron (the first ``max_neurons`` of ``layer``): its major concepts (α_major) and minor concepts
    (α_minor, from crops) with their adaptive cosine similarities, ``none`` when no concept passes (``not
    computed`` when minor concepts were not computed), then its example images and their crops. Per
    heatmap example: the image, its class heatmap and its sample heatmap side by side, with their cosine
    similarity (WWW §3.3: a low similarity flags a likely misprediction).

    Args:
        explanations: WWW's :class:`~neurocore.methods.Explanations` (method ``"www"``).
        out_dir: folder to write into (created if needed).
        examples: unit -> :class:`NeuronExamples` (None: no images).
        heatmaps: :class:`HeatmapExample` per image shown.
        layer: the layer shown (default: the first).
        max_neurons: neurons listed.
        thumbnail_size: image edge in pixels.
        title, intro: the page's title and a paragraph under it.
        links: files in ``out_dir`` to link from the page (e.g. ``explanations.csv``).
        filename: the page's file name.

    Returns:
        The page's path.

    Raises:
        NeurocoreError: explanations that are not WWW's, an unknown layer, a bad ``max_neurons``.

    Example:
        >>> import tempfile
        >>> from neurocore.methods import Explanations, NeuronExplanation
        >>> ex = Explanations("www", (NeuronExplanation("l", 0, "red", 2.0, ("red",), (2.0,), label="red"),),
        ...                   {"minor": {"l": [[[], []]]}})
        >>> h = HeatmapExample(torch.rand(3, 8, 8), torch.rand(8, 8), torch.rand(8, 8), 0.25, "a.png")
        >>> text = write_www_report(ex, tempfile.mkdtemp(), {0: NeuronExamples(torch.rand(1, 3, 8, 8))}, [h]).read_text()
        >>> "<code>red</code>" in text, text.count("data:image/"), "0.2500" in text
        (True, 4, True)
    """
    from neurocore.methods.www import minor_concepts

    require_method(explanations, "www")
    if isinstance(max_neurons, bool) or not isinstance(max_neurons, int) or max_neurons < 0:
        raise NeurocoreError(f"max_neurons must be an integer >= 0; got {max_neurons!r}")
    layers = explanations.layers
    layer = layer or (layers[0] if layers else None)
    if layers and layer not in layers:
        raise NeurocoreError(f"layer {layer!r} is not among the explanations' layers {list(layers)}")
    neurons = [n for n in explanations if n.layer == layer]
    examples = dict(examples or {})
    params = explanations.params

    interpretable = sum(bool(n.concepts) for n in neurons)
    meta = [("layer", layer), ("neurons", len(neurons)), ("with a major concept", interpretable)]
    for key in ("concept_source", "template", "n_images", "alpha_major", "alpha_minor", "crop_fraction"):
        if key in params:
            meta.append((key, params[key]))
    parts = page_head(title, intro, meta, out_dir, links)
    parts.append(
        "<p class='meta'>Major concepts: concepts whose adaptive cosine similarity (ACS) over the neuron's top images "
        "exceeds α_major · max; minor concepts: the same over the crops around the neuron's highest cell, with α_minor "
        "(WWW, Ahn et al. 2024). ACS in brackets.</p>"
    )
    parts.append("<h2>Neurons</h2>")
    for n in neurons[:max_neurons]:
        major = tuple(zip(n.concepts, n.scores))
        minor = minor_concepts(explanations, layer, n.unit) if layer is not None else None
        parts.append(f"<div class='neuron'><h3>Neuron {int(n.unit)}</h3>"
                     f"<p>major: {_concept_list(major)}<br>minor: {_concept_list(minor)}</p>")
        ex = examples.get(int(n.unit))
        if ex is not None and len(ex.images):
            cells = []
            for i in range(len(ex.images)):
                cap = ex.captions[i] if i < len(ex.captions) else ""
                figs = [("image", ex.images[i])]
                if ex.crops is not None and i < len(ex.crops):
                    figs.append(("crop", ex.crops[i]))
                body = figure_strip(figs, thumbnail_size)
                cells.append(f"<div class='ex'>{body}<div class='meta'>{_e(cap)}</div></div>")
            parts.append("".join(cells))
        parts.append("</div>")
    if len(neurons) > max_neurons:
        parts.append(f"<p class='meta'>… and {len(neurons) - max_neurons} more neurons (all in the explanations files)</p>")
    if heatmaps:
        parts.append(
            "<h2>Heatmaps</h2><p class='meta'>Class heatmap: the image's neuron activation maps weighted by the "
            "class-wise importance of its predicted class (top 3 neurons); sample heatmap: weighted by the image's "
            "own importance. Similarity: their cosine; a low value flags a likely misprediction.</p>"
        )
        for h in heatmaps:
            figs = [("image", _to_pil(h.image)), ("class heatmap", heatmap_overlay(h.image, h.class_heatmap)),
                    ("sample heatmap", heatmap_overlay(h.image, h.sample_heatmap))]
            body = figure_strip(figs, thumbnail_size * 2)
            sim = float(h.similarity)
            parts.append(f"<div class='ex heat'>{body}<div class='meta'>{_e(h.caption)} · similarity "
                         f"<b class='sim'>{'nan' if math.isnan(sim) else f'{sim:.4f}'}</b></div></div>")
    return write_page(out_dir, filename, title, _CSS + EXAMPLE_CSS + ".neuron{margin-bottom:1em}", parts)


__all__ = ["NeuronExamples", "HeatmapExample", "heatmap_overlay", "write_www_report"]
