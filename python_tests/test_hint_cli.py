"""``neurocore hint`` end to end on a tiny folder (three WordNet classes, a small saved CNN) and its report."""

from __future__ import annotations

import json

import pytest
import torch
from _cli_fixtures import coloured_squares, run
from torch import nn

CLASSES = ("n02084071", "n02121808", "n02958343")  # dog, domestic cat, car


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("hint_cli")
    coloured_squares(root / "images", CLASSES, 4)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3)).eval()
    torch.save(net, root / "net.pt")
    return root


def test_hint_command_writes_the_report(folder):
    out = folder / "out"
    status, stdout, stderr = run("hint", "--model", str(folder / "net.pt"), "--layer", "2", "--images",
                                 str(folder / "images"), "--concepts", "animal", "whole", "--out", str(out),
                                 "--input-size", "24", "--images-per-concept", "8", "--top-n", "3", "--examples", "2",
                                 "--no-progress")
    assert status == 0, stderr
    assert "animal: classifier F1" in stdout and "whole: classifier F1" in stdout
    for name in ("index.html", "neurons.html", "explanations.csv", "explanations.json", "phi.csv", "association.png"):
        assert (out / name).is_file(), name
    page = (out / "index.html").read_text()
    assert "Concept <code>animal</code>" in page and "Concept <code>whole</code>" in page
    assert "Top 3 collaborative neurons" in page and "association figure" in page
    # per concept 2 examples x (image, responsible regions, concept cells) + the figure
    assert page.count("data:image/") == 2 * 2 * 3 + 1
    phi = (out / "phi.csv").read_text().splitlines()
    assert phi[0] == "unit,animal,whole" and len(phi) == 1 + 8
    saved = json.loads((out / "explanations.json").read_text())
    assert "hint" in json.dumps(saved)[:2000]


def test_hint_command_errors(folder, tmp_path):
    status, _, err = run("hint", "--model", str(folder / "net.pt"), "--layer", "2", "--images", str(folder / "images"),
                         "--concepts", "bird", "--out", str(tmp_path))
    assert status == 1 and "covers none" in err
    (tmp_path / "flat").mkdir()
    import PIL.Image

    PIL.Image.new("RGB", (8, 8)).save(tmp_path / "flat" / "a.png")
    status, _, err = run("hint", "--model", str(folder / "net.pt"), "--layer", "2", "--images", str(tmp_path / "flat"),
                         "--concepts", "animal", "--out", str(tmp_path / "o"))
    assert status == 1 and "flat folder" in err
    status, _, err = run("hint", "--model", str(folder / "net.pt"), "--layer", "2", "--images", str(folder / "images"),
                         "--concepts", "animal", "--target", "imagenet", "--input-size", "24", "--out", str(tmp_path / "o"))
    assert status == 1 and "--target imagenet: target='imagenet' needs a 1000-class" in err


def test_hint_command_refuses_the_layer_before_global_pooling(folder, tmp_path):
    # layer '3' (the last ReLU) is what the average pool follows: the same gradient at every cell
    status, stdout, err = run("hint", "--model", str(folder / "net.pt"), "--layer", "3", "--images",
                              str(folder / "images"), "--concepts", "animal", "--input-size", "24", "--out",
                              str(tmp_path / "o"), "--images-per-concept", "4", "--no-progress")
    assert status == 1 and "classifier F1" not in stdout, stdout
    assert "layer '3' is a responsible region" in err and "flat" in err and "choose an earlier layer" in err, err
