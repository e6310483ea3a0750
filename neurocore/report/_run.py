"""One HTML report for a run that may hold several methods (issue 11, "one report over all four methods"):
per layer the summary tables and figures, per neuron every method's explanation side by side with its top
images and crops, per image WWW's heatmaps beside the input-attribution baselines."""

from __future__ import annotations

import base64
import io
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from neurocore._errors import NeurocoreError, close_matches, positive_int
from neurocore.report._html import (
    _CSS,
    EXAMPLE_CSS,
    _concepts_cell,
    _e,
    _ImageSource,
    _label_cell,
    _num,
    _to_pil,
    figure_strip,
    page_head,
    write_page,
)
from neurocore.report._www import heatmap_overlay

# The page's baseline names -> :func:`neurocore.methods.attribution.attribute`'s method names.
BASELINES = {"grad-cam": "gradcam", "score-cam": "scorecam", "ablation-cam": "ablationcam", "lime": "lime"}


@dataclass(frozen=True)
class ImageMaps:
    """One probe image with its "where" maps side by side (WWW's heatmaps and the attribution baselines).

    Attributes:
        image (Tensor[3, H, W]): the model's input (normalised inputs are min-max scaled for display).
        maps: map name (``"www class"``, ``"www sample"``, ``"grad-cam"``, ``"score-cam"``,
            ``"ablation-cam"``, ``"lime"``) -> Tensor[H, W] float32 in [0, 1] at the input's size.
        similarity: cosine of WWW's class and sample heatmaps (WWW §3.3; NaN without WWW's maps).
        caption: the image's id and the explained class.
        notes: why maps that were asked for are missing (e.g. the ``attribution`` extra not installed).

    Example:
        >>> m = ImageMaps(torch.rand(3, 8, 8), {"grad-cam": torch.rand(8, 8)}, float("nan"), "a.png")
        >>> sorted(m.maps)
        ['grad-cam']
    """

    image: torch.Tensor
    maps: Mapping[str, torch.Tensor]
    similarity: float = float("nan")
    caption: str = ""
    notes: tuple[str, ...] = field(default=())


def image_maps(
    model,
    layer: str,
    probe,
    indices: Sequence[int],
    *,
    transform=None,
    targets=None,
    www=None,
    baselines: Sequence[str] = ("grad-cam", "score-cam", "ablation-cam", "lime"),
    cam_layer: str | None = None,
    lime_samples: int = 500,
    seed: int = 0,
    batch_size: int = 32,
    device=None,
    progress: bool = False,
) -> list[ImageMaps]:
    """WWW's class and sample heatmaps of some probe images beside Grad-CAM, Score-CAM, Ablation-CAM and
    LIME maps of the same images and classes (ALGORITHMS.md §5; the analysis report's comparison).

    WWW (§3.3): the class-wise neuron importance of ``layer`` (:func:`~neurocore.methods.www.class_importance`)
    over the whole probe, each image counted for its predicted class, then the class heatmap and sample
    heatmap of each chosen image (:func:`~neurocore.methods.www.image_heatmaps`) and their cosine. The
    baselines: :func:`~neurocore.methods.attribution.attribute` for the same class. Every map is at the
    input's size, in [0, 1] (WWW's heatmaps are min-max scaled per image for display; the similarity is of
    the raw maps).

    Args:
        model: the classifier (logits ``[B, classes]``).
        layer: the layer WWW explains (its output pooled by the head, e.g. EfficientNet-Lite0's ``"bn2"``).
        probe: the probe dataset (items: image or ``(image, label)``).
        indices: dataset indices of the images shown.
        transform: the model's preprocessing (None: items are already model inputs).
        targets (Tensor[n] int64, ints or None): the class explained per image. None: the model's
            prediction (WWW's rule: a heatmap explains the predicted class).
        www: None or True: compute WWW's heatmaps; False: baselines only. A precomputed class
            importance ``Tensor[classes, K]`` is used as it is.
        baselines: names among ``"grad-cam"``, ``"score-cam"``, ``"ablation-cam"``, ``"lime"`` (the
            attribution function's ``"gradcam"``... spellings are accepted too); ``()`` for none.
        cam_layer: the CAMs' target layer (default: ``layer``).
        lime_samples: LIME's perturbed samples per image (500 keeps a page quick; LIME's default is 1000).
        seed: LIME's seed.
        batch_size: images per pass.
        device: where the model runs (default: its parameters' device).
        progress: progress bars.

    Returns:
        one :class:`ImageMaps` per index, in order. When the ``attribution`` extra is not installed the
        baselines are left out and each item's ``notes`` says ``pip install neurocore[attribution]``.

    Raises:
        NeurocoreError: an unknown baseline name, indices out of range, a layer without spatial cells
            (WWW), and whatever the WWW and attribution functions raise for their inputs.

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
        >>> probe = [(torch.rand(3, 16, 16), i % 2) for i in range(4)]
        >>> out = image_maps(net, "1", probe, [0, 3], baselines=("grad-cam",))
        >>> sorted(out[0].maps), tuple(out[1].maps["www class"].shape)
        (['grad-cam', 'www class', 'www sample'], (16, 16))
    """
    from neurocore.methods.attribution import attribute
    from neurocore.probe._data import probe_length
    from neurocore.probe._maps import _input_tensor, dataset_indices

    names = [_baseline_name(b) for b in ([baselines] if isinstance(baselines, str) else baselines)]
    positive_int(lime_samples, "lime_samples")
    positive_int(batch_size, "batch_size")
    n = probe_length(probe)
    idx = dataset_indices(indices, n)
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise NeurocoreError(f"indices must be dataset indices in [0, {n}); got {idx.tolist()}: pick images of the probe")
    if idx.numel() == 0:
        return []
    if not (www is None or isinstance(www, bool) or isinstance(www, torch.Tensor)):
        raise NeurocoreError(f"www must be None/True (compute WWW's heatmaps), False (none) or a class importance "
                             f"Tensor[classes, K]; got {type(www).__name__}")
    inputs = torch.stack([_input_tensor(probe, int(i), transform) for i in idx])
    run_on = device if device is not None else next((p.device for p in model.parameters()), torch.device("cpu"))
    preds = _predictions(model, (inputs[s : s + batch_size] for s in range(0, len(inputs), batch_size)), run_on)
    if targets is None:
        target = preds
    else:
        target = torch.as_tensor(targets, dtype=torch.int64).reshape(-1)
        if target.numel() == 1:
            target = target.expand(len(idx))
        if target.numel() != len(idx):
            raise NeurocoreError(f"targets must hold one class per index ({len(idx)}) or one for all; got {target.numel()}")

    maps: list[dict[str, torch.Tensor]] = [{} for _ in idx]
    sims = [math.nan] * len(idx)
    if www is not False:
        from neurocore.methods.www import image_heatmaps

        importance = www if isinstance(www, torch.Tensor) else None
        if importance is None:
            _, importance = _predicted_class_importance(model, layer, probe, transform=transform, batch_size=batch_size,
                                                        device=device, progress=progress)
        subset = [(inputs[j], int(preds[j])) for j in range(len(idx))]
        res = image_heatmaps(model, layer, subset, importance, batch_size=batch_size, device=device, keep_heatmaps=True,
                             progress=progress)
        for j in range(len(idx)):
            maps[j]["www class"] = _unit_range(res.class_heatmaps[j])
            maps[j]["www sample"] = _unit_range(res.sample_heatmaps[j])
            sims[j] = float(res.similarity[j])

    notes: list[str] = []
    steps = names
    if progress and names:
        from tqdm.auto import tqdm

        steps = tqdm(names, desc="attribution baselines", unit="method")
    for name in steps:
        try:
            out = attribute(model, inputs.to(run_on), target, method=BASELINES[name], layer=cam_layer or layer,
                            batch_size=batch_size, num_samples=lime_samples, seed=seed)
        except NeurocoreError as exc:
            if isinstance(exc.__cause__, ImportError):  # the optional extra is missing: a note, not a crash
                notes.append(f"no {name} maps: {exc}")
                continue
            raise
        for j in range(len(idx)):
            maps[j][name] = out[j]

    out_items = []
    for j, i in enumerate(idx.tolist()):
        name = probe.image_id(i) if hasattr(probe, "image_id") else f"image {i}"
        caption = f"{name} · class {int(target[j])}"
        if int(target[j]) != int(preds[j]):
            caption += f" · predicted {int(preds[j])}"
        out_items.append(ImageMaps(inputs[j].detach().cpu(), maps[j], sims[j], caption, tuple(notes)))
    return out_items


def _predicted_class_importance(model, layer: str, probe, *, transform, batch_size: int, device,
                                progress: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(predictions, importance)``: the model's predicted class of every probe image (Tensor[n] int64,
    streamed in batches: the probe may be large) and WWW's class-wise neuron importance of ``layer`` over
    the whole probe (Tensor[classes, K], :func:`~neurocore.methods.www.class_importance`), each image
    counted for its prediction: WWW's class heatmap explains the predicted class, and the probe's own
    classes need not be the model's. Shared by :func:`image_maps` and ``neurocore explain``'s WWW page."""
    from neurocore.methods.www import class_importance
    from neurocore.probe._data import iter_batches, probe_length

    run_on = device if device is not None else next((p.device for p in model.parameters()), torch.device("cpu"))
    preds = torch.zeros(probe_length(probe), dtype=torch.int64)
    for batch in iter_batches(probe, batch_size, transform):
        preds[batch.indices] = _predictions(model, [batch.images], run_on)
    importance = class_importance(model, layer, probe, transform=transform, labels=preds, batch_size=batch_size,
                                  device=device, progress=progress)
    return preds, importance


def _predictions(model, chunks, device) -> torch.Tensor:
    """The model's argmax class per image over input chunks (eval mode, flags restored)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return torch.cat([model(x.to(device)).argmax(1).cpu() for x in chunks])
    finally:
        model.train(was_training)


def _baseline_name(name) -> str:
    """The page's name of a baseline, from any spelling :func:`~neurocore.methods.attribution.method_name` accepts."""
    from neurocore.methods.attribution import method_name

    try:
        own = method_name(name, "baselines")
    except NeurocoreError:
        own = None
    for shown, method in BASELINES.items():
        if own == method:
            return shown
    raise NeurocoreError(
        f"baselines must name methods among {list(BASELINES)}; got {name!r}"
        + (f" (close matches: {', '.join(close_matches(name, BASELINES))})" if isinstance(name, str) and close_matches(name, BASELINES) else "")
    )


def _unit_range(m: torch.Tensor) -> torch.Tensor:
    """A map min-max scaled to [0, 1] (a constant map: zeros), float32 on the CPU."""
    m = torch.nan_to_num(m.detach().float().cpu())
    lo, hi = float(m.min()), float(m.max())
    return (m - lo) / (hi - lo) if hi > lo else torch.zeros_like(m)


def write_run_report(
    explanations: Mapping[str, object],
    out_dir: str | os.PathLike,
    *,
    probe=None,
    store=None,
    model=None,
    transform=None,
    image_maps: Sequence[ImageMaps] | None = None,
    simulation=None,
    summaries: Mapping[str, object] | None = None,
    title: str = "neurocore report",
    intro: str | None = None,
    neurons_with_images: int = 64,
    n_images: int = 5,
    thumbnail_size: int = 96,
    filename: str = "index.html",
    links: Sequence[str] = (),
) -> Path:
    """Write one self-contained HTML page for a run that may hold several methods' explanations.

    * **Per layer**: each method's :func:`~neurocore.report.layer_summary`; for methods whose explanations
      carry similarities, :func:`~neurocore.evaluate.highest_similarity` over all methods (also drawn as
      a bar chart, embedded PNG) and :func:`~neurocore.evaluate.top_concept_counts` (top 50); the
      ``simulation`` table's rows for the layer; every table of ``summaries``.
    * **Per neuron**: a card ``<div class="neuron-card" data-layer=... data-unit=...>`` with each method's
      explanation side by side: label, concepts with their scores, and what the method adds (Linear
      Explanations: the weighted sum; HINT: its concept contributions; WWW: major and minor concepts),
      then the neuron's top images (store rows -> probe images, as
      :func:`~neurocore.report.write_html_report` maps them) and, with ``model`` and a layer with spatial
      cells, the crops around the neuron's highest cell (:func:`neurocore.probe.crops`). The first
      ``neurons_with_images`` neurons of each layer get cards; a filter box hides cards whose text does
      not match.
    * **Per image**: each :class:`ImageMaps` (from :func:`image_maps`): the image and its maps as
      overlays, with WWW's heatmap similarity.

    Pieces that are not given are left out with a note (no probe: no images; no model: no crops; no
    attribution extra: a note naming ``pip install neurocore[attribution]``). All text is HTML-escaped;
    images are embedded as base64, so the page is one file. The page's one script (the filter) runs
    without errors in a browser (python_tests/test_report_browser.py checks it in headless Chromium).

    Args:
        explanations: method name -> :class:`~neurocore.methods.Explanations`, all from the same probe
            (their ``params["probe"]``, :func:`~neurocore.methods.probe_identity`, must agree when present).
            Card order follows the mapping's order.
        out_dir: folder to write into (created if needed).
        probe: the probe dataset the explanations were computed on (None: no images).
        store: the run's :class:`~neurocore.probe.ActivationStore` (row -> dataset index, image ids).
        model: the network (None: no crops).
        transform: the model's preprocessing (for crops; None: probe items are model inputs).
        image_maps: :class:`ImageMaps` to show per image (None: no per-image section).
        simulation: ``pandas.DataFrame`` of simulation scores with ``method`` and ``layer`` columns (or
            index levels) and score columns such as ``correlation`` and ``ablation`` (helper C's
            ``simulation_table``); shown per layer.
        summaries: title -> ``pandas.DataFrame`` shown under "Summaries" (e.g.
            :func:`~neurocore.evaluate.probe_size_effect`); a table with a ``layer`` column or index is
            also split per layer.
        title, intro: the page's title and a paragraph under it.
        neurons_with_images: neuron cards per layer (the first by unit); the other neurons' labels are listed
            in a table under the cards.
        n_images: top images per card (at most the ``top_images`` a neuron has).
        thumbnail_size: image edge in pixels.
        filename: the page's file name.
        links: files in ``out_dir`` to link from the page (e.g. each method's ``explanations.csv``).

    Returns:
        The page's path.

    Raises:
        NeurocoreError: empty or non-Explanations values, explanations from different probes, bad
            numbers, a ``simulation`` or ``summaries`` that are not tables, ``image_maps`` items that are
            not :class:`ImageMaps`.

    Example:
        >>> import tempfile
        >>> from neurocore.methods import Explanations, NeuronExplanation
        >>> a = Explanations("clip_dissect", (NeuronExplanation("fc", 0, "red", 0.9, ("red",), (0.9,)),))
        >>> b = Explanations("linear", (NeuronExplanation("fc", 0, "0.8·red", 0.7, ("red",), (0.8,), is_linear=True),))
        >>> text = write_run_report({"clip_dissect": a, "linear": b}, tempfile.mkdtemp()).read_text()
        >>> text.count("class='neuron-card'"), "0.8·red" in text
        (1, True)
    """
    runs = _check_runs(explanations, store)
    for name, value, low in (("neurons_with_images", neurons_with_images, 0), ("n_images", n_images, 0),
                             ("thumbnail_size", thumbnail_size, 8)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise NeurocoreError(f"{name} must be an integer >= {low}; got {value!r}")
    if not filename or Path(filename).name != filename:
        raise NeurocoreError(f"filename must be a plain file name (no folders); got {filename!r}")
    layers = list(dict.fromkeys(layer for ex in runs.values() for layer in ex.layers))
    sim = _simulation_frame(simulation, layers)
    tables = _summary_frames(summaries)
    shown_maps = _check_image_maps(image_maps)
    images = _ImageSource(probe, store, None, thumbnail_size)

    from neurocore import __version__

    units = {layer: sorted({int(n.unit) for ex in runs.values() for n in ex if n.layer == layer}) for layer in layers}
    meta = [("methods", ", ".join(runs)), ("layers", len(layers)), ("neurons", sum(len(u) for u in units.values()))]
    identity = next((ex.params.get("probe") for ex in runs.values() if isinstance(ex.params.get("probe"), Mapping)), None)
    if identity is not None and identity.get("num_images") is not None:
        meta.append(("probe images", identity["num_images"]))
    meta.append(("neurocore", __version__))
    parts = page_head(title, intro, meta, out_dir, links)
    notes = []
    if probe is None:
        notes.append("No probe dataset was given: neurons are shown without their top images (pass probe=).")
    if model is None:
        notes.append("No model was given: no crops around the neurons' highest cells (pass model=, and transform= "
                     "for PIL probes).")
    if shown_maps is None:
        notes.append("No per-image maps were given (pass image_maps=neurocore.report.image_maps(model, layer, probe, "
                     "indices)).")
    parts += [f"<p class='meta note'>{_e(t)}</p>" for t in notes]
    parts.append("<nav class='meta'>layers: " + " · ".join(
        f"<a href='#layer{i}'><code>{_e(layer)}</code></a>" for i, layer in enumerate(layers)) + "</nav>")

    parts.append("<h2 id='summary'>Summary</h2>")
    parts.append(_layer_summaries(runs))
    with_sim = {name: ex for name, ex in runs.items() if any(not math.isnan(float(n.similarity)) for n in ex)}
    if with_sim:
        from neurocore.evaluate import highest_similarity

        best = highest_similarity(with_sim)
        parts.append("<h3>Highest similarity per layer</h3><p class='meta'>The highest score of any live, labelled neuron "
                     "of the layer (the analysis report's \"which layers are most interpretable\"); each method's own "
                     "score (CLIP-Dissect: its similarity function, Linear Explanations: correlation, WWW: ACS, HINT: "
                     "contribution).</p>")
        parts.append("<div class='row'>" + _frame_html(best) + _bar_chart(best, "highest similarity", panels=True) + "</div>")
    if sim is not None:
        parts.append("<h3>Simulation scores</h3><p class='meta'>How well each method's explanations predict the "
                     "neurons' activations (correlation) and their effect on the output (ablation), per layer.</p>")
        score_cols = [c for c in sim.columns if c not in ("method", "layer")]
        chart = ""
        if "correlation" in sim.columns:
            chart = _bar_chart(sim.pivot_table(index="layer", columns="method", values="correlation", sort=False)
                               .reindex([x for x in layers if x in set(sim["layer"])]), "simulation correlation")
        parts.append("<div class='row'>" + _frame_html(sim.set_index(["method", "layer"])[score_cols]) + chart + "</div>")
    for heading, frame in tables.items():
        parts.append(f"<h3>{_e(heading)}</h3>" + _frame_html(frame))

    for i, layer in enumerate(layers):
        parts.append(_layer_section(i, layer, units[layer], runs, with_sim, sim, tables, images, probe, model, transform,
                                    neurons_with_images, n_images, thumbnail_size))

    if shown_maps:
        parts.append("<h2 id='images'>Per image: where</h2><p class='meta'>WWW's class heatmap (neuron maps weighted by "
                     "the predicted class's importance) and sample heatmap (by the image's own importance) beside the "
                     "input-attribution baselines (Grad-CAM, Score-CAM, Ablation-CAM, LIME) for the same class; "
                     "similarity: the cosine of WWW's two heatmaps (low: a likely misprediction).</p>")
        for note in dict.fromkeys(t for m in shown_maps for t in m.notes):
            parts.append(f"<p class='meta note'>{_e(note)}</p>")
        for m in shown_maps:
            figs = [("image", _to_pil(m.image))] + [(name, heatmap_overlay(m.image, v)) for name, v in m.maps.items()]
            sim_text = "" if math.isnan(float(m.similarity)) else f" · similarity <b class='sim'>{float(m.similarity):.4f}</b>"
            parts.append(f"<div class='ex image-maps'>{figure_strip(figs, thumbnail_size * 2)}"
                         f"<div class='meta'>{_e(m.caption)}{sim_text}</div></div>")
    path = write_page(out_dir, filename, title, _CSS + EXAMPLE_CSS + _RUN_CSS + images.css(), parts, script=_RUN_JS)
    if images.failures:
        idx, why = images.failures[0]
        warnings.warn(f"report: {len(images.failures)} image(s) could not be shown (e.g. dataset index {idx}: {why})",
                      stacklevel=2)
    return path


_RUN_CSS = """
.row{display:flex;gap:1.5em;align-items:flex-start;flex-wrap:wrap}.chart{max-width:100%}
.neuron-card{border:1px solid #ddd;border-radius:6px;padding:.5em .8em;margin:.6em 0}
.neuron-card h3{margin:.1em 0 .4em 0;font-size:1.05em}.methods{display:flex;gap:1em;flex-wrap:wrap}
.method{flex:1 1 16em;max-width:28em;background:#fafafa;border-radius:4px;padding:.3em .6em}
.method h4{margin:.1em 0;font-size:.85em;color:#555;text-transform:uppercase;letter-spacing:.03em}
.note{color:#7a4b00}.cards .hidden{display:none}
"""

# Filters the neuron cards of one layer by their text (labels, concepts, unit); the page's only script.
_RUN_JS = """
function ncFilter(input){var q=input.value.toLowerCase();var cards=document.querySelectorAll('#'+input.dataset.cards+' .neuron-card');
var shown=0;for(var i=0;i<cards.length;i++){var hit=cards[i].textContent.toLowerCase().indexOf(q)>=0;
cards[i].classList.toggle('hidden',!hit);if(hit){shown++;}}
var c=document.getElementById(input.dataset.cards+'-count');if(c){c.textContent=shown+' of '+cards.length+' cards shown';}}
"""


def _check_runs(explanations, store) -> dict:
    from neurocore.methods import Explanations
    from neurocore.methods._base import probe_identity

    if not isinstance(explanations, Mapping) or not explanations:
        raise NeurocoreError(
            "explanations must be a non-empty mapping method name -> Explanations (e.g. {'clip_dissect': ex}); got "
            f"{type(explanations).__name__ if not isinstance(explanations, Mapping) else 'an empty mapping'}"
        )
    for name, ex in explanations.items():
        if not isinstance(ex, Explanations):
            raise NeurocoreError(f"explanations[{name!r}] must be an Explanations object; got {type(ex).__name__}")
    runs = {str(k): v for k, v in explanations.items()}
    first = None
    for name, ex in runs.items():
        ident = ex.params.get("probe")
        if not isinstance(ident, Mapping):
            continue
        if first is None:
            first = (name, ident)
        elif not _same_probe(first[1], ident):
            raise NeurocoreError(
                f"explanations[{name!r}] were computed on a different probe than explanations[{first[0]!r}] "
                f"(params['probe']: {_probe_text(ident)} vs {_probe_text(first[1])}): explain every method from the "
                "same ActivationStore, or write one report per probe"
            )
    if store is not None and first is not None and hasattr(store, "image_ids"):
        own = probe_identity(store)
        if not _same_probe(first[1], own):
            raise NeurocoreError(
                f"store does not hold the images explanations[{first[0]!r}] were computed on (its probe: "
                f"{_probe_text(own)}; the explanations': {_probe_text(first[1])}): pass the run's own store"
            )
    return runs


def _same_probe(a: Mapping, b: Mapping) -> bool:
    for key in ("num_images", "image_ids_sha256", "fingerprint"):
        if a.get(key) is not None and b.get(key) is not None and a.get(key) != b.get(key):
            return False
    return True


def _probe_text(ident: Mapping) -> str:
    digest = ident.get("image_ids_sha256")
    return f"{ident.get('num_images')} images, ids sha256 {digest[:12] + '…' if digest else None}"


def _simulation_frame(simulation, layers):
    if simulation is None:
        return None
    import pandas as pd

    if not isinstance(simulation, pd.DataFrame):
        raise NeurocoreError(f"simulation must be a pandas.DataFrame (simulation_table's result); got {type(simulation).__name__}")
    frame = simulation.reset_index() if {"method", "layer"} - set(simulation.columns) else simulation.copy()
    frame = frame.drop(columns=[c for c in ("index",) if c in frame.columns and c not in simulation.columns])
    missing = {"method", "layer"} - set(frame.columns)
    if missing:
        raise NeurocoreError(
            f"simulation must have 'method' and 'layer' columns or index levels; it lacks {sorted(missing)} (columns: "
            f"{list(simulation.columns)}): pass simulation_table's result"
        )
    unknown = [x for x in dict.fromkeys(frame["layer"].astype(str)) if x not in layers]
    if unknown:
        hint = close_matches(unknown[0], layers)
        raise NeurocoreError(
            f"simulation has layer {unknown[0]!r}, which none of the explanations has (their layers: {layers})"
            + (f"; close matches: {', '.join(hint)}" if hint else "") + ": score the same explanations the report shows"
        )
    frame["layer"] = frame["layer"].astype(str)
    return frame


def _summary_frames(summaries) -> dict:
    if summaries is None:
        return {}
    import pandas as pd

    if not isinstance(summaries, Mapping):
        raise NeurocoreError(f"summaries must be a mapping title -> pandas.DataFrame; got {type(summaries).__name__}")
    for key, frame in summaries.items():
        if not isinstance(frame, pd.DataFrame):
            raise NeurocoreError(f"summaries[{key!r}] must be a pandas.DataFrame; got {type(frame).__name__}")
    return {str(k): v for k, v in summaries.items()}


def _check_image_maps(maps):
    if maps is None:
        return None
    maps = list(maps)
    for j, m in enumerate(maps):
        if not isinstance(m, ImageMaps):
            raise NeurocoreError(f"image_maps[{j}] must be an ImageMaps (from neurocore.report.image_maps); got {type(m).__name__}")
    return maps


def _frame_html(frame) -> str:
    return frame.to_html(border=0, na_rep="–", float_format=lambda v: f"{v:.4g}", escape=True)


def _bar_chart(frame, what: str, *, panels: bool = False) -> str:
    """Bars per layer for each column of ``frame`` (layers × methods) as an embedded PNG; "" when there is
    nothing to draw. ``panels``: one panel per column with its own scale (the methods' scores are not on
    one scale: WPMI is a log-probability, WWW's ACS a sum of cosines); else grouped bars on one axis."""
    frame = frame.astype(float)
    if frame.empty or frame.isna().all().all():
        return ""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    n = len(frame.columns) if panels else 1
    width = (1.0 + 0.5 * len(frame)) * n if panels else 1.2 + 0.9 * len(frame) * max(1, len(frame.columns)) ** 0.5
    fig, axes = plt.subplots(1, n, figsize=(max(3.0, width), 2.8), dpi=100, squeeze=False)
    try:
        if panels:
            colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
            for j, (ax, col) in enumerate(zip(axes[0], frame.columns)):
                frame[col].plot.bar(ax=ax, rot=0, width=0.7, color=colours[j % len(colours)])
                ax.set_title(str(col), fontsize=9)
                ax.set_xlabel("layer")
                ax.tick_params(labelsize=7)
            axes[0][0].set_ylabel(what)
        else:
            ax = axes[0][0]
            frame.plot.bar(ax=ax, rot=0, width=0.8)
            ax.set_ylabel(what)
            ax.set_xlabel("layer")
            ax.legend(fontsize=7, title=None)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", bbox_inches="tight")
    finally:
        plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f"<img class='chart' src='data:image/png;base64,{data}' alt='{_e(what)} per layer'>"


def _layer_summaries(runs) -> str:
    """Every method's :func:`~neurocore.report.layer_summary`, one table indexed by (layer, method)."""
    import pandas as pd

    from neurocore.report._tables import layer_summary

    frames = {name: layer_summary(ex) for name, ex in runs.items()}
    layers = list(dict.fromkeys(layer for f in frames.values() for layer in f.index))
    rows = [f.loc[[layer]].reset_index().assign(method=name) for layer in layers for name, f in frames.items() if layer in f.index]
    return _frame_html(pd.concat(rows, ignore_index=True).set_index(["layer", "method"]))


def _layer_section(i, layer, units, runs, with_sim, sim, tables, images, probe, model, transform, cap, n_images, size):
    from neurocore.evaluate import top_concept_counts
    from neurocore.report._tables import display_names

    parts = [f"<h2 id='layer{i}'>Layer <code>{_e(layer)}</code> ({len(units)} neurons)</h2>"]
    counted = []
    for name, ex in with_sim.items():
        if layer in ex.layers:
            counts = top_concept_counts(ex, layer, top=50)
            if len(counts):
                counted.append(f"<div><h4>{_e(name)}</h4>{_frame_html(counts.head(10))}</div>")
    if counted:
        parts.append("<h3>Concepts among the top-50 neurons by similarity</h3><div class='row'>" + "".join(counted) + "</div>")
    if sim is not None and (sim["layer"] == layer).any():
        rows = sim[sim["layer"] == layer].drop(columns=["layer"]).set_index("method")
        parts.append("<h3>Simulation</h3>" + _frame_html(rows))
    for heading, frame in tables.items():
        cols = set(frame.columns) | set(frame.index.names)
        if "layer" in cols:
            flat = frame.reset_index() if "layer" in frame.index.names else frame
            rows = flat[flat["layer"].astype(str) == layer]
            if len(rows):
                parts.append(f"<h3>{_e(heading)}</h3>" + _frame_html(rows.drop(columns=["layer"])))

    cards_id = f"cards{i}"
    shown = units[:cap]
    neurons = {name: {int(n.unit): n for n in ex if n.layer == layer} for name, ex in runs.items()}
    names = {}
    for ex in runs.values():
        names.update(display_names(ex))
    note = f"Cards for the first {len(shown)} of {len(units)} neurons (set neurons_with_images to change)." if len(shown) < len(units) else ""
    parts.append(f"<h3>Neurons</h3><p class='meta'>{_e(note)} <span id='{cards_id}-count'>{len(shown)} cards</span></p>")
    parts.append(f"<input class='filter' type='search' placeholder='filter by label, concept, unit' data-cards='{cards_id}' "
                 "oninput='ncFilter(this)'>")

    rows_of = {}
    for unit in shown:
        ref = next((by[unit] for by in neurons.values() if unit in by and by[unit].top_images), None)
        if ref is not None and probe is not None and n_images > 0:
            images.learn(ref)
            rows_of[unit] = list(ref.top_images[:n_images])
    crop_figs, crop_note = _crops(model, layer, probe, transform, images, rows_of)
    if crop_note:
        parts.append(f"<p class='meta note'>{_e(crop_note)}</p>")

    cards = []
    for unit in shown:
        panels = []
        for name, by in neurons.items():
            n = by.get(unit)
            panels.append(f"<div class='method' data-method='{_e(name)}'><h4>{_e(name)}</h4>"
                          + (_panel(runs[name], n, names) if n is not None else "<span class='meta'>not explained</span>")
                          + "</div>")
        body = f"<div class='methods'>{''.join(panels)}</div>"
        if unit in rows_of:
            body += "<div class='meta'>top images</div>" + images.figures(rows_of[unit])
        if unit in crop_figs:
            body += "<div class='meta'>crops around the highest cell</div><div class='thumbs'>" + crop_figs[unit] + "</div>"
        cards.append(f"<div class='neuron-card' data-layer='{_e(layer)}' data-unit='{unit}'><h3>Neuron {unit}</h3>{body}</div>")
    parts.append(f"<div class='cards' id='{cards_id}'>{''.join(cards)}</div>")
    rest = units[len(shown):]
    if rest:  # the neurons without a card: their labels, one row each
        head = "".join(f"<th>{_e(name)}</th>" for name in neurons)
        rows = "".join(
            f"<tr><td class='num'>{u}</td>" + "".join(
                f"<td>{_label_cell(by[u].label or by[u].description, names) if u in by else '–'}</td>" for by in neurons.values()
            ) + "</tr>" for u in rest
        )
        parts.append(f"<details><summary>the other {len(rest)} neurons' labels</summary><table class='rest'><thead><tr>"
                     f"<th>unit</th>{head}</tr></thead><tbody>{rows}</tbody></table></details>")
    return "\n".join(parts)


def _panel(ex, n, names) -> str:
    flags = []
    if n.dead:
        flags.append("<span class='flag dead'>dead</span>")
    if not n.interpretable:
        flags.append("<span class='flag uninterp'>not interpretable</span>")
    label = n.label if n.label else n.description
    out = [f"<div class='label'>{_label_cell(label, names)} {' '.join(flags)}</div>",
           f"<div class='meta'>score {_num(n.similarity)}</div>"]
    method = ex.method
    if n.is_linear:
        out.append(f"<div class='concepts'>weighted sum: {_concepts_cell(n, names)}</div>")
    elif method == "hint":
        out.append(f"<div class='concepts'>concept contributions (Shapley): {_concepts_cell(n, names)}</div>")
    elif method == "www":
        from neurocore.methods.www import minor_concepts

        out.append(f"<div class='concepts'>major: {_concepts_cell(n, names) or 'none'}</div>")
        minor = minor_concepts(ex, n.layer, int(n.unit)) if (ex.params.get("minor") or {}).get(n.layer) is not None else None
        text = ("<span class='meta'>not computed</span>" if minor is None else
                ", ".join(f"{_e(names.get(c, c))} <span class='meta'>{_num(s)}</span>" for c, s in minor) or "none")
        out.append(f"<div class='concepts'>minor: {text}</div>")
    elif n.concepts:
        out.append(f"<div class='concepts'>{_concepts_cell(n, names)}</div>")
    if n.metrics:
        out.append("<div class='meta'>" + " · ".join(f"{_e(k)} {_num(v)}" for k, v in sorted(n.metrics.items())) + "</div>")
    return "".join(out)


def _crops(model, layer, probe, transform, images, rows_of):
    """unit -> crop figures around its highest cell in each of its top images; and a note when there are none."""
    if model is None or probe is None or not rows_of:
        return {}, ""
    from neurocore.probe import crops

    pairs = [(unit, images._index(row)) for unit, rows in rows_of.items() for row in rows]
    try:
        found = crops(model, layer, probe, [i for _, i in pairs], [u for u, _ in pairs], transform=transform)
    except NeurocoreError as exc:
        return {}, f"No crops for layer {layer!r}: {exc}"
    out: dict[int, list] = {}
    for j, (unit, index) in enumerate(pairs):
        out.setdefault(unit, []).append((f"crop of {index}", found.images[j]))
    return {u: figure_strip(figs, images.size) for u, figs in out.items()}, ""


__all__ = ["BASELINES", "ImageMaps", "image_maps", "write_run_report"]
