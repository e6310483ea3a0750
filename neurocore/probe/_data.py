"""Probe data: an image-folder dataset and the one batching loop every consumer shares.

Recording activations and encoding images with a vision–language model must see the same images in
the same order, skipping the same unreadable files, so both go through :func:`iter_batches`.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from neurocore._errors import NeurocoreError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")


class ImageFolder(Dataset):
    """Images under ``root``: class sub-folders (``root/<class>/<image>``, labelled by sorted class
    name) or a flat folder of images (no labels).

    Items are ``(image, label)`` with class sub-folders and ``image`` alone for a flat folder; images
    are RGB ``PIL.Image`` objects, or ``transform(image)`` when a transform is given. Files are
    listed once, sorted, so the order is deterministic; :meth:`fingerprint` digests the list with
    sizes and modification times (the cache key's "dataset identity and order").

    Args:
        root: the folder.
        transform: applied to each PIL image (e.g. a model's preprocessing); None keeps PIL images.
        extensions: file name endings counted as images (case-insensitive).

    Raises:
        NeurocoreError: ``root`` is not a folder or holds no images.

    Example:
        >>> import tempfile, PIL.Image
        >>> root = Path(tempfile.mkdtemp())
        >>> for c in ("cat", "dog"):
        ...     (root / c).mkdir()
        ...     PIL.Image.new("RGB", (8, 8)).save(root / c / "a.png")
        >>> ds = ImageFolder(root)
        >>> len(ds), ds.classes, ds[1][1]
        (2, ('cat', 'dog'), 1)
    """

    def __init__(self, root: str | os.PathLike, transform: Callable | None = None, extensions=IMAGE_EXTENSIONS):
        self.root = Path(root)
        self.transform = transform
        if not self.root.is_dir():
            raise NeurocoreError(f"probe folder {str(self.root)!r} does not exist or is not a folder")
        exts = tuple(e.lower() for e in extensions)
        subdirs = sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        files: list[Path] = []
        labels: list[int] = []
        if subdirs:
            for label, d in enumerate(subdirs):
                found = sorted(p for p in d.rglob("*") if p.is_file() and p.name.lower().endswith(exts))
                files += found
                labels += [label] * len(found)
            self.classes: tuple[str, ...] | None = tuple(d.name for d in subdirs)
            self.labels: list[int] | None = labels
        else:
            files = sorted(p for p in self.root.iterdir() if p.is_file() and p.name.lower().endswith(exts))
            self.classes = None
            self.labels = None
        if not files:
            raise NeurocoreError(
                f"no images ({', '.join(exts)}) found in {str(self.root)!r} or its sub-folders"
            )
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        import PIL.Image

        with PIL.Image.open(self.files[index]) as img:
            image = img.convert("RGB")
        if self.transform is not None:
            image = self.transform(image)
        return image if self.labels is None else (image, self.labels[index])

    def image_id(self, index: int) -> str:
        """The file's path relative to ``root`` (the row's identifier in results)."""
        return self.files[index].relative_to(self.root).as_posix()

    def fingerprint(self) -> str:
        """Digest of the file list (relative paths, sizes, modification times) and class names."""
        h = hashlib.sha256()
        for f in self.files:
            st = f.stat()
            h.update(f"{f.relative_to(self.root).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        h.update(repr(self.classes).encode())
        return h.hexdigest()

    def __repr__(self) -> str:
        return f"ImageFolder(root={str(self.root)!r}, images={len(self)}, transform={self.transform!r})"


@dataclass(frozen=True)
class ProbeBatch:
    """A batch of readable probe images.

    Attributes:
        images (Tensor[B, ...]): the (transformed) images, stacked.
        labels (Tensor[B], int64) or None: labels when the dataset yields ``(image, label)``.
        indices (Tensor[B], int64): the dataset indices of these images.
        ids: one identifier per image (``dataset.image_id(i)`` when it exists, else ``str(i)``).
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    indices: torch.Tensor
    ids: tuple[str, ...]


class _Guarded(Dataset):
    """Wraps a probe dataset: applies the transform, and turns an unreadable item into a marker."""

    def __init__(self, dataset, transform):
        self.dataset = dataset
        self.transform = transform

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        try:
            item = self.dataset[index]
        except (OSError, ValueError, SyntaxError) as exc:  # PIL raises these for truncated/corrupt files
            return ("unreadable", index, f"{type(exc).__name__}: {exc}")
        image, label = (item[0], item[1]) if isinstance(item, (tuple, list)) else (item, None)
        if self.transform is not None:
            image = self.transform(image)
        if not isinstance(image, torch.Tensor):
            raise NeurocoreError(
                f"probe item {index} is a {type(image).__name__}, not a tensor: pass `transform=` "
                "(the model's preprocessing) or give a dataset that yields tensors"
            )
        return ("ok", index, image, label)


def _collate(items):
    return items


def iter_batches(
    probe,
    batch_size: int = 64,
    transform: Callable | None = None,
    num_workers: int = 0,
    start: int = 0,
    skipped: list | None = None,
) -> Iterator[ProbeBatch]:
    """Iterate a probe dataset in order, in batches, skipping unreadable images.

    Args:
        probe: a ``torch.utils.data.Dataset`` (map-style) yielding images, or ``(image, label)``.
            Images are tensors, or anything ``transform`` turns into one (PIL images).
        batch_size: images per batch.
        transform: applied to each image before stacking.
        num_workers: DataLoader worker processes.
        start: the first dataset index (to resume an interrupted run).
        skipped: if given, ``(index, reason)`` of every unreadable image is appended to it; otherwise
            one warning with the count is issued at the end.

    Yields:
        :class:`ProbeBatch` objects, in dataset order.

    Example:
        >>> data = [(torch.rand(3, 4, 4), i % 2) for i in range(5)]
        >>> [b.indices.tolist() for b in iter_batches(data, batch_size=2)]
        [[0, 1], [2, 3], [4]]
    """
    if batch_size < 1:
        raise NeurocoreError(f"batch_size must be >= 1; got {batch_size}")
    n = probe_length(probe)
    subset = torch.utils.data.Subset(_Guarded(probe, transform), range(start, n))
    loader = DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=_collate)
    image_id = getattr(probe, "image_id", None)
    bad: list = [] if skipped is None else skipped
    n_bad_before = len(bad)
    for items in loader:
        good = [it for it in items if it[0] == "ok"]
        bad += [(it[1], it[2]) for it in items if it[0] == "unreadable"]
        if not good:
            continue
        shapes = {tuple(it[2].shape) for it in good}
        if len(shapes) > 1:
            raise NeurocoreError(
                f"probe images {good[0][1]}..{good[-1][1]} have different shapes {sorted(shapes)[:3]}; they must "
                "match to form a batch: pass a `transform` that resizes and crops (the model's preprocessing)"
            )
        labels = [it[3] for it in good]
        has_labels = all(lab is not None for lab in labels)
        yield ProbeBatch(
            images=torch.stack([it[2] for it in good]),
            labels=torch.as_tensor(labels, dtype=torch.int64) if has_labels else None,
            indices=torch.tensor([it[1] for it in good], dtype=torch.int64),
            ids=tuple(image_id(it[1]) if image_id else str(it[1]) for it in good),
        )
    if skipped is None and len(bad) > n_bad_before:
        first = ", ".join(f"{i} ({why})" for i, why in bad[n_bad_before:][:3])
        warnings.warn(f"skipped {len(bad) - n_bad_before} unreadable probe image(s), e.g. {first}", stacklevel=2)


def probe_length(probe) -> int:
    """``len(probe)``, or an error saying a map-style dataset is needed."""
    try:
        return len(probe)
    except TypeError:
        raise NeurocoreError(
            f"the probe must be a map-style dataset with a length; got {type(probe).__name__}"
        ) from None


def probe_fingerprint(probe) -> str | None:
    """The dataset's own identity digest (``probe.fingerprint()``), or None when it has none."""
    fp = getattr(probe, "fingerprint", None)
    return fp() if callable(fp) else None


def describe_transform(transform) -> str:
    """A stable text for a transform (its repr), part of cache keys: preprocessing changes the result."""
    return "none" if transform is None else repr(transform)
