"""LE(Label)'s concept matrix: one-hot class columns plus WordNet superclass columns.

Linear Explanations (Oikarinen et al., ICML 2024, §3.1 "Label"; ALGORITHMS.md §2) can use labelled data
directly as the concept activation matrix ``P``: one column per class (1 when the image is of that
class) and one per WordNet superclass of the classes (1 when the image's class lies under it, i.e. the
sum of the member classes' one-hot columns). The same matrix is the multi-label target of
:func:`~neurocore.concepts.calibrate`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace

import torch

from neurocore._errors import NeurocoreError
from neurocore.concepts._scores import ConceptScores

SUPERCLASS_SUFFIX = " (superclass)"


def label_concept_matrix(
    labels: torch.Tensor,
    class_wnids: Sequence[str],
    hierarchy=None,
    class_names: Sequence[str] | None = None,
    drop_redundant: bool = True,
) -> ConceptScores:
    """The LE(Label) concept matrix of a labelled probe set.

    Columns ``0..C-1`` are the classes (one-hot of ``labels``), in the order of ``class_wnids``; the
    columns after them are the WordNet superclasses of those classes that the hierarchy reports
    (``hierarchy.superclasses(class_wnids, drop_universal=True)``, in its order). A superclass column
    is 1 for an image whose class lies under it, which is the sum of its members' one-hot columns.
    Superclasses covering every class (e.g. "entity") carry no information and are dropped. With
    ``drop_redundant`` (the default) two more kinds are dropped, as in the authors' released ImageNet
    superclass list, which holds neither: a superclass with a single member class (its column equals
    that class's column), and all but one of several superclasses with the same member classes (a
    WordNet chain such as "retriever" < "sporting dog" when no other dog is among the classes). Of such
    a chain the most specific superclass is kept (the one the others are ancestors of, when the
    hierarchy has an ``ancestors(wnid)`` method; otherwise the first in the hierarchy's order).

    Concept names are ``class_names`` (default ``hierarchy.name(wnid)``) and ``hierarchy.name`` of each
    superclass. Names must be unique, so duplicates are disambiguated: a superclass whose name equals a
    class's name gets the suffix ``" (superclass)"`` (e.g. "dog (superclass)"), and any name that is
    still shared gets its WordNet id appended, ``"crane (n02012849)"``. The column wnids are kept in
    ``key["column_wnids"]``.

    Args:
        labels (Tensor[N], int64): class index of every probe image, in ``[0, C)``.
        class_wnids: the C class WordNet ids (``"n02084071"``), label ``i`` = ``class_wnids[i]``.
        hierarchy: an object with ``superclasses(class_wnids, drop_universal=True) -> dict[str,
            list[int]]`` (superclass wnid -> indices of its member classes) and ``name(wnid) -> str``;
            default :func:`neurocore.concepts.wordnet_hierarchy` (WordNet 3.0, shipped).
        class_names: C display names of the classes; default ``hierarchy.name`` of each wnid.
        drop_redundant: drop single-member superclasses and superclasses duplicating another's
            members (see above).

    Returns:
        :class:`ConceptScores` with ``scores (Tensor[N, C + S])`` of 0/1 (float32), source
        ``"labels"``.

    Raises:
        NeurocoreError: labels out of range or not 1-D integers, empty or duplicated ``class_wnids``,
            ``class_names`` of the wrong length.

    Example:
        >>> class Tiny:  # cat, dog under "mammal", plus fish; "animal" covers all three and is dropped
        ...     groups = {"n_mammal": [0, 1], "n_animal": [0, 1, 2]}
        ...     names = {"n_mammal": "mammal", "n_animal": "animal", "n_cat": "cat", "n_dog": "dog", "n_fish": "fish"}
        ...     def superclasses(self, wnids, drop_universal=True):
        ...         return {w: m for w, m in self.groups.items() if not (drop_universal and len(m) == len(wnids))}
        ...     def name(self, wnid):
        ...         return self.names[wnid]
        >>> P = label_concept_matrix(torch.tensor([0, 2, 1]), ["n_cat", "n_dog", "n_fish"], hierarchy=Tiny())
        >>> P.concepts
        ('cat', 'dog', 'fish', 'mammal')
        >>> P.scores
        tensor([[1., 0., 0., 1.],
                [0., 0., 1., 0.],
                [0., 1., 0., 1.]])
    """
    class_wnids = [str(w) for w in class_wnids]
    C = len(class_wnids)
    if C == 0:
        raise NeurocoreError("class_wnids is empty: give the WordNet id of every class")
    if len(set(class_wnids)) != C:
        dup = sorted({w for w in class_wnids if class_wnids.count(w) > 1})[:5]
        raise NeurocoreError(f"class_wnids must be unique; duplicated: {dup}")
    labels = _check_labels(labels, C)
    if hierarchy is None:
        from neurocore.concepts import wordnet_hierarchy

        hierarchy = wordnet_hierarchy()
    if class_names is None:
        class_names = [hierarchy.name(w) for w in class_wnids]
    class_names = [str(c) for c in class_names]
    if len(class_names) != C:
        raise NeurocoreError(f"class_names has {len(class_names)} names but class_wnids has {C} ids; give one name per class")

    groups = _superclass_groups(hierarchy, class_wnids, drop_redundant)
    super_wnids = list(groups)
    # Row c of `table` is the concept row of an image of class c: its one-hot, then its superclasses.
    table = torch.zeros(C, C + len(super_wnids), dtype=torch.float32)
    table[:, :C] = torch.eye(C)
    for j, w in enumerate(super_wnids):
        table[torch.tensor(groups[w], dtype=torch.int64), C + j] = 1.0
    scores = table[labels]  # [N, C + S], a gather: no N×C one-hot temporary

    names = _unique_names(class_names, class_wnids, [hierarchy.name(w) for w in super_wnids], super_wnids)
    out = ConceptScores.from_tensor(scores, names, source="labels")
    digest = hashlib.sha256(labels.numpy().tobytes()).hexdigest()[:16]
    return replace(
        out,
        key={
            "kind": "label_concept_matrix",
            "labels_sha256_16": digest,
            "num_classes": C,
            "column_wnids": class_wnids + super_wnids,
            "drop_redundant": bool(drop_redundant),
        },
    )


def _check_labels(labels, C: int) -> torch.Tensor:
    labels = torch.as_tensor(labels)
    if labels.dim() != 1:
        raise NeurocoreError(f"labels must be a Tensor[N] of class indices; got shape {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.is_complex():
        raise NeurocoreError(f"labels must be integer class indices; got dtype {labels.dtype}")
    labels = labels.to("cpu", torch.int64)
    if labels.numel() and (labels.min() < 0 or labels.max() >= C):
        bad = labels[(labels < 0) | (labels >= C)][:5].tolist()
        raise NeurocoreError(
            f"labels must lie in [0, {C}) (one per class of class_wnids); got e.g. {bad}. Unlabelled "
            "images (-1) have no label concepts: drop them from the probe set first"
        )
    return labels


def _superclass_groups(hierarchy, class_wnids: list[str], drop_redundant: bool) -> dict[str, list[int]]:
    raw = hierarchy.superclasses(class_wnids, drop_universal=True)
    C = len(class_wnids)
    groups: dict[str, list[int]] = {}
    for w, members in raw.items():
        members = sorted({int(m) for m in members})
        if any(m < 0 or m >= C for m in members):
            raise NeurocoreError(f"the hierarchy gave superclass {w!r} member indices outside [0, {C}): {members[:5]}")
        # The hierarchy was asked to drop these; checked again because a user's hierarchy may not.
        if len(members) == C or not members:
            continue
        groups[str(w)] = members
    if not drop_redundant:
        return groups
    ancestors = getattr(hierarchy, "ancestors", None)
    by_members: dict[tuple[int, ...], list[str]] = {}
    for w, members in groups.items():
        if len(members) > 1:
            by_members.setdefault(tuple(members), []).append(w)
    keep = set()
    for same in by_members.values():
        chosen = same[0]
        if ancestors is not None and len(same) > 1:
            # The most specific: the one no other member of the group lies under.
            for w in same:
                anc = set(ancestors(w))
                if all(o == w or o in anc for o in same):
                    chosen = w
                    break
        keep.add(chosen)
    return {w: m for w, m in groups.items() if w in keep}


def _unique_names(class_names, class_wnids, super_names, super_wnids) -> list[str]:
    class_set = set(class_names)
    names = list(class_names) + [n + SUPERCLASS_SUFFIX if n in class_set else n for n in super_names]
    wnids = list(class_wnids) + list(super_wnids)
    counts: dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    names = [f"{n} ({w})" if counts[n] > 1 else n for n, w in zip(names, wnids)]
    if len(set(names)) != len(names):  # only if a given name already looked like "x (wnid)"
        raise NeurocoreError("could not make the concept names unique; pass distinct class_names")
    return names
