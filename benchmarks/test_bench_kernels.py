"""Every kernel of neurocore.ops beside its baseline (the reference twin, the authors' loop, or torch's
own op) on the same inputs, one pytest-benchmark group per kernel and size.

    pytest benchmarks --benchmark-only [--benchmark-autosave] [--benchmark-compare]
"""

from __future__ import annotations

import pytest
import torch
from conftest import scaled

from neurocore import ops, reference
from neurocore.compat import clip_dissect as similarity


def _gen():
    return torch.Generator().manual_seed(0)


# ---- top-k
@pytest.mark.parametrize("impl", ["kernel", "reference", "torch.topk"])
def test_topk(run, device, impl, benchmark):
    N, K, k = scaled(20_000), scaled(512), 100
    benchmark.group = f"topk N={N} K={K} k={k}"
    x = torch.randn(N, K, generator=_gen()).to(device)
    fn = {"kernel": ops.topk, "reference": reference.topk, "torch.topk": lambda x, k: torch.topk(x, k, dim=0)}[impl]
    values, _ = run(fn, x, k)
    assert values.shape == (k, K)


# ---- SoftWPMI: the fused kernel, the vectorised twin, the authors' per-neuron loop, and the drop-in
def _soft_wpmi_inputs(device):
    N, M, K, k = scaled(5_000), scaled(2_000), scaled(256), 100
    g = _gen()
    sims = torch.rand(N, M, generator=g).mul_(0.4).to(device)
    acts = torch.randn(N, K, generator=g).to(device)
    return sims, acts, ops.topk(acts, k)[1], ops.soft_wpmi_weights(k).to(device)


@pytest.mark.parametrize("impl", ["kernel", "reference", "authors' loop", "compat drop-in"])
def test_soft_wpmi(run, device, impl, benchmark):
    sims, acts, idx, p = _soft_wpmi_inputs(device)
    benchmark.group = f"soft_wpmi N={sims.shape[0]} M={sims.shape[1]} K={acts.shape[1]}"
    if impl == "compat drop-in":  # includes the top-k selection, as the released function does
        out = run(lambda: similarity.soft_wpmi(sims, acts, device=device))
    else:
        fn = {"kernel": ops.soft_wpmi, "reference": reference.soft_wpmi, "authors' loop": reference.soft_wpmi_per_neuron_loop}[impl]
        out = run(fn, sims, idx, p, 10.0, 1.0)
    assert out.shape == (acts.shape[1], sims.shape[1])


# ---- batched least squares from Gram statistics
@pytest.mark.parametrize("impl", ["kernel", "reference"])
def test_lstsq_gram(run, device, impl, benchmark):
    M, K, R, s = 300, scaled(64), 64, 8
    g = _gen()
    P = torch.randn(2_000, M, generator=g, dtype=torch.float64).to(device)
    Y = torch.randn(2_000, K, generator=g, dtype=torch.float64).to(device)
    train, val = ops.gram_stats(P[:1500], Y[:1500]), ops.gram_stats(P[1500:], Y[1500:])
    sets = torch.randint(0, M, (K, R, s), generator=g).to(device)
    benchmark.group = f"lstsq_gram M={M} K={K} R={R} s={s}"
    fn = ops.lstsq_gram if impl == "kernel" else reference.lstsq_gram
    result = run(fn, train, val, sets)
    assert result.val_corr.shape == (K, R)


# ---- permutation Shapley values
@pytest.mark.parametrize("link", ["sigmoid", "softmax"])
@pytest.mark.parametrize("impl", ["kernel", "reference"])
def test_shapley_permutation(run, device, impl, link, benchmark):
    R, C, D, P = scaled(64), 10, 128, 32
    g = _gen()
    x, bg = torch.randn(R, D, generator=g).to(device), torch.zeros(R, D).to(device)
    w, b = (torch.randn(C, D, generator=g) / 10).to(device), torch.zeros(C).to(device)
    perms = ops.sample_permutations(P, D, seed=0).to(device)
    benchmark.group = f"shapley_permutation {link} R={R} C={C} D={D} P={P}"
    fn = ops.shapley_permutation if impl == "kernel" else reference.shapley_permutation
    phi = run(fn, x, w, b, bg, perms, link)
    assert phi.shape == (R, C, D)
