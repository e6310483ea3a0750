"""``neurocore explain``: several registered methods over one recording and one report, the ``dissect``,
``hint`` and ``www`` aliases giving what ``explain`` gives, ``--set``, ``--simulator``, and errors that name
the fix (before any model is built)."""

from __future__ import annotations

import json

import pytest
import torch
from _cli_fixtures import colour_net, coloured_squares, run, truth_scores
from torch import nn

from neurocore.methods import Explanations

COLOURS = ("red", "green", "blue")  # channel c of the image and of the network
PER_CLASS = 8  # 24 images: Linear Explanations' 70/10/20 split needs >= 20
WNIDS = ("n02084071", "n02121808", "n02958343")  # dog, domestic cat, car


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain_cli")
    coloured_squares(root / "images", COLOURS, PER_CLASS, noise=40)
    torch.save(colour_net(), root / "net.pt")
    truth = truth_scores(COLOURS, PER_CLASS)
    torch.save({"scores": truth, "concepts": list(COLOURS)}, root / "scores.pt")
    # another "model"'s concept probabilities for the simulation: the truth, blurred and shifted
    g = torch.Generator().manual_seed(1)
    torch.save({"scores": 0.1 + 0.7 * truth + 0.1 * torch.rand(truth.shape, generator=g), "concepts": list(COLOURS)},
               root / "simulator.pt")
    return root


def _common(folder, out):
    return ["--model", folder / "net.pt", "--input-size", "24", "--no-progress", "--out", out]


@pytest.fixture(scope="module")
def explained(folder, tmp_path_factory):
    """One ``explain`` run of three methods; the number of recordings it made."""
    import neurocore.probe

    out = tmp_path_factory.mktemp("explained") / "out"
    calls = []
    record = neurocore.probe.record

    def counted(*args, **kwargs):
        calls.append(args[1])
        return record(*args, **kwargs)

    mp = pytest.MonkeyPatch()
    mp.setattr(neurocore.probe, "record", counted)
    try:
        result = run("explain", "--method", "clip_dissect", "linear", "www", "--layers", "1", "--probe", folder / "images",
                     "--scores", folder / "scores.pt", "--similarity", "cos", "--n-images", "4", "--report-images", "2",
                     "--heatmap-images", "2", "--simulator", folder / "simulator.pt", "--set", "clip_dissect.n_top_images=3",
                     "--probe-sizes", "6", "12", "100", *_common(folder, out))
    finally:
        mp.undo()
    return out, result, calls


def test_explain_runs_every_method_over_one_recording_into_one_report(explained):
    out, (status, stdout, stderr), calls = explained
    assert status == 0, stderr
    assert calls == [["1"]]  # recorded once for all three methods
    for name in ("clip_dissect", "linear", "www"):
        ex = Explanations.load(out / name)
        assert ex.method == name and len(ex) == 3
        # unit c of the planted net is colour c's detector (Linear Explanations, fitted on 17 images and
        # validated on 2, may find no concept that passes for a unit: "")
        if name == "linear":
            assert all(label in ("", c) for label, c in zip(ex.labels, COLOURS)) and sum(map(bool, ex.labels)) >= 2
        else:
            assert ex.labels == list(COLOURS), name
        assert (out / name / "index.html").is_file()
        assert f"== {name} ==" in stdout
    assert all(len(n.top_images) == 3 for n in Explanations.load(out / "clip_dissect"))  # --set reached the method
    info = json.loads((out / "run.json").read_text())
    assert list(info["methods"]) == ["clip_dissect", "linear", "www"] and info["layers"] == ["1"]
    assert info["methods"]["clip_dissect"]["settings"]["similarity"] == "cos"
    assert info["methods"]["www"]["settings"]["n_images"] == 4 and info["probe"]["num_images"] == 3 * PER_CLASS
    assert info["concept_source"]["source"] == "file:scores.pt"
    page = (out / "index.html").read_text()
    assert page.count("class='neuron-card'") == 3
    for name in ("clip_dissect", "linear", "www"):
        assert page.count(f"data-method='{name}'") == 3
        assert f"href='{name}/index.html'" in page or f'href="{name}/index.html"' in page
    # the simulation table: one row per method of the one layer, by the other model's scores
    import pandas as pd

    sim = pd.read_csv(out / "simulation.csv")
    assert sorted(sim["method"]) == ["clip_dissect", "linear", "www"] and set(sim["layer"].astype(str)) == {"1"}
    assert "Simulation scores" in page and "simulation" in stdout
    # --heatmap-images: per image, WWW's heatmaps beside the baselines in the one report, and in WWW's page
    assert page.count("class='ex image-maps'") == 2 and "heatmap similarity: " in stdout
    # the heatmap images are spread over the probe, not its first class folder only
    import re

    shown = re.findall(r"<div class='meta'>([a-z]+)/[^ <]+ · class", page)
    assert len(shown) == 2 and len(set(shown)) == 2, shown
    # --probe-sizes: the probe-size effect on CLIP-Dissect's labels, n = 6, 12 and all 24 (100 > 24 dropped)
    assert "probe-size effect on CLIP-Dissect" in page
    section = page[page.index("probe-size effect on CLIP-Dissect"):]
    assert all(f"<td class='num'>{n}</td>" in section or f">{n}<" in section for n in (6, 12, 24))


def test_explain_probe_sizes_none_leaves_the_summary_out(folder, tmp_path):
    status, _, stderr = run("explain", "--method", "clip_dissect", "--layers", "1", "--probe", folder / "images",
                            "--scores", folder / "scores.pt", "--probe-sizes", *_common(folder, tmp_path / "o"))
    assert status == 0, stderr
    assert "probe-size effect" not in (tmp_path / "o" / "index.html").read_text()


def test_dissect_and_www_aliases_equal_explain(explained, folder, tmp_path):
    out, (status, _, stderr), _ = explained
    assert status == 0, stderr
    status, stdout, stderr = run("dissect", "--layers", "1", "--probe", folder / "images", "--scores", folder / "scores.pt",
                                 "--similarity", "cos", *_common(folder, tmp_path / "d"))
    assert status == 0, stderr
    alone = Explanations.load(tmp_path / "d")
    both = Explanations.load(out / "clip_dissect")
    # the alias keeps dissect's default n_top_images (10); the explanations are otherwise the same
    assert [(n.unit, n.label, n.concepts, n.scores) for n in alone] == [(n.unit, n.label, n.concepts, n.scores) for n in both]
    assert "wrote" in stdout and (tmp_path / "d" / "skipped.csv").is_file() and (tmp_path / "d" / "run.json").is_file()
    status, stdout, stderr = run("www", "--layer", "1", "--images", folder / "images", "--scores", folder / "scores.pt",
                                 "--n-images", "4", "--report-images", "2", "--heatmap-images", "0",
                                 *_common(folder, tmp_path / "w"))
    assert status == 0, stderr
    assert Explanations.load(tmp_path / "w").neurons == Explanations.load(out / "www").neurons
    assert "neuron 0: red" in stdout


def test_hint_alias_equals_explain(tmp_path):
    coloured_squares(tmp_path / "images", WNIDS, 4)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3)).eval()
    torch.save(net, tmp_path / "net.pt")
    small = ["--images-per-concept", "6", "--top-n", "3", "--examples", "1"]
    status, stdout, stderr = run("hint", "--layer", "2", "--images", tmp_path / "images", "--concepts", "animal", "whole",
                                 *small, *_common(tmp_path, tmp_path / "h"))
    assert status == 0, stderr
    status, stdout2, stderr = run("explain", "--method", "hint", "--layers", "2", "--probe", tmp_path / "images",
                                  "--hint-concepts", "animal", "whole", *small, *_common(tmp_path, tmp_path / "e"))
    assert status == 0, stderr
    assert Explanations.load(tmp_path / "h").neurons == Explanations.load(tmp_path / "e" / "hint").neurons
    for name in ("phi.csv", "association.png", "neurons.html", "index.html"):
        assert (tmp_path / "h" / name).is_file() and (tmp_path / "e" / "hint" / name).is_file(), name
    assert (tmp_path / "h" / "phi.csv").read_text() == (tmp_path / "e" / "hint" / "phi.csv").read_text()
    f1_lines = [line for line in stdout.splitlines() if "classifier F1" in line]
    assert len(f1_lines) == 2 and all(line in stdout2 for line in f1_lines)
    page = (tmp_path / "e" / "index.html").read_text()
    assert page.count("class='neuron-card'") == 8 and "concept contributions (Shapley)" in page


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--method", "linear", "--labels", "--set", "linear.max_lenght=3"],
         r"--set: LinearExplanations has no setting 'max_lenght' \(did you mean 'max_length'\?\)"),
        (["--method", "linear", "--labels", "--set", "lineer.max_length=3"],
         r"names method 'lineer', which is not among --method linear \(did you mean 'linear'\?\)"),
        (["--method", "linear", "--labels", "--set", "linear"], r"--set takes METHOD.SETTING=VALUE"),
        (["--method", "clip_dissect", "linear"], r"--method clip_dissect linear read\(s\) image-concept scores: give "
                                                 r"--vlm SPEC --concepts SET, --scores FILE or --labels"),
        (["--method", "hint"], r"--method hint needs its concepts: --hint-concepts NODE"),
        (["--method", "linear", "--labels", "--saliency", "gradient"], r"--saliency is a setting of hint, which is not among"),
        (["--method", "linear", "linear", "--labels"], r"name each once"),
        (["--method", "clip_dissect", "--vlm", "open_clip:x", "--concepts", "20k", "--simulator", "open_clip:x"],
         r"--simulator is the explainer's --vlm"),
        (["--method", "clip_dissect", "--labels", "--concepts", "20k"], r"--concepts cannot be combined with --labels"),
        (["--method", "www", "--labels", "--set", "www.n_images=0"], r"n_images must be an integer >= 1"),
    ],
)
def test_errors_name_the_fix_before_any_model_is_built(folder, tmp_path, monkeypatch, argv, message):
    import re

    import neurocore.cli as cli

    def no_model(*args, **kwargs):
        raise AssertionError("the arguments are checked before any model is built")

    monkeypatch.setattr(cli, "load_model", no_model)
    status, _, err = run("explain", "--layers", "1", "--probe", folder / "images", *argv, *_common(folder, tmp_path / "o"))
    assert status == 1 and err.startswith("neurocore: error: ") and re.search(message, err), err
    assert not (tmp_path / "o").exists()


def test_unknown_method_and_hint_without_classes(folder, tmp_path, capsys):
    from neurocore.cli import main

    with pytest.raises(SystemExit) as exc:  # argparse: a usage error naming the close match
        main(["explain", "--method", "clip_disect", "--layers", "1", "--probe", str(folder / "images"), "--labels"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "unknown method 'clip_disect'" in err and "did you mean 'clip_dissect'" in err
    (tmp_path / "flat").mkdir()
    import PIL.Image

    PIL.Image.new("RGB", (8, 8)).save(tmp_path / "flat" / "a.png")
    status, _, err = run("explain", "--method", "hint", "--hint-concepts", "animal", "--layers", "1", "--probe",
                         tmp_path / "flat", *_common(folder, tmp_path / "o"))
    assert status == 1 and "--probe" in err and "is a flat folder: HINT needs each image's class" in err
