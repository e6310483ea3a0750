"""The metrics WWW (CVPR 2024, Table 1; ALGORITHMS.md §4, as released) scores final-layer explanations
with, for any method: hit rate, precision / recall / F1 against the class's synonym list, and the mean
CLIP and mpnet text cosine over all (prediction, synonym) pairs."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from neurocore._errors import NeurocoreError

NONE = "none"


@dataclass(frozen=True)
class WWWMetrics:
    """Means over neurons of :func:`www_metrics`, and the per-neuron table.

    Attributes:
        hit_rate, precision, recall, f1, clip_cos, mpnet_cos: means over the scored neurons (NaN for a
            cosine whose encoder was not given).
        num_neurons: neurons scored.
        table: ``pandas.DataFrame``, one row per neuron (``unit, predictions, synonyms, hit, precision,
            recall, f1, clip_cos, mpnet_cos``).
    """

    hit_rate: float
    precision: float
    recall: float
    f1: float
    clip_cos: float
    mpnet_cos: float
    num_neurons: int
    table: object


def _norm(name: str) -> str:
    return " ".join(str(name).replace("_", " ").split()).casefold()


def _predictions(n, use: str) -> list[str]:
    if use == "concepts":
        preds = list(n.ranked_concepts())
    else:
        preds = [n.label] if n.label and n.label != NONE else []
    return preds or [NONE]  # an empty explanation scores as the word "none" (as released)


def _pair_cos(encoder, preds: list[str], gts: list[str], cache: dict, clip_at_one: bool) -> float:
    if encoder is None:
        return math.nan
    missing = [t for t in dict.fromkeys(preds + gts) if t not in cache]
    if missing:
        emb = F.normalize(torch.as_tensor(encoder.encode_texts(missing)).detach().to("cpu", torch.float64), dim=1)
        cache.update(zip(missing, emb))
    p = torch.stack([cache[t] for t in preds])
    g = torch.stack([cache[t] for t in gts])
    cos = p @ g.T
    if clip_at_one:
        cos = cos.clamp(max=1.0)
    return float(cos.mean())


def www_metrics(
    explanations,
    synonyms: Mapping[int, Sequence[str]] | Sequence[Sequence[str]],
    *,
    layer: str | None = None,
    clip_encoder=None,
    mpnet_encoder=None,
    use: str = "auto",
) -> WWWMetrics:
    """Score final-layer explanations against each class's synonym list, as WWW's released evaluation.

    Per neuron (unit c = class c, ground truth ``synonyms[c]``; names compared case-insensitively with
    ``_`` as space):

    * hit: some predicted concept is a synonym;
    * precision ``|set(pred) ∩ set(gt)| / len(pred)`` (the prediction *list*: duplicates count, as
      released), recall ``|set(pred) ∩ set(gt)| / len(gt)``, F1 their harmonic mean (0 when both are 0);
    * CLIP cos: mean over all (prediction, synonym) pairs of the cosine of their CLIP text embeddings,
      each clipped at 1; mpnet cos: the same with the mpnet sentence encoder.

    An explanation with no concept predicts the word ``"none"``.

    Args:
        explanations: :class:`~neurocore.methods.Explanations` of a final layer (unit = class index).
        synonyms: per class index, its synonym list (a mapping or a sequence in class order).
        layer: the layer to score when there are several.
        clip_encoder, mpnet_encoder: objects with ``encode_texts(texts) -> Tensor[M, d]`` (a
            :class:`~neurocore.vlm.VisionLanguageModel`, :class:`~neurocore.evaluate.SentenceTransformerText`);
            None leaves that cosine NaN.
        use: which predictions: ``"concepts"`` (every listed concept: WWW's passing concepts),
            ``"label"`` (the one label: CLIP-Dissect, Linear Explanations), ``"auto"`` (``"concepts"`` for
            WWW, ``"label"`` otherwise).

    Returns:
        :class:`WWWMetrics`.

    Raises:
        NeurocoreError: several layers without ``layer``; a unit without a synonym list; an unknown ``use``.

    Example:
        >>> from neurocore.methods import Explanations, NeuronExplanation
        >>> ex = Explanations("www", (NeuronExplanation("fc", 0, "dog", 1.0, ("dog", "puppy")),
        ...                           NeuronExplanation("fc", 1, "none", float("nan"), label="none")))
        >>> m = www_metrics(ex, [["dog", "domestic dog"], ["cat"]])
        >>> m.hit_rate, m.precision, m.recall
        (0.5, 0.25, 0.25)
    """
    import pandas as pd

    if use not in ("auto", "concepts", "label"):
        raise NeurocoreError(f"use must be 'auto', 'concepts' or 'label'; got {use!r}")
    if use == "auto":
        use = "concepts" if explanations.method == "www" else "label"
    layers = explanations.layers
    if layer is None:
        if len(layers) != 1:
            raise NeurocoreError(f"the explanations have layers {list(layers)}: pass layer= (the final layer)")
        layer = layers[0]
    neurons = explanations.layer(layer).neurons
    table = synonyms if isinstance(synonyms, Mapping) else dict(enumerate(synonyms))
    caches: tuple[dict, dict] = ({}, {})
    rows = []
    for n in neurons:
        if n.unit not in table or not table[n.unit]:
            raise NeurocoreError(f"no synonym list for unit {n.unit}: give synonyms for every class of layer {layer!r}")
        gts = list(dict.fromkeys(_norm(s) for s in table[n.unit]))
        preds = [_norm(p) for p in _predictions(n, use)]
        inter = set(preds) & set(gts)
        precision = len(inter) / len(preds)
        recall = len(inter) / len(gts)
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
        rows.append({
            "unit": n.unit, "predictions": preds, "synonyms": gts, "hit": float(bool(inter)),
            "precision": precision, "recall": recall, "f1": f1,
            "clip_cos": _pair_cos(clip_encoder, preds, gts, caches[0], True),
            "mpnet_cos": _pair_cos(mpnet_encoder, preds, gts, caches[1], False),
        })
    frame = pd.DataFrame(rows, columns=["unit", "predictions", "synonyms", "hit", "precision", "recall", "f1",
                                        "clip_cos", "mpnet_cos"])
    mean = {k: float(frame[k].mean()) if len(frame) else math.nan for k in ("hit", "precision", "recall", "f1", "clip_cos", "mpnet_cos")}
    return WWWMetrics(mean["hit"], mean["precision"], mean["recall"], mean["f1"], mean["clip_cos"], mean["mpnet_cos"],
                      len(frame), frame)
