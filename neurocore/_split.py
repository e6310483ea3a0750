"""A train/val/test split of probe images, bound to the images it was drawn for.

Linear Explanations fits on its train part and picks concepts on its val part; simulation scoring
(:func:`neurocore.evaluate.correlation_score`, :func:`~neurocore.evaluate.ablation_score`) scores on
its test part. A split records how many images it was drawn for and, when known, a digest of their
ids, so that using it with other images is an error rather than a silent mix of rows.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from neurocore._alignment import check_same_images, image_ids_digest
from neurocore._errors import NeurocoreError
from neurocore._io import read_meta, read_result, write_result

__all__ = ["Split", "split_indices"]

_KIND = "split"
_VERSION = 2  # 2: image_ids_sha256 and the common result header; 1: {"format", "version"} only


@dataclass(frozen=True, eq=False)
class Split:
    """A train/val/test split of the probe images.

    Attributes:
        train, val, test (Tensor[n_part], int64): row indices of each part (rows of the
            :class:`~neurocore.probe.ActivationStore` and :class:`~neurocore.concepts.ConceptScores`
            it is used with), ascending, disjoint.
        num_images: N, the number of images the split was drawn for.
        seed: the seed that drew it (None for a split given by hand).
        fractions: the (train, val, test) fractions it was drawn with.
        image_ids_sha256: digest of the ids of the N images (:func:`neurocore._alignment.image_ids_digest`),
            or None when they were not known; checked against the images the split is used with.

    Example:
        >>> s = Split(torch.tensor([0, 2]), torch.tensor([1]), torch.tensor([3]), 4)
        >>> s.check_images(5, "the probe")
        Traceback (most recent call last):
        ...
        neurocore._errors.NeurocoreError: the split was drawn for 4 images but the probe has 5: draw a split for these images with split_indices(5, seed) (or pass the store: split_indices(store, seed))
    """

    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    num_images: int
    seed: int | None = None
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)
    image_ids_sha256: str | None = None

    def __post_init__(self):
        if isinstance(self.num_images, bool) or not isinstance(self.num_images, int) or self.num_images < 0:
            raise NeurocoreError(f"Split num_images must be an integer >= 0; got {self.num_images!r}")
        parts = {}
        for name in ("train", "val", "test"):
            t = torch.as_tensor(getattr(self, name))
            if t.dim() != 1 or t.dtype.is_floating_point or t.dtype == torch.bool:
                raise NeurocoreError(f"split part {name!r} must be a 1-D tensor of image indices; got {t.dtype} {tuple(t.shape)}")
            t = t.to("cpu", torch.int64).clone()
            if t.numel() and (t.min() < 0 or t.max() >= self.num_images):
                raise NeurocoreError(f"split part {name!r} has indices outside [0, {self.num_images})")
            object.__setattr__(self, name, t)
            parts[name] = t
        every = torch.cat(list(parts.values()))
        if every.unique().numel() != every.numel():
            raise NeurocoreError("the split's train, val and test parts must be disjoint and without repeats")
        object.__setattr__(self, "fractions", tuple(float(f) for f in self.fractions))

    def __eq__(self, other) -> bool:
        if not isinstance(other, Split):
            return NotImplemented
        return (
            self.num_images == other.num_images
            and self.image_ids_sha256 == other.image_ids_sha256
            and all(torch.equal(getattr(self, p), getattr(other, p)) for p in ("train", "val", "test"))
        )

    __hash__ = None

    def check_images(self, images, what: str = "the probe set") -> None:
        """Raise unless this split was drawn for ``images``.

        Args:
            images: a number of images, or an object with ``num_images`` and ``image_ids`` (an
                :class:`~neurocore.probe.ActivationStore`, :class:`~neurocore.concepts.ConceptScores`).
            what: how the message names ``images``.

        Raises:
            NeurocoreError: another number of images, or other image ids (by digest), naming both.
        """
        n = images if isinstance(images, int) else int(images.num_images)
        fix = f"draw a split for these images with split_indices({n}, seed) (or pass the store: split_indices(store, seed))"
        if n != self.num_images:
            raise NeurocoreError(f"the split was drawn for {self.num_images} images but {what} has {n}: {fix}")
        if not isinstance(images, int):
            check_same_images(self, images, "the split", what, fix)

    def to_dict(self) -> dict:
        """A JSON-ready dict (what :meth:`save` writes and :meth:`from_dict` reads)."""
        return {
            "format": f"neurocore.{_KIND}",
            "format_version": _VERSION,
            "num_images": int(self.num_images),
            "seed": self.seed,
            "fractions": list(self.fractions),
            "image_ids_sha256": self.image_ids_sha256,
            "train": self.train.tolist(),
            "val": self.val.tolist(),
            "test": self.test.tolist(),
        }

    @classmethod
    def from_dict(cls, d) -> Split:
        """Rebuild a split from :meth:`to_dict` (e.g. ``Split.from_dict(explanations.params["split"])``)."""
        if not isinstance(d, dict) or d.get("format") != f"neurocore.{_KIND}":
            raise NeurocoreError("not a saved split: expected the dict of Split.to_dict() (format 'neurocore.split')")
        version = d.get("format_version", d.get("version"))
        if version not in (1, _VERSION):
            raise NeurocoreError(f"split format version {version}; this neurocore reads 1 and {_VERSION}")
        return cls(
            torch.tensor(d["train"], dtype=torch.int64),
            torch.tensor(d["val"], dtype=torch.int64),
            torch.tensor(d["test"], dtype=torch.int64),
            int(d["num_images"]),
            d.get("seed"),
            tuple(d.get("fractions", (math.nan,) * 3)),
            d.get("image_ids_sha256"),
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write the split as JSON: to ``path`` when it ends in ``.json``, else to ``path/split.json``
        (folders created). Returns the JSON file's path."""
        path = _json_path(path)
        meta = {k: v for k, v in self.to_dict().items() if k not in ("format", "format_version")}
        write_result(path, _KIND, _VERSION, meta)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Split:
        """Read a split written by :meth:`save` (its JSON file, or the folder holding ``split.json``)."""
        path = _json_path(path)
        if not path.is_file():
            raise NeurocoreError(f"split file {str(path)!r} does not exist: pass the path Split.save() wrote")
        meta = read_meta(path, _KIND, "Split")
        if meta.get("format") != f"neurocore.{_KIND}":
            raise NeurocoreError(f"{str(path)!r} is not a saved split: expected the JSON of Split.save() (format 'neurocore.split')")
        if "format_version" in meta:
            meta, _ = read_result(path, _KIND, (_VERSION,), what="Split", meta=meta)
        return cls.from_dict(meta)


def _json_path(path) -> Path:
    path = Path(path)
    return path if path.suffix == ".json" else path / "split.json"


def split_indices(n, seed: int = 0, fractions: Sequence[float] = (0.7, 0.1, 0.2), *, image_ids: Sequence[str] | None = None) -> Split:
    """A seeded random train/val/test split of ``n`` probe images (LE's 70/10/20 split, paper §3.2).

    The images are permuted by ``torch.randperm`` with a CPU generator seeded with ``seed`` (the same on
    every run and platform for a given torch); the first ``round(fractions[0]·n)`` go to train, the next
    ``round(fractions[1]·n)`` to val, the rest to test; each part is then sorted. Save it with
    :meth:`Split.save` to reuse it with another torch.

    Args:
        n: the number of probe images, or the :class:`~neurocore.probe.ActivationStore` /
            :class:`~neurocore.concepts.ConceptScores` to split (its number of images and image ids).
        seed: the generator's seed.
        fractions: (train, val, test), positive, summing to 1.
        image_ids: the ids of the n images (recorded as a digest; default: those of ``n`` when it is a
            store or scores).

    Raises:
        NeurocoreError: fractions malformed, ``n`` too small for every part to hold an image, or
            ``image_ids`` of another length.

    Example:
        >>> s = split_indices(10, seed=0)
        >>> len(s.train), len(s.val), len(s.test)
        (7, 1, 2)
    """
    if not isinstance(n, int):
        if image_ids is None:
            image_ids = tuple(getattr(n, "image_ids", ()) or ())
        n = getattr(n, "num_images", n)
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or any(not (f > 0) for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise NeurocoreError(f"fractions must be three positive numbers (train, val, test) summing to 1; got {fractions}")
    n = int(n)
    if image_ids and len(image_ids) != n:
        raise NeurocoreError(f"image_ids has {len(image_ids)} ids for n={n} images: give one id per image")
    n_train = int(round(fractions[0] * n))
    n_val = int(round(fractions[1] * n))
    if n < 1 or n_train < 1 or n_val < 1 or n - n_train - n_val < 1:
        raise NeurocoreError(f"cannot split {n} images into non-empty parts with fractions {fractions}: give more images")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    return Split(
        perm[:n_train].sort().values,
        perm[n_train : n_train + n_val].sort().values,
        perm[n_train + n_val :].sort().values,
        n,
        int(seed),
        fractions,
        image_ids_digest(image_ids),
    )
