"""Probe data: an image-folder dataset, the careful image loader, and the one batching loop every
consumer shares.

Recording activations and encoding images with a vision–language model must see the same images in
the same order, skipping the same unreadable files, so both go through :func:`iter_batches`.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from neurocore._errors import NeurocoreError

# torchvision.datasets.folder.IMG_EXTENSIONS (a test pins the equality); copied so that listing a
# folder does not import torchvision.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class UnreadableImageError(NeurocoreError):
    """An image file that cannot be opened or decoded; :func:`iter_batches` skips such items.

    Attributes:
        path: the file, as given to :func:`load_rgb`.
        reason: what went wrong, starting with a short kind (``"truncated"``, ``"empty file"``,
            ``"not an image Pillow can identify"``, ``"too large ..."``, ``"cannot be decoded"``) and
            ending with Pillow's own error in parentheses.
    """

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # picklable with its two arguments (DataLoader workers, multiprocessing)
        return (type(self), (self.path, self.reason))


def load_rgb(path: str | os.PathLike):
    """Read an image file as an RGB ``PIL.Image`` showing the colours the file shows.

    Pillow's ``convert("RGB")`` (what ``torchvision``'s loader does) clips 16- and 32-bit grey levels to
    white and ignores the EXIF orientation; this loader instead:

    * scales integer greyscale to 8 bits: 16-bit (modes ``I;16``, ``I;16B``, ``I;16L``) by ``v / 257``,
      rounded; mode ``I`` (32-bit signed, which Pillow also uses for 16-bit files) as 16-bit when every
      value lies in 0..65535, else by ``v / (2**32 - 1) * 255`` with negative values at 0;
    * reads float images (mode ``F``) as 0..1 when every finite value lies in 0..1, else as 0..255
      (clipped, Pillow's convention), NaN as 0;
    * 16-bit RGB(A) PNGs arrive from Pillow as 8-bit (most significant byte, within 1 of ``v / 257``);
    * turns the image upright by its EXIF orientation (``PIL.ImageOps.exif_transpose``; a malformed
      EXIF block leaves the pixels as stored, as image viewers do);
    * drops alpha (RGBA, LA, PA, premultiplied RGBa/La, palettes with a transparent entry): a fully
      transparent pixel keeps the colour stored under it, as torchvision's loader does, rather than
      being composited on a background the probe never had;
    * converts CMYK, YCbCr, palette and 1-bit images with Pillow's conversions (embedded ICC profiles
      are not applied). Animated files give their first frame.

    Args:
        path: the image file.

    Returns:
        ``PIL.Image.Image`` in mode ``"RGB"``, detached from the file (the file is closed).

    Raises:
        UnreadableImageError: any failure to open, decode or convert the file (truncated, empty, not
            an image, over Pillow's decompression-bomb limit, ...), with ``.path`` and ``.reason``.

    Example:
        >>> import tempfile, numpy as np, PIL.Image
        >>> path = Path(tempfile.mkdtemp()) / "ramp16.png"
        >>> PIL.Image.fromarray(np.array([[0, 32896, 65535]], dtype=np.uint16)).save(path)
        >>> img = load_rgb(path)
        >>> img.mode, np.asarray(img)[0, :, 0].tolist()
        ('RGB', [0, 128, 255])
    """
    import PIL.Image
    import PIL.ImageOps

    try:
        with PIL.Image.open(path) as img:
            img.load()  # decode now: truncation and decoder errors surface here, inside the guard
            try:
                PIL.ImageOps.exif_transpose(img, in_place=True)
            except Exception:  # noqa: BLE001 - a malformed EXIF block: keep the stored orientation
                pass
            return _to_rgb(img)
    except Exception as exc:  # noqa: BLE001 - every decoder failure is one kind: this file is unreadable
        raise UnreadableImageError(path, _failure_reason(path, exc)) from exc


def _to_rgb(img):
    import PIL.Image

    mode = img.mode
    if mode == "I" or mode.startswith("I;16"):
        values = np.asarray(img)
        if mode == "I" and values.size and (values.min() < 0 or values.max() > 65535):
            scaled = values.astype(np.float64) / ((2.0**32 - 1) / 255.0)  # float32 cannot hold 32-bit values
        else:
            scaled = values.astype(np.float32) / np.float32(257.0)  # 65535 / 255: full scale to full scale
        grey = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
        return PIL.Image.fromarray(np.repeat(grey[..., None], 3, axis=-1))
    if mode == "F":
        values = np.asarray(img, dtype=np.float32)
        finite = values[np.isfinite(values)]
        if finite.size and finite.min() >= 0.0 and finite.max() <= 1.0:
            values = values * np.float32(255.0)
        grey = np.clip(np.rint(np.nan_to_num(values, nan=0.0)), 0, 255).astype(np.uint8)
        return PIL.Image.fromarray(np.repeat(grey[..., None], 3, axis=-1))
    if mode in ("PA", "RGBa") or (mode == "P" and "transparency" in img.info):
        # through RGBA: un-premultiplies RGBa, and avoids Pillow's P-with-transparency warning
        img = img.convert("RGBA")
    elif mode == "La":
        img = img.convert("LA")
    return img.convert("RGB")


def _failure_reason(path, exc: BaseException) -> str:
    import PIL.Image

    detail = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, PIL.Image.DecompressionBombError):
        kind = "too large (over Pillow's decompression-bomb limit; raise PIL.Image.MAX_IMAGE_PIXELS to read it)"
    elif isinstance(exc, FileNotFoundError):
        kind = "missing"
    elif _file_size(path) == 0:
        kind = "empty file"
    elif isinstance(exc, PIL.UnidentifiedImageError):
        kind = "not an image Pillow can identify"
    elif "truncated" in str(exc).lower():
        kind = "truncated"
    else:
        kind = "cannot be decoded"
    return f"{kind} ({detail})"


def _file_size(path) -> int | None:
    try:
        return os.path.getsize(path)
    except OSError:
        return None


def _is_junk(name: str) -> bool:
    """Names neurocore never lists: macOS archives' ``__MACOSX/`` folders and AppleDouble ``._*``
    files, and hidden files and folders (``.DS_Store``, ``.git``, ``.ipynb_checkpoints``)."""
    return name.startswith(".") or name == "__MACOSX"


def _is_link_cycle(folder: str, name: str) -> bool:
    """Whether ``folder/name`` is a symbolic link back to ``folder`` or one of its ancestors."""
    path = os.path.join(folder, name)
    if not os.path.islink(path):
        return False
    target, here = os.path.realpath(path), os.path.realpath(folder)
    return here == target or here.startswith(target.rstrip(os.sep) + os.sep)


def _list_images(top: str, exts: tuple[str, ...]) -> list[str]:
    """Image files under ``top``, recursively, in torchvision's ``make_dataset`` order (sorted
    ``os.walk`` with links followed, each folder's files sorted), junk pruned, link cycles cut."""
    walked = []
    for folder, subfolders, names in os.walk(top, followlinks=True):
        subfolders[:] = [d for d in subfolders if not _is_junk(d) and not _is_link_cycle(folder, d)]
        walked.append((folder, names))
    return [
        os.path.join(folder, name)
        for folder, names in sorted(walked)
        for name in sorted(names)
        if not _is_junk(name) and name.lower().endswith(exts)
    ]


def _normalise_extensions(extensions) -> tuple[str, ...]:
    if isinstance(extensions, str):
        extensions = (extensions,)
    exts = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)
    if not exts or not all(len(e) > 1 for e in exts):
        raise NeurocoreError(
            f"extensions must be file name endings like ('.jpg', '.png'); got {extensions!r}"
        )
    return exts


def _from_folders(root: Path, exts):
    """(files, labels, classes) of a class-folder tree or a flat folder."""
    top = os.fspath(root)
    with os.scandir(top) as it:
        entries = sorted(it, key=lambda e: e.name)
    classes = [e.name for e in entries if e.is_dir() and not _is_junk(e.name)]
    loose = [e.name for e in entries if not e.is_dir() and not _is_junk(e.name) and e.name.lower().endswith(exts)]
    if not classes:
        return [os.path.join(top, name) for name in loose], None, None
    if loose:
        warnings.warn(
            f"{len(loose)} image(s) directly in {top!r} (e.g. {', '.join(loose[:3])}) are not in a class "
            "sub-folder and are ignored, as torchvision's ImageFolder does; move them into a class folder, "
            "or pass annotations= to label every image under the folder",
            stacklevel=3,
        )
    files: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        found = _list_images(os.path.join(top, name), exts)
        files += found
        labels += [label] * len(found)
    return files, labels, tuple(classes)


def _read_annotations(path: Path) -> list[tuple[int, str, str, str]]:
    """(line number, file, class, line) of each data line; tab, comma or whitespace separated (decided by
    the first data line), extra columns ignored, blank lines and ``#`` comments skipped."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise NeurocoreError(
            f"annotations={str(path)!r} cannot be read as a UTF-8 text file ({type(exc).__name__}: {exc}); "
            "give a text file of 'file<TAB>class' lines (val_annotations.txt in Tiny-ImageNet)"
        ) from None
    lines = [
        (n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip() and not line.lstrip().startswith("#")
    ]
    if not lines:
        raise NeurocoreError(f"annotations={str(path)!r} holds no 'file<TAB>class' lines")
    first = lines[0][1]
    if "\t" in first:
        split = lambda line: line.split("\t")  # noqa: E731
    elif "," in first:
        split = lambda line: next(csv.reader([line]))  # noqa: E731 - quoted fields may hold commas
    else:
        split = str.split
    rows = []
    for n, line in lines:
        fields = [f.strip() for f in split(line)]
        if len(fields) < 2 or not fields[0] or not fields[1]:
            raise NeurocoreError(
                f"annotations={str(path)!r}, line {n}: expected 'file<TAB or comma or spaces>class'; got {line[:100]!r}"
            )
        rows.append((n, fields[0], fields[1], line))
    if split is str.split:
        # Space-separated: a multi-word class ("great white shark") would be cut to its first word. Extra
        # columns are fine when they are numbers (boxes); words there are most likely the class's rest.
        wordy = [(n, line) for n, line in lines if any(not _is_number(f) for f in line.split()[2:])]
        if wordy:
            n, line = wordy[0]
            warnings.warn(
                f"annotations={str(path)!r} is space-separated and {len(wordy)} line(s) have words after the class "
                f"(line {n}: {line[:80]!r}); only the first word is taken as the class. Separate the file and its "
                "class with a tab or a comma to keep multi-word class names",
                stacklevel=4,
            )
    return rows


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _from_annotations(root: Path, annotations: Path, exts):
    """(files, labels, classes) of the images under ``root`` labelled by an annotations file."""
    if not annotations.is_file():
        raise NeurocoreError(
            f"annotations={str(annotations)!r} is not a file; give the text file of 'file<TAB>class' lines "
            "(e.g. tiny-imagenet-200/val/val_annotations.txt)"
        )
    rows = _read_annotations(annotations)
    top = os.fspath(root)
    found = _list_images(top, exts)
    rel = {Path(f).relative_to(root).as_posix(): i for i, f in enumerate(found)}
    by_name: dict[str, list[int]] = {}
    for i, f in enumerate(found):
        by_name.setdefault(os.path.basename(f), []).append(i)

    def resolve(name: str) -> int | None:
        name = name.replace("\\", "/").removeprefix("./")
        beside = os.path.relpath(os.path.normpath(annotations.parent / name), top).replace(os.sep, "/")
        for key in (name, f"images/{name}", beside):
            if key in rel:
                return rel[key]
        hits = by_name.get(name, []) if "/" not in name else []
        return hits[0] if len(hits) == 1 else None

    label_of: dict[int, str] = {}
    missing: list[str] = []
    for k, (n, name, cls, _line) in enumerate(rows):
        i = resolve(name)
        if i is None:
            if k == 0 and not name.lower().endswith(exts):
                continue  # a header line ("file,label"): its first field is no image name
            missing.append(name if not by_name.get(name) else f"{name} (ambiguous: {len(by_name[name])} files)")
            continue
        if label_of.setdefault(i, cls) != cls:
            raise NeurocoreError(
                f"annotations={str(annotations)!r}, line {n}: {name!r} is listed with two classes, "
                f"{label_of[i]!r} and {cls!r}; give each file one class"
            )
    if missing:
        raise NeurocoreError(
            f"annotations={str(annotations)!r} lists {len(missing)} file(s) that are not images under "
            f"{top!r}, e.g. {', '.join(missing[:5])}; file names are read relative to the folder, to its "
            "images/ sub-folder, to the annotations file's folder, or as a bare name found once under it "
            f"(extensions: {', '.join(exts)}; hidden files and __MACOSX/ are ignored): fix the names or the folder"
        )
    unlisted = [Path(found[i]).relative_to(root).as_posix() for i in range(len(found)) if i not in label_of]
    if unlisted:
        raise NeurocoreError(
            f"{len(unlisted)} image(s) under {top!r} are not in annotations={str(annotations)!r}, e.g. "
            f"{', '.join(unlisted[:5])}; add a line for each, or move them out of the folder"
        )
    order = sorted(label_of)  # the folder's listing order, not the annotation file's
    classes = tuple(sorted(set(label_of.values())))
    index = {c: j for j, c in enumerate(classes)}
    return [found[i] for i in order], [index[label_of[i]] for i in order], classes


def _annotations_hint(root: Path, classes) -> Path | None:
    """A ``*annotations*.txt`` next to a single class folder (or beside/above a flat folder)."""
    if classes is not None and len(classes) != 1:
        return None
    folders = [root] if classes is not None else [root, root.parent]
    for folder in folders:
        try:
            hits = sorted(p for p in folder.iterdir() if p.is_file() and "annotations" in p.name.lower()
                          and p.name.lower().endswith(".txt"))
        except OSError:
            continue
        if hits:
            return hits[0]
    return None


class ImageFolder(Dataset):
    """Images under ``root``, listed as ``torchvision.datasets.ImageFolder`` lists them, minus junk.

    Three layouts:

    * class sub-folders (``root/<class>/**/<image>``): the top-level sub-folders are the classes (sorted;
      label = position), their images are found recursively, following symbolic links to files and to
      folders, in torchvision's order (same extensions, :data:`IMAGE_EXTENSIONS`, case-insensitive).
      Images directly in ``root`` are ignored, as torchvision does, with a warning. A class folder with
      no image stays a class (torchvision's ``allow_empty=True``), so labels keep their numbers.
    * a flat folder (no sub-folder, or only junk ones): its images, not recursively; no labels.
    * ``annotations=``: every image under ``root`` (recursively) labelled by a text file of
      ``file<TAB or comma or spaces>class[...]`` lines (Tiny-ImageNet's ``val_annotations.txt``);
      classes are the sorted class names. A first line that names no image (a header) is skipped.

    Junk is never listed: ``__MACOSX/`` folders anywhere (macOS archives), AppleDouble ``._*`` files,
    and hidden files and folders (names starting with ``.``). Symbolic-link cycles are not followed.

    Items are ``(image, label)`` with labels and ``image`` alone without; images are RGB ``PIL.Image``
    objects read by :func:`load_rgb` (16-bit scaled, EXIF orientation applied, alpha dropped), or
    ``transform(image)``. A file that cannot be read raises :class:`UnreadableImageError`, which
    :func:`iter_batches` (so ``record`` and the vision–language encoders) skips and lists.
    :meth:`fingerprint` digests the file list with sizes and modification times (the cache key's
    "dataset identity and order").

    Args:
        root: the folder.
        transform: applied to each PIL image (e.g. a model's preprocessing); None keeps PIL images.
        extensions: file name endings counted as images (case-insensitive); default: torchvision's.
        annotations: a text file labelling the images (see above); file names in it are relative to
            ``root``, to ``root/images`` or to the annotations file's folder, or bare names found once
            under ``root``.

    Attributes:
        files (list[Path]): the images, in dataset order.
        classes (tuple[str, ...] | None): class (folder) names; None for a flat folder. It may hold a
            single class: callers that need several (labels as concepts) refuse it themselves.
        labels (list[int] | None): one class index per image.
        class_names (tuple[str, ...] | None): ``classes`` readable: WordNet ids (``n01443537``)
            become their WordNet names (``goldfish``); see
            :func:`neurocore.concepts.display_class_names`.
        annotations_hint (Path | None): without ``annotations=``, a ``*annotations*.txt`` found next
            to a single class folder (or beside/above a flat folder): a labels file the caller may
            suggest passing as ``annotations=``. Never used silently.

    Raises:
        NeurocoreError: ``root`` is not a folder or holds no images; an annotations file that cannot
            be read, lists files that are not images under ``root``, leaves images unlisted, or gives a
            file two classes.

    Example:
        >>> import tempfile, PIL.Image
        >>> root = Path(tempfile.mkdtemp())
        >>> for c in ("n01443537", "dog", "__MACOSX"):
        ...     (root / c).mkdir()
        ...     PIL.Image.new("RGB", (8, 8)).save(root / c / "a.png")
        >>> ds = ImageFolder(root)
        >>> len(ds), ds.classes, ds.class_names, ds[1][1], ds.image_id(1)
        (2, ('dog', 'n01443537'), ('dog', 'goldfish'), 1, 'n01443537/a.png')
    """

    def __init__(
        self,
        root: str | os.PathLike,
        transform: Callable | None = None,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        *,
        annotations: str | os.PathLike | None = None,
    ):
        self.root = Path(root)
        self.transform = transform
        self.annotations = None if annotations is None else Path(annotations)
        self.annotations_hint: Path | None = None
        if not self.root.is_dir():
            raise NeurocoreError(f"probe folder {str(self.root)!r} does not exist or is not a folder")
        exts = _normalise_extensions(extensions)
        self.extensions = exts
        if self.annotations is not None:
            files, labels, classes = _from_annotations(self.root, self.annotations, exts)
        else:
            files, labels, classes = _from_folders(self.root, exts)
            self.annotations_hint = _annotations_hint(self.root, classes)
        if not files:
            raise NeurocoreError(
                f"no images ({', '.join(exts)}) found in {str(self.root)!r} or its sub-folders (hidden files "
                "and __MACOSX/ folders are ignored); pass extensions= for other file types"
            )
        self.files: list[Path] = [Path(f) for f in files]
        self.classes: tuple[str, ...] | None = classes
        self.labels: list[int] | None = labels
        if self.annotations_hint is not None:
            what = (f"has the single class folder {classes[0]!r}" if classes else "is a flat folder (no labels)")
            got = f"every image is labelled {classes[0]!r}" if classes else "its images have no labels"
            warnings.warn(
                f"{str(self.root)!r} {what} and an annotations file {str(self.annotations_hint)!r} near it "
                f"(Tiny-ImageNet's val/ layout): {got}. For the real labels pass "
                f"annotations={str(self.annotations_hint)!r}",
                stacklevel=2,
            )

    @functools.cached_property
    def class_names(self) -> tuple[str, ...] | None:
        from neurocore.concepts._wordnet import display_class_names

        return None if self.classes is None else display_class_names(self.classes)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        image = load_rgb(self.files[index])
        if self.transform is not None:
            image = self.transform(image)
        return image if self.labels is None else (image, self.labels[index])

    def image_id(self, index: int) -> str:
        """The file's path relative to ``root`` (the row's identifier in results)."""
        return self.files[index].relative_to(self.root).as_posix()

    def fingerprint(self) -> str:
        """Digest of the file list (relative paths, sizes, modification times), the class names and,
        when given, the annotations file's content."""
        h = hashlib.sha256()
        for f in self.files:
            try:
                st = f.stat()
                stamp = f"{st.st_size}\0{st.st_mtime_ns}"
            except OSError:  # a broken link or a file deleted since listing: unreadable, skipped when read
                stamp = "missing"
            h.update(f"{f.relative_to(self.root).as_posix()}\0{stamp}\n".encode())
        h.update(repr(self.classes).encode())
        if self.annotations is not None:
            h.update(b"annotations\0" + hashlib.sha256(self.annotations.read_bytes()).digest())
        return h.hexdigest()

    def __repr__(self) -> str:
        extra = "" if self.annotations is None else f", annotations={str(self.annotations)!r}"
        return f"ImageFolder(root={str(self.root)!r}, images={len(self)}{extra}, transform={self.transform!r})"


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


def _pil_decode_errors() -> tuple[type[BaseException], ...]:
    import PIL.Image

    # UnidentifiedImageError is an OSError; DecompressionBombError is a plain Exception
    return (OSError, PIL.Image.DecompressionBombError)


def _item_name(dataset, index: int, path: str | None = None) -> str | None:
    """How a skip reason or a note names a probe item: its image id, else its file, else None."""
    image_id = getattr(dataset, "image_id", None)
    if callable(image_id):
        try:
            return str(image_id(index))
        except Exception:  # noqa: BLE001 - naming must not hide the error being reported
            pass
    samples = getattr(dataset, "samples", None)  # torchvision's DatasetFolder: (path, label) pairs
    if path is None and isinstance(samples, Sequence) and 0 <= index < len(samples):
        path = samples[index][0] if isinstance(samples[index], (tuple, list)) else None
    return None if path is None else str(path)


def _describe_item(dataset, index: int) -> str:
    name = _item_name(dataset, index)
    return f"probe item {index}" + ("" if name is None else f" ({name})")


def _add_note(exc: BaseException, note: str) -> None:
    if hasattr(exc, "add_note"):  # Python >= 3.11
        exc.add_note(note)


class _Guarded(Dataset):
    """Wraps a probe dataset: applies the transform, and turns an unreadable image into a marker.

    Only unreadable files are skipped: :class:`UnreadableImageError` (neurocore's loader) and, from
    other datasets (torchvision's loaders call Pillow directly), Pillow's decode errors (``OSError``,
    ``PIL.UnidentifiedImageError``, ``PIL.Image.DecompressionBombError``). Anything else (a bug in a
    transform or in a dataset's code, a ``ValueError`` included) propagates, with a note naming the
    dataset index and image id.
    """

    def __init__(self, dataset, transform):
        self.dataset = dataset
        self.transform = transform
        # neurocore's own folders wrap every decode failure: an OSError from them is a user's bug
        self.foreign_errors = () if isinstance(dataset, ImageFolder) else _pil_decode_errors()

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        try:
            item = self.dataset[index]
        except UnreadableImageError as exc:
            return ("unreadable", index, f"{_item_name(self.dataset, index, exc.path)}: {exc.reason}")
        except self.foreign_errors as exc:
            name = _item_name(self.dataset, index) or str(index)  # str(index): the id ProbeBatch gives it
            return ("unreadable", index, f"{name}: {type(exc).__name__}: {exc}")
        except Exception as exc:
            _add_note(exc, f"raised while reading {_describe_item(self.dataset, index)}")
            raise
        image, label = (item[0], item[1]) if isinstance(item, (tuple, list)) else (item, None)
        if self.transform is not None:
            try:
                image = self.transform(image)
            except Exception as exc:
                _add_note(exc, f"raised by transform= on {_describe_item(self.dataset, index)}")
                raise
        if not isinstance(image, torch.Tensor):
            raise NeurocoreError(
                f"{_describe_item(self.dataset, index)} is a {type(image).__name__}, not a "
                "tensor: pass `transform=` (the model's preprocessing) or give a dataset that yields tensors"
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
            one warning with the count is issued at the end. ``reason`` starts with the image's id
            (``"n01443537/val_12.JPEG: truncated (OSError: ...)"``), so every message built from it
            names the file. Only unreadable files are skipped (see :class:`UnreadableImageError`); an
            error raised by ``transform`` or by the dataset's own code propagates, with a note naming
            the dataset index and image id.

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
    """The dataset's own identity digest (``probe.fingerprint()``), or None when it has none.

    Example:
        >>> probe_fingerprint([1, 2, 3]) is None  # a plain list cannot say what it holds
        True
    """
    fp = getattr(probe, "fingerprint", None)
    return fp() if callable(fp) else None


def describe_transform(transform) -> str:
    """A stable text for a transform, part of cache keys (preprocessing changes the result): its repr,
    without memory addresses (``<function f at 0x7f...>`` differs on every run).

    The repr must state what the transform does for the key to tell two preprocessings apart;
    :func:`~neurocore.probe.record` does not cache with one that does not (torchvision's ``Lambda``
    prints ``Lambda()``, a function its name; see ``undescribed_transforms`` in ``probe/_cache.py``).

    Example:
        >>> describe_transform(None), describe_transform(lambda x: x)
        ('none', '<function <lambda>>')
    """
    import re

    if transform is None:
        return "none"
    return re.sub(r"\s+at 0x[0-9a-fA-F]+", "", repr(transform))
