"""The WordNet 3.0 noun hierarchy (shipped with neurocore; no nltk, no download).

Built from WordNet's ``data.noun`` by ``scripts/build_wordnet_data.py``; the table and its licence are
in ``neurocore/concepts/data`` (``wordnet_nouns.tsv.gz``, ``WORDNET_LICENSE.txt``, ``PROVENANCE.md``).
"""

from __future__ import annotations

import functools
import gzip
import re
from collections.abc import Mapping, Sequence
from types import MappingProxyType

from neurocore._errors import NeurocoreError
from neurocore.concepts._sets import DATA_DIR

ENTITY = "n00001740"  # entity.n.01, the root of WordNet's noun hierarchy
_WNID = re.compile(r"n\d{8}")


class WordNetHierarchy:
    """WordNet 3.0 noun synsets: lemmas and hypernym edges, queried by WordNet id.

    A WordNet id (wnid) is ``"n"`` + the synset's 8-digit offset in WordNet 3.0's ``data.noun``
    (``"n02084071"`` = dog.n.01), the convention of ImageNet's class ids. Hypernym edges are
    WordNet's hypernym (``@``) and instance-hypernym (``@i``) pointers together, as nltk's
    ``hypernym_paths()`` follows them; every synset reaches the root ``entity.n.01`` (``"n00001740"``).

    The object is read-only; get the shared instance from :func:`wordnet_hierarchy`.

    Args:
        lemmas: wnid -> its lemma names (spaces for underscores), first = the synset's head word.
        hypernyms: wnid -> its direct hypernyms (hypernyms then instance hypernyms, file order).
        instances: the wnids whose hypernym edges are instance-hypernym pointers.

    Example:
        >>> wn = wordnet_hierarchy()
        >>> wn.name("n02084071"), wn.hypernyms("n02084071")
        ('dog', ('n02083346', 'n01317541'))
        >>> [wn.name(w) for w in wn.paths_to_root("n02084071")[0]][:4]
        ['dog', 'canine', 'carnivore', 'placental']
    """

    __slots__ = ("_lemmas", "_hypernyms", "_instances", "_ancestor_cache", "_lemma_index")

    def __init__(self, lemmas: Mapping[str, Sequence[str]], hypernyms: Mapping[str, Sequence[str]],
                 instances: frozenset[str] = frozenset()):
        set_ = object.__setattr__
        set_(self, "_lemmas", MappingProxyType({w: tuple(v) for w, v in lemmas.items()}))
        set_(self, "_hypernyms", MappingProxyType({w: tuple(hypernyms.get(w, ())) for w in lemmas}))
        set_(self, "_instances", frozenset(instances))
        # Memoised transitive closures: a cache of a pure function of the frozen tables.
        set_(self, "_ancestor_cache", {})
        set_(self, "_lemma_index", None)

    def __setattr__(self, name, value):
        raise AttributeError(f"WordNetHierarchy is read-only; cannot set {name!r}")

    def __len__(self) -> int:
        return len(self._lemmas)

    def __contains__(self, wnid: object) -> bool:
        return isinstance(wnid, str) and wnid in self._lemmas

    def __repr__(self) -> str:
        return f"WordNetHierarchy({len(self)} noun synsets, root {ENTITY} = {self.name(ENTITY)!r})"

    @property
    def wnids(self) -> tuple[str, ...]:
        """Every noun synset's wnid, in offset order."""
        return tuple(self._lemmas)

    def _check(self, wnid) -> str:
        if isinstance(wnid, str) and wnid in self._lemmas:
            return wnid
        if not isinstance(wnid, str) or not _WNID.fullmatch(wnid):
            raise NeurocoreError(
                f"WordNet id must be 'n' followed by the 8-digit synset offset, like 'n02084071' (dog); got {wnid!r}"
            )
        raise NeurocoreError(
            f"WordNet id {wnid!r} is not a WordNet 3.0 noun synset (offsets are of WordNet 3.0's data.noun)"
        )

    def name(self, wnid: str) -> str:
        """The synset's first lemma (its head word), spaces for underscores: ``"n02084071"`` -> ``"dog"``."""
        return self._lemmas[self._check(wnid)][0]

    def lemmas(self, wnid: str) -> tuple[str, ...]:
        """All the synset's lemma names, first = :meth:`name`."""
        return self._lemmas[self._check(wnid)]

    def is_instance(self, wnid: str) -> bool:
        """Whether the synset is an instance (``Einstein``), linked up by instance-hypernym pointers."""
        return self._check(wnid) in self._instances

    def hypernyms(self, wnid: str) -> tuple[str, ...]:
        """The direct hypernyms (hypernym and instance-hypernym pointers); ``()`` for the root."""
        return self._hypernyms[self._check(wnid)]

    def ancestors(self, wnid: str) -> tuple[str, ...]:
        """Every hypernym, transitively, up to and including ``entity`` (``"n00001740"``); not ``wnid``
        itself. Breadth-first order: nearer ancestors first, each listed once."""
        wnid = self._check(wnid)
        cached = self._ancestor_cache.get(wnid)
        if cached is None:
            order: dict[str, None] = {}
            frontier = list(self._hypernyms[wnid])
            while frontier:
                nxt = []
                for h in frontier:
                    if h not in order:
                        order[h] = None
                        nxt.extend(self._hypernyms[h])
                frontier = nxt
            cached = tuple(order)
            self._ancestor_cache[wnid] = cached
        return cached

    def paths_to_root(self, wnid: str) -> list[tuple[str, ...]]:
        """Every hypernym path from ``wnid`` up to the root: each tuple starts with ``wnid`` and ends
        with ``"n00001740"`` (entity); several when a synset has several hypernyms. For the root
        itself: ``[("n00001740",)]``."""
        wnid = self._check(wnid)
        paths: list[tuple[str, ...]] = []
        stack = [(wnid,)]
        while stack:
            path = stack.pop()
            parents = self._hypernyms[path[-1]]
            if not parents:
                paths.append(path)
            # reversed: the stack then yields the paths through the first hypernym first
            stack.extend(path + (p,) for p in reversed(parents))
        return paths

    def find(self, lemma: str) -> tuple[str, ...]:
        """The wnids of the synsets that have ``lemma`` among their lemmas (case-insensitive,
        underscores or spaces), in offset order; ``()`` when none has."""
        if self._lemma_index is None:
            index: dict[str, list[str]] = {}
            for w, names in self._lemmas.items():
                for n in {n.lower() for n in names}:
                    index.setdefault(n, []).append(w)
            object.__setattr__(self, "_lemma_index", {k: tuple(v) for k, v in index.items()})
        return self._lemma_index.get(str(lemma).replace("_", " ").strip().lower(), ())

    def superclasses(self, class_wnids: Sequence[str], drop_universal: bool = True, *,
                     min_classes: int = 1) -> dict[str, list[int]]:
        """Group classes by their WordNet ancestors (Linear Explanations' label-mode superclasses).

        Args:
            class_wnids: the classes' wnids, in class order (e.g. :func:`imagenet_wnids`).
            drop_universal: leave out ancestors that cover every class (``entity``, and for
                ImageNet only ``entity``): their column would be constant.
            min_classes: leave out ancestors with fewer member classes (2 drops the ancestors that
                cover a single class, whose column would copy that class's one-hot column).

        Returns:
            ancestor wnid -> sorted indices (into ``class_wnids``) of the classes under it. The keys are
            the ancestors of any class (a class whose wnid is an ancestor of another class is a key
            too, and counts among its own members); ordered by first appearance when walking the
            classes in order, each along its root-to-class paths (so "entity", "physical entity",
            "object"... come first).

        Raises:
            NeurocoreError: an id that is not a WordNet noun synset, or no classes.

        Example:
            >>> wn = wordnet_hierarchy()
            >>> sup = wn.superclasses(["n02084071", "n02121808", "n02958343"])  # dog, domestic cat, car
            >>> [wn.name(a) for a, members in sup.items() if members == [0, 1]][:3]
            ['living thing', 'organism', 'animal']
        """
        class_wnids = [self._check(w) for w in class_wnids]
        if not class_wnids:
            raise NeurocoreError("class_wnids is empty; give the wnid of every class, in class order")
        if min_classes < 1:
            raise NeurocoreError(f"min_classes must be >= 1; got {min_classes}")
        members: dict[str, list[int]] = {}
        for i, w in enumerate(class_wnids):
            for path in self.paths_to_root(w):
                for a in reversed(path[1:]):  # root first, the class itself excluded here
                    members.setdefault(a, [])
            for a in self.ancestors(w):
                members[a].append(i)
        for i, w in enumerate(class_wnids):
            if w in members:  # a class that is also an ancestor of another class: it is under itself
                members[w].append(i)
        n = len(class_wnids)
        out = {}
        for a, idx in members.items():
            idx = sorted(set(idx))
            if len(idx) < min_classes or (drop_universal and len(idx) == n):
                continue
            out[a] = idx
        return out


def _load_table() -> WordNetHierarchy:
    path = DATA_DIR / "wordnet_nouns.tsv.gz"
    lemmas: dict[str, list[str]] = {}
    hypernyms: dict[str, list[str]] = {}
    instances = set()
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            if line.startswith("#"):
                continue
            wnid, names, hyper, inst = line.rstrip("\n").split("\t")
            lemmas[wnid] = names.split("|")
            hypernyms[wnid] = hyper.split() + inst.split()
            if inst:
                instances.add(wnid)
    return WordNetHierarchy(lemmas, hypernyms, frozenset(instances))


@functools.cache
def wordnet_hierarchy() -> WordNetHierarchy:
    """The WordNet 3.0 noun hierarchy shipped with neurocore (loaded once, then shared).

    Example:
        >>> wn = wordnet_hierarchy()
        >>> len(wn), "n02084071" in wn, wn.name("n00001740")
        (82115, True, 'entity')
    """
    return _load_table()


def wordnet_name(wnid: str) -> str:
    """The readable name of a WordNet noun id: its synset's first lemma, spaces for underscores.

    Args:
        wnid: ``"n"`` + the synset's 8-digit WordNet 3.0 offset (ImageNet's class ids).

    Returns:
        The head word, e.g. ``"goldfish"`` for ``"n01443537"``.

    Raises:
        NeurocoreError: ``wnid`` is not a WordNet id, or not a WordNet 3.0 noun synset.

    Example:
        >>> wordnet_name("n01443537"), wordnet_name("n02124075")
        ('goldfish', 'Egyptian cat')
    """
    return wordnet_hierarchy().name(wnid)


def display_class_names(classes: Sequence[str]) -> tuple[str, ...]:
    """Readable class names for tables and reports: WordNet ids become their WordNet names.

    A name that is a WordNet noun id (an ImageNet/Tiny-ImageNet folder such as ``n01443537``) becomes
    :func:`wordnet_name` of it; every other name (and an id that WordNet 3.0 lacks) stays as it is.
    Names stay distinct: when a converted name equals another class's name, the converted ones get
    their id appended (``"crane (n02012849)"``). The hierarchy is loaded only when some name looks
    like an id.

    Args:
        classes: class names, in class order.

    Returns:
        One readable name per class, in the same order.

    Example:
        >>> display_class_names(["n01443537", "cat", "n02012849", "n03126707"])
        ('goldfish', 'cat', 'crane (n02012849)', 'crane (n03126707)')
    """
    classes = [str(c) for c in classes]
    wn = wordnet_hierarchy() if any(_WNID.fullmatch(c) for c in classes) else None
    names = [wn.name(c) if wn is not None and c in wn else c for c in classes]
    counts: dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    return tuple(f"{n} ({c})" if n != c and counts[n] > 1 else n for n, c in zip(names, classes))
