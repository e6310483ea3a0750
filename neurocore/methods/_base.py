"""The method contract, the result types every explanation method returns, and the registry.

The contract (STYLE.md §2). A method is a class that

* takes its **settings** as explicit keyword arguments of ``__init__``, which only stores them (no
  work, no validation: ``explain`` validates). :func:`register_method` makes a misspelt setting an
  :class:`UnknownSettingError` (a ``TypeError`` and a :class:`~neurocore.NeurocoreError`) that names
  the close matches;
* declares the inputs its verb needs in the class attribute ``needs``: a subset of
  :data:`METHOD_INPUTS`. ``{"store", "scores"}`` for methods that read recorded activations and an
  image–concept matrix only (CLIP-Dissect, Linear Explanations); methods that run the network
  (HINT, WWW: layer gradients, spatial maps, crops) add ``"model"``, ``"probe"`` and, when the probe
  yields PIL images, ``"transform"``;
* validates its settings in ``check_settings()`` (no work; raises :class:`~neurocore.NeurocoreError`
  naming the setting), which ``explain`` calls and :func:`neurocore.run_methods` calls for every method
  before recording;
* has one verb::

      explain(store, scores, layers=None, *, model=None, probe=None, transform=None, progress=False) -> Explanations

  ``store`` (:class:`~neurocore.probe.ActivationStore`) and ``scores``
  (:class:`~neurocore.concepts.ConceptScores`) must hold the same images in the same order (checked
  with :func:`neurocore._alignment.check_same_images`); ``layers`` picks layers of the store (None:
  all); ``model``/``probe``/``transform`` are passed when ``needs`` names them (the probe is the
  dataset the store was recorded from: ``store.dataset_indices`` maps rows to its indices). A method
  that does not need them accepts and ignores them, so a caller (the CLI, the common tests) can call
  every registered method alike. The verb never mutates its inputs, removes every hook it adds, and
  gives the same output for the same inputs and settings (randomness takes a ``seed`` setting);
* returns :class:`Explanations`: one :class:`NeuronExplanation` per neuron of every explained layer,
  with ``label`` set (the one concept metrics compare), top images traceable to the probe's files
  (``top_dataset_indices``, ``top_image_ids``) and ``params`` holding the settings and
  :func:`probe_identity` of the store.

Methods register themselves by name with :func:`register_method` so the CLI and the common tests
(``python_tests/test_methods_common.py``) can iterate them.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from neurocore._alignment import image_ids_digest
from neurocore._errors import NeurocoreError, close_matches
from neurocore._io import atomic_write, jsonable, read_meta, read_result, write_result

# The authors' CSV format starts with these columns (CLIP-Dissect's `layer, unit, description, similarity`).
CSV_COLUMNS = ("layer", "unit", "description", "similarity")
_FORMAT_VERSION = 2  # 2: label, top_dataset_indices, top_image_ids, the common result header
_LIST_COLUMNS = ("concepts", "scores", "top_images", "top_dataset_indices", "top_image_ids")

# What a method's ``explain`` may need (its class attribute ``needs`` is a subset).
METHOD_INPUTS = frozenset({"store", "scores", "model", "probe", "transform"})


@dataclass(frozen=True)
class NeuronExplanation:
    """What one neuron does, according to one method.

    Attributes:
        layer: the layer's module name (as ``model.named_modules()`` spells it).
        unit: the neuron's index in that layer (channel).
        description: the explanation as text ("" when the method gives none, e.g. a dead neuron).
            CLIP-Dissect: the label; Linear Explanations: the weighted sum
            (:func:`~neurocore.methods.linear.describe_linear`).
        similarity: the method's score of ``description`` (CLIP-Dissect: the similarity function's
            value; Linear Explanations: the validation correlation; NaN when there is no description).
        concepts: ranked concepts. CLIP-Dissect: the top concepts by score; Linear Explanations: the
            selected concepts in selection order.
        scores: one number per concept. CLIP-Dissect: their similarity scores; Linear Explanations:
            their least-squares weights (see :attr:`is_linear`).
        bias: the intercept of a linear explanation (0 otherwise).
        is_linear: whether ``concepts``/``scores`` are a weighted sum ``bias + Σ scores[j]·concept_j``
            (Linear Explanations). Otherwise the explanation is the single label, ``1·description``.
        interpretable: whether the score passes the method's interpretability cutoff.
        dead: max activation < 0.01 over the probe set; each method documents what it gives such
            neurons.
        top_images: the neuron's most activating images, best first, as **rows** of the
            :class:`~neurocore.probe.ActivationStore` it was explained from (and of the
            :class:`~neurocore.concepts.ConceptScores` aligned with it). Rows skip unreadable images,
            so they are probe dataset indices only when nothing was skipped: to find the files, use
            :attr:`top_dataset_indices` or :attr:`top_image_ids`.
        metrics: further per-neuron numbers (e.g. ``val_corr``, ``test_corr``).
        label: the one concept a metric compares (final-layer accuracy, text cosine): CLIP-Dissect
            its label (``description``); Linear Explanations the concept of largest ``|weight|``
            (ties: the first selected); "" when there is none. Default (None): derived so.
        top_dataset_indices: the same images as ``top_images``, as indices of the probe dataset
            (``probe[i]``; ``store.dataset_indices[top_images]``).
        top_image_ids: the same images' ids (``store.image_ids``: for an image folder the path
            relative to its root); ``()`` when the store has no ids (e.g.
            :meth:`~neurocore.probe.ActivationStore.from_tensor` without ``image_ids``).
    """

    layer: str
    unit: int
    description: str
    similarity: float
    concepts: tuple[str, ...] = ()
    scores: tuple[float, ...] = ()
    bias: float = 0.0
    is_linear: bool = False
    interpretable: bool = True
    dead: bool = False
    top_images: tuple[int, ...] = ()
    metrics: Mapping[str, float] = field(default_factory=dict)
    label: str | None = None
    top_dataset_indices: tuple[int, ...] = ()
    top_image_ids: tuple[str, ...] = ()

    def __post_init__(self):
        if self.label is None:
            object.__setattr__(self, "label", _default_label(self))

    def linear_terms(self) -> tuple[tuple[str, float], ...]:
        """The explanation as weighted concepts ``((concept, weight), ...)`` for simulation.

        A single-label explanation is ``((description, 1.0),)`` (ALGORITHMS.md §2); none is ``()``.
        """
        if self.is_linear:
            return tuple(zip(self.concepts, self.scores))
        return ((self.description, 1.0),) if self.description else ()

    def ranked_concepts(self) -> tuple[str, ...]:
        """The concepts best first: a linear explanation's by decreasing ``|weight|`` (ties in
        selection order), otherwise ``concepts`` as they are (the method ranked them).

        Example:
            >>> n = NeuronExplanation("l", 0, "0.2·a + 0.9·b", 0.5, ("a", "b"), (0.2, -0.9), is_linear=True)
            >>> n.ranked_concepts(), n.label
            (('b', 'a'), 'b')
        """
        if not self.is_linear:
            return tuple(self.concepts)
        order = sorted(range(len(self.concepts)), key=lambda j: -abs(float(self.scores[j])))
        return tuple(self.concepts[j] for j in order)


def _default_label(n: NeuronExplanation) -> str:
    if not n.is_linear:
        return n.description
    ranked = n.ranked_concepts()
    return ranked[0] if ranked else ""


def top_image_refs(store, rows) -> dict[str, tuple]:
    """``top_images``, ``top_dataset_indices`` and ``top_image_ids`` of the store rows ``rows``
    (best first): the keyword arguments every method passes to :class:`NeuronExplanation`.

    Example:
        >>> import torch
        >>> from neurocore import ActivationStore
        >>> store = ActivationStore.from_tensor(torch.rand(4, 1), image_ids=["a", "b", "c", "d"])
        >>> top_image_refs(store, [2, 0])
        {'top_images': (2, 0), 'top_dataset_indices': (2, 0), 'top_image_ids': ('c', 'a')}
    """
    rows = tuple(int(r) for r in rows)
    indices = store.dataset_indices.tolist() if store.dataset_indices is not None else None
    ids = store.image_ids
    return {
        "top_images": rows,
        "top_dataset_indices": tuple(indices[r] for r in rows) if indices is not None else rows,
        "top_image_ids": tuple(ids[r] for r in rows) if ids else (),
    }


def probe_identity(store) -> dict[str, Any]:
    """What identifies the images a store was recorded over, for :attr:`Explanations.params` ``["probe"]``.

    Returns:
        dict with ``num_images`` (rows), ``image_ids_sha256`` (digest of ``store.image_ids`` in row
        order, :func:`neurocore._alignment.image_ids_digest`; None without ids), ``skipped``
        (``[dataset index, reason]`` of every unreadable image left out) and ``fingerprint`` (the
        recording key's probe fingerprint, e.g. the image folder's, when known).

    Example:
        >>> import torch
        >>> from neurocore import ActivationStore
        >>> store = ActivationStore.from_tensor(torch.rand(5, 2), image_ids=[f"{i}.png" for i in range(5)])
        >>> probe_identity(store)["num_images"], len(probe_identity(store)["image_ids_sha256"])
        (5, 64)
    """
    key = getattr(store, "key", {}) or {}
    return {
        "num_images": int(store.num_images),
        "image_ids_sha256": image_ids_digest(store.image_ids),
        "skipped": [[int(i), str(why)] for i, why in getattr(store, "skipped", ())],
        "fingerprint": key.get("probe_fingerprint") if hasattr(key, "get") else None,
    }


@dataclass(frozen=True)
class Explanations:
    """Per-neuron explanations from one method, for one or more layers.

    Attributes:
        method: the registered method name (``"clip_dissect"``, ``"linear"``, ...).
        neurons: one :class:`NeuronExplanation` per neuron, grouped by layer, units ascending.
        params: the settings that produced them (for provenance; saved with the results), and
            ``"probe"``: :func:`probe_identity` of the store (number of images, digest of their ids,
            the unreadable images skipped).
    """

    method: str
    neurons: tuple[NeuronExplanation, ...]
    params: Mapping[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.neurons)

    def __iter__(self) -> Iterator[NeuronExplanation]:
        return iter(self.neurons)

    def __getitem__(self, index: int) -> NeuronExplanation:
        return self.neurons[index]

    @property
    def layers(self) -> tuple[str, ...]:
        """The layers present, in first-appearance order."""
        return tuple(dict.fromkeys(n.layer for n in self.neurons))

    def layer(self, name: str) -> Explanations:
        """The explanations of one layer only."""
        if name not in self.layers:
            raise NeurocoreError(f"layer {name!r} is not in these explanations; they have: {', '.join(self.layers)}")
        return replace(self, neurons=tuple(n for n in self.neurons if n.layer == name))

    def unit(self, layer: str, unit: int) -> NeuronExplanation:
        """The explanation of one neuron."""
        for n in self.neurons:
            if n.layer == layer and n.unit == unit:
                return n
        raise NeurocoreError(f"no explanation for unit {unit} of layer {layer!r}")

    @property
    def descriptions(self) -> list[str]:
        return [n.description for n in self.neurons]

    @property
    def labels(self) -> list[str]:
        """Every neuron's :attr:`NeuronExplanation.label`."""
        return [n.label for n in self.neurons]

    @property
    def skipped(self) -> list[tuple[int, str]]:
        """``(dataset index, reason)`` of the unreadable probe images left out (from ``params["probe"]``)."""
        probe = self.params.get("probe") or {}
        return [(int(i), str(why)) for i, why in probe.get("skipped", [])]

    def to_pandas(self):
        """One row per neuron: ``layer, unit, description, similarity`` (the authors' CSV columns),
        then ``label, concepts, scores, bias, is_linear, interpretable, dead, top_images,
        top_dataset_indices, top_image_ids`` and one column per metric.

        The sequence columns (``concepts``, ``scores``, ``top_images``, ``top_dataset_indices``,
        ``top_image_ids``) hold JSON text (``'["dog", "cat"]'``; NaN as ``null``), so that the CSV is
        read back exactly by any JSON reader; :meth:`from_pandas` parses them.

        Example:
            >>> ex = Explanations("x", (NeuronExplanation("fc", 0, "dog", 0.5, ("dog", "cat"), (0.5, 0.1)),))
            >>> ex.to_pandas()["concepts"][0]
            '["dog", "cat"]'
        """
        import pandas as pd

        rows = []
        for n in self.neurons:
            row = {k: getattr(n, k) for k in CSV_COLUMNS}
            row.update(
                label=n.label,
                bias=n.bias,
                is_linear=n.is_linear,
                interpretable=n.interpretable,
                dead=n.dead,
            )
            for key in _LIST_COLUMNS:
                row[key] = json.dumps(jsonable(list(getattr(n, key))), ensure_ascii=False)
            row.update(n.metrics)
            rows.append(row)
        columns = list(CSV_COLUMNS) + ["label", "concepts", "scores", "bias", "is_linear", "interpretable", "dead",
                                       "top_images", "top_dataset_indices", "top_image_ids"]
        return pd.DataFrame(rows, columns=columns + sorted({k for n in self.neurons for k in n.metrics}))

    @classmethod
    def from_pandas(cls, table, method: str, params: Mapping[str, Any] | None = None) -> Explanations:
        """Rebuild explanations from :meth:`to_pandas`' table (or ``pandas.read_csv`` of the saved
        ``explanations.csv``): the JSON-text columns are parsed, other columns after ``top_image_ids``
        become metrics.

        Example:
            >>> ex = Explanations("x", (NeuronExplanation("fc", 0, "dog", 0.5, ("dog",), (0.5,), top_images=(3,)),))
            >>> Explanations.from_pandas(ex.to_pandas(), "x").neurons == ex.neurons
            True
        """
        known = set(CSV_COLUMNS) | {"label", "bias", "is_linear", "interpretable", "dead"} | set(_LIST_COLUMNS)
        neurons = []
        for rec in table.to_dict("records"):
            d = {}
            for key in _LIST_COLUMNS:
                value = rec.get(key, "[]")
                value = json.loads(value) if isinstance(value, str) else []
                d[key] = tuple(_float(v) for v in value) if key == "scores" else tuple(value)
            label = rec.get("label")
            neurons.append(
                NeuronExplanation(
                    layer=str(rec["layer"]),
                    unit=int(rec["unit"]),
                    description=_text(rec["description"]),
                    similarity=_float(rec["similarity"]),
                    bias=float(rec.get("bias", 0.0)),
                    is_linear=bool(rec.get("is_linear", False)),
                    interpretable=bool(rec.get("interpretable", True)),
                    dead=bool(rec.get("dead", False)),
                    metrics={k: _float(v) for k, v in rec.items() if k not in known},
                    label=None if label is None else _text(label),
                    **d,
                )
            )
        return cls(method=method, neurons=tuple(neurons), params=dict(params or {}))

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``explanations.json`` (everything; :meth:`load` reads it) and ``explanations.csv``
        (the table of :meth:`to_pandas`) into ``directory`` (created if needed). Returns the folder."""
        directory = Path(directory)
        meta = {
            "method": self.method,
            "params": jsonable(self.params),
            "neurons": [jsonable(asdict(n)) for n in self.neurons],
        }
        write_result(directory / "explanations.json", "explanations", _FORMAT_VERSION, meta)
        table = self.to_pandas()
        atomic_write(directory / "explanations.csv", lambda p: table.to_csv(p, index=False))
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Explanations:
        """Read what :meth:`save` wrote (also format 1 of earlier versions)."""
        path = Path(directory) / "explanations.json"
        if not path.is_file():
            raise NeurocoreError(f"{path} does not exist: pass the folder that Explanations.save() wrote")
        payload = read_meta(path, "explanations", "Explanations")
        if "format" not in payload and payload.get("format_version") == 1:
            payload = {**payload, "format": "neurocore.explanations"}  # format 1 had no kind header
        payload, _ = read_result(path, "explanations", (1, _FORMAT_VERSION), what="Explanations", meta=payload)
        names = {f.name for f in fields(NeuronExplanation)}
        neurons = []
        for d in payload["neurons"]:
            d = {k: v for k, v in d.items() if k in names}
            for key in _LIST_COLUMNS:
                d[key] = tuple(d.get(key, ()))
            d["similarity"] = _float(d["similarity"])
            d["scores"] = tuple(_float(s) for s in d["scores"])
            d["metrics"] = {k: _float(v) for k, v in d["metrics"].items()}
            neurons.append(NeuronExplanation(**d))
        return cls(method=payload["method"], neurons=tuple(neurons), params=payload["params"])


def load(directory: str | os.PathLike):
    """Load whatever neurocore result a folder holds: :class:`Explanations`,
    :class:`~neurocore.probe.ActivationStore`, :class:`~neurocore.concepts.ConceptScores`,
    :class:`~neurocore.Split` (its folder or JSON file), or
    :class:`~neurocore.evaluate.SimulationScores`.

    Example:
        >>> import tempfile
        >>> ex = Explanations("x", (NeuronExplanation("fc", 0, "dog", 0.5),))
        >>> load(ex.save(tempfile.mkdtemp())).neurons == ex.neurons
        True
    """
    from neurocore._io import load_any

    return load_any(directory)


def _float(value) -> float:
    return math.nan if value is None else float(value)


def _text(value) -> str:
    # pandas reads an empty CSV cell as NaN
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


# ----------------------------------------------------------------------------------------------
# Registry

_METHODS: dict[str, type] = {}


class UnknownSettingError(NeurocoreError, TypeError):
    """A method was given a setting its ``__init__`` does not have (a ``TypeError``, as Python's own,
    and a :class:`~neurocore.NeurocoreError`); the message names the close matches."""


def _checked_init(cls):
    """Wrap ``cls.__init__`` so that an unknown keyword names its close matches (the signature
    stays explicit: ``inspect.signature(cls)`` shows the settings)."""
    init = cls.__init__
    if getattr(init, "_neurocore_checked", False):
        return
    sig = inspect.signature(init)
    if any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
        return  # a method that takes **kwargs checks them itself
    settings = [p for p in sig.parameters if p != "self"]

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        unknown = [k for k in kwargs if k not in settings]
        if unknown:
            parts = []
            for k in unknown:
                hint = close_matches(k, settings, n=3)
                parts.append(f"{k!r}" + (f" (did you mean {', '.join(repr(h) for h in hint)}?)" if hint else ""))
            raise UnknownSettingError(
                f"{cls.__name__} has no setting {', '.join(parts)}; its settings are: {', '.join(settings)}"
            )
        init(self, *args, **kwargs)

    __init__._neurocore_checked = True
    cls.__init__ = __init__


def register_method(name: str):
    """Class decorator: make a method available by ``name`` (CLI, :func:`get_method`, common tests).

    Re-registering a class of the same module and qualified name replaces the old one (reloading
    the module, e.g. notebook autoreload, defines the class anew); another class under a taken
    name raises.

    Raises:
        NeurocoreError: ``name`` is taken by another class; the class declares inputs outside
            :data:`METHOD_INPUTS`.

    Example:
        >>> @register_method("clip_dissect")  # the name is taken by another class
        ... class Mine:
        ...     pass
        Traceback (most recent call last):
        neurocore._errors.NeurocoreError: a method named 'clip_dissect' is already registered (...)...
    """

    def decorate(cls):
        old = _METHODS.get(name)
        if old is not None and old is not cls and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
            raise NeurocoreError(
                f"a method named {name!r} is already registered ({old.__module__}.{old.__qualname__}); "
                f"register {cls.__module__}.{cls.__qualname__} under another name"
            )
        needs = frozenset(getattr(cls, "needs", {"store", "scores"}))
        if not needs <= METHOD_INPUTS:
            raise NeurocoreError(
                f"{cls.__qualname__}.needs names unknown inputs {sorted(needs - METHOD_INPUTS)}; "
                f"the inputs are: {', '.join(sorted(METHOD_INPUTS))}"
            )
        cls.needs = needs
        cls.name = name
        _checked_init(cls)
        _METHODS[name] = cls
        return cls

    return decorate


def get_method(name: str) -> type:
    """The method class registered under ``name``.

    Example:
        >>> get_method("clip_dissect").name
        'clip_dissect'
    """
    try:
        return _METHODS[name]
    except KeyError:
        hint = close_matches(str(name), _METHODS)
        raise NeurocoreError(
            f"unknown method {name!r}; registered methods: {', '.join(sorted(_METHODS))}"
            + (f" (did you mean {hint[0]!r}?)" if hint else "")
        ) from None


def list_methods() -> list[str]:
    """The registered method names, sorted.

    Example:
        >>> {"clip_dissect", "linear"} <= set(list_methods())
        True
    """
    return sorted(_METHODS)
