"""One self-contained HTML page per run: per layer, a table of neurons with their labels, scores and
most activating images (embedded as base64 thumbnails)."""

from __future__ import annotations

import base64
import html
import io
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from neurocore._errors import NeurocoreError
from neurocore._io import atomic_write

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:1.5em;color:#1d1d1f;background:#fff}
h1{font-size:1.5em;margin-bottom:.2em}h2{margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;font-size:.9em}th,td{border-bottom:1px solid #eee;padding:.3em .6em;vertical-align:top;text-align:left}
th{background:#f5f5f7;position:sticky;top:0}td.num{text-align:right;font-variant-numeric:tabular-nums}
.meta{color:#555;font-size:.9em}.meta code{background:#f5f5f7;padding:0 .2em}
.label{font-weight:600}.concepts{color:#444;max-width:28em}.flag{font-size:.8em;padding:0 .3em;border-radius:3px}
.dead{background:#fde2e1;color:#8a1c12}.uninterp{background:#eee;color:#555}.ok{background:#e2f4e4;color:#1d6b2a}
.thumbs{display:flex;gap:4px;flex-wrap:wrap}figure{margin:0;text-align:center}
figcaption{font-size:.7em;color:#555;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.img{display:block;background-size:contain;background-repeat:no-repeat;background-position:center;image-rendering:pixelated;border:1px solid #ddd}
.missing{display:flex;align-items:center;justify-content:center;font-size:.7em;color:#a00;border:1px dashed #caa}
input.filter{margin:.5em 0;padding:.3em;width:20em}
"""

# Filters the neuron rows of one layer by text (label, concepts, unit); no other script in the page.
_JS = """
function nrFilter(input){var q=input.value.toLowerCase();var rows=document.querySelectorAll('#'+input.dataset.table+' tbody tr');
for(var i=0;i<rows.length;i++){rows[i].style.display=rows[i].textContent.toLowerCase().indexOf(q)<0?'none':'';}}
"""


def write_html_report(
    explanations,
    out_dir: str | os.PathLike,
    probe=None,
    store=None,
    n_images: int = 5,
    image_ids: Sequence[str] | None = None,
    thumbnail_size: int = 96,
    title: str = "neurocore report",
    *,
    neurons_with_images: int | None = 64,
    families: Mapping[str, str] | None = None,
    filename: str = "index.html",
    intro: str | None = None,
) -> Path:
    """Write one self-contained HTML page describing every neuron of ``explanations``.

    Per layer: a summary (neurons, dead, interpretable, frequent labels, concept families) and a
    table with one row per neuron: unit, label, score, top concepts with their scores (or the
    weighted concepts of a linear explanation), flags (dead, not interpretable), metrics, and the
    neuron's most activating images with their ids (and class names, when the probe has labels) as
    captions. Labels, concepts and class names that are WordNet ids (``n01443537``) are shown by
    their WordNet names (``goldfish``), the id beside a label. Thumbnails are embedded as base64
    PNG/JPEG, each distinct image once, so the page is one file that can be mailed or archived. All
    text is HTML-escaped.

    Images: ``explanations``' ``top_images`` are **rows of the activation store** (readable probe
    images in order). With ``store`` they are mapped to dataset indices by
    ``store.dataset_indices`` (needed when unreadable images were skipped) and captioned with
    ``store.image_ids``; without it, by the explanations' own ``top_dataset_indices`` (results of
    neurocore's methods carry them), else row = dataset index. Dataset items may be PIL images, or
    tensors/arrays ``[3, H, W]``, ``[H, W, 3]`` or ``[H, W]`` (floats in [0, 1] are shown as they
    are, uint8 as 0..255, anything else, e.g. normalised tensors, is min-max scaled per image). An
    image that cannot be read becomes a marked placeholder.

    Args:
        explanations: :class:`~neurocore.methods.Explanations` (any method).
        out_dir: folder to write into (created if needed).
        probe: the probe dataset the explanations were computed on (items: image or
            ``(image, label)``); None: no thumbnails.
        store: the :class:`~neurocore.probe.ActivationStore` of the run (row -> dataset index, ids).
        n_images: thumbnails per neuron (at most the ``top_images`` it has).
        image_ids: captions for store rows (overrides the store's and the dataset's ids).
        thumbnail_size: thumbnail edge in pixels (small images are enlarged without smoothing).
        title: the page title.
        neurons_with_images: thumbnails are drawn for the first this-many neurons of each layer
            (by unit); the rest are listed without images, so reports of layers with thousands of
            neurons stay small. None: all neurons.
        families: concept name -> family, adds family counts to the layer summaries.
        filename: the page's file name.
        intro: a paragraph of text shown under the title.

    Returns:
        The path of the written page.

    Raises:
        NeurocoreError: bad arguments, or ``image_ids``/``store`` that do not match the rows the
            explanations refer to.

    Example:
        >>> import tempfile
        >>> from neurocore.methods import Explanations, NeuronExplanation
        >>> ex = Explanations("demo", (NeuronExplanation("fc", 0, "red <b>", 1.5, ("red <b>",), (1.5,), top_images=(1, 0)),))
        >>> probe = [(torch.rand(3, 8, 8), 0), (torch.rand(3, 8, 8), 1)]
        >>> page = write_html_report(ex, tempfile.mkdtemp(), probe=probe, thumbnail_size=16)
        >>> text = page.read_text()
        >>> "red &lt;b&gt;" in text, text.count("data:image/")
        (True, 2)
    """
    from neurocore.methods import Explanations
    from neurocore.report._tables import display_names, layer_summary

    if not isinstance(explanations, Explanations):
        raise NeurocoreError(f"explanations must be an Explanations object; got {type(explanations).__name__}")
    for name, value, low in (("n_images", n_images, 0), ("thumbnail_size", thumbnail_size, 8)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise NeurocoreError(f"{name} must be an integer >= {low}; got {value!r}")
    if neurons_with_images is not None and (
        isinstance(neurons_with_images, bool) or not isinstance(neurons_with_images, int) or neurons_with_images < 0
    ):
        raise NeurocoreError(f"neurons_with_images must be an integer >= 0 or None; got {neurons_with_images!r}")
    if not filename or Path(filename).name != filename:
        raise NeurocoreError(f"filename must be a plain file name (no folders); got {filename!r}")
    images = _ImageSource(probe, store, image_ids, thumbnail_size)

    parts = [f"<h1>{_e(title)}</h1>"]
    if intro:
        parts.append(f"<p>{_e(intro)}</p>")
    parts.append(_meta(explanations, out_dir))
    summary = layer_summary(explanations, families)
    names = display_names(explanations)
    parts.append("<h2>Layers</h2>" + _summary_table(summary))
    for i, layer in enumerate(explanations.layers):
        neurons = [n for n in explanations if n.layer == layer]
        table_id = f"layer{i}"
        limit = len(neurons) if neurons_with_images is None else neurons_with_images
        shown = min(limit, len(neurons)) if probe is not None and n_images > 0 else 0
        parts.append(f"<h2 id='{table_id}-h'>Layer <code>{_e(layer)}</code> ({len(neurons)} neurons)</h2>")
        if probe is not None and n_images > 0 and shown < len(neurons):
            parts.append(
                f"<p class='meta'>Top images are shown for the first {shown} neurons of this layer "
                "(set <code>neurons_with_images</code> to change).</p>"
            )
        parts.append(
            f"<input class='filter' type='search' placeholder='filter by label, concept, unit' "
            f"data-table='{table_id}' oninput='nrFilter(this)'>"
        )
        parts.append(_neuron_table(table_id, neurons, images, n_images, shown, names))
    # The head comes last: the thumbnails' style sheet is known once every table is written.
    path = write_page(out_dir, filename, title, _CSS + images.css(), parts, script=_JS)
    if images.failures:
        idx, why = images.failures[0]
        warnings.warn(
            f"report: {len(images.failures)} image(s) could not be shown (e.g. dataset index {idx}: {why})",
            stacklevel=2,
        )
    return path


# Classes every report page shares: example figures in a row with small captions.
EXAMPLE_CSS = (
    ".ex{display:inline-block;margin:.3em;vertical-align:top}.ex figure{display:inline-block;margin:.1em}"
    "figcaption{font-size:.75em;color:#555;text-align:center}"
)


def write_page(out_dir, filename: str, title: str, css: str, parts, *, script: str = "") -> Path:
    """Write one self-contained HTML page (``parts`` joined in ``<body>``) atomically into ``out_dir``
    (created if needed) and return its path; every neurocore report page is written by this."""
    page = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{_e(title)}</title><style>{css}</style>" + (f"<script>{script}</script>" if script else "")
        + "</head><body>\n" + "\n".join(parts) + "\n</body></html>"
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / filename
    atomic_write(path, lambda p: p.write_text(page, encoding="utf-8"))
    return path


def require_method(explanations, method: str) -> None:
    """Raise unless ``explanations`` are an :class:`~neurocore.methods.Explanations` of ``method``."""
    from neurocore.methods import Explanations

    if not isinstance(explanations, Explanations) or explanations.method != method:
        raise NeurocoreError(
            f"explanations must be {method.upper()}'s Explanations (method {method!r}); got "
            f"{getattr(explanations, 'method', type(explanations).__name__)!r}"
        )


def page_head(title: str, intro: str | None, meta, out_dir, links) -> list[str]:
    """The opening parts of a report page: the title, ``intro``, and one line of ``(key, value)`` facts
    with links to those of ``links`` that exist in ``out_dir``."""
    parts = [f"<h1>{_e(title)}</h1>"]
    if intro:
        parts.append(f"<p>{_e(intro)}</p>")
    text = " · ".join(f"{_e(k)}: <code>{_e(v)}</code>" for k, v in meta)
    shown = [f for f in links if (Path(out_dir) / f).is_file()]
    if shown:
        text += " · files: " + ", ".join(f"<a href='{_e(f)}'>{_e(f)}</a>" for f in shown)
    parts.append(f"<p class='meta'>{text}</p>")
    return parts


def figure_strip(figures, size: int) -> str:
    """``(caption, image)`` pairs as captioned thumbnails of edge ``size`` (PIL images or [3, H, W] tensors)."""
    return "".join(
        f"<figure><img src='data:{_encode(_to_pil(im), size)}' alt='{_e(what)}'><figcaption>{_e(what)}</figcaption></figure>"
        for what, im in figures
    )


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _num(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.4g}"


def _meta(explanations, out_dir) -> str:
    from neurocore import __version__

    params = explanations.params
    items = [("method", explanations.method)]
    for key in ("method", "concept_source", "num_images"):
        if key in params and not (key == "method" and params[key] == explanations.method):
            items.append(("similarity" if key == "method" else key.replace("_", " "), params[key]))
    if isinstance(params.get("concepts"), (list, tuple)):
        items.append(("concepts", len(params["concepts"])))
    if params.get("interpretable_threshold") is not None:
        items.append(("interpretable when score >", params["interpretable_threshold"]))
    items.append(("neurons", len(explanations)))
    items.append(("neurocore", __version__))
    text = " · ".join(f"{_e(k)}: <code>{_e(v)}</code>" for k, v in items)
    files = [f for f in ("explanations.csv", "explanations.json") if (Path(out_dir) / f).is_file()]
    if files:
        text += " · tables: " + ", ".join(f"<a href='{_e(f)}'>{_e(f)}</a>" for f in files)
    return f"<p class='meta'>{text}</p>"


def _summary_table(summary) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in ["layer", *summary.columns])
    rows = []
    for i, (layer, row) in enumerate(summary.iterrows()):
        cells = [f"<td><a href='#layer{i}-h'><code>{_e(layer)}</code></a></td>"]
        for col, value in row.items():
            cls = " class='num'" if col != "top_labels" else ""
            cells.append(f"<td{cls}>{_e(value)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _concepts_cell(n, names) -> str:
    if n.is_linear:
        terms = [f"{_num(n.bias)}"] + [
            f"{'+' if w >= 0 else '−'} {_num(abs(w))}·{_e(names.get(c, c))}" for c, w in zip(n.concepts, n.scores)
        ]
        return " ".join(terms)
    return ", ".join(f"{_e(names.get(c, c))} <span class='meta'>{_num(s)}</span>" for c, s in zip(n.concepts, n.scores))


def _label_cell(label, names) -> str:
    """The label as shown (a WordNet id by its name), with the id itself beside it: the filter finds both."""
    if not label:
        return "<i>none</i>"
    shown = names.get(label, label)
    return _e(shown) if shown == label else f"{_e(shown)} <span class='meta'>{_e(label)}</span>"


def _neuron_table(table_id, neurons, images, n_images, shown, names) -> str:
    metric_names = sorted({k for n in neurons for k in n.metrics})
    head = ["unit", "label", "score", "top concepts", "flags", *metric_names]
    if shown:
        head.append("top images")
    rows = []
    for i, n in enumerate(neurons):
        flags = []
        if n.dead:
            flags.append("<span class='flag dead'>dead</span>")
        if not n.interpretable:
            flags.append("<span class='flag uninterp'>not interpretable</span>")
        if not flags:
            flags.append("<span class='flag ok'>interpretable</span>")
        cells = [
            f"<td class='num'>{n.unit}</td>",
            f"<td class='label'>{_label_cell(n.description, names)}</td>",
            f"<td class='num'>{_num(n.similarity)}</td>",
            f"<td class='concepts'>{_concepts_cell(n, names)}</td>",
            f"<td>{' '.join(flags)}</td>",
        ]
        cells += [f"<td class='num'>{_num(n.metrics.get(k, math.nan))}</td>" for k in metric_names]
        if shown:
            if i < shown:
                images.learn(n)
            cells.append("<td>" + (images.figures(n.top_images[:n_images]) if i < shown else "") + "</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    thead = "".join(f"<th>{_e(h)}</th>" for h in head)
    return f"<table id='{table_id}'><thead><tr>{thead}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


class _ImageSource:
    """Turns store rows into captioned thumbnails; each distinct image is encoded once and referred
    to by a CSS class (a neuron's top images repeat across neurons)."""

    def __init__(self, probe, store, image_ids, size):
        self.probe, self.size = probe, size
        self.rows_to_index = None
        self.ids = None
        if store is not None:
            if not hasattr(store, "dataset_indices") or not hasattr(store, "image_ids"):
                raise NeurocoreError(f"store must be an ActivationStore; got {type(store).__name__}")
            self.rows_to_index = store.dataset_indices.tolist()
            self.ids = list(store.image_ids) or None
        if image_ids is not None:
            if isinstance(image_ids, str):
                raise NeurocoreError("image_ids must be a sequence of strings, one per store row; got one string")
            image_ids = [str(i) for i in image_ids]
            if self.rows_to_index is not None and len(image_ids) != len(self.rows_to_index):
                raise NeurocoreError(
                    f"image_ids has {len(image_ids)} entries but the store has {len(self.rows_to_index)} rows"
                )
            self.ids = image_ids
        self.classes = _class_names(probe)
        self.known_index: dict[int, int] = {}  # row -> dataset index, from the explanations themselves
        self.encoded: dict[int, str | None] = {}
        self.captions: dict[int, str] = {}
        self.failures: list[tuple[int, str]] = []

    def learn(self, neuron) -> None:
        """Without a store: the dataset indices that a neuron's explanation carries for its rows."""
        if self.rows_to_index is None:
            self.known_index.update(zip(neuron.top_images, getattr(neuron, "top_dataset_indices", ()) or ()))

    def _index(self, row: int) -> int:
        if self.rows_to_index is None:
            return self.known_index.get(row, row)
        if not 0 <= row < len(self.rows_to_index):
            raise NeurocoreError(
                f"a neuron's top image is row {row}, but the store has {len(self.rows_to_index)} rows: pass the "
                "store the explanations were computed from"
            )
        return self.rows_to_index[row]

    def _caption(self, row: int, index: int, label) -> str:
        if self.ids is not None and 0 <= row < len(self.ids):
            text = self.ids[row]
        elif hasattr(self.probe, "image_id"):
            text = self.probe.image_id(index)
        else:
            text = str(index)
        if label is not None:
            name = self.classes[label] if self.classes is not None and 0 <= label < len(self.classes) else label
            if str(name) not in text:
                text = f"{name} · {text}"
        return text

    def _load(self, row: int) -> None:
        index = self._index(row)
        label = None
        try:
            item = self.probe[index]
            image = item
            if isinstance(item, (tuple, list)):
                image = item[0]
                label = _as_label(item[1]) if len(item) > 1 else None
            self.encoded[row] = _encode(_to_pil(image), self.size)
        except NeurocoreError:
            raise
        except Exception as exc:  # an unreadable image must not lose the whole report
            self.encoded[row] = None
            self.failures.append((index, f"{type(exc).__name__}: {exc}"))
        self.captions[row] = self._caption(row, index, label)

    def figures(self, rows: Sequence[int]) -> str:
        out = []
        for row in rows:
            if row not in self.encoded:
                self._load(row)
            caption = self.captions[row]
            style = f"width:{self.size}px;height:{self.size}px"
            if self.encoded[row] is None:
                body = f"<div class='missing' style='{style}'>unreadable</div>"
            else:
                body = f"<div class='img i{row}' style='{style}' role='img' aria-label='{_e(caption)}'></div>"
            out.append(
                f"<figure style='width:{self.size}px' title='{_e(caption)}'>{body}<figcaption>{_e(caption)}</figcaption></figure>"
            )
        return "<div class='thumbs'>" + "".join(out) + "</div>"

    def css(self) -> str:
        return "\n".join(
            f".i{row}{{background-image:url(data:{data})}}" for row, data in self.encoded.items() if data is not None
        )


def _class_names(probe):
    """The probe's class names as shown: its ``class_names`` when it has them, else its ``classes``
    with WordNet ids by their names."""
    classes = getattr(probe, "class_names", None) or getattr(probe, "classes", None)
    if classes is None:
        return None
    from neurocore.concepts import display_class_names

    return display_class_names(classes)


def _as_label(value):
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    return value if isinstance(value, int) else None


def _to_pil(image):
    """A PIL image from a PIL image, a tensor or an array (see write_html_report for the scaling)."""
    import numpy as np
    import PIL.Image

    if isinstance(image, PIL.Image.Image):
        return image.convert("RGB")
    t = torch.as_tensor(np.asarray(image)) if not isinstance(image, torch.Tensor) else image
    t = t.detach().to("cpu")
    if t.dim() == 3 and t.shape[0] in (1, 3):
        t = t.permute(1, 2, 0)  # channel-first (torchvision's convention wins for an ambiguous [3, H, 3])
    elif t.dim() == 2:
        t = t.unsqueeze(-1)
    if t.dim() != 3 or t.shape[-1] not in (1, 3):
        raise ValueError(f"cannot show an image of shape {tuple(t.shape)}")
    if t.dtype == torch.uint8:
        arr = t
    else:
        t = t.float()
        if not torch.isfinite(t).all():
            t = torch.nan_to_num(t, nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = float(t.min()), float(t.max())
        if lo < 0.0 or hi > 1.0:  # normalised inputs: show the image's own range
            t = (t - lo) / (hi - lo) if hi > lo else torch.zeros_like(t)
        arr = (t * 255.0).round().clamp(0, 255).to(torch.uint8)
    arr = arr.expand(*arr.shape[:2], 3) if arr.shape[-1] == 1 else arr
    return PIL.Image.fromarray(arr.contiguous().numpy(), "RGB")


def _encode(image, size: int) -> str:
    """``image/png;base64,...`` (or JPEG when that is much smaller, as for photographs)."""
    import PIL.Image

    w, h = image.size
    scale = size / max(w, h)
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    # Enlarge small synthetic images without smoothing (crisp pixels); shrink photos smoothly.
    resample = PIL.Image.NEAREST if scale >= 1 else PIL.Image.BILINEAR
    thumb = image.resize(new, resample)
    png = io.BytesIO()
    thumb.save(png, format="PNG")
    data, kind = png.getvalue(), "png"
    if len(data) > 8192:
        jpg = io.BytesIO()
        thumb.save(jpg, format="JPEG", quality=85)
        if len(jpg.getvalue()) < len(data) // 2:
            data, kind = jpg.getvalue(), "jpeg"
    return f"image/{kind};base64," + base64.b64encode(data).decode("ascii")
