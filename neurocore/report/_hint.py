"""HINT's report page: per concept its responsible regions on example images, its collaborative
neurons and its classifier's F1, and the neuron–concept association figure (ALGORITHMS.md §3)."""

from __future__ import annotations

import base64
import io
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
class ConceptExamples:
    """Example images of one concept with HINT's masks over them.

    Attributes:
        images (Tensor[k, 3, H, W]): the images as the model saw them (normalised inputs are min-max
            scaled for display).
        regions (BoolTensor[k, h, w]): responsible regions (saliency of each image's class above t).
        cells (BoolTensor[k, h, w]): cells the concept's classifier marks positive (probability > 0.5).
        captions: one caption per image (ids, class names).

    Example:
        >>> m = torch.zeros(1, 2, 2, dtype=torch.bool)
        >>> len(ConceptExamples(torch.rand(1, 3, 8, 8), m, m, ("a.png",)).images)
        1
    """

    images: torch.Tensor
    regions: torch.Tensor
    cells: torch.Tensor
    captions: tuple[str, ...] = ()


def overlay(image, mask: torch.Tensor, colour=(230, 40, 40)):
    """A PIL image: ``image`` with ``mask`` (a cell grid, upsampled nearest) tinted in ``colour`` and
    the rest darkened.

    Args:
        image: PIL image or Tensor[3, H, W] (scaled as :func:`~neurocore.report.write_html_report` does).
        mask (BoolTensor[h, w]): cells to mark.
        colour: RGB tint.

    Returns:
        ``PIL.Image.Image`` of the image's size.

    Example:
        >>> m = torch.zeros(2, 2, dtype=torch.bool); m[0, 0] = True
        >>> overlay(torch.rand(3, 8, 8), m).size
        (8, 8)
    """
    import numpy as np
    import PIL.Image
    import torch.nn.functional as F

    pil = _to_pil(image)
    w, h = pil.size
    up = F.interpolate(mask[None, None].float(), size=(h, w), mode="nearest")[0, 0].numpy() > 0.5
    arr = np.asarray(pil).astype(np.float32)
    tint = np.asarray(colour, dtype=np.float32)
    out = np.where(up[..., None], 0.55 * arr + 0.45 * tint, 0.45 * arr)
    return PIL.Image.fromarray(out.clip(0, 255).astype(np.uint8), "RGB")


def _figure_png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return "image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def write_hint_report(
    explanations,
    out_dir: str | os.PathLike,
    examples: Mapping[str, ConceptExamples] | None = None,
    *,
    layer: str | None = None,
    top_n: int = 10,
    thumbnail_size: int = 128,
    title: str = "neurocore: HINT",
    intro: str | None = None,
    links: Sequence[str] = (),
    filename: str = "index.html",
) -> Path:
    """Write HINT's self-contained HTML page.

    Per concept: its classifier's held-out F1, its top-``top_n`` collaborative neurons with Φ, and
    its example images three times: as they are, with their responsible regions (the saliency's
    cells above t) and with the cells the concept's classifier marks (HINT's localisation). Then the
    multimodal neurons and the association figure (paper Fig. 3) as an embedded PNG.

    Args:
        explanations: HINT's :class:`~neurocore.methods.Explanations` (method ``"hint"``).
        out_dir: folder to write into (created if needed).
        examples: concept -> :class:`ConceptExamples` (None: no images).
        layer: the layer shown (default: the first).
        top_n: collaborative neurons per concept.
        thumbnail_size: image edge in pixels.
        title, intro: the page's title and a paragraph under it.
        links: files in ``out_dir`` to link from the page (e.g. ``explanations.csv``).
        filename: the page's file name.

    Returns:
        The page's path.

    Raises:
        NeurocoreError: explanations that are not HINT's, an unknown layer, a bad ``top_n``.

    Example:
        >>> import tempfile
        >>> from neurocore.methods import Explanations, NeuronExplanation
        >>> ex = Explanations("hint", tuple(NeuronExplanation("l", k, "a", 0.5, ("a", "b"), (0.5 - k / 10, 0.1))
        ...                                  for k in range(3)), {"concepts": ["a", "b"], "f1": {"l": {"a": 0.9, "b": 0.7}}})
        >>> m = torch.zeros(1, 2, 2, dtype=torch.bool)
        >>> page = write_hint_report(ex, tempfile.mkdtemp(), {"a": ConceptExamples(torch.rand(1, 3, 8, 8), m, m)})
        >>> text = page.read_text(); text.count("data:image/png") >= 1, "collaborative neurons" in text
        (True, True)
    """
    from neurocore.methods.hint import association_figure, collaborative_neurons, contribution_matrix, multimodal_neurons

    require_method(explanations, "hint")
    if isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1:
        raise NeurocoreError(f"top_n must be an integer >= 1; got {top_n!r}")
    layers = explanations.layers
    layer = layer or (layers[0] if layers else None)
    if layer not in layers:
        raise NeurocoreError(f"layer {layer!r} is not among the explanations' layers {list(layers)}")
    phi = contribution_matrix(explanations, layer)
    concepts = [str(c) for c in phi.columns]
    f1 = (explanations.params.get("f1") or {}).get(layer, {})
    collab = collaborative_neurons(phi, None, top_n)
    examples = dict(examples or {})

    meta = [("layer", layer), ("neurons", len(phi)), ("concepts", len(concepts))]
    for key in ("saliency", "aggregation", "threshold", "classifier", "contribution", "images"):
        if key in explanations.params:
            meta.append((key, explanations.params[key]))
    parts = page_head(title, intro, meta, out_dir, links)
    parts.append(
        "<p class='meta'>Responsible regions: cells whose aggregated layer saliency of the image's class exceeds "
        "the threshold (red). Concept cells: cells the concept's linear classifier marks positive (probability "
        "&gt; 0.5), HINT's localisation. Φ: Shapley contribution of a neuron to the concept's classifier.</p>"
    )
    for concept in concepts:
        parts.append(f"<h2>Concept <code>{_e(concept)}</code></h2>")
        parts.append(f"<p class='meta'>classifier F1 (held out): {_num(f1.get(concept))}</p>")
        rows = collab[collab.concept == concept]
        body = "".join(f"<tr><td class='num'>{int(r.rank)}</td><td class='num'>{int(r.unit)}</td>"
                       f"<td class='num'>{_num(float(r.phi))}</td></tr>" for r in rows.itertuples())
        parts.append(f"<h3>Top {top_n} collaborative neurons</h3><table><tr><th>rank</th><th>unit</th><th>Φ</th></tr>"
                     f"{body}</table>")
        ex = examples.get(concept)
        if ex is not None and len(ex.images):
            cells = []
            for i in range(len(ex.images)):
                cap = ex.captions[i] if i < len(ex.captions) else ""
                imgs = [
                    ("image", _to_pil(ex.images[i])),
                    ("responsible regions", overlay(ex.images[i], ex.regions[i])),
                    (f"{concept} cells", overlay(ex.images[i], ex.cells[i], (40, 160, 230))),
                ]
                figs = figure_strip(imgs, thumbnail_size)
                cells.append(f"<div class='ex'>{figs}<div class='meta'>{_e(cap)}</div></div>")
            parts.append("<h3>Example images</h3>" + "".join(cells))
    multi = multimodal_neurons(phi, None, top_n)
    if len(multi):
        body = "".join(f"<tr><td class='num'>{int(r.unit)}</td><td class='num'>{int(r.num_concepts)}</td>"
                       f"<td>{_e(r.concepts)}</td></tr>" for r in multi.itertuples())
        parts.append(f"<h2>Multimodal neurons</h2><p class='meta'>neurons among the top {top_n} of several concepts</p>"
                     f"<table><tr><th>unit</th><th>concepts</th><th>which</th></tr>{body}</table>")
    fig = association_figure(phi, None, top_n)
    parts.append(f"<h2>Neuron–concept associations</h2><img src='data:{_figure_png(fig)}' alt='association figure'>")
    return write_page(out_dir, filename, title, _CSS + EXAMPLE_CSS, parts)
