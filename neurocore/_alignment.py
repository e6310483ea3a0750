"""Do two results describe the same probe images, in the same order?

Every place where an :class:`~neurocore.probe.ActivationStore`, :class:`~neurocore.concepts.ConceptScores`
and a :class:`~neurocore.Split` meet calls :func:`check_same_images`: row i of one must be row i of
the other. Image ids are compared when both sides know them (a store recorded from an image folder,
scores encoded from it, a split drawn for it); otherwise only the numbers of images can be.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from neurocore._errors import NeurocoreError


def image_ids_digest(image_ids: Sequence[str] | None) -> str | None:
    """SHA-256 of an ordered list of image ids (None for no ids).

    Example:
        >>> image_ids_digest(["a.png", "b.png"]) == image_ids_digest(["a.png", "b.png"])
        True
        >>> image_ids_digest(["a.png", "b.png"]) == image_ids_digest(["b.png", "a.png"]), image_ids_digest(())
        (False, None)
    """
    if not image_ids:
        return None
    h = hashlib.sha256()
    for i in image_ids:
        h.update(str(i).encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()


def _rows(obj) -> tuple[int, tuple[str, ...], str | None]:
    """(number of images, image ids or (), digest of the ids or None) of a store, scores or split."""
    n = int(obj.num_images)
    ids = tuple(getattr(obj, "image_ids", ()) or ())
    digest = image_ids_digest(ids) if ids else getattr(obj, "image_ids_sha256", None)
    return n, ids, digest


def check_same_images(first, second, first_name: str, second_name: str, fix: str) -> None:
    """Raise unless ``first`` and ``second`` hold the same images in the same order.

    Args:
        first, second: objects with ``num_images`` and ``image_ids`` (``()`` when unknown) or
            ``image_ids_sha256`` (a split): :class:`~neurocore.probe.ActivationStore`,
            :class:`~neurocore.concepts.ConceptScores`, :class:`~neurocore.Split`.
        first_name, second_name: how the message names them (``"the activation store"``).
        fix: the sentence telling the user what to do.

    Raises:
        NeurocoreError: different numbers of images; ids that differ (naming the first row that
            differs and both ids); or id digests that differ.

    Example:
        >>> from types import SimpleNamespace as S
        >>> check_same_images(S(num_images=2, image_ids=("a", "b")), S(num_images=2, image_ids=()), "x", "y", "")
        >>> check_same_images(S(num_images=2, image_ids=("a", "b")), S(num_images=2, image_ids=("a", "c")), "x", "y", "fix it")
        Traceback (most recent call last):
        ...
        neurocore._errors.NeurocoreError: x and y list different images: row 1 is 'b' in x but 'c' in y. Both must hold the same images in the same order; fix it
    """
    n1, ids1, d1 = _rows(first)
    n2, ids2, d2 = _rows(second)
    if n1 != n2:
        raise NeurocoreError(
            f"{first_name} has {n1} images but {second_name} has {n2}: both must hold the same images in the same "
            f"order; {fix}"
        )
    if ids1 and ids2:
        if ids1 != ids2:
            row = next(i for i, (a, b) in enumerate(zip(ids1, ids2)) if a != b)
            raise NeurocoreError(
                f"{first_name} and {second_name} list different images: row {row} is {ids1[row]!r} in {first_name} "
                f"but {ids2[row]!r} in {second_name}. Both must hold the same images in the same order; {fix}"
            )
        return
    if d1 is not None and d2 is not None and d1 != d2:
        raise NeurocoreError(
            f"{first_name} and {second_name} were made for different images (image ids digest {d1[:12]} vs "
            f"{d2[:12]}, {n1} images each); {fix}"
        )
