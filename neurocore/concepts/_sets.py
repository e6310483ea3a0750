"""Concept sets: the built-in lists shipped with neurocore, user files and user sequences.

The built-in data and where it came from are described in ``neurocore/concepts/data/PROVENANCE.md``.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from neurocore._errors import NeurocoreError, close_matches

DATA_DIR = Path(__file__).resolve().parent / "data"


def _data_lines(name: str) -> list[str]:
    return (DATA_DIR / name).read_text(encoding="utf-8").splitlines()


@functools.cache
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k WordNet ids in standard class order (sorted).

    Class index ``i`` of an ImageNet-1k classifier is ``imagenet_wnids()[i]``; each id is
    ``"n"`` + the 8-digit WordNet 3.0 noun offset, so it resolves in :func:`wordnet_hierarchy`.

    Example:
        >>> wnids = imagenet_wnids()
        >>> len(wnids), wnids[0], list(wnids) == sorted(wnids)
        (1000, 'n01440764', True)
    """
    return tuple(_data_lines("imagenet_wnids.txt"))


@functools.cache
def _imagenet_full() -> tuple[str, ...]:
    return tuple(line.strip() for line in _data_lines("imagenet_classes.txt"))


@functools.cache
def _imagenet_short() -> tuple[str, ...]:
    full = _imagenet_full()
    first = [s.split(",")[0].strip() for s in full]
    counts: dict[str, int] = {}
    for f in first:
        counts[f] = counts.get(f, 0) + 1
    # Two classes share a first synonym ("crane" the bird and the machine): a concept set needs
    # distinct names in class order, so those classes keep their full, distinct class strings.
    return tuple(f if counts[f] == 1 else s for f, s in zip(first, full))


def imagenet_class_names(full: bool = False) -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in class order.

    Args:
        full: False (default): one short name per class, the first synonym of the class string
            (``"tench"``), or the full class string where two classes share a first synonym
            (``"crane, bird"`` and ``"crane, machine"``; ``"maillot"`` and ``"maillot, tank suit"``),
            so the 1000 names are distinct. True: the full class strings with all synonyms
            (``"tench, Tinca tinca"``), what CLIP-Dissect's evaluation compares labels against.

    Example:
        >>> imagenet_class_names()[0], imagenet_class_names(full=True)[0]
        ('tench', 'tench, Tinca tinca')
        >>> imagenet_class_names()[134], imagenet_class_names()[517]
        ('crane, bird', 'crane, machine')
    """
    return _imagenet_full() if full else _imagenet_short()


@functools.cache
def _places365() -> tuple[str, ...]:
    names = []
    for line in _data_lines("categories_places365.txt"):
        path = line.split(" ")[0]  # "/a/apartment_building/outdoor 8" -> "/a/apartment_building/outdoor"
        names.append(" ".join(path.split("/")[2:]).replace("_", " "))
    return tuple(names)


def _wordnet_nouns() -> list[str]:
    from neurocore.concepts._wordnet import wordnet_hierarchy

    hierarchy = wordnet_hierarchy()
    return [hierarchy.name(w) for w in hierarchy.wnids]


_BUILTINS: dict[str, tuple[Callable[[], Iterable[str]], str]] = {
    "20k": (lambda: _data_lines("20k.txt"), "20,000 most common English words (CLIP-Dissect's default)"),
    "imagenet": (imagenet_class_names, "1000 ImageNet-1k class names, in class order"),
    "broden": (lambda: _data_lines("broden.txt"), "Broden concept names (1,153)"),
    "places365": (_places365, "365 Places365 scene categories, in class order"),
    "wordnet_nouns": (_wordnet_nouns, "first lemma of every WordNet 3.0 noun synset (67,893 distinct)"),
}


def builtin_concept_sets() -> list[str]:
    """Names of the concept sets shipped with neurocore (see ``data/PROVENANCE.md`` for each).

    Example:
        >>> builtin_concept_sets()
        ['20k', 'imagenet', 'broden', 'places365', 'wordnet_nouns']
    """
    return list(_BUILTINS)


def _clean(items: Iterable[str], what: str, warn: bool) -> list[str]:
    seen: dict[str, None] = {}
    repeated = 0
    for item in items:
        item = item.strip()
        if not item:
            # Blank lines are dropped rather than kept as "" concepts: an empty line in the middle
            # of a file must not shift the names of the concepts after it.
            continue
        if item in seen:
            repeated += 1
        else:
            seen[item] = None
    if not seen:
        raise NeurocoreError(
            f"the concept set {what} is empty (no non-blank entries); give at least one concept"
        )
    if repeated and warn:
        warnings.warn(
            f"the concept set {what} repeats {repeated} name(s); each is kept once, at its first position",
            stacklevel=3,
        )
    return list(seen)


def load_concepts(source: str | os.PathLike | Sequence[str]) -> list[str]:
    """Resolve a concept set to a list of distinct, non-blank names.

    Args:
        source: one of

            * a built-in set's name (:func:`builtin_concept_sets`: ``"20k"``, ``"imagenet"``,
              ``"broden"``, ``"places365"``, ``"wordnet_nouns"``); a built-in name wins over a file
              of the same name in the working folder (write ``"./20k"`` for the file);
            * a path (``str`` or ``os.PathLike``) to a UTF-8 text file with one concept per line;
            * a sequence of strings (list, tuple...).

    Returns:
        The concepts in their original order, each stripped of surrounding whitespace, blank
        entries dropped, and repeated names kept once at their first position (a warning gives the
        count for files and sequences; the built-in sets are documented in ``data/PROVENANCE.md``).

    Raises:
        NeurocoreError: an unknown name that is no file either, an unreadable file, an entry that is
            not a string, or a set with no non-blank entry.

    Example:
        >>> load_concepts(["dog", " cat ", ""])
        ['dog', 'cat']
        >>> len(load_concepts("imagenet")), load_concepts("imagenet")[:2]
        (1000, ['tench', 'goldfish'])
    """
    if isinstance(source, str) and source in _BUILTINS:
        return _clean(_BUILTINS[source][0](), repr(source), warn=False)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            near = close_matches(str(source), _BUILTINS)
            hint = f" (did you mean {', '.join(repr(n) for n in near)}?)" if near else ""
            raise NeurocoreError(
                f"unknown concept set {str(source)!r}{hint}: give a built-in name "
                f"({', '.join(_BUILTINS)}), a path to a text file with one concept per line "
                "(no such file exists), or a list of strings"
            )
        if path.is_dir():
            raise NeurocoreError(f"concept file {str(path)!r} is a folder; give a text file with one concept per line")
        try:
            # utf-8-sig: a byte-order mark written by some editors must not stick to the first concept
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise NeurocoreError(
                f"cannot read concept file {str(path)!r} ({type(exc).__name__}: {exc}); give a readable "
                "UTF-8 text file with one concept per line"
            ) from None
        return _clean(text.splitlines(), f"in file {str(path)!r}", warn=True)
    if isinstance(source, (bytes, bytearray)) or not isinstance(source, Iterable):
        raise NeurocoreError(
            f"concepts must be a built-in set name, a file path or a sequence of strings; got {type(source).__name__}"
        )
    items = list(source)
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise NeurocoreError(f"concept {i} is a {type(item).__name__} ({item!r}); every concept must be a string")
    return _clean(items, f"given ({len(items)} entries)", warn=True)
