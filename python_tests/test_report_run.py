"""The run report over several methods (neurocore.report.write_run_report) and its per-image maps
(neurocore.report.image_maps), on the concept world of ``neurocore demo`` where every answer is planted:
labels per card, top images and crops per neuron, the summary tables, WWW heatmaps beside the attribution
baselines at the input's size, and the notes and errors when pieces are missing or do not fit."""

from __future__ import annotations

import dataclasses
import math
import re
import sys
import warnings
from html import unescape

import pytest
import torch

from _run_report_demo import demo_run, planted_label
from neurocore import NeurocoreError
from neurocore.demo import ConceptWorld
from neurocore.demo._www import DistractorNet, colour_labels
from neurocore.evaluate import highest_similarity, simulation_table, top_concept_counts
from neurocore.methods import Explanations, NeuronExplanation
from neurocore.methods.attribution import attribute
from neurocore.methods.www import class_importance, image_heatmaps
from neurocore.report import ImageMaps, image_maps, write_run_report


@pytest.fixture(scope="module")
def run():
    return demo_run()


def cards(text: str) -> dict:
    """(layer, unit) -> {method: panel html} for every neuron card of a page."""
    out = {}
    pieces = re.split(r"<div class='neuron-card' ", text)[1:]
    for piece in pieces:
        layer, unit = re.match(r"data-layer='([^']*)' data-unit='(\d+)'>", piece).groups()
        panels = re.findall(r"<div class='method' data-method='([^']*)'>(.*?)</div></div>", piece)
        out[(layer, int(unit))] = {"_html": piece, **{m: body for m, body in panels}}
    return out


def label_of(panel: str) -> str:
    """The label text of a method panel (without the flags)."""
    raw = re.search(r"<div class='label'>(.*?)</div>", panel).group(1)
    return unescape(re.sub(r"<span.*", "", raw)).strip()


def test_each_card_shows_every_method_side_by_side_with_its_label(run, tmp_path):
    page = write_run_report(run["runs"], tmp_path, probe=run["probe"], store=run["store"])
    found = cards(page.read_text())
    world = run["world"]
    assert set(found) == {(n.layer, n.unit) for n in run["runs"]["clip_dissect"]}  # one card per neuron
    for (layer, unit), panels in found.items():
        assert [m for m in panels if m != "_html"] == list(run["runs"])  # the mapping's order, side by side
        for name, ex in run["runs"].items():
            assert label_of(panels[name]) == ex.unit(layer, unit).label
        truth = planted_label(world, layer, unit)
        for name in ("clip_dissect", "www", "hint"):  # planted truth, exact
            assert label_of(panels[name]) == truth, (layer, unit, name)
        # what each method adds: LE's weighted sum holds the planted concept, HINT its contributions, WWW minor
        assert "weighted sum:" in panels["linear"] and truth in unescape(panels["linear"])
        assert "concept contributions (Shapley)" in panels["hint"] and "0.125" in panels["hint"]
        assert "major:" in panels["www"] and "minor:" in panels["www"]


def test_cards_are_capped_and_show_the_neurons_top_images_and_crops(run, tmp_path):
    page = write_run_report(run["runs"], tmp_path, probe=run["probe"], store=run["store"], model=run["model"],
                            neurons_with_images=3, n_images=2)
    text = page.read_text()
    found = cards(text)
    assert sorted(found) == [("backgrounds", 0), ("backgrounds", 1), ("colours", 0), ("colours", 1), ("colours", 2)]
    assert "Cards for the first 3 of 4 neurons" in text
    rest = re.search(r"the other 1 neurons' labels</summary>(.*?)</table>", text).group(1)  # unit 3 without a card
    labels = "".join(f"<td>{ex.unit('colours', 3).label}</td>" for ex in run["runs"].values())
    assert f"<tr><td class='num'>3</td>{labels}</tr>" in rest and labels.count("<td>yellow</td>") >= 3
    for (layer, unit), panels in found.items():
        ref = run["runs"]["clip_dissect"].unit(layer, unit)
        captions = re.findall(r"<figure style='width:96px' title='([^']*)'", panels["_html"])
        assert captions == list(ref.top_image_ids[:2])  # the neuron's own top images, best first
        crops = re.findall(r"alt='crop of (\d+)'", panels["_html"])
        assert [int(c) for c in crops] == list(ref.top_dataset_indices[:2])
    assert "No model was given" not in text


def test_tables_summaries_and_figures_render(run, tmp_path):
    runs = run["runs"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the explainers used the simulator's own concept source: fine here
        sim = simulation_table(runs, run["store"], run["scores"])
    extra = {"labels per layer": sim[["method", "layer", "neurons"]].rename(columns={"neurons": "n_units"})}
    page = write_run_report(runs, tmp_path, probe=run["probe"], store=run["store"], simulation=sim, summaries=extra)
    text = page.read_text()
    assert "<h2 id='summary'>Summary</h2>" in text and "Highest similarity per layer" in text
    best = highest_similarity(runs)
    for value in best.to_numpy().ravel():
        assert f"{value:.4g}" in text
    assert text.count("<img class='chart' src='data:image/png;base64,") == 2  # highest similarity, simulation
    assert "Concepts among the top-50 neurons by similarity" in text
    counts = top_concept_counts(runs["clip_dissect"], "colours")
    assert all(f"<th>{c}</th>" in text for c in counts.index)
    # the simulation table per layer: one row per method, in each layer section
    for i, layer in enumerate(("colours", "backgrounds")):
        section = text.split(f"<h2 id='layer{i}'>")[1].split("<h2 ")[0]
        assert "<h3>Simulation</h3>" in section and "<h3>labels per layer</h3>" in section
        for m in runs:
            value = sim[(sim.method == m) & (sim.layer == layer)]["correlation"].item()
            assert ("–" if math.isnan(value) else f"{value:.4g}") in section
    assert "n_units" in text


def test_missing_pieces_degrade_with_notes(run, tmp_path):
    text = write_run_report(run["runs"], tmp_path).read_text()
    assert "No probe dataset was given" in text and "No model was given" in text and "No per-image maps" in text
    assert "data:image/jpeg" not in text and "background-image" not in text  # no thumbnails
    assert text.count("class='neuron-card'") == 6


def test_text_is_escaped(run, tmp_path):
    ex = Explanations("clip_dissect", (NeuronExplanation("fc", 0, "<b>red</b>", 0.5, ("<b>red</b>",), (0.5,)),))
    text = write_run_report({"clip_dissect": ex}, tmp_path, title="a <script>", intro="x & y").read_text()
    assert "<b>red</b>" not in text and "&lt;b&gt;red&lt;/b&gt;" in text and "a &lt;script&gt;" in text


@pytest.fixture(scope="module")
def distractor():
    world = ConceptWorld()
    probe = world.sample(1, seed=3)  # 24 images with their object masks
    return world, probe, DistractorNet(world).eval()


def test_image_maps_are_the_libraries_maps_at_input_size_and_find_the_object(distractor, tmp_path):
    world, probe, net = distractor
    idx = [0, 5, 9]
    maps = image_maps(net, "units", probe, idx, baselines=("grad-cam",))
    x = probe.images[idx]
    truth = colour_labels(probe)[idx]
    direct = attribute(net, x, truth, method="gradcam", layer="units")
    # LIME (slow: one image at a time) on one image, through image_maps and the function directly
    lime = image_maps(net, "units", probe, idx[:1], www=False, baselines=("lime",), lime_samples=20, seed=1)
    assert torch.equal(lime[0].maps["lime"], attribute(net, x[:1], truth[:1], method="lime", num_samples=20, seed=1)[0])
    preds = net(probe.images).argmax(1)
    heat = image_heatmaps(net, "units", [(x[j], int(truth[j])) for j in range(3)],
                          class_importance(net, "units", probe, labels=preds), keep_heatmaps=True)
    for j, m in enumerate(maps):
        assert set(m.maps) == {"www class", "www sample", "grad-cam"} and m.notes == ()
        for name, v in [*m.maps.items(), ("lime", lime[0].maps["lime"])]:
            assert v.shape == (32, 32) and v.dtype == torch.float32 and float(v.min()) >= 0 and float(v.max()) <= 1, name
        assert torch.equal(m.maps["grad-cam"], direct[j])
        c = heat.class_heatmaps[j]
        assert torch.allclose(m.maps["www class"], (c - c.min()) / (c.max() - c.min()))
        assert m.similarity == pytest.approx(float(heat.similarity[j]))
        assert m.caption == f"{probe.image_id(idx[j])} · class {int(truth[j])}"  # predicted = true colour here
        mask = probe.masks[idx[j]]  # planted: a colour classifier's evidence is the object's pixels
        for name in ("www class", "grad-cam"):
            assert m.maps[name][mask].mean() > 3 * m.maps[name][~mask].mean(), name
    text = write_run_report({"www": _www_only(net, probe)}, tmp_path, image_maps=maps).read_text()
    section = text.split("<h2 id='images'>")[1]
    assert section.count("<div class='ex image-maps'>") == 3
    assert section.count("<figure>") == 3 * 4 and "similarity <b class='sim'>" in section


def _www_only(net, probe):
    return Explanations("www", (NeuronExplanation("units", 0, "red", 1.0, ("red",), (1.0,), top_images=(0,)),))


def test_a_layer_without_cells_has_a_note_instead_of_crops(distractor, tmp_path):
    world, probe, net = distractor
    ex = {"clip_dissect": Explanations("clip_dissect", (NeuronExplanation("fc", 0, "red", 1.0, top_images=(0, 4)),)),
          "www": _www_only(net, probe)}
    text = write_run_report(ex, tmp_path, probe=probe, model=net, n_images=2).read_text()
    assert "No crops for layer &#x27;fc&#x27;" in text and "spatial" in text  # fc's output is [B, C]
    assert "crop of" not in text.split("<h2 id='layer1'>")[0]
    assert text.split("<h2 id='layer1'>")[1].count("alt='crop of") == 1  # units: the one www neuron's one image


def test_missing_attribution_extra_is_a_note_not_a_crash(distractor, tmp_path, monkeypatch):
    world, probe, net = distractor
    for name in ("pytorch_grad_cam", "lime", "lime.lime_image"):
        monkeypatch.setitem(sys.modules, name, None)  # import fails as if the extra were not installed
    maps = image_maps(net, "units", probe, [0], lime_samples=10)
    assert set(maps[0].maps) == {"www class", "www sample"}
    assert len(maps[0].notes) == 4 and all("neurocore[attribution]" in n for n in maps[0].notes)
    text = write_run_report({"www": _www_only(net, probe)}, tmp_path, image_maps=maps).read_text()
    assert "pip install &#x27;neurocore[attribution]&#x27;" in text


def test_targets_and_baseline_spellings(distractor):
    world, probe, net = distractor
    maps = image_maps(net, "units", probe, [0, 1], targets=3, www=False, baselines=("gradcam",))
    assert set(maps[0].maps) == {"grad-cam"} and math.isnan(maps[0].similarity)
    assert maps[0].caption.endswith("· class 3 · predicted 0")
    assert image_maps(net, "units", probe, []) == []


def test_bad_inputs_name_the_fix(run, distractor, tmp_path):
    runs = run["runs"]
    other = dict(runs["linear"].params, probe={**runs["linear"].params["probe"], "num_images": 7})
    moved = {**runs, "linear": dataclasses.replace(runs["linear"], params=other)}
    with pytest.raises(NeurocoreError, match=r"explanations\['linear'\] were computed on a different probe .*same ActivationStore"):
        write_run_report(moved, tmp_path)
    wrong_store = type(run["store"]).from_tensor(torch.rand(5, 2))
    with pytest.raises(NeurocoreError, match="store does not hold the images.*pass the run's own store"):
        write_run_report(runs, tmp_path, store=wrong_store)
    with pytest.raises(NeurocoreError, match="non-empty mapping method name -> Explanations"):
        write_run_report(runs["linear"], tmp_path)
    with pytest.raises(NeurocoreError, match=r"explanations\['x'\] must be an Explanations"):
        write_run_report({"x": 1}, tmp_path)
    import pandas as pd

    sim = pd.DataFrame({"method": ["linear"], "layer": ["colour"], "correlation": [0.5]})
    with pytest.raises(NeurocoreError, match="simulation has layer 'colour'.*close matches: colours"):
        write_run_report(runs, tmp_path, simulation=sim)
    with pytest.raises(NeurocoreError, match="lacks \\['method'\\]"):
        write_run_report(runs, tmp_path, simulation=sim.drop(columns="method"))
    with pytest.raises(NeurocoreError, match=r"image_maps\[0\] must be an ImageMaps"):
        write_run_report(runs, tmp_path, image_maps=[torch.rand(3, 4, 4)])
    with pytest.raises(NeurocoreError, match="neurons_with_images must be an integer >= 0"):
        write_run_report(runs, tmp_path, neurons_with_images=-1)
    world, probe, net = distractor
    with pytest.raises(NeurocoreError, match="baselines must name methods among.*close matches: grad-cam"):
        image_maps(net, "units", probe, [0], baselines=("grad_cam",))
    with pytest.raises(NeurocoreError, match="unit"):  # an unknown layer: the model's names, with close matches
        image_maps(net, "unitz", probe, [0], baselines=())
    with pytest.raises(NeurocoreError, match=r"indices must be dataset indices in \[0, 24\)"):
        image_maps(net, "units", probe, [24])
    assert isinstance(ImageMaps(torch.rand(3, 2, 2), {}), ImageMaps)
