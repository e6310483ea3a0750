"""Summary tables of explanations (one row per layer)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from neurocore._errors import NeurocoreError


def layer_summary(explanations, families: Mapping[str, str] | None = None, top_labels: int = 3):
    """One row per layer: how many neurons, how many are dead, interpretable or unlabelled, the most
    frequent labels and, with ``families``, how many labels fall in each concept family.

    Args:
        explanations: :class:`~neurocore.methods.Explanations`.
        families: concept name -> family name (e.g. ``{"red": "colour", "circle": "shape"}``). A
            label missing from it counts under ``"other"``. None: no family columns.
        top_labels: how many of the most frequent labels to list per layer.

    Returns:
        ``pandas.DataFrame`` indexed by layer (first-appearance order) with columns ``neurons``,
        ``dead``, ``interpretable``, ``unlabelled``, then one column per family (in the order the
        families first appear in ``families``, then ``other`` if used), then ``top_labels`` (text
        ``"label ×count, ..."``; WordNet ids such as ``n01443537`` are shown by their WordNet names,
        see :func:`display_names`).

    Raises:
        NeurocoreError: ``explanations`` is not an Explanations object.

    Example:
        >>> from neurocore.methods import Explanations, NeuronExplanation
        >>> ex = Explanations("demo", (NeuronExplanation("fc", 0, "red", 1.0), NeuronExplanation("fc", 1, "circle", 0.5),
        ...                            NeuronExplanation("fc", 2, "red", 0.2, dead=True, interpretable=False)))
        >>> layer_summary(ex, {"red": "colour", "circle": "shape"}).to_dict("records")
        [{'neurons': 3, 'dead': 1, 'interpretable': 2, 'unlabelled': 0, 'colour': 2, 'shape': 1, 'top_labels': 'red ×2, circle ×1'}]
    """
    import pandas as pd

    from neurocore.methods import Explanations

    if not isinstance(explanations, Explanations):
        raise NeurocoreError(f"explanations must be an Explanations object; got {type(explanations).__name__}")
    family_names = list(dict.fromkeys(families.values())) if families else []
    shown = display_names(explanations)
    rows = []
    uses_other = False
    for layer in explanations.layers:
        neurons = [n for n in explanations if n.layer == layer]
        labels = [n.description for n in neurons if n.description]
        row = {
            "neurons": len(neurons),
            "dead": sum(n.dead for n in neurons),
            "interpretable": sum(n.interpretable for n in neurons),
            "unlabelled": len(neurons) - len(labels),
        }
        if families is not None:
            counts = Counter(families.get(label, "other") for label in labels)
            uses_other |= "other" in counts
            row.update({f: counts.get(f, 0) for f in family_names + ["other"]})
        common = Counter(labels).most_common(top_labels)
        row["top_labels"] = ", ".join(f"{shown.get(label, label)} ×{count}" for label, count in common)
        rows.append(row)
    columns = ["neurons", "dead", "interpretable", "unlabelled"]
    if families is not None:
        columns += family_names + (["other"] if uses_other else [])
    columns.append("top_labels")
    table = pd.DataFrame(rows, index=pd.Index(list(explanations.layers), name="layer"))
    return table.reindex(columns=columns)


def display_names(explanations) -> dict[str, str]:
    """How tables and reports show the labels and concepts of ``explanations``: WordNet ids (class
    folders such as ``n01443537``) by their WordNet names (``"goldfish"``), kept distinct
    (:func:`neurocore.concepts.display_class_names`); other names as they are.

    Returns:
        ``{name: shown}`` for every description and concept of the explanations.

    Example:
        >>> from neurocore.methods import Explanations, NeuronExplanation
        >>> display_names(Explanations("x", (NeuronExplanation("fc", 0, "n01443537", 1.0), NeuronExplanation("fc", 1, "red", 1.0))))
        {'n01443537': 'goldfish', 'red': 'red'}
    """
    from neurocore.concepts import display_class_names

    names = list(dict.fromkeys(x for n in explanations for x in (n.description, *n.concepts) if x))
    return dict(zip(names, display_class_names(names)))
