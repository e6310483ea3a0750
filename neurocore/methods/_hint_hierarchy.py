"""HINT's concept hierarchy: nodes above a set of leaf classes (WordNet hypernyms, or a user's groups)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from neurocore._errors import NeurocoreError, close_matches

# The nodes the paper names (hint.txt, Fig. 3-5), by WordNet 3.0 id.
PAPER_NODES = {
    "whole": "n00003553",
    "animal": "n00015388",
    "vertebrate": "n01471682",
    "mammal": "n01861778",
    "bird": "n01503061",
    "reptile": "n01661091",
    "canine": "n02083346",
    "plant": "n00017222",
    "person": "n00007846",
    "dog": "n02084071",
    "feline": "n02120997",
    "fish": "n02512053",
    "amphibian": "n01627424",
    "invertebrate": "n01905661",
    "artifact": "n00021939",
    "instrumentality": "n03575240",
    "device": "n03183080",
    "structure": "n04341686",
    "conveyance": "n03100490",
    "vehicle": "n04524313",
    "container": "n03094503",
    "covering": "n03122748",
    "food": "n00021265",
    "fruit": "n13134947",
}


@dataclass(frozen=True)
class ConceptNode:
    """One concept of a hierarchy.

    Attributes:
        name: its name (WordNet's head word, or the name a user gave).
        wnid: its WordNet id (``""`` for a user's group).
        leaves: indices of the leaf classes under it (into :attr:`ConceptHierarchy.leaves`), ascending.
    """

    name: str
    wnid: str
    leaves: tuple[int, ...]


@dataclass(frozen=True)
class ConceptHierarchy:
    """Concepts above a set of leaf classes: each with its name, WordNet id and leaf set.

    Build one with :meth:`from_wordnet` (ImageNet-1k, the 200 Tiny-ImageNet classes, any list of
    WordNet ids) or :meth:`from_groups` (any names, e.g. the concept world's shape families).

    Attributes:
        leaves: the leaf classes (wnids or names), in the model's or dataset's class order.
        nodes: the concepts, root first.

    Example:
        >>> h = ConceptHierarchy.from_groups(["a", "b", "c"], {"ab": ["a", "b"], "all": ["a", "b", "c"]})
        >>> h.names, h["ab"].leaves, h.membership(torch.tensor([0, 2])).tolist()
        (('ab', 'all'), (0, 1), [[1.0, 1.0], [0.0, 1.0]])
    """

    leaves: tuple[str, ...]
    nodes: tuple[ConceptNode, ...]

    @property
    def names(self) -> tuple[str, ...]:
        """The nodes' names, in node order."""
        return tuple(n.name for n in self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def __getitem__(self, name: str) -> ConceptNode:
        for n in self.nodes:
            if n.name == name or (n.wnid and n.wnid == name):
                return n
        hint = close_matches(str(name), self.names)
        raise NeurocoreError(
            f"concept {name!r} is not in the hierarchy ({len(self.nodes)} nodes)"
            + (f"; close matches: {', '.join(hint)}" if hint else "")
        )

    def select(self, names: Sequence[str]) -> ConceptHierarchy:
        """The hierarchy restricted to the nodes ``names`` (by name or wnid), in that order.

        Example:
            >>> ConceptHierarchy.from_groups(["a", "b"], {"x": ["a"], "y": ["b"]}).select(["y"]).names
            ('y',)
        """
        return ConceptHierarchy(self.leaves, tuple(self[n] for n in names))

    def membership(self, labels: torch.Tensor) -> torch.Tensor:
        """``Tensor[N, E]`` float32: 1 where image i's leaf class lies under node e.

        Args:
            labels (Tensor[N] int64): leaf class indices into :attr:`leaves`.

        Raises:
            NeurocoreError: labels outside ``[0, len(leaves))``.
        """
        labels = torch.as_tensor(labels, dtype=torch.int64).reshape(-1)
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= len(self.leaves)):
            raise NeurocoreError(f"labels must be leaf indices in [0, {len(self.leaves)}); got {labels.min()}..{labels.max()}")
        table = torch.zeros(len(self.leaves), len(self.nodes))
        for e, node in enumerate(self.nodes):
            table[list(node.leaves), e] = 1.0
        return table[labels]

    def concept_scores(self, labels: torch.Tensor, image_ids: Sequence[str] | None = None):
        """The 0/1 image–concept matrix of labelled images as :class:`~neurocore.concepts.ConceptScores`
        (what HINT's ``explain`` takes as ``scores``)."""
        from neurocore.concepts import ConceptScores

        return ConceptScores.from_tensor(self.membership(labels), self.names, source="hierarchy", image_ids=image_ids)

    @classmethod
    def from_groups(cls, leaves: Sequence[str], groups: Mapping[str, Sequence[str]]) -> ConceptHierarchy:
        """A hierarchy given as ``{node name: its leaf classes}`` (names among ``leaves``).

        Raises:
            NeurocoreError: a leaf name that is not in ``leaves``, an empty group.
        """
        index = {str(c): i for i, c in enumerate(leaves)}
        nodes = []
        for name, members in groups.items():
            missing = [m for m in members if m not in index]
            if missing or not members:
                raise NeurocoreError(
                    f"group {name!r} must list leaf classes among the {len(index)} leaves; unknown: {missing[:5]}"
                    if missing else f"group {name!r} is empty"
                )
            nodes.append(ConceptNode(str(name), "", tuple(sorted({index[m] for m in members}))))
        return cls(tuple(str(c) for c in leaves), tuple(nodes))

    @classmethod
    def from_wordnet(cls, leaf_wnids: Sequence[str], nodes: Sequence[str] | None = None, *,
                     min_leaves: int = 1) -> ConceptHierarchy:
        """The WordNet hypernyms above leaf classes given by WordNet id (shipped WordNet 3.0, no download).

        Args:
            leaf_wnids: the classes' wnids in class order (:func:`~neurocore.concepts.imagenet_wnids`,
                Tiny-ImageNet's ``wnids.txt``, a user's list).
            nodes: the concepts to keep, by name (the paper's: :data:`PAPER_NODES`, e.g. ``"animal"``)
                or wnid; None keeps every ancestor of any leaf (root first) with at least ``min_leaves``
                leaves, named by its head word (a repeated head word gets the wnid appended).
            min_leaves: with ``nodes=None``, the fewest leaves a node must cover.

        Returns:
            :class:`ConceptHierarchy` (a node that covers no leaf is refused when named).

        Raises:
            NeurocoreError: an id that is not a WordNet noun, a named node unknown or covering no leaf.

        Example:
            >>> h = ConceptHierarchy.from_wordnet(["n02084071", "n02121808", "n02958343"], ["animal", "whole"])
            >>> h["animal"].leaves, h["whole"].leaves, h["animal"].wnid
            ((0, 1), (0, 1, 2), 'n00015388')
        """
        from neurocore.concepts import wordnet_hierarchy

        wn = wordnet_hierarchy()
        leaf_wnids = [str(w) for w in leaf_wnids]
        groups = wn.superclasses(leaf_wnids, drop_universal=False, min_classes=1)
        if nodes is None:
            chosen = [(w, wn.name(w)) for w, m in groups.items() if len(m) >= min_leaves]
            counts: dict[str, int] = {}
            for _, n in chosen:
                counts[n] = counts.get(n, 0) + 1
            chosen = [(w, n if counts[n] == 1 else f"{n} ({w})") for w, n in chosen]
        else:
            groups = {k: list(v) for k, v in groups.items()}
            for i, w in enumerate(leaf_wnids):  # a named node may be a leaf class itself
                if i not in groups.setdefault(w, []):
                    groups[w] = sorted(groups[w] + [i])
            chosen = []
            for name in nodes:
                wnid = PAPER_NODES.get(name, name)
                if wnid not in wn:
                    found = [w for w in wn.find(name) if w in groups]
                    if not found:
                        raise NeurocoreError(
                            f"node {name!r} is neither a known concept name ({', '.join(PAPER_NODES)}), a WordNet id, "
                            "nor the name of an ancestor of the leaves"
                        )
                    wnid = found[0]
                if wnid not in groups:
                    raise NeurocoreError(f"node {name!r} ({wnid}) covers none of the {len(leaf_wnids)} leaf classes")
                chosen.append((wnid, name))
        return cls(tuple(leaf_wnids), tuple(ConceptNode(n, w, tuple(groups[w])) for w, n in chosen))


def concept_hierarchy(leaves: Sequence[str], nodes=None, **options) -> ConceptHierarchy:
    """A :class:`ConceptHierarchy` from leaf WordNet ids (``nodes``: names or wnids, or None for every
    ancestor) or, when ``nodes`` is a mapping ``{name: leaf names}``, from a user's groups.

    Example:
        >>> concept_hierarchy(["n02084071", "n02958343"], ["whole"]).names
        ('whole',)
    """
    if isinstance(nodes, Mapping):
        return ConceptHierarchy.from_groups(leaves, nodes)
    return ConceptHierarchy.from_wordnet(leaves, nodes, **options)
