"""Simulation scoring (Linear Explanations §4): simulator matrix, simulate, correlation, ablation.

Every formula is compared with a direct, loop-by-loop transcription of the paper's equations on small
inputs whose answer is known (planted explanations, perfect and mean-valued simulations).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from neurocore._errors import NeurocoreError
from neurocore.concepts import ConceptScores
from neurocore.evaluate import (
    CONCEPT_SOURCE_KEY,
    Head,
    SimulationScores,
    ablation_score,
    correlation_score,
    explanation_concepts,
    norm_scaling,
    simulate,
    simulator_matrix,
)
from neurocore.methods._base import Explanations, NeuronExplanation
from neurocore.probe import ActivationStore

CONCEPTS = ["dog", "cat", "snow", "ski", "car"]


def label(layer, unit, concept):
    return NeuronExplanation(layer, unit, concept, 1.0)


def linear(layer, unit, concepts, weights, bias=0.0):
    return NeuronExplanation(layer, unit, concepts[0], 0.5, concepts=tuple(concepts), scores=tuple(weights), bias=bias, is_linear=True)


def sim(P, concepts=CONCEPTS, source="open_clip:simulator"):
    return ConceptScores.from_tensor(P, concepts, source=source)


# ----------------------------------------------------------------------------------------------
# simulator matrix and simulate


def test_simulator_matrix_is_calibrated_sigmoid():
    S = torch.rand(7, 5) * 0.4 - 0.1
    out = simulator_matrix(sim(S), 58.0, -0.13)
    expected = 1.0 / (1.0 + np.exp(-58.0 * (S.double().numpy() - 0.13)))
    np.testing.assert_allclose(out.scores.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert out.concepts == tuple(CONCEPTS) and out.source == "open_clip:simulator"
    assert out.key["calibration"] == {"a": 58.0, "b": -0.13}


def test_simulator_matrix_rejects_tensor_and_bad_calibration():
    with pytest.raises(NeurocoreError, match="ConceptScores"):
        simulator_matrix(torch.rand(3, 5), 58.0, -0.13)
    with pytest.raises(NeurocoreError):
        simulator_matrix(sim(torch.rand(3, 5)), float("nan"), -0.13)


def test_simulate_matches_loop():
    P = torch.rand(40, 5)
    e = Explanations(
        "mixed",
        (
            linear("l", 0, ["snow", "dog", "car"], [2.0, -0.5, 0.25], bias=3.0),  # bias ignored (eq. 9)
            label("l", 1, "cat"),
            NeuronExplanation("l", 2, "", math.nan),  # empty: s = 0
            linear("l", 5, ["ski"], [1.5]),
        ),
    )
    out = simulate(e, sim(P))
    expected = np.zeros((40, 4))
    for k, n in enumerate(e):
        for c, w in n.linear_terms():
            for i in range(40):
                expected[i, k] += w * float(P[i, CONCEPTS.index(c)])
    assert out.shape == (40, 4) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6, atol=1e-6)
    assert explanation_concepts(e) == ("snow", "dog", "car", "cat", "ski")


def test_simulate_missing_concepts():
    e = Explanations("x", (label("l", 0, "dgo"), label("l", 1, "cat")))
    with pytest.raises(NeurocoreError, match=r"'dgo'.*close.*'dog'.*missing='nan'"):
        simulate(e, sim(torch.rand(4, 5)))
    with pytest.warns(UserWarning, match="1 neuron"):
        out = simulate(e, sim(torch.rand(4, 5)), missing="nan")
    assert torch.isnan(out[:, 0]).all() and torch.isfinite(out[:, 1]).all()
    with pytest.raises(NeurocoreError, match="missing must be"):
        simulate(e, sim(torch.rand(4, 5)), missing="skip")


def test_simulate_layer_choice_and_raw_cosines_warning():
    e = Explanations("x", (label("a", 0, "dog"), label("b", 0, "cat")))
    with pytest.raises(NeurocoreError, match="pass layer="):
        simulate(e, sim(torch.rand(3, 5)))
    assert simulate(e, sim(torch.rand(3, 5)), layer="b").shape == (3, 1)
    with pytest.warns(UserWarning, match="simulator_matrix"):
        simulate(e, sim(torch.rand(3, 5) - 0.5), layer="a")


# ----------------------------------------------------------------------------------------------
# correlation score


def naive_pearson(x, y):
    x, y = np.asarray(x, float), np.asarray(y, float)
    x, y = (x - x.mean()) / x.std(), (y - y.mean()) / y.std()  # eq. 10: standardised on the split
    return float((x * y).sum() / len(x))


def test_correlation_planted_and_against_loop():
    torch.manual_seed(1)
    P = torch.rand(200, 5)
    acts = torch.stack([3 * P[:, 2] + 1, P[:, 0] + 0.3 * torch.rand(200), torch.rand(200) + 0.5], 1)
    e = Explanations("x", (label("l", 0, "snow"), linear("l", 1, ["dog", "car"], [1.0, 0.2]), label("l", 2, "ski")))
    split = torch.arange(60, 200)
    r = correlation_score(e, acts, sim(P), split)
    assert r.metric == "correlation" and r.units == (0, 1, 2) and r.status == ("ok", "ok", "ok")
    assert r.scores[0] == pytest.approx(1.0, abs=1e-9)  # a perfect explanation
    s = simulate(e, sim(P)).numpy()
    for k in range(3):
        assert float(r.scores[k]) == pytest.approx(naive_pearson(s[60:, k], acts[60:, k].numpy()), abs=1e-6)
    assert r.mean == pytest.approx(float(r.scores.mean()))
    # a bool mask is the same split; the whole set differs
    mask = torch.zeros(200, dtype=torch.bool)
    mask[60:] = True
    assert torch.equal(correlation_score(e, acts, sim(P), mask).scores, r.scores)
    assert not torch.allclose(correlation_score(e, acts, sim(P)).scores[1:], r.scores[1:])


def test_correlation_dead_empty_constant():
    P = torch.rand(50, 5)
    acts = torch.stack(
        [
            P[:, 0],
            torch.full((50,), 0.005),  # dead: max < 0.01
            P[:, 1] + 1,
            torch.full((50,), 2.0),  # constant activation on the split
            P[:, 3],
        ],
        1,
    )
    e = Explanations(
        "x",
        (
            label("l", 0, "dog"),
            label("l", 1, "dog"),
            NeuronExplanation("l", 2, "", math.nan),
            label("l", 3, "ski"),
            linear("l", 4, ["car"], [0.0]),  # s == 0 everywhere: constant simulation
        ),
    )
    with pytest.warns(UserWarning, match="constant activation"):
        r = correlation_score(e, ActivationStore.from_tensor(acts, "l"), sim(P))
    assert r.status == ("ok", "dead", "empty", "constant_activation", "constant_simulation")
    assert r.scores[0] == pytest.approx(1.0)
    assert math.isnan(r.scores[1]) and math.isnan(r.scores[3])
    assert r.scores[2] == 0.0 and r.scores[4] == 0.0
    assert r.scored.tolist() == [True, False, True, False, True]
    assert r.mean == pytest.approx(1.0 / 3.0)  # dead and undefined neurons skipped, empty ones count 0
    table = r.to_pandas()
    assert list(table.columns) == ["layer", "unit", "correlation", "status"] and len(table) == 5


def test_correlation_warns_when_simulator_is_the_explainer():
    P = torch.rand(30, 5)
    acts = P[:, :1] + 0.1
    e = Explanations("linear", (label("l", 0, "dog"),), params={CONCEPT_SOURCE_KEY: "open_clip:ViT-L-16-SigLIP-384:webli"})
    with pytest.warns(UserWarning, match="explainer's own source"):
        correlation_score(e, acts, sim(P, source="open_clip:ViT-L-16-SigLIP-384:webli"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        correlation_score(e, acts, sim(P, source="open_clip:ViT-SO400M-14-SigLIP-384:webli"))


def test_correlation_bad_inputs():
    P = torch.rand(30, 5)
    e = Explanations("x", (label("l", 3, "dog"),))
    with pytest.raises(NeurocoreError, match="acts has 29 images but sim_scores has 30"):
        correlation_score(e, torch.rand(29, 4), sim(P))
    with pytest.raises(NeurocoreError, match="units up to 3"):
        correlation_score(e, torch.rand(30, 2), sim(P))
    with pytest.raises(NeurocoreError, match="split indexes rows"):
        correlation_score(e, torch.rand(30, 4), sim(P), [0, 30])
    with pytest.raises(NeurocoreError, match="not recorded"):
        correlation_score(e, ActivationStore.from_tensor(torch.rand(30, 4), "other"), sim(P))


# ----------------------------------------------------------------------------------------------
# ablation score: a linear head on pooled features, against the paper's equations written as loops


def naive_ce(logits, y, T=1.1):
    logits = np.asarray(logits, float) / T
    m = logits.max()
    return float(m + np.log(np.exp(logits - m).sum()) - logits[y])


def naive_alpha(W, b, feats, labels, s, unit, c, d, mu, test, T=1.1):
    """Eq. 12 on the test rows, one image and one replacement at a time, float64."""
    num = den = 0.0
    for i in test:
        f = feats[i].astype(float)
        base = naive_ce(W @ f + b, labels[i], T)
        g = f.copy()
        g[unit] = c * s[i] + d
        h = f.copy()
        h[unit] = mu
        num += abs(naive_ce(W @ g + b, labels[i], T) - base)
        den += abs(naive_ce(W @ h + b, labels[i], T) - base)
    return 1.0 - num / den


def naive_norm(s_val, a_val):
    """App. B.5 eqs. 16–20 with population standard deviations."""
    s_val, a_val = np.asarray(s_val, float), np.asarray(a_val, float)
    sd_s, sd_a = s_val.std(), a_val.std()
    rho = float((((s_val - s_val.mean()) / sd_s) * ((a_val - a_val.mean()) / sd_a)).mean())
    c = rho * sd_a / sd_s
    return c, a_val.mean() - c * s_val.mean()


@pytest.fixture
def linear_world():
    torch.manual_seed(3)
    N, C, M, classes = 90, 6, 5, 4
    P = torch.rand(N, M)
    feats = torch.rand(N, C) * 2
    feats[:, 0] = 2 * P[:, 1] + 0.5  # unit 0 is exactly "cat"
    feats[:, 2] = P[:, 3] + 0.4 * torch.rand(N)  # unit 2 is roughly "ski"
    fc = nn.Linear(C, classes)
    with torch.no_grad():
        fc.weight.mul_(3)
    labels = torch.randint(0, classes, (N,))
    e = Explanations(
        "x",
        (
            label("l", 0, "cat"),
            linear("l", 2, ["ski", "dog"], [1.0, 0.3]),
            label("l", 4, "car"),
        ),
    )
    return dict(P=P, feats=feats, fc=fc, labels=labels, e=e, val=torch.arange(0, 30), test=torch.arange(30, 90))


def test_norm_scaling_matches_formula():
    s, a = torch.rand(25, 3), torch.rand(25, 3)
    c, d = norm_scaling(s, a)
    for k in range(3):
        ck, dk = naive_norm(s[:, k], a[:, k])
        assert float(c[k]) == pytest.approx(ck, rel=1e-9) and float(d[k]) == pytest.approx(dk, rel=1e-9)
    c, d = norm_scaling(torch.ones(5, 1), torch.rand(5, 1))  # constant s: fall back to the mean
    assert float(c[0]) == 0.0


def test_ablation_norm_against_loop(linear_world):
    w = linear_world
    r = ablation_score(
        w["e"], w["feats"], sim(w["P"]), head=Head("l", pooled=w["fc"]), labels=w["labels"],
        val=w["val"], test=w["test"], scaling="norm", progress=False,
    )
    assert r.metric == "ablation(norm)" and r.status == ("ok", "ok", "ok")
    s = simulate(w["e"], sim(w["P"])).numpy()
    W, b = w["fc"].weight.detach().double().numpy(), w["fc"].bias.detach().double().numpy()
    feats, labels = w["feats"].numpy(), w["labels"].numpy()
    for k, unit in enumerate(r.units):
        c, d = naive_norm(s[:30, k], feats[:30, unit])
        assert float(r.c[k]) == pytest.approx(c, rel=1e-5) and float(r.d[k]) == pytest.approx(d, rel=1e-5, abs=1e-6)
        mu = feats[:30, unit].astype(float).mean()
        alpha = naive_alpha(W, b, feats, labels, s[:, k], unit, c, d, mu, range(30, 90))
        assert float(r.scores[k]) == pytest.approx(alpha, abs=2e-4)
    assert float(r.scores[0]) == pytest.approx(1.0, abs=1e-5)  # perfect simulation


def test_ablation_mean_prediction_scores_zero():
    # On val, s is uncorrelated with the activation (ρ_val = 0 exactly), so Norm predicts the val mean.
    s_val = [1.0, 1.0, 0.0, 0.0]
    a_val = [1.0, 0.0, 1.0, 0.0]
    P = torch.tensor(s_val + [0.3, 0.9, 0.1, 0.5])[:, None]
    feats = torch.cat([torch.tensor(a_val + [2.0, 0.1, 1.5, 0.7])[:, None], torch.rand(8, 2)], 1)
    fc = nn.Linear(3, 3)
    e = Explanations("x", (label("l", 0, "snow"),))
    r = ablation_score(
        e, feats, sim(P, ["snow"]), head=Head("l", pooled=fc), labels=torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]),
        val=range(4), test=range(4, 8), scaling="norm", progress=False,
    )
    assert float(r.c[0]) == pytest.approx(0.0, abs=1e-12) and float(r.d[0]) == pytest.approx(0.5)
    assert float(r.scores[0]) == pytest.approx(0.0, abs=1e-6)


def naive_optim(fc, feats_val, labels_val, s_val, unit, steps, lr, T=1.1):
    """Eq. 13 as the released code does it: one neuron, its own Adam on scalar c and d."""
    with torch.no_grad():
        orig = F.cross_entropy(fc(feats_val) / T, labels_val, reduction="none")
    c = torch.tensor(1.0, requires_grad=True)
    d = torch.tensor(0.0, requires_grad=True)
    opt = torch.optim.Adam([c, d], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        new = torch.cat([feats_val[:, :unit], (c * s_val + d)[:, None], feats_val[:, unit + 1 :]], 1)
        loss = (F.cross_entropy(fc(new) / T, labels_val, reduction="none") - orig).abs().sum()
        loss.backward()
        opt.step()
    return float(c.detach()), float(d.detach())


def test_ablation_optim_equals_per_neuron_adam(linear_world):
    w = linear_world
    fc = w["fc"]
    for p in fc.parameters():
        p.requires_grad_(False)  # the oracle's backward must not touch fc; the library never does
    r = ablation_score(
        w["e"], w["feats"], sim(w["P"]), head=Head("l", pooled=fc), labels=w["labels"],
        val=w["val"], test=w["test"], scaling="optim", steps=25, neuron_batch=2, progress=False,
    )
    assert r.metric == "ablation(optim)"
    s = simulate(w["e"], sim(w["P"]))
    W, b = fc.weight.double().numpy(), fc.bias.double().numpy()
    for k, unit in enumerate(r.units):
        c, d = naive_optim(fc, w["feats"][:30], w["labels"][:30], s[:30, k], unit, 25, 1e-2)
        assert float(r.c[k]) == pytest.approx(c, abs=1e-4) and float(r.d[k]) == pytest.approx(d, abs=1e-4)
        mu = float(w["feats"][:30, unit].double().mean())
        alpha = naive_alpha(W, b, w["feats"].numpy(), w["labels"].numpy(), s[:, k].numpy(), unit, float(r.c[k]), float(r.d[k]), mu, range(30, 90))
        assert float(r.scores[k]) == pytest.approx(alpha, abs=2e-4)


def test_ablation_optim_keeps_a_perfect_simulation():
    P = torch.rand(40, 2)
    feats = torch.cat([P[:, :1], torch.rand(40, 2)], 1)  # unit 0 == concept "a" exactly: c=1, d=0 is optimal
    fc = nn.Linear(3, 3)
    labels = torch.randint(0, 3, (40,))
    e = Explanations("x", (label("l", 0, "a"),))
    r = ablation_score(e, feats, sim(P, ["a", "b"]), head=Head("l", pooled=fc), labels=labels, val=range(20), test=range(20, 40), progress=False)
    assert float(r.scores[0]) > 0.999


def test_ablation_status_and_store_input(linear_world):
    w = linear_world
    feats = w["feats"].clone()
    feats[:, 5] = 0.0  # dead
    e = Explanations("x", (label("l", 0, "cat"), NeuronExplanation("l", 3, "", math.nan), label("l", 5, "dog"), label("l", 1, "zzz")))
    store = ActivationStore.from_tensor(feats, "l", labels=w["labels"])
    with pytest.warns(UserWarning, match="do not score|does not score|NaN"):
        r = ablation_score(
            e, store, sim(w["P"]), head=Head("l", pooled=w["fc"]), val=w["val"], test=w["test"],
            scaling="norm", missing="nan", progress=False,
        )
    assert r.status == ("ok", "empty", "dead", "missing_concepts")
    assert r.scores[1] == 0.0 and float(r.d[1]) == pytest.approx(float(feats[:30, 3].double().mean()))
    assert math.isnan(r.scores[2]) and math.isnan(r.scores[3])
    # the store's summaries are the pooled features: same result as passing the tensor
    with pytest.warns(UserWarning, match="NaN"):
        r2 = ablation_score(
            e, feats, sim(w["P"]), head=Head("l", pooled=w["fc"]), labels=w["labels"], val=w["val"], test=w["test"],
            scaling="norm", missing="nan", progress=False,
        )
    assert torch.allclose(r.scores[:1], r2.scores[:1])
    assert list(r.to_pandas().columns) == ["layer", "unit", "ablation(norm)", "status", "c", "d"]


def test_ablation_no_effect_neuron():
    P = torch.rand(20, 1)
    feats = torch.rand(20, 2)
    fc = nn.Linear(2, 3)
    with torch.no_grad():
        fc.weight[:, 1] = 0.0  # unit 1 does not reach the logits
    e = Explanations("x", (label("l", 1, "a"),))
    r = ablation_score(e, feats, sim(P, ["a"]), head=Head("l", pooled=fc), labels=torch.zeros(20, dtype=torch.long),
                       val=range(10), test=range(10, 20), scaling="norm", progress=False)
    assert r.status == ("no_effect",) and math.isnan(r.scores[0])


def test_ablation_bad_inputs(linear_world):
    w = linear_world
    kw = dict(head=Head("l", pooled=w["fc"]), labels=w["labels"], progress=False)
    with pytest.raises(NeurocoreError, match="disjoint"):
        ablation_score(w["e"], w["feats"], sim(w["P"]), val=range(0, 40), test=range(30, 90), **kw)
    with pytest.raises(NeurocoreError, match="scaling must be"):
        ablation_score(w["e"], w["feats"], sim(w["P"]), val=range(30), test=range(30, 90), scaling="fit", **kw)
    with pytest.raises(NeurocoreError, match="labels are needed"):
        ablation_score(w["e"], w["feats"], sim(w["P"]), val=range(30), test=range(30, 90), head=Head("l", pooled=w["fc"]), progress=False)
    with pytest.raises(NeurocoreError, match="head is for layer"):
        ablation_score(w["e"], w["feats"], sim(w["P"]), val=range(30), test=range(30, 90), head=Head("m", pooled=w["fc"]), labels=w["labels"])
    with pytest.raises(NeurocoreError, match="val is empty"):
        ablation_score(w["e"], w["feats"], sim(w["P"]), val=[], test=range(30, 90), **kw)
    with pytest.raises(NeurocoreError, match="model="):
        ablation_score(w["e"], w["feats"], sim(w["P"]), val=range(30), test=range(30, 90), labels=w["labels"])


# ----------------------------------------------------------------------------------------------
# the three ways of running the rest of the network agree


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


@pytest.fixture
def cnn_world():
    torch.manual_seed(5)
    net = SmallCNN().eval()
    images = torch.randn(24, 3, 6, 6)
    with torch.no_grad():
        maps = net.features(images)
    labels = torch.randint(0, 5, (24,))
    P = torch.rand(24, 5)
    e = Explanations("x", (label("features", 1, "dog"), linear("features", 4, ["cat", "car"], [1.0, -0.5]), label("features", 7, "snow")))
    probe = [(images[i], int(labels[i])) for i in range(24)]
    return dict(net=net, maps=maps, labels=labels, P=P, e=e, probe=probe)


@pytest.mark.parametrize("scaling", ["norm", "optim"])
def test_pooled_fast_path_equals_map_replacement(cnn_world, scaling):
    w = cnn_world
    net = w["net"]
    heads = {
        "linear": Head("features", pooled=net.fc),
        "pooled": Head("features", pooled=lambda p: net.fc(p)),  # not an nn.Linear: replaces features
        "map": Head("features", forward=lambda z: net.fc(z.mean((2, 3)))),  # replaces whole maps
    }
    results = {
        name: ablation_score(
            w["e"], w["maps"], sim(w["P"]), head=h, labels=w["labels"], val=range(8), test=range(8, 24),
            scaling=scaling, steps=8, neuron_batch=2, batch_size=7, progress=False,
        )
        for name, h in heads.items()
    }
    ref = results["linear"]
    for r in results.values():
        assert r.status == ("ok",) * 3
        assert torch.allclose(r.scores, ref.scores, atol=1e-4)
        assert torch.allclose(r.c, ref.c, atol=1e-4) and torch.allclose(r.d, ref.d, atol=1e-4)
    # the generic hook head re-runs the whole model on the images
    hooked = ablation_score(
        w["e"], None, sim(w["P"]), model=net, probe=w["probe"], head=Head("features"), val=range(8), test=range(8, 24),
        scaling=scaling, steps=8, neuron_batch=2, batch_size=7, progress=False,
    )
    assert torch.allclose(hooked.scores, ref.scores, atol=1e-4)
    assert all(p.grad is None for p in net.parameters())  # optim never writes the model's gradients


def test_probe_path_needs_matching_head_and_restores_mode(cnn_world):
    w = cnn_world
    net = w["net"].train()
    wrong = Head("features", pooled=lambda p: net.fc(p) * 2)
    with pytest.raises(NeurocoreError, match="does not reproduce the model's logits"):
        ablation_score(w["e"], None, sim(w["P"]), model=net, probe=w["probe"], head=wrong, val=range(8), test=range(8, 24), scaling="norm", progress=False)
    assert net.training  # eval mode only while scoring
    r = ablation_score(w["e"], None, sim(w["P"]), model=net, probe=w["probe"], head=Head("features", pooled=net.fc), val=range(8), test=range(8, 24), scaling="norm", progress=False)
    ref = ablation_score(w["e"], w["maps"], sim(w["P"]), head=Head("features", pooled=net.fc), labels=w["labels"], val=range(8), test=range(8, 24), scaling="norm", progress=False)
    assert torch.allclose(r.scores, ref.scores, atol=1e-5)
    net.eval()


def test_resnet18_pooled_equals_map_and_hook():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=6).eval()
    images = torch.randn(10, 3, 64, 64)  # layer4 maps are 2×2
    labels = torch.randint(0, 6, (10,))
    probe = [(images[i], int(labels[i])) for i in range(10)]
    P = torch.rand(10, 5)
    e = Explanations("x", (label("layer4", 3, "dog"), linear("layer4", 300, ["cat", "ski"], [1.0, 2.0])))
    kw = dict(model=net, probe=probe, val=range(4), test=range(4, 10), scaling="norm", batch_size=5, progress=False)
    fast = ablation_score(e, None, sim(P), **kw)  # head_after: avgpool -> fc on pooled features
    maps = ablation_score(e, None, sim(P), head=Head("layer4", forward=lambda z: net.fc(z.mean((2, 3)))), **kw)
    hooked = ablation_score(e, None, sim(P), head=Head("layer4"), **kw)
    assert fast.status == ("ok", "ok")
    assert torch.allclose(fast.scores, maps.scores, atol=1e-4)
    assert torch.allclose(fast.scores, hooked.scores, atol=1e-4)


def test_token_outputs_cls_head_pooled_equals_map():
    torch.manual_seed(4)
    tokens = torch.randn(30, 5, 6)  # [N, T, C]; the head reads the CLS token
    fc = nn.Linear(6, 3)
    P = torch.rand(30, 5)
    labels = torch.randint(0, 3, (30,))
    e = Explanations("x", (label("blocks", 2, "dog"), label("blocks", 5, "car")))
    kw = dict(labels=labels, val=range(10), test=range(10, 30), scaling="norm", progress=False)
    pooled = ablation_score(e, tokens, sim(P), head=Head("blocks", pooled=fc, summary="first"), **kw)
    mapped = ablation_score(e, tokens, sim(P), head=Head("blocks", forward=lambda z: fc(z[:, 0]), summary="first"), **kw)
    assert torch.allclose(pooled.scores, mapped.scores, atol=1e-5)
    # the neuron's activation is its CLS feature: μ = the val mean of tokens[:, 0, unit]
    assert float(pooled.d[0] + pooled.c[0] * simulate(e, sim(P))[:10, 0].double().mean()) == pytest.approx(
        float(tokens[:10, 0, 2].double().mean()), abs=1e-5
    )


def test_correlation_accepts_a_split_object():
    from types import SimpleNamespace

    P = torch.rand(40, 5)
    acts = P[:, :2] + torch.rand(40, 2)
    e = Explanations("x", (label("l", 0, "dog"), label("l", 1, "cat")))
    split = SimpleNamespace(train=torch.arange(0, 20), val=torch.arange(20, 25), test=torch.arange(25, 40))
    assert torch.equal(correlation_score(e, acts, sim(P), split).scores, correlation_score(e, acts, sim(P), torch.arange(25, 40)).scores)


def test_ablation_follows_the_device(device):
    torch.manual_seed(6)
    fc = nn.Linear(4, 3).to(device)
    P = torch.rand(30, 5)
    feats = torch.rand(30, 4)
    labels = torch.randint(0, 3, (30,))
    e = Explanations("x", (label("l", 0, "dog"), label("l", 3, "ski")))
    kw = dict(labels=labels, val=range(10), test=range(10, 30), steps=5, progress=False)
    here = ablation_score(e, feats.to(device), sim(P), head=Head("l", pooled=fc), **kw)
    ref = ablation_score(e, feats, sim(P), head=Head("l", pooled=fc.cpu()), **kw)
    assert torch.allclose(here.scores, ref.scores, atol=1e-4)


def test_shared_module_is_refused():
    relu = nn.ReLU()
    net = nn.Sequential(nn.Conv2d(3, 4, 3), relu, nn.Conv2d(4, 4, 3), relu, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    probe = [(torch.randn(3, 8, 8), i % 2) for i in range(6)]
    e = Explanations("x", (label("1", 0, "dog"),))
    with pytest.raises(NeurocoreError, match="ran 2 times"):
        ablation_score(e, None, sim(torch.rand(6, 5)), model=net, probe=probe, val=range(3), test=range(3, 6), scaling="norm", progress=False)


# ----------------------------------------------------------------------------------------------
# rows that do not belong together (issue 8, fault 7)


def _ids(n, start=0):
    return [f"cls/img{i}.png" for i in range(start, start + n)]


@pytest.mark.parametrize("other", ["shifted", "swapped"])
def test_correlation_refuses_other_images(other):
    P = torch.rand(30, 5)
    acts = 2 * P[:, [0, 2]]
    ids = _ids(30)
    wrong = _ids(30, start=1) if other == "shifted" else ids[:3] + [ids[4], ids[3]] + ids[5:]
    row = 0 if other == "shifted" else 3
    store = ActivationStore.from_tensor(acts, "l", image_ids=ids)
    e = Explanations("x", (label("l", 0, "dog"), label("l", 1, "snow")))
    with pytest.raises(NeurocoreError, match=f"row {row} is '{ids[row]}' in acts but '{wrong[row]}' in sim_scores"):
        correlation_score(e, store, ConceptScores.from_tensor(P, CONCEPTS, image_ids=wrong))
    ok = correlation_score(e, store, ConceptScores.from_tensor(P, CONCEPTS, image_ids=ids))
    assert ok.scores.tolist() == pytest.approx([1.0, 1.0])


def test_correlation_refuses_a_split_of_other_images():
    from neurocore import split_indices

    P = torch.rand(40, 5)
    ids = _ids(40)
    store = ActivationStore.from_tensor(2 * P[:, [0]], "l", image_ids=ids)
    e = Explanations("x", (label("l", 0, "dog"),))
    scores = ConceptScores.from_tensor(P, CONCEPTS, image_ids=ids)
    with pytest.raises(NeurocoreError, match="split was drawn for 50 images but acts has 40"):
        correlation_score(e, store, scores, split_indices(50))
    with pytest.raises(NeurocoreError, match="split and acts were made for different images"):
        correlation_score(e, store, scores, split_indices(40, image_ids=_ids(40, start=3)))
    r = correlation_score(e, store, scores, split_indices(store))
    assert r.scores[0].item() == pytest.approx(1.0)


def test_ablation_refuses_other_images():
    P = torch.rand(8, 1)
    feats = torch.rand(8, 3)
    e = Explanations("x", (label("l", 0, "snow"),))
    store = ActivationStore.from_tensor(feats, "l", image_ids=_ids(8))
    kwargs = dict(head=Head("l", pooled=nn.Linear(3, 3)), labels=torch.zeros(8, dtype=torch.int64), val=range(4),
                  test=range(4, 8), scaling="norm", progress=False)
    with pytest.raises(NeurocoreError, match="row 0 is 'cls/img0.png' in acts but 'cls/img2.png' in sim_scores"):
        ablation_score(e, store, ConceptScores.from_tensor(P, ["snow"], image_ids=_ids(8, start=2)), **kwargs)
    with pytest.raises(NeurocoreError, match="acts has 7 images but sim_scores has 8"):
        ablation_score(e, feats[:7], sim(P, ["snow"]), **{**kwargs, "labels": torch.zeros(7, dtype=torch.int64), "test": range(4, 7)})


def test_simulation_scores_save_load(tmp_path):
    import neurocore

    P = torch.rand(30, 5)
    e = Explanations("x", (label("l", 0, "dog"), label("l", 1, "snow")))
    r = correlation_score(e, 2 * P[:, [0, 2]], sim(P))
    back = neurocore.load(r.save(tmp_path / "sim"))
    assert isinstance(back, SimulationScores) and back.units == r.units and back.status == r.status
    assert torch.equal(back.scores, r.scores)
