"""The result type every explanation method returns, and the registry of methods.

A method is a class whose ``__init__`` only stores settings and whose one verb, ``explain``, takes an
:class:`~neurocore.probe.ActivationStore` and a :class:`~neurocore.concepts.ConceptScores` and returns
:class:`Explanations` (STYLE.md §2). Methods register themselves by name with :func:`register_method` so
the CLI and the common tests can iterate them.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from neurocore._errors import NeurocoreError
from neurocore._io import atomic_write, jsonable

# The authors' CSV format starts with these columns (CLIP-Dissect's `layer, unit, description, similarity`).
CSV_COLUMNS = ("layer", "unit", "description", "similarity")
_FORMAT_VERSION = 1


@dataclass(frozen=True)
class NeuronExplanation:
    """What one neuron does, according to one method.

    Attributes:
        layer: the layer's module name (as ``model.named_modules()`` spells it).
        unit: the neuron's index in that layer (channel).
        description: the label ("" when the method gives none, e.g. a dead neuron).
        similarity: the method's score of ``description`` (CLIP-Dissect: the similarity function's
            value; NaN when there is no description).
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
        top_images: probe indices of the neuron's most activating images, best first.
        metrics: further per-neuron numbers (e.g. ``val_corr``, ``test_corr``).
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

    def linear_terms(self) -> tuple[tuple[str, float], ...]:
        """The explanation as weighted concepts ``((concept, weight), ...)`` for simulation.

        A single-label explanation is ``((description, 1.0),)`` (ALGORITHMS.md §2); none is ``()``.
        """
        if self.is_linear:
            return tuple(zip(self.concepts, self.scores))
        return ((self.description, 1.0),) if self.description else ()


@dataclass(frozen=True)
class Explanations:
    """Per-neuron explanations from one method, for one or more layers.

    Attributes:
        method: the registered method name (``"clip_dissect"``, ``"linear"``, ...).
        neurons: one :class:`NeuronExplanation` per neuron, grouped by layer, units ascending.
        params: the settings that produced them (for provenance; saved with the results).
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

    def to_pandas(self):
        """One row per neuron: ``layer, unit, description, similarity`` (the authors' CSV columns),
        then ``concepts, scores, bias, is_linear, interpretable, dead, top_images`` and one column per
        metric."""
        import pandas as pd

        rows = []
        for n in self.neurons:
            row = {k: getattr(n, k) for k in CSV_COLUMNS}
            row.update(
                concepts=list(n.concepts),
                scores=list(n.scores),
                bias=n.bias,
                is_linear=n.is_linear,
                interpretable=n.interpretable,
                dead=n.dead,
                top_images=list(n.top_images),
            )
            row.update(n.metrics)
            rows.append(row)
        columns = list(CSV_COLUMNS) + ["concepts", "scores", "bias", "is_linear", "interpretable", "dead", "top_images"]
        return pd.DataFrame(rows, columns=columns + sorted({k for n in self.neurons for k in n.metrics}))

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``explanations.json`` (everything; :meth:`load` reads it) and ``explanations.csv``
        (the table of :meth:`to_pandas`) into ``directory`` (created if needed). Returns the folder."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        payload = {
            "format_version": _FORMAT_VERSION,
            "method": self.method,
            "params": jsonable(self.params),
            "neurons": [jsonable(asdict(n)) for n in self.neurons],
        }
        text = json.dumps(payload, indent=1, allow_nan=True)
        atomic_write(directory / "explanations.json", lambda p: p.write_text(text))
        table = self.to_pandas()
        atomic_write(directory / "explanations.csv", lambda p: table.to_csv(p, index=False))
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Explanations:
        """Read what :meth:`save` wrote."""
        path = Path(directory) / "explanations.json"
        if not path.is_file():
            raise NeurocoreError(f"{path} does not exist: pass the folder that Explanations.save() wrote")
        payload = json.loads(path.read_text())
        if payload.get("format_version") != _FORMAT_VERSION:
            raise NeurocoreError(
                f"{path} has format version {payload.get('format_version')}, this neurocore reads {_FORMAT_VERSION}"
            )
        neurons = []
        for d in payload["neurons"]:
            d = dict(d)
            for key in ("concepts", "scores", "top_images"):
                d[key] = tuple(d[key])
            d["similarity"] = _float(d["similarity"])
            d["scores"] = tuple(_float(s) for s in d["scores"])
            d["metrics"] = {k: _float(v) for k, v in d["metrics"].items()}
            neurons.append(NeuronExplanation(**d))
        return cls(method=payload["method"], neurons=tuple(neurons), params=payload["params"])


def load(directory: str | os.PathLike) -> Explanations:
    """Read explanations saved with :meth:`Explanations.save`."""
    return Explanations.load(directory)


def _float(value) -> float:
    return math.nan if value is None else float(value)


# ----------------------------------------------------------------------------------------------
# Registry

_METHODS: dict[str, type] = {}


def register_method(name: str):
    """Class decorator: make a method available by ``name`` (CLI, :func:`get_method`, common tests)."""

    def decorate(cls):
        if name in _METHODS and _METHODS[name] is not cls:
            raise NeurocoreError(f"a method named {name!r} is already registered ({_METHODS[name].__qualname__})")
        cls.name = name
        _METHODS[name] = cls
        return cls

    return decorate


def get_method(name: str) -> type:
    """The method class registered under ``name``."""
    try:
        return _METHODS[name]
    except KeyError:
        raise NeurocoreError(f"unknown method {name!r}; registered methods: {', '.join(sorted(_METHODS))}") from None


def list_methods() -> list[str]:
    """The registered method names, sorted."""
    return sorted(_METHODS)
