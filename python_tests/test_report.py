"""The HTML report and the layer summary table."""

from __future__ import annotations

import base64
import io
import re

import PIL.Image
import pytest
import torch

from neurocore._errors import NeurocoreError
from neurocore.methods import Explanations, NeuronExplanation
from neurocore.probe import ActivationStore, ImageFolder
from neurocore.report import layer_summary, write_html_report


class ColourProbe(torch.utils.data.Dataset):
    """Image i is a flat colour that encodes i (red = 10·i), labelled i % 2, so a thumbnail tells
    which dataset index it came from."""

    classes = ("even", "odd")

    def __init__(self, n, bad=()):
        self.n, self.bad = n, set(bad)

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if i in self.bad:
            raise OSError(f"image {i} is truncated")
        img = torch.zeros(3, 6, 6)
        img[0] = 10 * i / 255
        return img, i % 2


def thumbnails(page: str) -> dict[str, PIL.Image.Image]:
    """CSS class -> decoded thumbnail."""
    out = {}
    for cls, kind, data in re.findall(r"\.(i\d+)\{background-image:url\(data:image/(png|jpeg);base64,([^)]*)\)\}", page):
        out[cls] = PIL.Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")
    return out


def figures(page: str) -> list[tuple[str, str]]:
    """(css class, caption) of every thumbnail figure, in page order."""
    return re.findall(r"<div class='img (i\d+)'[^>]*></div><figcaption>([^<]*)</figcaption>", page)


def explanations(top_images_per_unit, layer="fc", **kw):
    return Explanations(
        "clip_dissect",
        tuple(
            NeuronExplanation(layer, k, f"concept{k}", 0.5 + k, (f"concept{k}", "other"), (0.5 + k, 0.1), top_images=tuple(t), **kw)
            for k, t in enumerate(top_images_per_unit)
        ),
        params={"method": "soft_wpmi", "concepts": ["concept0", "concept1", "other"], "interpretable_threshold": 0.16},
    )


def test_page_lists_labels_scores_and_the_right_images(tmp_path):
    ex = explanations([(3, 1), (0, 3)])
    page = write_html_report(ex, tmp_path, probe=ColourProbe(5)).read_text()
    assert "concept0" in page and "concept1" in page and "1.5" in page
    thumbs = thumbnails(page)
    figs = figures(page)
    assert [cls for cls, _ in figs] == ["i3", "i1", "i0", "i3"]  # best first, per neuron
    assert set(thumbs) == {"i0", "i1", "i3"}  # each distinct image embedded once
    for cls, img in thumbs.items():
        assert img.getpixel((0, 0))[0] == 10 * int(cls[1:])  # the thumbnail is that dataset image
        assert img.size == (96, 96)  # small images are enlarged to the thumbnail size
    # captions: class name and id
    assert dict(figs)["i3"] == "odd · 3"


def test_store_rows_map_to_dataset_indices(tmp_path):
    # Rows skip unreadable image 1: row r is dataset image dataset_indices[r]; ids come from the store.
    store = ActivationStore.from_tensor(torch.rand(4, 1), "fc", top_k=2)
    from dataclasses import replace

    store = replace(store, dataset_indices=torch.tensor([0, 2, 3, 4]), image_ids=("a", "c", "d", "e"))
    ex = explanations([(1, 3)])
    page = write_html_report(ex, tmp_path, probe=ColourProbe(5), store=store).read_text()
    thumbs = thumbnails(page)
    assert thumbs["i1"].getpixel((0, 0))[0] == 20  # row 1 = dataset image 2
    assert thumbs["i3"].getpixel((0, 0))[0] == 40  # row 3 = dataset image 4
    assert [cap for _, cap in figures(page)] == ["even · c", "even · e"]
    # image_ids override the captions
    page = write_html_report(ex, tmp_path, probe=ColourProbe(5), store=store, image_ids=["w", "x", "y", "z"]).read_text()
    assert [cap for _, cap in figures(page)] == ["even · x", "even · z"]
    with pytest.raises(NeurocoreError, match="image_ids has 2 entries but the store has 4 rows"):
        write_html_report(ex, tmp_path, probe=ColourProbe(5), store=store, image_ids=["w", "x"])
    with pytest.raises(NeurocoreError, match="top image is row 7"):
        write_html_report(explanations([(7,)]), tmp_path, probe=ColourProbe(5), store=store)


def test_text_is_escaped(tmp_path):
    evil = "<script>alert('x')</script>"
    ex = Explanations("m", (NeuronExplanation("layer<1>", 0, evil, 1.0, (evil,), (1.0,), top_images=(0,)),))
    page = write_html_report(ex, tmp_path, probe=[(torch.rand(3, 4, 4), 0)], title="<b>t</b>", intro="a & b",
                             image_ids=["<img src=x>"]).read_text()
    assert evil not in page and "<b>t</b>" not in page and "<img src=x>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "layer&lt;1&gt;" in page and "a &amp; b" in page
    assert page.count("<script>") == 1  # only the page's own filter script


def test_thumbnails_only_for_the_first_neurons_of_each_layer(tmp_path):
    ex = explanations([(k,) for k in range(6)])
    page = write_html_report(ex, tmp_path, probe=ColourProbe(6), neurons_with_images=2, n_images=1).read_text()
    assert [cls for cls, _ in figures(page)] == ["i0", "i1"]
    assert "concept5" in page  # every neuron is still listed
    assert "first 2 neurons" in page
    page = write_html_report(ex, tmp_path, probe=ColourProbe(6), neurons_with_images=None).read_text()
    assert len(figures(page)) == 6
    page = write_html_report(ex, tmp_path).read_text()  # no probe: no images
    assert figures(page) == [] and "data:image" not in page


def test_image_kinds(tmp_path):
    # PIL images, uint8 HWC arrays, normalised tensors (min-max scaled), grey images.
    import numpy as np

    pil = PIL.Image.new("RGB", (300, 150), (0, 200, 0))
    arr = np.zeros((5, 5, 3), dtype=np.uint8)
    arr[..., 2] = 250
    normalised = torch.full((3, 4, 4), -2.0)
    normalised[:, :2] = 2.0  # top half bright after scaling
    grey = torch.full((7, 7), 0.5)
    probe = [pil, arr, normalised, grey]
    ex = explanations([(0, 1, 2, 3)])
    page = write_html_report(ex, tmp_path, probe=probe, thumbnail_size=32).read_text()
    t = thumbnails(page)
    assert t["i0"].size == (32, 16)  # aspect ratio kept when shrinking
    assert t["i0"].getpixel((5, 5))[1] > 190
    assert t["i1"].getpixel((2, 2)) == (0, 0, 250)
    assert t["i2"].getpixel((0, 0)) == (255, 255, 255) and t["i2"].getpixel((0, 31)) == (0, 0, 0)
    assert t["i3"].getpixel((3, 3)) == (128, 128, 128)


def test_unreadable_image_is_a_placeholder(tmp_path):
    ex = explanations([(0, 1, 2)])
    with pytest.warns(UserWarning, match="1 image\\(s\\) could not be shown"):
        page = write_html_report(ex, tmp_path, probe=ColourProbe(3, bad={1})).read_text()
    assert "unreadable" in page and set(thumbnails(page)) == {"i0", "i2"}


def test_image_folder_probe_and_links(tmp_path):
    for c in ("cat", "dog"):
        (tmp_path / "probe" / c).mkdir(parents=True)
        PIL.Image.new("RGB", (20, 20), (255, 0, 0)).save(tmp_path / "probe" / c / "x.png")
    probe = ImageFolder(tmp_path / "probe")
    ex = explanations([(1, 0)], metrics={"val_corr": 0.25})
    ex.save(tmp_path / "out")
    page = write_html_report(ex, tmp_path / "out", probe=probe, filename="report.html").read_text()
    assert [cap for _, cap in figures(page)] == ["dog/x.png", "cat/x.png"]
    assert "href='explanations.csv'" in page and "val_corr" in page and "0.25" in page
    assert (tmp_path / "out" / "report.html").is_file()


def test_flags_and_linear_explanations(tmp_path):
    ex = Explanations("linear", (
        NeuronExplanation("l", 0, "dog", 0.9, ("dog", "cat"), (2.0, -0.5), bias=0.1, is_linear=True),
        NeuronExplanation("l", 1, "", float("nan"), interpretable=False, dead=True),
    ))
    page = write_html_report(ex, tmp_path).read_text()
    assert "0.1 + 2·dog − 0.5·cat" in page
    assert "flag dead" in page and "not interpretable" in page and "<i>none</i>" in page


def test_bad_arguments(tmp_path):
    ex = explanations([(0,)])
    with pytest.raises(NeurocoreError, match="explanations must be an Explanations"):
        write_html_report([1, 2], tmp_path)
    with pytest.raises(NeurocoreError, match="thumbnail_size must be an integer >= 8"):
        write_html_report(ex, tmp_path, thumbnail_size=2)
    with pytest.raises(NeurocoreError, match="neurons_with_images"):
        write_html_report(ex, tmp_path, neurons_with_images=-1)
    with pytest.raises(NeurocoreError, match="plain file name"):
        write_html_report(ex, tmp_path, filename="../x.html")
    with pytest.raises(NeurocoreError, match="store must be an ActivationStore"):
        write_html_report(ex, tmp_path, probe=ColourProbe(1), store=object())


def test_layer_summary_counts():
    ex = Explanations("m", (
        NeuronExplanation("a", 0, "red", 1.0),
        NeuronExplanation("a", 1, "red", 1.0, interpretable=False),
        NeuronExplanation("a", 2, "zebra", 1.0),
        NeuronExplanation("b", 0, "", float("nan"), interpretable=False, dead=True),
    ))
    table = layer_summary(ex, {"red": "colour", "circle": "shape"})
    assert list(table.index) == ["a", "b"]
    assert list(table.columns) == ["neurons", "dead", "interpretable", "unlabelled", "colour", "shape", "other", "top_labels"]
    assert table.loc["a", ["neurons", "dead", "interpretable", "unlabelled", "colour", "shape", "other"]].tolist() == [3, 0, 2, 0, 2, 0, 1]
    assert table.loc["b", ["neurons", "dead", "unlabelled"]].tolist() == [1, 1, 1]
    assert table.loc["a", "top_labels"] == "red ×2, zebra ×1"
    assert list(layer_summary(ex).columns) == ["neurons", "dead", "interpretable", "unlabelled", "top_labels"]


@pytest.mark.parametrize("wnids", [("n01443537", "n02124075"), ("n02012849", "n03126707")])
def test_wordnet_id_classes_are_shown_by_name(tmp_path, wnids):
    # class folders named by WordNet id (ImageNet, Tiny-ImageNet): tables and the report show names;
    # two synsets with one name ("crane", the bird and the machine) stay apart by their ids
    from neurocore.concepts import display_class_names

    shown = display_class_names(wnids)
    for w in wnids:
        (tmp_path / "probe" / w).mkdir(parents=True)
        PIL.Image.new("RGB", (8, 8), (200, 0, 0)).save(tmp_path / "probe" / w / "a.png")
    probe = ImageFolder(tmp_path / "probe")
    ex = Explanations("clip_dissect", (
        NeuronExplanation("fc", 0, wnids[0], 1.0, (wnids[0], wnids[1]), (1.0, 0.5), top_images=(0,)),
        NeuronExplanation("fc", 1, wnids[1], 1.0, (wnids[1],), (1.0,), top_images=(1,)),
        NeuronExplanation("fc", 2, "red", 1.0, ("red",), (1.0,), top_images=(1,)),
    ))
    table = layer_summary(ex)
    assert set(table.loc["fc", "top_labels"].replace(" ×1", "").split(", ")) == {*shown, "red"}
    page = write_html_report(ex, tmp_path / "out", probe=probe, thumbnail_size=16).read_text()
    for w, name in zip(wnids, shown):
        assert f"<td class='label'>{name} <span class='meta'>{w}</span></td>" in page
        assert f"<figcaption>{name} · {w}/a.png</figcaption>" in page
    assert "<td class='label'>red</td>" in page
