"""One save/load helper for every result object (neurocore._io), neurocore.load of any result folder,
the CSV's JSON list columns, the neutral Split, ids of ActivationStore.from_tensor, and
register_method under importlib.reload (issue 8)."""

from __future__ import annotations

import importlib
import json
import math
import os
import sys
import textwrap
import warnings

import pandas as pd
import pytest
import torch

import neurocore
from neurocore import NeurocoreError, Split, split_indices
from neurocore.concepts import ConceptScores
from neurocore.evaluate import SimulationScores
from neurocore.methods import Explanations, NeuronExplanation, explain_linear, get_method, list_methods, register_method
from neurocore.probe import ActivationStore


def explanations():
    return Explanations(
        "linear",
        (
            NeuronExplanation("fc", 0, "0.5·dog, \"big\" - 0.2·cat", 0.7, ("dog, \"big\"", "cat"), (0.5, -0.2), 0.1, True,
                              top_images=(3, 1), metrics={"val_corr": 0.7, "test_corr": math.nan},
                              top_dataset_indices=(4, 1), top_image_ids=("a/b,c.png", "é/ü.png")),
            NeuronExplanation("fc", 1, "", math.nan, is_linear=True, interpretable=False, dead=True,
                              metrics={"val_corr": math.nan, "test_corr": math.nan}),
        ),
        {"probe": {"num_images": 5, "skipped": [[0, "a/bad.png: truncated"]]}},
    )


def results(tmp_path):
    store = ActivationStore.from_tensor(torch.rand(6, 3), "fc", top_k=2, image_ids=[f"i{k}.png" for k in range(6)])
    scores = ConceptScores.from_tensor(torch.rand(6, 2), ["dog", "cat"])
    sim = SimulationScores("correlation", "fc", (0, 1), torch.tensor([torch.rand(()).item(), math.nan], dtype=torch.float64), ("ok", "dead"))
    return {
        "explanations": (explanations(), tmp_path / "ex"),
        "store": (store, tmp_path / "store"),
        "scores": (scores, tmp_path / "scores"),
        "split": (split_indices(20, seed=3, image_ids=[str(i) for i in range(20)]), tmp_path / "split"),
        "simulation": (sim, tmp_path / "sim"),
    }


@pytest.mark.parametrize("kind", ["explanations", "store", "scores", "split", "simulation"])
def test_neurocore_load_reads_every_result(kind, tmp_path):
    obj, folder = results(tmp_path)[kind]
    obj.save(folder)
    back = neurocore.load(folder)
    assert type(back) is type(obj)
    meta = [p for p in folder.iterdir() if p.suffix == ".json"]
    assert len(meta) == 1 and json.loads(meta[0].read_text())["format"].startswith("neurocore.")
    if kind == "explanations":
        assert back.neurons[0] == obj.neurons[0] and back.skipped == [(0, "a/bad.png: truncated")]
    elif kind == "store":
        assert back.image_ids == obj.image_ids and torch.equal(back["fc"].summaries, obj["fc"].summaries)
    elif kind == "scores":
        assert torch.equal(back.scores, obj.scores)
    elif kind == "split":
        assert back == obj and back.image_ids_sha256 == obj.image_ids_sha256
    else:
        assert back.status == obj.status and torch.allclose(back.scores, obj.scores, equal_nan=True)


@pytest.mark.parametrize("kind, tensor_file", [("store", "activations.pt"), ("scores", "scores.pt"), ("simulation", "simulation_scores.pt")])
def test_tensors_of_another_save_are_refused(kind, tensor_file, tmp_path):
    obj, folder = results(tmp_path)[kind]
    obj.save(folder)
    other, _ = results(tmp_path / "again")[kind]
    other.save(tmp_path / "other")
    os.replace(tmp_path / "other" / tensor_file, folder / tensor_file)
    with pytest.raises(NeurocoreError, match="different saves"):
        neurocore.load(folder)


@pytest.mark.parametrize("kind, meta_file", [("store", "activations.json"), ("explanations", "explanations.json"), ("simulation", "simulation_scores.json")])
def test_unknown_format_version_is_refused(kind, meta_file, tmp_path):
    obj, folder = results(tmp_path)[kind]
    obj.save(folder)
    meta = json.loads((folder / meta_file).read_text())
    meta["format_version"] = 99
    (folder / meta_file).write_text(json.dumps(meta))
    with pytest.raises(NeurocoreError, match="format version 99"):
        neurocore.load(folder)


def test_load_errors(tmp_path):
    with pytest.raises(NeurocoreError, match="does not exist"):
        neurocore.load(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(NeurocoreError, match="holds no saved neurocore result"):
        neurocore.load(tmp_path / "empty")
    explanations().save(tmp_path / "both")
    ConceptScores.from_tensor(torch.rand(2, 2), ["a", "b"]).save(tmp_path / "both")
    with pytest.raises(NeurocoreError, match="several saved results"):
        neurocore.load(tmp_path / "both")


def test_earlier_formats_still_load(tmp_path):
    # format 1 of a split (a bare JSON file) and of explanations (no kind header, no label)
    old = {"format": "neurocore.split", "version": 1, "num_images": 5, "seed": 0, "fractions": [0.6, 0.2, 0.2],
           "train": [0, 2, 4], "val": [1], "test": [3]}
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert Split.load(tmp_path / "old.json").test.tolist() == [3]
    (tmp_path / "ex").mkdir()
    neuron = {"layer": "fc", "unit": 0, "description": "0.1·a + 0.9·b", "similarity": 0.5, "concepts": ["a", "b"],
              "scores": [0.1, 0.9], "bias": 0.0, "is_linear": True, "interpretable": True, "dead": False,
              "top_images": [2], "metrics": {}}
    (tmp_path / "ex" / "explanations.json").write_text(json.dumps({"format_version": 1, "method": "linear", "params": {}, "neurons": [neuron]}))
    back = Explanations.load(tmp_path / "ex")
    assert back[0].label == "b" and back[0].top_images == (2,) and back[0].top_image_ids == ()


def test_csv_list_columns_are_json_and_round_trip(tmp_path):
    ex = explanations()
    table = ex.to_pandas()
    assert json.loads(table["concepts"][0]) == ["dog, \"big\"", "cat"]
    assert json.loads(table["top_image_ids"][0]) == ["a/b,c.png", "é/ü.png"]
    assert json.loads(table["scores"][1]) == [] and table["label"].tolist() == ["dog, \"big\"", ""]
    ex.save(tmp_path / "out")
    read = pd.read_csv(tmp_path / "out" / "explanations.csv")
    for frame in (table, read):
        back = Explanations.from_pandas(frame, "linear")
        for a, b in zip(ex, back):
            for f in ("layer", "unit", "description", "label", "concepts", "top_images", "top_dataset_indices",
                      "top_image_ids", "is_linear", "dead", "interpretable"):
                assert getattr(a, f) == getattr(b, f), f
            assert a.scores == pytest.approx(b.scores) and set(a.metrics) == set(b.metrics)


def test_split_lives_in_a_neutral_place():
    import neurocore.methods.linear as linear

    assert linear.Split is Split is neurocore.Split and linear.split_indices is split_indices
    assert Split.__module__ == "neurocore._split"


@pytest.mark.parametrize("n_store", [19, 21, 200])
def test_split_for_another_number_of_images_names_both(n_store):
    scores = ConceptScores.from_tensor(torch.rand(n_store, 3), ["a", "b", "c"])
    with pytest.raises(NeurocoreError, match=f"split was drawn for 20 images but the probe set has {n_store}"):
        explain_linear(torch.rand(n_store, 2), scores, split=split_indices(20))


def test_split_for_other_image_ids_is_refused(tmp_path):
    ids = [f"img{i}.png" for i in range(40)]
    P = torch.bernoulli(torch.full((40, 3), 0.5))
    store = ActivationStore.from_tensor(P[:, :1] + 0.01 * torch.rand(40, 1), image_ids=ids)
    scores = ConceptScores.from_tensor(P, ["a", "b", "c"], image_ids=ids)
    split = split_indices(store, seed=1)
    assert split.image_ids_sha256 is not None and split == Split.load(split.save(tmp_path / "s.json"))
    explain_linear(store, scores, split=split)
    reordered = ids[1:] + ids[:1]
    with pytest.raises(NeurocoreError, match="split and the probe set were made for different images"):
        explain_linear(ActivationStore.from_tensor(P[:, :1], image_ids=reordered),
                       ConceptScores.from_tensor(P, ["a", "b", "c"], image_ids=reordered), split=split)
    with pytest.raises(NeurocoreError, match="image_ids has 39 ids for n=40"):
        split_indices(40, image_ids=ids[:39])


def test_from_tensor_ids_are_not_made_up():
    store = ActivationStore.from_tensor(torch.rand(4, 2))
    assert store.image_ids == () and store.dataset_indices.tolist() == [0, 1, 2, 3]
    # real ids of a dataset without image_id are "0", "1", ...: a made-up "0" would pass for one
    real = ConceptScores.from_tensor(torch.rand(4, 2), ["a", "b"], image_ids=["2", "3", "4", "5"])
    from neurocore.methods import ClipDissect

    ClipDissect(similarity="cos").explain(store, real)  # unknown ids: only counts are compared
    given = ActivationStore.from_tensor(torch.rand(4, 2), image_ids=["0", "1", "2", "3"], dataset_indices=[0, 1, 2, 3])
    with pytest.raises(NeurocoreError, match="row 0 is '0' in the activation store but '2' in concept_scores"):
        ClipDissect(similarity="cos").explain(given, real)
    with pytest.raises(NeurocoreError, match="image_ids has 3 ids but the store has 4 rows"):
        ActivationStore.from_tensor(torch.rand(4, 2), image_ids=["a", "b", "c"])
    with pytest.raises(NeurocoreError, match="dataset_indices must be a Tensor\\[4\\]"):
        ActivationStore.from_tensor(torch.rand(4, 2), dataset_indices=[0, 1])


def test_register_method_survives_reload(tmp_path, monkeypatch):
    (tmp_path / "my_nc_method.py").write_text(textwrap.dedent('''
        from neurocore.methods import register_method

        @register_method("reload_probe_method")
        class ReloadProbe:
            def __init__(self, width: int = 1):
                self.width = width
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    from neurocore.methods import _base

    try:
        module = importlib.import_module("my_nc_method")
        first = get_method("reload_probe_method")
        module = importlib.reload(module)  # notebook autoreload
        assert get_method("reload_probe_method") is module.ReloadProbe is not first
        with pytest.raises(NeurocoreError, match="already registered"):
            @register_method("reload_probe_method")
            class Other:  # another class under the taken name
                pass
        with pytest.raises(TypeError, match="did you mean 'width'"):
            module.ReloadProbe(widht=2)
    finally:
        _base._METHODS.pop("reload_probe_method", None)
        sys.modules.pop("my_nc_method", None)
    assert "reload_probe_method" not in list_methods()


def test_register_method_rejects_unknown_inputs():
    with pytest.raises(NeurocoreError, match="unknown inputs \\['gpu'\\]"):
        @register_method("bad_needs_method")
        class Bad:
            needs = {"store", "gpu"}
    assert "bad_needs_method" not in list_methods()
