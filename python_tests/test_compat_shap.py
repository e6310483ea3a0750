"""neurocore.compat.shap: exact Shapley values for small D, shap's own PermutationExplainer within
Monte-Carlo error, shap.Explanation objects that shap's plots accept, and a clear error without shap."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from neurocore import reference
from neurocore._errors import NeurocoreError
from neurocore.compat.shap import PermutationExplainer, head_parameters

shap = pytest.importorskip("shap", reason="the optional extra `shap` is not installed (pip install neurocore[shap])")


def _exact(X, model, background):
    """Interventional Shapley values with a background set: the mean over its rows of the exact
    single-baseline values (reference.shapley_exact enumerates all coalitions). [R, D, C]"""
    weight, bias, link = head_parameters(model)
    x = torch.as_tensor(X, dtype=torch.float64)
    per_row = [
        reference.shapley_exact(x, weight, bias, b.expand_as(x), link) for b in torch.as_tensor(background, dtype=torch.float64)
    ]
    return torch.stack(per_row).mean(0).transpose(1, 2)


def _head(kind, D, seed=0):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    lin = torch.nn.Linear(D, 1 if kind == "sigmoid" else 3).double()
    with torch.no_grad():
        lin.weight.copy_(torch.randn(lin.weight.shape, generator=g, dtype=torch.float64) * 1.5)
    if kind == "identity":
        return lin
    return torch.nn.Sequential(lin, torch.nn.Sigmoid() if kind == "sigmoid" else torch.nn.Softmax(dim=-1))


@pytest.mark.parametrize("kind", ["identity", "sigmoid", "softmax"])
def test_two_features_are_exact(kind):
    # with D = 2 one permutation and its reverse are all the orders: the estimate is exact
    g = torch.Generator().manual_seed(1)
    X, bg = torch.randn(6, 2, generator=g), torch.randn(5, 2, generator=g)
    head = _head(kind, 2)
    phi, base = PermutationExplainer(head, bg).shapley_values(X, max_evals=5)
    torch.testing.assert_close(phi, _exact(X, head, bg), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["sigmoid", "softmax"])
def test_small_d_converges_to_exact(kind):
    g = torch.Generator().manual_seed(2)
    D = 5
    X, bg = torch.randn(8, D, generator=g), torch.randn(6, D, generator=g)
    head = _head(kind, D)
    exact = _exact(X, head, bg)
    phi, base = PermutationExplainer(head, bg, seed=3).shapley_values(X, max_evals=400 * (2 * D + 1))
    assert (phi - exact).abs().max() < 0.01 * exact.abs().max()
    # efficiency holds for every sample whatever the sampling
    out = torch.as_tensor(head(X.double()).detach())
    torch.testing.assert_close(phi.sum(1) + base, out, rtol=1e-10, atol=1e-12)


def test_identity_is_exact_with_any_budget():
    g = torch.Generator().manual_seed(4)
    X, bg = torch.randn(4, 7, generator=g), torch.randn(9, 7, generator=g)
    head = _head("identity", 7)
    phi, _ = PermutationExplainer(head, bg).shapley_values(X, max_evals=1)
    w = head.weight.detach().double()
    torch.testing.assert_close(phi, (w.unsqueeze(0) * (X.double() - bg.double().mean(0)).unsqueeze(1)).transpose(1, 2))


def test_agrees_with_shaps_permutation_explainer_within_monte_carlo_error():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    D = 6
    X = rng.normal(size=(300, D))
    y = (X @ rng.normal(size=D) + 0.3 * rng.normal(size=300) > 0).astype(int)
    clf = LogisticRegression().fit(X, y)
    bg, rows = X[:8], X[10:13]
    ours = PermutationExplainer(clf, bg, seed=0)(rows, max_evals=1300)
    theirs = shap.PermutationExplainer(clf.predict_proba, bg, seed=0)(rows, max_evals=1300)
    assert ours.values.shape == theirs.values.shape == (3, D, 2)
    np.testing.assert_allclose(ours.base_values, theirs.base_values, rtol=1e-10)
    exact = _exact(rows, clf, bg).numpy()
    # both estimate the same exact values with 100 antithetic permutations; their errors are alike
    scale = np.abs(exact).max()
    err_ours, err_theirs = np.abs(ours.values - exact).max(), np.abs(theirs.values - exact).max()
    assert err_ours < 0.04 * scale and err_theirs < 0.04 * scale
    assert np.abs(ours.values - theirs.values).max() < 0.06 * scale
    # shap evaluates the model itself: our efficiency (values + base = output) holds exactly, as its does
    np.testing.assert_allclose(ours.values.sum(1) + ours.base_values, clf.predict_proba(rows), rtol=1e-9, atol=1e-12)


def test_explanation_works_with_shaps_plots(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = torch.Generator().manual_seed(5)
    X, bg = torch.randn(20, 4, generator=g), torch.randn(8, 4, generator=g)
    explanation = PermutationExplainer(_head("sigmoid", 4), bg, feature_names=list("abcd"))(X, max_evals=90)
    assert explanation.values.shape == (20, 4) and explanation.base_values.shape == (20,)
    assert list(explanation.feature_names) == list("abcd")
    shap.plots.bar(explanation, show=False)
    shap.plots.waterfall(explanation[0], show=False)
    plt.close("all")


def test_errors():
    with pytest.raises(NeurocoreError, match="model must be one of"):
        head_parameters(torch.nn.ReLU())
    with pytest.raises(NeurocoreError, match="masker has 3 features but the model takes 4"):
        PermutationExplainer(torch.nn.Linear(4, 1), torch.zeros(2, 3)).shapley_values(torch.zeros(1, 4))
    with pytest.raises(NeurocoreError, match="at least 2 \\* D \\+ 1 = 9"):
        PermutationExplainer(_head("sigmoid", 4), torch.zeros(2, 4)).shapley_values(torch.zeros(1, 4), max_evals=8)


def test_missing_shap_names_the_extra():
    code = (
        "import sys; sys.modules['shap'] = None\n"
        "import torch\n"
        "from neurocore.compat.shap import PermutationExplainer\n"
        "e = PermutationExplainer(torch.nn.Linear(2, 1), torch.zeros(1, 2))\n"
        "print(e.shapley_values(torch.ones(1, 2))[0].shape)\n"
        "try:\n    e(torch.ones(1, 2))\nexcept ImportError as exc:\n    print('ERR', exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "torch.Size([1, 2, 1])" in out.stdout
    assert "pip install neurocore[shap]" in out.stdout
