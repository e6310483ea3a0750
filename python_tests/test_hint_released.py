"""HINT's "as released" contributions: XGBoost + TreeSHAP (the optional extra ``hint-released``)."""

from __future__ import annotations

import sys

import pytest
import torch

from neurocore._errors import NeurocoreError
from neurocore.methods.hint import released_contributions


def test_planted_neuron_gets_the_largest_contribution():
    pytest.importorskip("xgboost", reason="the optional extra hint-released (xgboost) is not installed")
    pytest.importorskip("shap", reason="the optional extra hint-released (shap) is not installed")
    gen = torch.Generator().manual_seed(1)
    cells = torch.randn(600, 6, generator=gen)
    labels = torch.stack([cells[:, 2] > 0.3, cells[:, 4] < -0.3], 1)  # concept 0 <- neuron 2, concept 1 <- neuron 4
    phi = released_contributions(cells, labels, n_estimators=30, max_cells=200, seed=0)
    assert phi.shape == (6, 2) and (phi >= 0).all()
    assert int(phi[:, 0].argmax()) == 2 and int(phi[:, 1].argmax()) == 4
    assert phi[2, 0] > 5 * phi[[0, 1, 3, 4, 5], 0].max()  # the tree splits on the planted neuron only
    assert torch.equal(phi, released_contributions(cells, labels, n_estimators=30, max_cells=200, seed=0))
    empty = released_contributions(cells, torch.zeros(600, 1, dtype=torch.bool), n_estimators=5)
    assert torch.equal(empty, torch.zeros(6, 1))  # a concept without cells contributes nothing


@pytest.mark.parametrize("missing", ["xgboost", "shap"])
def test_clear_error_without_the_extra(monkeypatch, missing):
    monkeypatch.setitem(sys.modules, missing, None)  # import fails as if not installed
    with pytest.raises(NeurocoreError, match=r"needs xgboost and shap .*pip install 'neurocore\[hint-released\]'"):
        released_contributions(torch.randn(20, 3), torch.rand(20, 1) > 0.5)


def test_hint_method_with_released_contributions():
    pytest.importorskip("xgboost", reason="the optional extra hint-released (xgboost) is not installed")
    pytest.importorskip("shap", reason="the optional extra hint-released (shap) is not installed")
    from neurocore.demo import ConceptWorld, PlantedConceptNet
    from neurocore.methods.hint import Hint
    from neurocore.probe import record

    world = ConceptWorld()
    data = world.sample(6, seed=4)
    net = PlantedConceptNet(world).eval()
    from neurocore.concepts import ConceptScores

    store = record(net, ["colours"], data, batch_size=256, progress=False)
    full = data.concept_scores()
    cols = [full.concepts.index(c) for c in world.colours]  # the colour concepts only: four XGBoost fits
    scores = ConceptScores.from_tensor(full.scores[:, cols], list(world.colours), image_ids=full.image_ids)
    ex = Hint(saliency="gradient_x_input", target="logit_sum", contribution="released", images_per_concept=6,
              max_cells=200).explain(store, scores, model=net, probe=data)
    assert [n.label for n in ex] == list(world.colours)  # each colour unit contributes most to its colour
