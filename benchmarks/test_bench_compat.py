"""The drop-ins of neurocore.compat beside what they replace, same inputs, one group each: CLIP-Dissect's
rank_reorder (vectorised vs the released per-neuron loop, transcribed in python_tests) and the shap
explainer (the kernel vs shap's own PermutationExplainer, when shap is installed)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import scaled

from neurocore.compat import clip_dissect as similarity

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python_tests"))
from test_compat_clip_dissect import released_rank_reorder  # noqa: E402


@pytest.mark.parametrize("impl", ["compat", "released loop"])
def test_rank_reorder(benchmark, impl):
    N, M, K = scaled(4_000), scaled(1_000), scaled(64)
    g = torch.Generator().manual_seed(0)
    sims, acts = torch.rand(N, M, generator=g) * 0.3 + 0.1, torch.randn(N, K, generator=g)
    benchmark.group = f"rank_reorder N={N} M={M} K={K}"
    fn = (lambda: similarity.rank_reorder(sims, acts, device="cpu")) if impl == "compat" else (lambda: released_rank_reorder(sims, acts))
    torch.manual_seed(0)
    assert benchmark(fn).shape == (K, M)


@pytest.mark.parametrize("impl", ["compat", "shap"])
def test_shap_permutation_explainer(benchmark, impl):
    shap = pytest.importorskip("shap")
    from sklearn.linear_model import LogisticRegression

    from neurocore.compat.shap import PermutationExplainer

    rng = np.random.default_rng(0)
    D = 20
    X = rng.normal(size=(500, D))
    clf = LogisticRegression().fit(X, (X[:, 0] + X[:, 1] > 0).astype(int))
    rows, bg = X[:20], X[100:150]
    benchmark.group = f"permutation explainer D={D} rows=20 background=50"
    if impl == "compat":
        explainer = PermutationExplainer(clf, bg, seed=0)
    else:
        explainer = shap.PermutationExplainer(clf.predict_proba, bg, seed=0)
        explainer(rows[:1], max_evals=500)  # numba's first-call compilation is not the explainer's time
    out = benchmark.pedantic(lambda: explainer(rows, max_evals=500), rounds=3, iterations=1)
    assert out.values.shape == (20, D, 2)
