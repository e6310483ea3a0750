"""CLIP-Dissect's similarity functions against naive transcriptions of their formulas.

Each naive version below is written from the paper (eqs. 1, 2, 8, 14 and appendix A.1) and
ALGORITHMS.md §1 with Python loops in float64 on small inputs; the library versions are vectorised
and (SoftWPMI/WPMI) run in the fused kernel.
"""

from __future__ import annotations

import math

import pytest
import torch

from neurocore import ops
from neurocore._errors import NeurocoreError
from neurocore.methods import clip_dissect as cd

METHODS = list(cd.SIMILARITIES)


def clip_like(n: int, m: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    """Image–concept scores that look like CLIP cosines (around 0.2, spread 0.05)."""
    g = torch.Generator().manual_seed(seed)
    return (0.2 + 0.05 * torch.randn(n, m, generator=g)).to(dtype)


def randn(*shape, seed: int, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


# ----------------------------------------------------------------------------------------------
# naive transcriptions


def naive_top_images(acts, k: int, j: int) -> list[int]:
    n = acts.shape[0]
    order = sorted(range(n), key=lambda i: (-float(acts[i, j]), i))
    return order[: min(k, n)]


def naive_softmax_rows(sims, a: float) -> list[list[float]]:
    out = []
    for row in sims.tolist():
        mx = max(a * s for s in row)
        e = [math.exp(a * s - mx) for s in row]
        z = sum(e)
        out.append([v / z for v in e])
    return out


def naive_logsumexp(values: list[float]) -> float:
    mx = max(values)
    return mx + math.log(sum(math.exp(v - mx) for v in values))


def naive_soft_wpmi(sims, acts, top_k, a, p_start, p_end, lam, eps=1e-7, hard=False):
    """Paper eq. 14 (eq. 8 when hard): a sum over each neuron's top images, then the marginal."""
    N, M = sims.shape
    K = acts.shape[1]
    P = naive_softmax_rows(sims, a)
    L = [[0.0] * M for _ in range(K)]
    for k in range(K):
        for rank, i in enumerate(naive_top_images(acts, top_k, k)):
            p_in = 1.0 if hard else p_start - (rank / top_k) * (p_start - p_end)
            for m in range(M):
                L[k][m] += math.log(1 + p_in * (P[i][m] - 1) + eps)
    out = torch.zeros(K, M, dtype=torch.float64)
    for m in range(M):
        log_pm = naive_logsumexp([L[k][m] for k in range(K)]) - math.log(K)
        for k in range(K):
            out[k, m] = L[k][m] - lam * log_pm
    return out


def naive_rank_reorder(sims, acts, p, top_fraction, scale_p, n_random, seed):
    """Paper eq. 2: q' holds q's values in the order of the concept's scores over the neuron's top
    images; error mean |q - q'|^p, normalised by random orderings and by mean score^scale_p
    (ALGORITHMS.md §1). The random orderings follow the documented draw."""
    N, M = sims.shape
    K = acts.shape[1]
    n = int(N * top_fraction)
    perms = ops.sample_permutations(K * n_random, n, seed=seed).view(K, n_random, n).tolist()
    out = torch.zeros(K, M, dtype=torch.float64)
    for k in range(K):
        top = naive_top_images(acts, n, k)
        q = [float(acts[i, k]) for i in top]  # descending
        ascending = sorted(q)
        base_terms = [abs(ascending[i] - ascending[perm[i]]) ** p for perm in perms[k] for i in range(n)]
        base = sum(base_terms) / len(base_terms)
        for m in range(M):
            s = [float(sims[i, m]) for i in top]
            # concept order; equal scores keep the neuron's order (the lower position ranks higher)
            by_concept = sorted(range(n), key=lambda pos: (-s[pos], pos))
            q_prime = [0.0] * n
            for r, pos in enumerate(by_concept):
                q_prime[pos] = q[r]  # the r-th highest concept score gets the r-th highest activation
            err = sum(abs(q[i] - q_prime[i]) ** p for i in range(n)) / n
            mean = sum(s) / n
            out[k, m] = -(err / base) / mean**scale_p
    return out


def naive_cos(sims, acts):
    K, M = acts.shape[1], sims.shape[1]
    out = torch.zeros(K, M, dtype=torch.float64)
    for k in range(K):
        q = acts[:, k].tolist()
        for m in range(M):
            s = sims[:, m].tolist()
            dot = sum(x * y for x, y in zip(q, s))
            out[k, m] = dot / (math.sqrt(sum(x * x for x in q)) * math.sqrt(sum(y * y for y in s)))
    return out


def naive_cos_cubed(sims, acts, min_norm):
    def f(v):
        mu = sum(v) / len(v)
        c = [(x - mu) ** 3 for x in v]
        norm = max(math.sqrt(sum(x * x for x in c)), min_norm)
        return [x / norm for x in c]

    K, M = acts.shape[1], sims.shape[1]
    out = torch.zeros(K, M, dtype=torch.float64)
    for k in range(K):
        q = f(acts[:, k].tolist())
        for m in range(M):
            s = f(sims[:, m].tolist())
            out[k, m] = sum(x * y for x, y in zip(q, s))
    return out


# ----------------------------------------------------------------------------------------------
# each similarity function against its naive twin


@pytest.mark.parametrize("top_k", [1, 7, 40])
@pytest.mark.parametrize("params", [dict(a=10.0, p_start=0.998, p_end=0.97, lam=1.0), dict(a=3.0, p_start=0.9, p_end=0.5, lam=0.4)])
def test_soft_wpmi_matches_naive(device, top_k, params):
    sims, acts = clip_like(30, 6, seed=1), randn(30, 4, seed=2)
    expected = naive_soft_wpmi(sims, acts, top_k=top_k, **params)
    actual = cd.soft_wpmi(sims.to(device), acts.to(device), top_k=top_k, **params)
    assert actual.dtype == torch.float64 and actual.shape == (4, 6)
    torch.testing.assert_close(actual.cpu(), expected, rtol=1e-9, atol=1e-9)


def test_soft_wpmi_defaults_are_published():
    # a=10, top_k=100, p_start=0.998, p_end=0.97, lam=1 (paper A.1); N > 100 so top_k matters
    sims, acts = clip_like(130, 5, seed=3), randn(130, 3, seed=4)
    expected = naive_soft_wpmi(sims, acts, top_k=100, a=10.0, p_start=0.998, p_end=0.97, lam=1.0)
    torch.testing.assert_close(cd.soft_wpmi(sims, acts), expected, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(cd.scores(sims, acts), expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("top_k", [1, 5, 28, 50])
def test_wpmi_matches_naive(device, top_k):
    sims, acts = clip_like(40, 5, seed=5), randn(40, 3, seed=6)
    expected = naive_soft_wpmi(sims, acts, top_k=top_k, a=2.0, p_start=1.0, p_end=1.0, lam=0.6, hard=True)
    actual = cd.wpmi(sims.to(device), acts.to(device), top_k=top_k)
    torch.testing.assert_close(actual.cpu(), expected, rtol=1e-9, atol=1e-9)


def test_wpmi_defaults_are_published():
    sims, acts = clip_like(60, 4, seed=7), randn(60, 3, seed=8)
    expected = naive_soft_wpmi(sims, acts, top_k=28, a=2.0, p_start=1, p_end=1, lam=0.6, hard=True)
    torch.testing.assert_close(cd.scores(sims, acts, "wpmi"), expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(
    "params",
    [
        dict(p=3.0, top_fraction=0.05, scale_p=0.5, n_random=5, seed=0),  # the published defaults
        dict(p=1.0, top_fraction=0.3, scale_p=0.0, n_random=2, seed=7),
        dict(p=2.5, top_fraction=1.0, scale_p=1.0, n_random=3, seed=3),
    ],
)
def test_rank_reorder_matches_naive(device, params):
    sims, acts = clip_like(80, 5, seed=9), randn(80, 4, seed=10)
    expected = naive_rank_reorder(sims, acts, **params)
    actual = cd.rank_reorder(sims.to(device), acts.to(device), **params)
    torch.testing.assert_close(actual.cpu(), expected, rtol=1e-9, atol=1e-12)
    if params["seed"] == 0:
        torch.testing.assert_close(cd.scores(sims, acts, "rank_reorder"), expected, rtol=1e-9, atol=1e-12)


def test_rank_reorder_ties_in_concept_scores_follow_the_neuron():
    # label-like scores (0/1) tie a lot: ties must rank in the neuron's own order (no cost)
    g = torch.Generator().manual_seed(11)
    sims = (torch.rand(60, 4, generator=g) < 0.5).double() * 0.3 + 0.1
    acts = randn(60, 3, seed=12)
    params = dict(p=3.0, top_fraction=0.25, scale_p=0.5, n_random=5, seed=1)
    torch.testing.assert_close(cd.rank_reorder(sims, acts, **params), naive_rank_reorder(sims, acts, **params), rtol=1e-9, atol=1e-12)
    # a concept constant over a neuron's top images orders them exactly as the neuron: error 0
    sims[:, 0] = 0.25
    out = cd.rank_reorder(sims, acts, **params)
    assert torch.equal(out[:, 0], torch.zeros(3, dtype=torch.float64))


def test_rank_reorder_same_seed_same_output_other_seed_same_labels():
    sims, acts = clip_like(200, 12, seed=13), randn(200, 6, seed=14)
    a = cd.rank_reorder(sims, acts, seed=0)
    assert torch.equal(a, cd.rank_reorder(sims, acts, seed=0))
    b = cd.rank_reorder(sims, acts, seed=1)
    assert not torch.equal(a, b)  # the random baseline differs...
    assert torch.equal(a.argmax(1), b.argmax(1))  # ...but it scales each neuron's row by one factor
    ratio = a / b
    torch.testing.assert_close(ratio, ratio[:, :1].expand_as(ratio), rtol=1e-12, atol=0)
    # with a 5-ordering baseline the factor is close to 1: results are stable across seeds
    assert (ratio - 1).abs().max() < 0.5


def test_rank_reorder_undefined_cases():
    sims, acts = clip_like(40, 3, seed=15), randn(40, 2, seed=16)
    sims[:, 1] = -0.1  # mean score <= 0: the released code gives NaN; here -inf (never the label)
    acts[:, 1] = 2.0  # a neuron with all top activations equal: no order, every error 0
    out = cd.rank_reorder(sims, acts, top_fraction=0.25)
    assert torch.isinf(out[:, 1]).all() and (out[:, 1] < 0).all()
    assert torch.equal(out[1, [0, 2]], torch.zeros(2, dtype=torch.float64))
    assert torch.isfinite(out[0, [0, 2]]).all()


def test_rank_reorder_needs_two_images():
    sims, acts = clip_like(30, 3, seed=17), randn(30, 2, seed=18)
    with pytest.raises(NeurocoreError, match=r"int\(30 \* 0.05\) = 1"):
        cd.rank_reorder(sims, acts)


def test_cos_matches_naive(device):
    sims, acts = clip_like(25, 5, seed=19), randn(25, 3, seed=20)
    torch.testing.assert_close(cd.cos(sims.to(device), acts.to(device)).cpu(), naive_cos(sims, acts), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(cd.scores(sims, acts, "cos"), naive_cos(sims, acts), rtol=1e-12, atol=1e-12)


def test_cos_zero_column_is_zero():
    sims, acts = clip_like(10, 3, seed=21), randn(10, 2, seed=22)
    acts[:, 1] = 0
    sims[:, 2] = 0
    out = cd.cos(sims, acts)
    assert torch.equal(out[1], torch.zeros(3, dtype=torch.float64))
    assert torch.equal(out[:, 2], torch.zeros(2, dtype=torch.float64))


@pytest.mark.parametrize("min_norm", [1e-3, 0.5])
def test_cos_cubed_matches_naive(device, min_norm):
    sims, acts = clip_like(25, 5, seed=23), randn(25, 3, seed=24)
    expected = naive_cos_cubed(sims, acts, min_norm)
    torch.testing.assert_close(cd.cos_cubed(sims.to(device), acts.to(device), min_norm=min_norm).cpu(), expected, rtol=1e-10, atol=1e-12)


def test_cos_cubed_norm_floor_damps_flat_columns():
    # a nearly constant concept column: cubes ~1e-12, below the floor, so its scores go to ~0
    sims, acts = clip_like(25, 3, seed=25), randn(25, 2, seed=26)
    sims[:, 0] = 0.2 + 1e-5 * randn(25, seed=27)
    out = cd.cos_cubed(sims, acts)
    assert out[:, 0].abs().max() < 1e-6
    torch.testing.assert_close(out, naive_cos_cubed(sims, acts, 1e-3), rtol=1e-10, atol=1e-15)


def test_cos_cubed_blocks_over_concepts(monkeypatch):
    # the concept columns are processed in blocks: a tiny block size gives the same result
    sims, acts = clip_like(30, 7, seed=28), randn(30, 3, seed=29)
    whole = cd.cos_cubed(sims, acts)
    monkeypatch.setattr(cd, "_BLOCK_ELEMENTS", 40)
    torch.testing.assert_close(cd.cos_cubed(sims, acts), whole, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(cd.rank_reorder(sims, acts, top_fraction=0.3), naive_rank_reorder(sims, acts, 3.0, 0.3, 0.5, 5, 0), rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# planted truth and invariances


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_planted_concept_is_the_label(method, dtype):
    # activations equal to one concept's score column (plus small noise) get that concept
    N, M = 600, 40
    sims = clip_like(N, M, seed=30, dtype=dtype)
    planted = torch.tensor([7, 0, 39, 21, 13, 30])
    acts = sims[:, planted] + 1e-3 * randn(N, len(planted), seed=31, dtype=dtype)
    # 30 unrelated neurons share the call, as in a real layer: SoftWPMI's marginal needs a
    # population (with only the 6 planted neurons every concept that one of them dominates scores
    # near the ceiling log K, and the margins shrink to ~0.01)
    acts = torch.cat([acts, randn(N, 30, seed=32, dtype=dtype)], 1)
    out = cd.scores(sims, acts, method)
    assert out.shape == (36, M) and out.dtype == dtype
    assert out[:6].argmax(1).tolist() == planted.tolist()


def test_soft_wpmi_depends_on_the_neurons_of_the_call():
    # the marginal log p(t_m) runs over the call's neurons (ALGORITHMS.md §1): documented behaviour
    sims, acts = clip_like(300, 6, seed=50), randn(300, 5, seed=51)
    together = cd.soft_wpmi(sims, acts)
    assert not torch.allclose(cd.soft_wpmi(sims, acts[:, :2]), together[:2])
    # one neuron is its own marginal: with lam = 1 every score is 0 (log K = 0)
    torch.testing.assert_close(cd.soft_wpmi(sims, acts[:, :1]), torch.zeros(1, 6, dtype=torch.float64), atol=1e-9, rtol=0)
    # the ceiling: L - (logsumexp L - log K) <= log K
    assert together.max() <= math.log(5) + 1e-9


@pytest.mark.parametrize("method", METHODS)
def test_permuting_neurons_permutes_rows(method):
    sims, acts = clip_like(300, 9, seed=32), randn(300, 5, seed=33)
    perm = torch.tensor([3, 0, 4, 2, 1])
    out = cd.scores(sims, acts, method)
    permuted = cd.scores(sims, acts[:, perm], method)
    if method == "rank_reorder":
        # the random baseline is drawn per position: rows agree up to that per-neuron factor
        ratio = permuted / out[perm]
        torch.testing.assert_close(ratio, ratio[:, :1].expand_as(ratio), rtol=1e-12, atol=0)
    else:
        torch.testing.assert_close(permuted, out[perm], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_permuting_images_changes_nothing(method):
    sims, acts = clip_like(300, 9, seed=34), randn(300, 5, seed=35)
    perm = torch.randperm(300, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(cd.scores(sims[perm], acts[perm], method), cd.scores(sims, acts, method), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_float32_close_to_float64(method):
    sims, acts = clip_like(300, 9, seed=36), randn(300, 5, seed=37)
    d = cd.scores(sims, acts, method)
    f = cd.scores(sims.float(), acts.float(), method)
    assert f.dtype == torch.float32
    torch.testing.assert_close(f.double(), d, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method", METHODS)
def test_inputs_not_mutated(method):
    sims, acts = clip_like(300, 4, seed=38), randn(300, 3, seed=39)
    s0, a0 = sims.clone(), acts.clone()
    cd.scores(sims, acts, method)
    assert torch.equal(sims, s0) and torch.equal(acts, a0)


@pytest.mark.parametrize("method", METHODS)
def test_no_neurons(method):
    out = cd.scores(clip_like(300, 4, seed=40), torch.zeros(300, 0, dtype=torch.float64), method)
    assert out.shape == (0, 4)


# ----------------------------------------------------------------------------------------------
# precomputed top images


@pytest.mark.parametrize("method", ["soft_wpmi", "wpmi", "rank_reorder"])
def test_given_top_indices_with_enough_rows_are_used(method):
    sims, acts = clip_like(300, 6, seed=41), randn(300, 4, seed=42)
    need = cd.required_top_k(method, 300)
    true_idx = ops.topk(acts, 300)[1]
    # the store's top-k (more rows than needed) gives the same as recomputing
    torch.testing.assert_close(cd.scores(sims, acts, method, top_indices=true_idx[: need + 20]), cd.scores(sims, acts, method))
    # too few rows: recomputed from acts
    torch.testing.assert_close(cd.scores(sims, acts, method, top_indices=true_idx[: need - 1]), cd.scores(sims, acts, method))
    # other indices with enough rows are really what the function reads
    other = true_idx.flip(0)[:need]
    fake = cd.scores(sims, acts, method, top_indices=other)
    assert not torch.allclose(fake, cd.scores(sims, acts, method))
    if method == "soft_wpmi":
        torch.testing.assert_close(fake, ops.soft_wpmi(sims, other, ops.soft_wpmi_weights(100), 10.0, 1.0))


def test_given_top_indices_checked():
    sims, acts = clip_like(300, 6, seed=43), randn(300, 4, seed=44)
    with pytest.raises(NeurocoreError, match=r"top_indices must be a Tensor\[k, K=4\]"):
        cd.scores(sims, acts, top_indices=torch.zeros(100, 3, dtype=torch.long))
    with pytest.raises(NeurocoreError, match=r"\[0, N=300\)"):
        cd.scores(sims, acts, "wpmi", top_indices=torch.full((28, 4), 300))


def test_required_top_k():
    assert cd.required_top_k("soft_wpmi", 50) == 100
    assert cd.required_top_k("soft_wpmi", 50, top_k=3) == 3
    assert cd.required_top_k("wpmi", 50) == 28
    assert cd.required_top_k("rank_reorder", 1000) == 50
    assert cd.required_top_k("rank_reorder", 1000, top_fraction=0.2) == 200
    assert cd.required_top_k("cos", 1000) == 0 and cd.required_top_k("cos_cubed", 1000) == 0


def test_top_k_larger_than_probe_uses_all_images():
    sims, acts = clip_like(20, 4, seed=45), randn(20, 3, seed=46)
    # p_i keeps its definition relative to top_k = 100; only 20 images exist
    expected = naive_soft_wpmi(sims, acts, top_k=100, a=10.0, p_start=0.998, p_end=0.97, lam=1.0)
    torch.testing.assert_close(cd.soft_wpmi(sims, acts), expected, rtol=1e-9, atol=1e-9)


# ----------------------------------------------------------------------------------------------
# bad input


def test_unknown_method_lists_valid_ones():
    with pytest.raises(NeurocoreError, match="valid methods: soft_wpmi, wpmi, rank_reorder, cos, cos_cubed.*did you mean 'soft_wpmi'"):
        cd.scores(clip_like(10, 2, seed=0), randn(10, 2, seed=0), "softwpmi")


@pytest.mark.parametrize(
    "method, param, listed",
    [("soft_wpmi", "k", "top_k, a, p_start, p_end, lam, eps"), ("cos", "a", "none"), ("rank_reorder", "top_k", "p, top_fraction")],
)
def test_unknown_param_lists_valid_ones(method, param, listed):
    with pytest.raises(NeurocoreError, match=f"unknown parameter.*'{param}'.*valid parameters: {listed}"):
        cd.scores(clip_like(100, 2, seed=0), randn(100, 2, seed=0), method, **{param: 1})


@pytest.mark.parametrize(
    "method, params, message",
    [
        ("soft_wpmi", dict(top_k=0), "top_k must be >= 1"),
        ("soft_wpmi", dict(top_k=2.5), "top_k must be an integer"),
        ("soft_wpmi", dict(p_start=1.5), "p_start must be <= 1"),
        ("soft_wpmi", dict(a=float("nan")), "a must be a finite number"),
        ("wpmi", dict(eps=0), "eps must be > 0"),
        ("rank_reorder", dict(top_fraction=0), "top_fraction must be > 0"),
        ("rank_reorder", dict(n_random=0), "n_random must be >= 1"),
        ("cos_cubed", dict(min_norm=-1), "min_norm must be > 0"),
    ],
)
def test_bad_param_values(method, params, message):
    with pytest.raises(NeurocoreError, match=message):
        cd.scores(clip_like(100, 2, seed=0), randn(100, 2, seed=0), method, **params)


@pytest.mark.parametrize("method", METHODS)
def test_shape_mismatch_and_nan(method):
    sims, acts = clip_like(300, 4, seed=47), randn(300, 3, seed=48)
    with pytest.raises(NeurocoreError, match="sims has 300 rows.*acts has 299.*same probe images"):
        cd.scores(sims, acts[:299], method)
    with pytest.raises(NeurocoreError, match=r"acts must be a 2-D Tensor\[N, K\]"):
        cd.scores(sims, acts[:, 0], method)
    bad = acts.clone()
    bad[5, 2] = float("nan")
    with pytest.raises(NeurocoreError, match=r"acts contains NaN or inf \(neurons \[2\]"):
        cd.scores(sims, bad, method)
    bad = sims.clone()
    bad[0, 0] = float("inf")
    with pytest.raises(NeurocoreError, match="sims contains NaN or inf"):
        cd.scores(bad, acts, method)
    with pytest.raises(NeurocoreError, match="concept set is empty"):
        cd.scores(sims[:, :0], acts, method)
    with pytest.raises(NeurocoreError, match="probe set is empty"):
        cd.scores(sims[:0], acts[:0], method)
    with pytest.raises(NeurocoreError, match="must be a torch.Tensor"):
        cd.scores(sims.tolist(), acts, method)
