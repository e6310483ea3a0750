"""Probe image folders: careful decoding, unreadable files skipped and named, torchvision's listing
minus junk, labels from an annotations file, WordNet display names (issue 8, faults 3 and 5)."""

from __future__ import annotations

import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from neurocore._errors import NeurocoreError
from neurocore.concepts import display_class_names, wordnet_name
from neurocore.probe import ImageFolder, iter_batches
from neurocore.probe._data import IMAGE_EXTENSIONS, UnreadableImageError, load_rgb

APPLEDOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + b"\x00" * 200


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png16(path: Path, arr: np.ndarray) -> Path:
    """A 16-bit greyscale (H, W) or RGB (H, W, 3) PNG, written by hand (Pillow cannot write 16-bit RGB)."""
    h, w = arr.shape[:2]
    ctype = 0 if arr.ndim == 2 else 2
    raw = b"".join(b"\0" + arr[y].astype(">u2").tobytes() for y in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, ctype, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b""))
    return path


def _bomb_png(path: Path, side: int = 20000) -> Path:
    """A tiny PNG whose header declares side x side pixels (over Pillow's decompression-bomb limit)."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _chunk(b"IEND", b""))
    return path


def _photo(path: Path, colour=(200, 30, 60), size=(12, 10), fmt=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.new("RGB", size, colour).save(path, format=fmt)
    return path


RAMP16 = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (4, 1))
RAMP8 = np.round(RAMP16 / 257.0)


# ----------------------------------------------------------------------------------------------
# decoding: every file arrives as the RGB picture it shows


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I"])
def test_16bit_greyscale_is_scaled_not_clipped(tmp_path, mode):
    if mode == "I;16":
        path = tmp_path / "g.png"
        PIL.Image.fromarray(RAMP16).save(path)
    elif mode == "I;16B":
        path = _png16(tmp_path / "g.png", RAMP16)
    else:  # 32-bit integer TIFF holding 16-bit values (how Pillow long stored 16-bit files)
        path = tmp_path / "g.tif"
        PIL.Image.fromarray(RAMP16.astype(np.int32)).save(path)
        assert PIL.Image.open(path).mode == "I"
    img = load_rgb(path)
    got = np.asarray(img, dtype=np.float64)
    assert img.mode == "RGB" and img.size == (64, 4)
    assert np.abs(got[..., 0] - RAMP8).max() == 0
    assert (got[..., 0] == got[..., 2]).all()


def test_32bit_integer_beyond_16_bits_uses_the_32bit_range(tmp_path):
    values = np.array([[0, 2**30, -5, 2**24, 2**31 - 1]], dtype=np.int32)
    path = tmp_path / "i32.tif"
    PIL.Image.fromarray(values).save(path)
    got = np.asarray(load_rgb(path))[0, :, 0].tolist()
    assert got == [0, 64, 0, 1, 127]  # 2**31 - 1 is 127.4999..: rounds down


def test_16bit_rgb_png_keeps_its_colours(tmp_path):
    arr = np.stack([RAMP16, RAMP16 // 2, np.full_like(RAMP16, 65535)], -1)
    got = np.asarray(load_rgb(_png16(tmp_path / "c.png", arr)), dtype=np.float64)
    assert np.abs(got[..., 0] - RAMP8).max() <= 1
    assert np.abs(got[..., 1] - np.round((RAMP16 // 2) / 257.0)).max() <= 1
    assert (got[..., 2] == 255).all()


@pytest.mark.parametrize("scale, want", [(1.0, [0, 128, 255]), (255.0, [0, 128, 255])])
def test_float_images_read_as_unit_or_byte_range(tmp_path, scale, want):
    path = tmp_path / "f.tif"
    PIL.Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32) * scale).save(path)
    assert PIL.Image.open(path).mode == "F"
    assert np.asarray(load_rgb(path))[0, :, 1].tolist() == want


@pytest.mark.parametrize("orientation, size", [(1, (40, 20)), (3, (40, 20)), (6, (20, 40)), (8, (20, 40))])
def test_exif_orientation_is_applied(tmp_path, orientation, size):
    img = PIL.Image.new("RGB", (40, 20), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 10, 10))  # a red corner, top-left as stored
    exif = PIL.Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "rot.jpg"
    img.save(path, exif=exif, quality=95)
    got = load_rgb(path)
    assert got.size == size
    a = np.asarray(got, dtype=np.int64)
    red = np.argwhere((a[..., 0] > 200) & (a[..., 2] < 60))
    corner = (red[:, 0].mean() < a.shape[0] / 2, red[:, 1].mean() < a.shape[1] / 2)  # (top?, left?)
    # EXIF 3 = rotated 180°, 6 = rotate 90° clockwise to view, 8 = 90° counter-clockwise
    assert corner == {1: (True, True), 3: (False, False), 6: (True, False), 8: (False, True)}[orientation]


def test_palette_with_transparency_and_alpha_keep_the_hidden_colour(tmp_path):
    pal = PIL.Image.new("P", (4, 4), 0)
    pal.putpalette([0, 0, 255, 255, 0, 0] + [0] * 762)
    pal.putpixel((0, 0), 1)
    pal.save(tmp_path / "p1.png", transparency=0)
    pal.save(tmp_path / "p2.png", transparency=bytes([0, 128]))  # several alpha entries (tRNS bytes)
    rgba = PIL.Image.new("RGBA", (4, 4), (0, 200, 0, 0))
    rgba.save(tmp_path / "rgba.png")
    PIL.Image.new("LA", (4, 4), (90, 0)).save(tmp_path / "la.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no Pillow "should be converted to RGBA" warning either
        for name in ("p1.png", "p2.png"):
            a = np.asarray(load_rgb(tmp_path / name))
            assert a[1, 1].tolist() == [0, 0, 255] and a[0, 0].tolist() == [255, 0, 0]
        assert np.asarray(load_rgb(tmp_path / "rgba.png"))[2, 2].tolist() == [0, 200, 0]
        assert np.asarray(load_rgb(tmp_path / "la.png"))[2, 2].tolist() == [90, 90, 90]


@pytest.mark.parametrize("mode, value, want", [
    ("CMYK", (0, 255, 255, 0), (255, 0, 0)),
    ("CMYK", (255, 0, 255, 0), (0, 255, 0)),
    ("1", 1, (255, 255, 255)),
    ("L", 77, (77, 77, 77)),
    ("YCbCr", (128, 128, 128), (128, 128, 128)),
])
def test_other_modes_convert_to_their_colours(tmp_path, mode, value, want):
    path = tmp_path / ("x.jpg" if mode in ("CMYK", "YCbCr", "L") else "x.png")
    PIL.Image.new(mode, (16, 16), value).save(path, quality=95)
    got = np.asarray(load_rgb(path), dtype=np.float64).reshape(-1, 3).mean(0)
    assert np.abs(got - want).max() <= 4


def test_image_folder_items_use_the_careful_loader(tmp_path):
    PIL.Image.fromarray(RAMP16).save(tmp_path / "a.png")
    ds = ImageFolder(tmp_path)
    assert np.abs(np.asarray(ds[0], dtype=np.float64)[..., 0] - RAMP8).max() == 0


# ----------------------------------------------------------------------------------------------
# unreadable files: skipped, named; a user's bug propagates


def _unreadable(kind: str, path: Path) -> Path:
    if kind == "truncated":
        _photo(path, size=(64, 64), fmt="JPEG")
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("this is not an image\n")
    elif kind == "bomb":
        _bomb_png(path)
    return path


@pytest.mark.parametrize("kind, name, reason", [
    ("truncated", "t.jpg", "truncated"),
    ("empty", "z.jpg", "empty file"),
    ("text", "notes.jpg", "not an image Pillow can identify"),
    ("bomb", "pano.png", "too large"),
])
def test_load_rgb_raises_one_error_type_naming_the_file(tmp_path, kind, name, reason):
    path = _unreadable(kind, tmp_path / name)
    with pytest.raises(UnreadableImageError, match=rf"{name}: {reason}") as info:
        load_rgb(path)
    assert info.value.path == str(path) and info.value.reason.startswith(reason)
    assert isinstance(info.value, NeurocoreError)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_iter_batches_skips_every_kind_of_unreadable_file_naming_it(tmp_path, num_workers):
    import torchvision.transforms as T

    for i in range(3):
        _photo(tmp_path / "cls" / f"ok_{i}.png")
    for kind, name in [("truncated", "t.jpg"), ("empty", "z.jpg"), ("text", "notes.jpg"), ("bomb", "pano.png")]:
        _unreadable(kind, tmp_path / "cls" / name)
    ds = ImageFolder(tmp_path)
    skipped: list = []
    batches = list(iter_batches(ds, 2, T.Compose([T.Resize((8, 8)), T.ToTensor()]), num_workers=num_workers, skipped=skipped))
    assert sum(len(b.ids) for b in batches) == 3
    assert [i for b in batches for i in b.ids] == ["cls/ok_0.png", "cls/ok_1.png", "cls/ok_2.png"]
    reasons = {ds.image_id(i): why for i, why in skipped}
    assert set(reasons) == {"cls/t.jpg", "cls/z.jpg", "cls/notes.jpg", "cls/pano.png"}
    for i, why in skipped:
        assert isinstance(i, int) and why.startswith(ds.image_id(i) + ": ")
    assert "truncated" in reasons["cls/t.jpg"] and "DecompressionBombError" in reasons["cls/pano.png"]
    # without a list, one warning names the files
    with pytest.warns(UserWarning, match=r"skipped 4 unreadable probe image\(s\), e\.g\. \d+ \(cls/") as rec:
        list(iter_batches(ds, 2, T.Compose([T.Resize((8, 8)), T.ToTensor()])))
    assert len([w for w in rec if "unreadable" in str(w.message)]) == 1


class _Boom:
    """A transform with a bug: raises on one particular image."""

    def __init__(self, exc):
        self.exc = exc

    def __call__(self, img):
        if img.getpixel((0, 0)) == (1, 2, 3):
            raise self.exc
        return torch.zeros(3, 4, 4)


@pytest.mark.parametrize("exc", [ValueError("bad crop size"), OSError("my cache dir is gone"), KeyError("x")])
@pytest.mark.parametrize("where", ["folder", "iter"])
def test_a_transform_error_propagates_with_the_file_in_a_note(tmp_path, exc, where):
    _photo(tmp_path / "a" / "fine.png")
    _photo(tmp_path / "a" / "odd.png", colour=(1, 2, 3))
    ds = ImageFolder(tmp_path, transform=_Boom(exc) if where == "folder" else None)
    with pytest.raises(type(exc)) as info:
        list(iter_batches(ds, 4, None if where == "folder" else _Boom(exc)))
    notes = " ".join(getattr(info.value, "__notes__", []))
    assert "probe item 1 (a/odd.png)" in notes


def test_foreign_dataset_pil_errors_are_skipped_but_its_value_errors_propagate(tmp_path):
    import torchvision

    for i in range(2):
        _photo(tmp_path / "c" / f"{i}.png")
    _unreadable("truncated", tmp_path / "c" / "2.jpg")
    _unreadable("bomb", tmp_path / "c" / "3.png")
    tv = torchvision.datasets.ImageFolder(tmp_path, transform=torchvision.transforms.ToTensor())
    skipped: list = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = [i for b in iter_batches(tv, 4, skipped=skipped) for i in b.indices.tolist()]
    assert got == [0, 1]
    assert [i for i, _ in skipped] == [2, 3]
    assert skipped[0][1].startswith(str(tmp_path / "c" / "2.jpg") + ": OSError")
    assert "DecompressionBombError" in skipped[1][1]

    class Buggy(torch.utils.data.Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            if i == 2:
                raise ValueError("off by one in my dataset")
            return torch.zeros(3, 2, 2)

    with pytest.raises(ValueError, match="off by one") as info:
        list(iter_batches(Buggy(), 2))
    assert "probe item 2" in " ".join(info.value.__notes__)


# ----------------------------------------------------------------------------------------------
# listing: torchvision's ImageFolder minus junk


def _is_junk_path(rel: str) -> bool:
    return any(p.startswith(".") or p == "__MACOSX" for p in rel.split("/"))


def _messy_tree(root: Path, outside: Path) -> Path:
    for rel in ["cat/a.jpg", "cat/B.JPG", "cat/sub/c.Png", "cat/sub/deeper/d.jpeg", "cat/x-y/e.png", "cat/x/f.png",
                "dog/1.webp", "dog/10.bmp", "dog/2.tif", "dog/3.TIFF", "dog/4.ppm", "dog/5.pgm",
                "fish/a b.jpg", "fish/ñ.png"]:
        _photo(root / rel, fmt="PNG")
    (root / "dog" / "readme.txt").write_text("no image")
    (root / "dog" / "anim.gif").write_bytes(b"GIF89a")  # not among torchvision's extensions
    # junk: macOS archive leftovers, Finder files, hidden folders
    for rel in ["__MACOSX/cat/._a.jpg", "cat/__MACOSX/._B.JPG", "cat/._a.jpg", "dog/.hidden.png",
                ".thumbs/t.png", "cat/.cache/z.png", "fish/sub/__MACOSX/q.jpg"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(APPLEDOUBLE)
    (root / "cat" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    # links: to a file, to a folder inside and outside the tree, a whole class as a link
    _photo(outside / "ext" / "o1.png")
    _photo(outside / "ext" / "nested" / "o2.jpg")
    _photo(outside / "bird" / "b.png")
    os.symlink(root / "cat" / "a.jpg", root / "fish" / "link_to_a.jpg")
    os.symlink(outside / "ext", root / "dog" / "linked")
    os.symlink(outside / "bird", root / "bird")
    os.symlink(root / "cat", root / "cat" / "sub" / "loop")  # a cycle: not followed
    return root


def test_listing_matches_torchvision_minus_junk(tmp_path):
    import torchvision
    from torchvision.datasets.folder import IMG_EXTENSIONS

    assert tuple(IMAGE_EXTENSIONS) == tuple(IMG_EXTENSIONS)
    root = _messy_tree(tmp_path / "probe", tmp_path / "outside")
    os.unlink(root / "cat" / "sub" / "loop")  # torchvision walks cycles until the path gets too long
    tv = torchvision.datasets.ImageFolder(root, loader=lambda p: p, allow_empty=True)
    want = [(Path(p).relative_to(root).as_posix(), tv.classes[y]) for p, y in tv.samples]
    want = [(rel, c) for rel, c in want if not _is_junk_path(rel)]
    ds = ImageFolder(root)
    got = [(ds.image_id(i), ds.classes[y]) for i, y in enumerate(ds.labels)]
    assert got == want
    assert ds.classes == ("bird", "cat", "dog", "fish")
    assert ("dog/linked/nested/o2.jpg", "dog") in got and ("fish/link_to_a.jpg", "fish") in got


def test_listing_cuts_symlink_cycles(tmp_path):
    root = _messy_tree(tmp_path / "probe", tmp_path / "outside")
    ds = ImageFolder(root)
    ids = [ds.image_id(i) for i in range(len(ds))]
    assert not any("/loop/" in i for i in ids) and len(ids) == len(set(ids))


@pytest.mark.parametrize("junk", [
    ["__MACOSX/._img_0.jpg"],
    ["__MACOSX/sub/._img_0.jpg", ".git/objects/x.png"],
    [".ipynb_checkpoints/img_0-checkpoint.jpg", "._img_1.jpg", ".DS_Store"],
])
def test_a_folder_whose_only_subfolders_are_junk_is_flat(tmp_path, junk):
    for i in range(3):
        _photo(tmp_path / f"img_{i}.jpg", fmt="JPEG")
    for rel in junk:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(APPLEDOUBLE)
    ds = ImageFolder(tmp_path)
    assert ds.classes is None and ds.labels is None
    assert [ds.image_id(i) for i in range(len(ds))] == ["img_0.jpg", "img_1.jpg", "img_2.jpg"]
    assert ds[0].mode == "RGB"


def test_macosx_classes_and_nested_junk_are_not_listed(tmp_path):
    for c in ("cat", "dog"):
        for i in range(2):
            _photo(tmp_path / c / f"{c}_{i}.jpg", fmt="JPEG")
            for rel in (f"__MACOSX/{c}/._{c}_{i}.jpg", f"{c}/._{c}_{i}.jpg", f"{c}/__MACOSX/._{c}_{i}.jpg"):
                (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
                (tmp_path / rel).write_bytes(APPLEDOUBLE)
    ds = ImageFolder(tmp_path)
    assert ds.classes == ("cat", "dog") and ds.labels == [0, 0, 1, 1]
    assert [ds.image_id(i) for i in range(4)] == ["cat/cat_0.jpg", "cat/cat_1.jpg", "dog/dog_0.jpg", "dog/dog_1.jpg"]


def test_loose_images_next_to_class_folders_are_ignored_with_a_warning(tmp_path):
    _photo(tmp_path / "cat" / "a.png")
    _photo(tmp_path / "stray.png")
    with pytest.warns(UserWarning, match=r"1 image\(s\) directly in .*stray\.png.* ignored"):
        ds = ImageFolder(tmp_path)
    assert [ds.image_id(i) for i in range(len(ds))] == ["cat/a.png"]


def test_extensions_option_and_empty_folder_error(tmp_path):
    _photo(tmp_path / "a.gif", fmt="GIF")
    _photo(tmp_path / "b.png")
    assert [ImageFolder(tmp_path, extensions=("GIF",)).image_id(0)] == ["a.gif"]
    assert len(ImageFolder(tmp_path, extensions=".gif")) == 1
    (tmp_path / "empty" / "__MACOSX").mkdir(parents=True)
    (tmp_path / "empty" / "._x.jpg").write_bytes(APPLEDOUBLE)
    with pytest.raises(NeurocoreError, match=r"no images .* __MACOSX"):
        ImageFolder(tmp_path / "empty")
    with pytest.raises(NeurocoreError, match="extensions must be file name endings"):
        ImageFolder(tmp_path, extensions=())


# ----------------------------------------------------------------------------------------------
# labels from an annotations file


def _tiny_val(root: Path) -> dict[str, str]:
    truth = {f"val_{i}.JPEG": ("n01443537", "n02124075", "cat")[i % 3] for i in range(7)}
    for name in truth:
        _photo(root / "images" / name, colour=(10 * len(name), 0, 0), fmt="JPEG")
    return truth


@pytest.mark.parametrize("style", ["tsv", "csv", "spaces", "csv-header", "paths"])
def test_annotations_file_labels_the_images(tmp_path, style):
    truth = _tiny_val(tmp_path / "val")
    sep = {"tsv": "\t", "csv": ",", "spaces": "   ", "csv-header": ",", "paths": "\t"}[style]
    lines = ["file,class"] if style == "csv-header" else []
    for name, cls in reversed(truth.items()):  # order of the file does not matter
        f = f"images/{name}" if style == "paths" else name
        lines.append(sep.join([f, cls, "0", "32", "44", "62"]))
    ann = tmp_path / "val" / "val_annotations.txt"
    ann.write_text("\n".join(lines) + "\n")
    for root in (tmp_path / "val", tmp_path / "val" / "images"):
        ds = ImageFolder(root, annotations=ann)
        assert ds.classes == ("cat", "n01443537", "n02124075")
        assert ds.class_names == ("cat", "goldfish", "Egyptian cat")
        got = {Path(ds.image_id(i)).name: ds.classes[y] for i, y in enumerate(ds.labels)}
        assert got == truth
        ids = [ds.image_id(i) for i in range(len(ds))]
        assert ids == sorted(ids)  # the folder's listing order, not the annotation file's (reversed here)
        assert ds[0][1] == ds.labels[0]


def test_annotations_errors_name_the_files(tmp_path):
    truth = _tiny_val(tmp_path / "val")
    ann = tmp_path / "val" / "val_annotations.txt"
    items = list(truth.items())
    ann.write_text("".join(f"{n}\t{c}\n" for n, c in items[:-2]))
    with pytest.raises(NeurocoreError, match=r"2 image\(s\) under .* are not in annotations=.*images/val_5\.JPEG, images/val_6\.JPEG"):
        ImageFolder(tmp_path / "val", annotations=ann)
    ann.write_text("".join(f"{n},{c}\n" for n, c in items) + "val_99.JPEG,cat\nmissing/x.png,cat\n")
    with pytest.raises(NeurocoreError, match=r"lists 2 file\(s\) that are not images under .*val_99\.JPEG, missing/x\.png"):
        ImageFolder(tmp_path / "val", annotations=ann)
    ann.write_text("".join(f"{n}\t{c}\n" for n, c in items) + f"{items[0][0]}\tother\n")
    with pytest.raises(NeurocoreError, match=r"line 8: 'val_0\.JPEG' is listed with two classes"):
        ImageFolder(tmp_path / "val", annotations=ann)
    ann.write_text("val_0.JPEG\n")
    with pytest.raises(NeurocoreError, match=r"line 1: expected 'file<TAB"):
        ImageFolder(tmp_path / "val", annotations=ann)
    with pytest.raises(NeurocoreError, match=r"annotations=.*nope\.txt' is not a file"):
        ImageFolder(tmp_path / "val", annotations=tmp_path / "nope.txt")


def test_annotations_hint_and_single_class_folder(tmp_path):
    truth = _tiny_val(tmp_path / "val")
    ann = tmp_path / "val" / "val_annotations.txt"
    ann.write_text("".join(f"{n}\t{c}\n" for n, c in truth.items()))
    with pytest.warns(UserWarning, match=r"single class folder 'images'.*For the real labels pass annotations="):
        ds = ImageFolder(tmp_path / "val")  # one class folder, "images": representable (the CLI refuses), said
    assert ds.classes == ("images",) and set(ds.labels) == {0} and ds.annotations_hint == ann
    with pytest.warns(UserWarning, match=r"is a flat folder \(no labels\).*annotations="):
        assert ImageFolder(tmp_path / "val" / "images").annotations_hint == ann  # flat, the file one level up
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ImageFolder(tmp_path / "val", annotations=ann).annotations_hint is None
    _photo(tmp_path / "two" / "a" / "x.png")
    _photo(tmp_path / "two" / "b" / "x.png")
    (tmp_path / "two" / "annotations.txt").write_text("a/x.png\ta\n")
    assert ImageFolder(tmp_path / "two").annotations_hint is None


def test_fingerprint_covers_the_annotations_content(tmp_path):
    truth = _tiny_val(tmp_path / "val")
    ann = tmp_path / "val" / "val_annotations.txt"
    ann.write_text("".join(f"{n}\t{c}\n" for n, c in truth.items()))
    plain = ImageFolder(tmp_path / "val" / "images").fingerprint()
    first = ImageFolder(tmp_path / "val" / "images", annotations=ann).fingerprint()
    ann.write_text("".join(f"{n}\t{'cat'}\n" for n in truth))
    second = ImageFolder(tmp_path / "val" / "images", annotations=ann).fingerprint()
    assert len({plain, first, second}) == 3
    assert ImageFolder(tmp_path / "val" / "images", annotations=ann).fingerprint() == second


@pytest.mark.skipif(not (Path(__file__).parents[2] / "shared/data/tiny-imagenet-200/val").is_dir(), reason="shared/data/tiny-imagenet-200/val is absent")
def test_real_tiny_imagenet_val_annotations():
    val = Path(__file__).parents[2] / "shared/data/tiny-imagenet-200/val"
    ds = ImageFolder(val, annotations=val / "val_annotations.txt")
    rows = [line.split("\t")[:2] for line in (val / "val_annotations.txt").read_text().splitlines()]
    assert len(ds) == len(rows) and len(ds.classes) == len({c for _, c in rows})
    truth = dict(rows)
    assert all(ds.classes[ds.labels[i]] == truth[Path(ds.image_id(i)).name] for i in range(0, len(ds), 97))
    assert len(set(ds.class_names)) == len(ds.classes) and "goldfish" in ds.class_names


# ----------------------------------------------------------------------------------------------
# WordNet display names


def test_wordnet_names():
    assert wordnet_name("n01443537") == "goldfish"
    with pytest.raises(NeurocoreError, match="WordNet id must be"):
        wordnet_name("goldfish")
    assert display_class_names(["cat", "n01443537", "n99999999", "n0144353"]) == ("cat", "goldfish", "n99999999", "n0144353")
    assert display_class_names(["goldfish", "n01443537"]) == ("goldfish", "goldfish (n01443537)")
    assert display_class_names(["n02012849", "n03126707"]) == ("crane (n02012849)", "crane (n03126707)")
    assert display_class_names([]) == ()


def test_image_folder_class_names(tmp_path):
    for c in ("n02012849", "n03126707", "n01443537", "zebra"):
        _photo(tmp_path / c / "a.png")
    ds = ImageFolder(tmp_path)
    assert ds.classes == ("n01443537", "n02012849", "n03126707", "zebra")
    assert ds.class_names == ("goldfish", "crane (n02012849)", "crane (n03126707)", "zebra")


def test_broken_links_and_vanished_files_are_skipped_not_fatal(tmp_path):
    # A dangling symlink (listed, as torchvision lists it) and a file deleted after listing: the
    # fingerprint must not crash and the recording must skip them, naming them.
    import neurocore
    import torchvision.transforms as T

    root = tmp_path / "p"
    for i in range(3):
        _photo(root / "a" / f"{i}.png")
    (root / "a" / "broken.png").symlink_to(tmp_path / "nowhere.png")
    ds = ImageFolder(root)
    assert [ds.image_id(i) for i in range(len(ds))] == ["a/0.png", "a/1.png", "a/2.png", "a/broken.png"]
    (root / "a" / "1.png").unlink()
    fp = ds.fingerprint()
    assert isinstance(fp, str) and len(fp) == 64
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    with pytest.warns(UserWarning, match=r"skipped 2 unreadable.*a/1.png"):
        store = neurocore.record(model, "1", ds, transform=T.ToTensor(), top_k=1, progress=False, cache_dir=tmp_path / "c")
    assert store.image_ids == ("a/0.png", "a/2.png")
    assert [i for i, _ in store.skipped] == [1, 3]


def test_space_separated_annotations_with_multiword_classes_warn(tmp_path):
    root = tmp_path / "val"
    _photo(root / "images" / "a.jpg", fmt="JPEG")
    _photo(root / "images" / "b.jpg", fmt="JPEG")
    ann = tmp_path / "ann.txt"
    ann.write_text("a.jpg great white shark\nb.jpg tench\n")
    with pytest.warns(UserWarning, match=r"space-separated and 1 line\(s\) have words after the class"):
        ds = ImageFolder(root, annotations=ann)
    assert ds.classes == ("great", "tench")
    ann.write_text("a.jpg shark 0 0 10 10\nb.jpg tench 1 2 3 4\n")  # numeric extra columns (boxes): fine
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ImageFolder(root, annotations=ann).classes == ("shark", "tench")
    ann.write_text("a.jpg\tgreat white shark\nb.jpg\ttench\n")
    assert ImageFolder(root, annotations=ann).classes == ("great white shark", "tench")
