"""``neurocore sweep``: models × layers × methods, each (model, layer) a Ray task on a local cluster.

The model is the demo concept world's CNN saved to a file and the probe a folder of the world's images in
class sub-folders (``labels: true``): the combined table must equal running each cell alone, a rerun
must skip every finished cell, a changed method setting must rerun that method's cells only, a failing
cell must be reported while the others finish, and config errors must name the key."""

from __future__ import annotations

import contextlib
import io
import json
import shutil

import pandas as pd
import PIL.Image
import pytest
import torch
from conftest import RAY_MISSING

from neurocore import NeurocoreError
from neurocore.scale import load_sweep_config, run_sweep, sweep_config

pytest.importorskip("ray", reason=RAY_MISSING)
yaml = pytest.importorskip("yaml", reason="PyYAML is not installed (pip install neurocore[ray]); CI installs it")

LAYERS = ["block2", "block4"]
METHODS = [{"clip_dissect": {"similarity": "wpmi", "top_k": 6}}, {"linear": {"max_length": 2}}]
pytestmark = pytest.mark.filterwarnings("ignore:layer .* neurons are dead", "ignore:.*interpretable")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A probe folder of 4 classes × 8 concept-world images and an untrained ConceptWorldCNN saved whole."""
    from neurocore.demo import ConceptWorld, ConceptWorldCNN

    root = tmp_path_factory.mktemp("sweep")
    w = ConceptWorld(shapes=("circle", "square"), colours=("red", "blue"), image_size=24)
    data = w.sample(8, seed=0)
    for i in range(len(data)):
        image, label = data[i]
        folder = root / "probe" / w.classes[label].replace(" ", "_")
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
        PIL.Image.fromarray(pixels).save(folder / f"{i:02d}.png")
    torch.manual_seed(0)
    torch.save(ConceptWorldCNN(len(w.classes), widths=(4, 8, 8, 8)).eval(), root / "cnn.pt")
    return root


def write_config(root, out="out", methods=METHODS, **extra):
    raw = {"models": [{"name": "cnn.pt", "id": "cnn", "input_size": 24}], "layers": {"cnn": LAYERS},
           "methods": methods, "probe": "probe", "labels": True, "out": out, "batch_size": 8, "seed": 0, **extra}
    path = root / f"{out}.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def first(world, cluster):
    """The sweep run once through Ray; later tests copy its output folder."""
    return run_sweep(write_config(world), progress=False)


def cell_alone(world, layer, method, settings):
    """One cell through the pipeline in this process, one thread as in the Ray task."""
    from neurocore._pipeline import run_methods
    from neurocore.methods import get_method
    from neurocore.models import load_model
    from neurocore.probe import ImageFolder

    model, transform = load_model(str(world / "cnn.pt"), input_size=24)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        run = run_methods(model, [layer], ImageFolder(world / "probe"), {method: get_method(method)(**settings, seed=0)},
                          labels=True, transform=transform, batch_size=8, progress=False)
    finally:
        torch.set_num_threads(threads)
    return run.explanations[method]


def test_table_equals_each_cell_alone(world, first):
    from neurocore.methods import Explanations
    from neurocore.scale._sweep import cell_stats

    table = first.table
    assert first.ok and list(table["status"]) == ["ran"] * 4
    assert [tuple(r) for r in table[["model", "layer", "method"]].values] == [
        ("cnn", layer, m) for layer in LAYERS for m in ("clip_dissect", "linear")]
    saved = pd.read_csv(first.out / "sweep.csv", keep_default_na=False, na_values=[""])
    assert list(saved["status"]) == list(table["status"]) and list(saved["path"]) == list(table["path"])
    page = (first.out / "index.html").read_text()
    for row in table.itertuples():
        cell = first.out / row.path
        assert (cell / "done.json").is_file() and f"href='{row.path}/index.html'" in page
        settings = next(m[row.method] for m in METHODS if row.method in m)
        alone = cell_alone(world, row.layer, row.method, settings)
        on_disk = Explanations.load(cell / row.method)
        pd.testing.assert_frame_equal(on_disk.to_pandas(), alone.to_pandas())
        stats = cell_stats(alone)
        assert (row.neurons, row.interpretable, row.dead) == (stats["neurons"], stats["interpretable"], stats["dead"])
        assert row.max_similarity == pytest.approx(stats["max_similarity"], nan_ok=True)
        assert row.mean_similarity == pytest.approx(stats["mean_similarity"], nan_ok=True)


def test_rerun_skips_finished_cells(world, first, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(first.out, out)
    cfg = sweep_config(yaml.safe_load(write_config(world).read_text()), world)
    from dataclasses import replace

    cfg = replace(cfg, out=str(out), cache_dir=None)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("done.json")}
    again = run_sweep(cfg, progress=False)
    assert list(again.table["status"]) == ["reused"] * 4  # no cell ran
    assert {p: p.stat().st_mtime_ns for p in out.rglob("done.json")} == stamps
    cols = ["model", "layer", "method", "neurons", "interpretable", "dead", "mean_similarity", "max_similarity"]
    pd.testing.assert_frame_equal(again.table[cols], first.table[cols])


def test_changed_setting_reruns_only_its_cells(world, first):
    shutil.copytree(first.out, world / "changed")
    methods = [METHODS[0], {"linear": {"max_length": 1}}]
    result = run_sweep(write_config(world, out="changed", methods=methods), progress=False)
    status = dict(zip(zip(result.table["layer"], result.table["method"]), result.table["status"]))
    assert status == {(layer, m): ("reused" if m == "clip_dissect" else "ran") for layer in LAYERS for m in ("clip_dissect", "linear")}
    marker = json.loads((world / "changed" / "cnn" / "block4" / "linear" / "done.json").read_text())
    assert marker["config"]["settings"] == {"max_length": 1}


def test_failing_cell_is_reported_and_others_finish(world, cluster):
    from neurocore.cli import main

    methods = [{"clip_dissect": {"similarity": "no_such_similarity"}}, METHODS[1]]
    config = write_config(world, out="failing", methods=methods)
    result = run_sweep(config, progress=False)
    table = result.table.set_index(["layer", "method"])
    assert not result.ok
    for layer in LAYERS:
        assert table.loc[(layer, "clip_dissect"), "status"] == "failed"
        assert "similarity" in table.loc[(layer, "clip_dissect"), "error"]
        assert table.loc[(layer, "linear"), "status"] == "ran"  # same Ray task, after the failed cell
        assert (world / "failing" / "cnn" / layer / "clip_dissect" / "failed.json").is_file()
    assert "no_such_similarity" in (world / "failing" / "index.html").read_text()
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        status = main(["sweep", str(config), "--no-progress"])
    assert status == 1 and "2 of 4 cells failed" in err.getvalue()


@pytest.mark.parametrize("change, match", [
    ({"model": []}, r"unknown key 'model' \(did you mean 'models'"),
    ({"models": [{"name": "cnn.pt", "input_size": "big"}]}, r"models\[0\]\.input_size must be an integer >= 1; got 'big'"),
    ({"models": [{"name": "cnn.pt", "inputsize": 24}]}, r"unknown key 'models\[0\]\.inputsize' \(did you mean 'input_size'\?\)"),
    ({"methods": ["clip_disect"]}, r"methods\[0\] names unknown method 'clip_disect' \(did you mean 'clip_dissect'\?\)"),
    ({"methods": [{"linear": {"max_lenght": 2}}]}, r"methods\[0\]\.linear: .*'max_lenght' \(did you mean 'max_length'"),
    ({"layers": {"resnet": ["block2"]}}, r"unknown key 'layers\.resnet'.*the keys here are: cnn"),
    ({"labels": False}, r"exactly one concept source.*got none"),
    ({"engine": "dask"}, r"engine must be one of ray, local; got 'dask'"),
    ({"probe": "no_such_folder"}, r"probe names .*no_such_folder.*not an existing folder"),
])
def test_config_errors_name_the_key(world, change, match):
    raw = {"models": [{"name": "cnn.pt", "id": "cnn"}], "layers": {"cnn": LAYERS}, "methods": METHODS,
           "probe": "probe", "labels": True, "out": "out"}
    raw.update(change)
    with pytest.raises(NeurocoreError, match=match):
        sweep_config(raw, world)


def test_layer_typo_and_yaml_errors(world, tmp_path):
    cfg = sweep_config({"models": [{"name": "cnn.pt", "id": "cnn"}], "layers": ["block5"], "methods": ["clip_dissect"],
                        "probe": "probe", "labels": True, "out": str(tmp_path / "o"), "engine": "local"}, world)
    with pytest.raises(NeurocoreError, match=r"layers of 'cnn'\[0\]: layer 'block5' is not a module of cnn; close matches: block"):
        run_sweep(cfg, progress=False)
    assert not (tmp_path / "o" / "cnn").exists()  # checked before any cell ran
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [cnn.pt\nlayers: x\n")
    with pytest.raises(NeurocoreError, match=r"not valid YAML at line \d+, column \d+"):
        load_sweep_config(bad)


def test_example_config_is_valid():
    """examples/sweep.yaml reads Tiny-ImageNet from shared/data: its keys, models and layer names are valid."""
    from pathlib import Path

    from conftest import SHARED_DATA

    from neurocore.scale._sweep import _preflight

    if not (SHARED_DATA / "tiny-imagenet-200" / "val").is_dir():
        pytest.skip(f"real data absent: {SHARED_DATA / 'tiny-imagenet-200' / 'val'} (shared/data)")
    cfg = load_sweep_config(Path(__file__).resolve().parents[1] / "examples" / "sweep.yaml")
    assert len(cfg.cells) == 8 and cfg.labels and cfg.annotations.endswith("val_annotations.txt")
    _preflight(cfg)  # builds each model (random weights) and checks its layer names


def test_random_init_model_is_the_same_in_every_run_and_reuses_its_recording(world):
    """``random_init: true``: the model is drawn with the sweep's seed, so a rerun with a changed method
    setting records nothing again (the same weights, the same recording cache key)."""
    raw = {"models": [{"name": "resnet18", "id": "r18", "random_init": True, "input_size": 24}],
           "layers": {"r18": ["layer1"]},
           "methods": [{"linear": {"max_length": 2}}], "probe": "probe", "labels": True, "out": "rand1",
           "cache_dir": "rand-cache", "batch_size": 8, "seed": 0, "engine": "local"}
    first_run = run_sweep(sweep_config(raw, world), progress=False)
    assert first_run.ok
    cache = world / "rand-cache"
    files = {p: p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file()}
    assert files
    changed = {**raw, "out": "rand2", "methods": [{"linear": {"max_length": 1}}]}
    second = run_sweep(sweep_config(changed, world), progress=False)
    assert second.ok and list(second.table["status"]) == ["ran"]
    after = {p: p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file()}
    assert after == files  # no new recording key: the same random model, its recording reused as it was
    assert (first_run.table["dead"] == second.table["dead"]).all()
