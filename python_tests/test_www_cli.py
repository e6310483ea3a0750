"""``neurocore www`` end to end on a tiny folder (three colour classes, a saved CNN whose channel c detects
colour channel c) with given scores, and with a tiny random open_clip model; and WWW's report page."""

from __future__ import annotations

import json
import re

import pytest
import torch
from _cli_fixtures import colour_net, coloured_squares, run, truth_scores

COLOURS = ("red", "green", "blue")  # channel c of the image and of the network


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("www_cli")
    coloured_squares(root / "images", COLOURS, 4, noise=40)
    torch.save(colour_net(), root / "net.pt")
    torch.save({"scores": truth_scores(COLOURS, 4), "concepts": list(COLOURS)}, root / "scores.pt")
    return root


def test_www_command_with_given_scores(folder):
    out = folder / "out"
    status, stdout, stderr = run("www", "--model", str(folder / "net.pt"), "--layer", "1", "--images",
                                 str(folder / "images"), "--scores", str(folder / "scores.pt"), "--out", str(out),
                                 "--input-size", "24", "--n-images", "4", "--report-images", "2", "--heatmap-images", "3",
                                 "--no-progress")
    assert status == 0, stderr
    # channel c sees only images of colour c among its top 4: its major concept is that colour, alone
    for c, name in enumerate(COLOURS):
        assert f"neuron {c}: {name}" in stdout
    for name in ("index.html", "explanations.csv", "explanations.json"):
        assert (out / name).is_file(), name
    from neurocore.methods import Explanations

    assert Explanations.load(out).method == "www"
    page = (out / "index.html").read_text()
    for c, name in enumerate(COLOURS):
        assert f"<h3>Neuron {c}</h3><p>major: <code>{name}</code> (4)" in page
    assert page.count("minor: <span class='meta'>not computed</span>") == 3  # no vlm: no minor concepts
    # 3 neurons x 2 examples x (image, crop) + 3 heatmap images x (image, class, sample)
    assert page.count("data:image/") == 3 * 2 * 2 + 3 * 3
    sims = [float(v) for v in re.findall(r"<b class='sim'>([0-9.]+)</b>", page)]
    printed = [float(v) for v in stdout.split("heatmap similarity: ")[1].splitlines()[0].split(", ")]
    assert len(sims) == 3 and sims == pytest.approx(printed, abs=1e-4)
    # this net's class heatmap and sample heatmap use the same neuron (the predicted colour's): cosine 1
    assert sims == pytest.approx([1.0] * 3, abs=1e-4)


def test_www_command_errors(folder, tmp_path):
    with pytest.raises(SystemExit) as exc:  # neither --vlm nor --scores: argparse's usage error
        run("www", "--model", str(folder / "net.pt"), "--layer", "1", "--images", str(folder / "images"), "--out", str(tmp_path))
    assert exc.value.code == 2
    bad = tmp_path / "bad.pt"
    torch.save({"scores": torch.rand(5, 3), "concepts": list(COLOURS)}, bad)
    status, _, err = run("www", "--model", str(folder / "net.pt"), "--layer", "1", "--images", str(folder / "images"),
                         "--scores", str(bad), "--out", str(tmp_path / "o"))
    assert status == 1 and "has 5 rows but --images has 12 images" in err


def test_www_command_with_a_tiny_open_clip(folder, tmp_path, monkeypatch):
    open_clip = pytest.importorskip("open_clip")
    name = "neurocore-www-tiny"
    config = tmp_path / f"{name}.json"
    config.write_text(json.dumps({
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }))
    open_clip.add_model_config(config)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    checkpoint = tmp_path / "tiny.bin"
    torch.save(open_clip.create_model(name).state_dict(), checkpoint)
    concepts = tmp_path / "concepts.txt"
    concepts.write_text("red\ngreen\nblue\ndog\n")
    out = tmp_path / "out"
    status, stdout, stderr = run("www", "--model", str(folder / "net.pt"), "--layer", "1", "--images",
                                 str(folder / "images"), "--vlm", f"open_clip:{name}:{checkpoint}", "--concepts",
                                 str(concepts), "--out", str(out), "--input-size", "24", "--n-images", "4",
                                 "--report-images", "1", "--heatmap-images", "1", "--no-progress")
    assert status == 0, stderr
    page = (out / "index.html").read_text()
    # random weights: which concepts win is arbitrary, but every neuron gets a major concept (the max
    # itself passes unless ACS <= 0) or "none", and minor concepts are computed from the crops
    assert page.count("<h3>Neuron") == 3 and "not computed" not in page
    assert page.count("data:image/") == 3 * 1 * 2 + 3
    from neurocore.methods import Explanations
    from neurocore.methods.www import minor_concepts

    saved = Explanations.load(out)
    assert saved.method == "www" and len(saved.neurons) == 3
    for k in range(3):
        minor = minor_concepts(saved, "1", k)
        assert minor is not None and all(c in ("red", "green", "blue", "dog") for c, _ in minor)
        shown = "none" if not minor else ", ".join(f"<code>{c}</code>" for c, _ in minor)
        assert shown.split(",")[0].split(" (")[0] in page


def test_www_report_lists_concepts_and_heatmaps(tmp_path):
    from neurocore.methods import Explanations, NeuronExplanation
    from neurocore.report import HeatmapExample, NeuronExamples, write_www_report

    neurons = (NeuronExplanation("l", 0, "dog", 3.0, ("dog", "cat"), (3.0, 2.9), label="dog"),
               NeuronExplanation("l", 1, "none", float("nan"), (), (), label="none"))
    ex = Explanations("www", neurons, {"minor": {"l": [[["ear"], [1.5]], [[], []]]}, "alpha_major": 0.95})
    g = torch.Generator().manual_seed(0)
    examples = {0: NeuronExamples(torch.rand(3, 3, 8, 8, generator=g), torch.rand(3, 3, 8, 8, generator=g), ("a", "b", "c"))}
    heat = [HeatmapExample(torch.rand(3, 8, 8, generator=g), torch.rand(8, 8, generator=g), torch.rand(8, 8, generator=g),
                           s, f"img{i}") for i, s in enumerate((0.125, 0.875))]
    page = write_www_report(ex, tmp_path, examples, heat).read_text()
    assert "major: <code>dog</code> (3), <code>cat</code> (2.9)<br>minor: <code>ear</code> (1.5)" in page
    assert "<h3>Neuron 1</h3><p>major: none<br>minor: none</p>" in page
    assert page.count("data:image/") == 3 * 2 + 2 * 3
    assert re.findall(r"<b class='sim'>([0-9.]+)</b>", page) == ["0.1250", "0.8750"]
    assert "img0" in page and "img1" in page
    from neurocore._errors import NeurocoreError

    with pytest.raises(NeurocoreError, match="WWW's Explanations"):
        write_www_report(Explanations("hint", neurons, {}), tmp_path)
