"""ops.soft_wpmi (CLIP-Dissect's SoftWPMI / WPMI, ALGORITHMS.md §1) against reference.soft_wpmi and
against a loop-by-loop transcription of the definition written here."""

from __future__ import annotations

import math

import pytest
import torch

from neurocore import ops, reference

SOFT = {"a": 10.0, "lam": 1.0}  # SoftWPMI defaults
HARD = {"a": 2.0, "lam": 0.6}  # WPMI defaults (p = 1)

# (N images, M concepts, K neurons, k top images)
SHAPES = [
    pytest.param(12, 5, 3, 4, id="N12-M5-K3-k4"),
    pytest.param(50, 8, 1, 5, id="K1"),
    pytest.param(40, 1, 4, 6, id="M1"),
    pytest.param(1, 6, 3, 1, id="N1"),
    pytest.param(120, 37, 70, 9, id="K70-M37"),
    pytest.param(150, 300, 5, 100, id="k100-M300"),
]


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def make_inputs(n, m, K, k, seed, dtype=torch.float64, indices="topk"):
    """Cosine-like sims (float64, then cast) and each neuron's top-k images of random activations.

    ``indices="random"`` draws indices with repeats instead: the op must accept any values in [0, N).
    """
    g = generator(seed)
    sims = (0.2 + 0.1 * torch.randn(n, m, generator=g, dtype=torch.float64)).clamp(-1, 1).to(dtype)
    if indices == "random":
        idx = torch.randint(0, n, (k, K), generator=g)
    else:
        acts = torch.randn(n, K, generator=g, dtype=torch.float64)
        idx = reference.topk(acts, k)[1]
        assert idx.shape[0] == k, "make_inputs needs k <= N"
    return sims, idx


def float32_tolerance(sims, topk_idx, p, a, lam, eps, device, expected):
    """Per-element error bound of a float32 result, from the problem (first order, worst case).

    ops.soft_wpmi promises float64 products, logs and sums, with the softmax's exponentials in
    float32 on the CPU (~1e-6 absolute in a score of magnitude ~100, csrc/kernels/soft_wpmi.h). A
    fixed 1e-6 cannot hold for every k: the error is a sum over the k top images, so it is bounded
    here term by term. On the CPU, a probability P = exp(a s - lse) carries the rounding of a*s,
    of lse and of their difference (2^-24 each, relative to their size), fast_exp's ~2e-7
    (csrc/kernels/common.h) and its own rounding; a factor f = 1 - p + p P + eps then moves by
    p P eps_P / f in log. The factors are multiplied in float32: one rounding (2^-24 relative) per
    factor. The marginal's shift is a log-sum-exp over neurons (1-Lipschitz): at most lam times
    the largest error of a neuron's sum. CUDA works in float64 throughout. Both round the result to
    float32 (2^-24 relative).
    """
    u = 2.0**-24
    out_round = u * expected.abs()
    if device != "cpu":
        return out_round + 1e-12 * (1 + expected.abs())
    s = sims.double()
    lse = torch.logsumexp(a * s, dim=1, keepdim=True)
    P = torch.exp(a * s - lse)
    eps_P = u * (2 * (a * s).abs() + 2 * lse.abs() + 1) + 2e-7
    p = torch.as_tensor(p, dtype=torch.float64).view(-1, 1, 1)
    f = 1 - p + p * P[topk_idx] + eps  # [k, K, M]
    per_term = p * P[topk_idx] * eps_P[topk_idx] / f + u
    err_L = per_term.sum(0)  # [K, M]
    err_shift = abs(lam) * err_L.amax(0, keepdim=True)
    return err_L + err_shift + out_round


def assert_within_float32_tolerance(out, expected, tol):
    excess = (out.double() - expected).abs() - tol
    worst = int(excess.flatten().argmax())
    assert float(excess.max()) <= 0, (
        f"float32 result off by {float((out.double() - expected).abs().flatten()[worst]):.3g} at flat index {worst}, "
        f"beyond its error bound {float(tol.flatten()[worst]):.3g}"
    )


def weights_for(kind: str, k: int) -> torch.Tensor:
    return ops.soft_wpmi_weights(k) if kind == "soft" else torch.ones(k, dtype=torch.float64)


def params_for(kind: str) -> dict:
    return SOFT if kind == "soft" else HARD


# ----------------------------------------------------------------------------------------------
# against the reference


@pytest.mark.parametrize("indices", ["topk", "random"])
@pytest.mark.parametrize("kind", ["soft", "hard"])
@pytest.mark.parametrize("n, m, K, k", SHAPES)
def test_soft_wpmi_float64_matches_reference(device, n, m, K, k, kind, indices):
    sims, idx = make_inputs(n, m, K, k, seed=n + m + K + k, indices=indices)
    p = weights_for(kind, k)
    out = ops.soft_wpmi(sims.to(device), idx.to(device), p, **params_for(kind))
    expected = reference.soft_wpmi(sims, idx, p, **params_for(kind))
    assert out.dtype == torch.float64 and out.shape == (K, m) and out.device.type == device
    torch.testing.assert_close(out.cpu(), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", ["soft", "hard"])
@pytest.mark.parametrize("n, m, K, k", SHAPES)
def test_soft_wpmi_float32_matches_float64_reference(device, n, m, K, k, kind):
    sims, idx = make_inputs(n, m, K, k, seed=7 * n + m, dtype=torch.float32)
    p = weights_for(kind, k)
    out = ops.soft_wpmi(sims.to(device), idx.to(device), p, **params_for(kind))
    expected = reference.soft_wpmi(sims.double(), idx, p, **params_for(kind))
    assert out.dtype == torch.float32 and out.shape == (K, m)
    tol = float32_tolerance(sims, idx, p, eps=1e-7, device=device, expected=expected, **params_for(kind))
    assert_within_float32_tolerance(out.cpu(), expected, tol)


def test_soft_wpmi_non_contiguous_inputs(device):
    sims, idx = make_inputs(60, 20, 9, 7, seed=3)
    sims_t = sims.T.contiguous().T  # column-major
    idx_t = idx.T.contiguous().T
    sims_s = torch.stack([sims, -sims], 2).reshape(60, 40)[:, ::2]  # strided columns, equal to sims
    assert torch.equal(sims_s, sims)
    assert not sims_t.is_contiguous() and not idx_t.is_contiguous() and not sims_s.is_contiguous()
    p = ops.soft_wpmi_weights(7)
    expected = reference.soft_wpmi(sims, idx, p, **SOFT)
    for s, i in ((sims_t, idx_t), (sims_s, idx)):
        out = ops.soft_wpmi(s.to(device), i.to(device), p, **SOFT)
        torch.testing.assert_close(out.cpu(), expected, rtol=1e-10, atol=1e-10)


def test_soft_wpmi_eps_is_used(device):
    sims, idx = make_inputs(30, 6, 4, 5, seed=8)
    p = torch.ones(5, dtype=torch.float64)
    for eps in (1e-7, 1e-3, 0.0):
        out = ops.soft_wpmi(sims.to(device), idx.to(device), p, a=2.0, lam=0.6, eps=eps)
        torch.testing.assert_close(
            out.cpu(), reference.soft_wpmi(sims, idx, p, a=2.0, lam=0.6, eps=eps), rtol=1e-10, atol=1e-10
        )


def test_soft_wpmi_p_as_list(device):
    sims, idx = make_inputs(20, 4, 3, 3, seed=9)
    out = ops.soft_wpmi(sims.to(device), idx.to(device), [1.0, 0.9, 0.8], **SOFT)
    expected = reference.soft_wpmi(sims, idx, torch.tensor([1.0, 0.9, 0.8], dtype=torch.float64), **SOFT)
    torch.testing.assert_close(out.cpu(), expected, rtol=1e-10, atol=1e-10)


# ----------------------------------------------------------------------------------------------
# against the definition (ALGORITHMS.md §1), one scalar at a time


def naive_soft_wpmi(sims, topk_idx, p, a, lam, eps):
    """P = softmax over concepts of a * sims; L_j[m] = sum_i log(1 + p_i (P[x_i, m] - 1) + eps);
    log P(m) = log sum_j exp(L_j[m]) - log K; score = L_j[m] - lam log P(m)."""
    S, idx, p = sims.tolist(), topk_idx.tolist(), p.tolist()
    N, M, k, K = len(S), len(S[0]), len(idx), len(idx[0])
    P = []
    for x in range(N):
        z = sum(math.exp(a * S[x][m]) for m in range(M))
        P.append([math.exp(a * S[x][m]) / z for m in range(M)])
    L = [[sum(math.log(1 + p[i] * (P[idx[i][j]][m] - 1) + eps) for i in range(k)) for m in range(M)] for j in range(K)]
    log_pm = [math.log(sum(math.exp(L[j][m]) for j in range(K))) - math.log(K) for m in range(M)]
    return torch.tensor([[L[j][m] - lam * log_pm[m] for m in range(M)] for j in range(K)], dtype=torch.float64)


def naive_wpmi(sims, topk_idx, a, lam, eps):
    """The hard version as ALGORITHMS.md writes it: L_j[m] = sum_i log(P[x_i, m] + eps)."""
    S, idx = sims.tolist(), topk_idx.tolist()
    N, M, k, K = len(S), len(S[0]), len(idx), len(idx[0])
    P = []
    for x in range(N):
        z = sum(math.exp(a * S[x][m]) for m in range(M))
        P.append([math.exp(a * S[x][m]) / z for m in range(M)])
    L = [[sum(math.log(P[idx[i][j]][m] + eps) for i in range(k)) for m in range(M)] for j in range(K)]
    log_pm = [math.log(sum(math.exp(L[j][m]) for j in range(K))) - math.log(K) for m in range(M)]
    return torch.tensor([[L[j][m] - lam * log_pm[m] for m in range(M)] for j in range(K)], dtype=torch.float64)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_soft_wpmi_equals_naive_definition(device, seed):
    N, M, K, k = 12, 5, 3, 4
    g = generator(seed)
    sims = torch.rand(N, M, generator=g, dtype=torch.float64) * 2 - 1
    idx = torch.randint(0, N, (k, K), generator=g)
    p_start, p_end = 0.998, 0.97
    p = torch.tensor([p_start - (i / k) * (p_start - p_end) for i in range(k)], dtype=torch.float64)
    torch.testing.assert_close(ops.soft_wpmi_weights(k, p_start, p_end), p, rtol=0, atol=1e-15)
    out = ops.soft_wpmi(sims.to(device), idx.to(device), p, a=10.0, lam=1.0, eps=1e-7)
    torch.testing.assert_close(out.cpu(), naive_soft_wpmi(sims, idx, p, 10.0, 1.0, 1e-7), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("seed", [0, 1])
def test_wpmi_equals_naive_definition(device, seed):
    N, M, K, k = 12, 5, 3, 4
    g = generator(100 + seed)
    sims = torch.rand(N, M, generator=g, dtype=torch.float64) * 2 - 1
    idx = torch.randint(0, N, (k, K), generator=g)
    out = ops.soft_wpmi(sims.to(device), idx.to(device), torch.ones(k), a=2.0, lam=0.6)
    torch.testing.assert_close(out.cpu(), naive_wpmi(sims, idx, 2.0, 0.6, 1e-7), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", ["soft", "hard"])
def test_reference_per_neuron_loop_equals_reference(kind):
    sims, idx = make_inputs(80, 20, 6, 10, seed=4)
    p = weights_for(kind, 10)
    loop = reference.soft_wpmi_per_neuron_loop(sims, idx, p, **params_for(kind))
    torch.testing.assert_close(loop, reference.soft_wpmi(sims, idx, p, **params_for(kind)), rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------------------------
# soft_wpmi_weights


@pytest.mark.parametrize("top_k, p_start, p_end", [(100, 0.998, 0.97), (4, 1.0, 0.5), (1, 0.9, 0.1), (0, 0.998, 0.97)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_soft_wpmi_weights_formula(top_k, p_start, p_end, dtype):
    p = ops.soft_wpmi_weights(top_k, p_start, p_end, dtype=dtype)
    assert p.shape == (top_k,) and p.dtype == dtype
    expected = torch.tensor([p_start - (i / top_k) * (p_start - p_end) for i in range(top_k)], dtype=torch.float64)
    torch.testing.assert_close(p.double(), expected, rtol=0, atol=1e-15 if dtype == torch.float64 else 1e-7)


def test_soft_wpmi_weights_defaults():
    p = ops.soft_wpmi_weights()
    assert p.shape == (100,) and p.dtype == torch.float64
    assert p[0].item() == 0.998
    assert p[-1].item() == pytest.approx(0.998 - 0.99 * 0.028, abs=1e-15)
    assert ops.soft_wpmi_weights(4, 1.0, 0.5).tolist() == [1.0, 0.875, 0.75, 0.625]


# ----------------------------------------------------------------------------------------------
# edge cases


def test_soft_wpmi_single_neuron_is_zero_with_lam_1(device):
    # with one neuron the marginal is the neuron itself: L - (L - log 1) = 0
    sims, idx = make_inputs(30, 7, 1, 5, seed=5)
    out = ops.soft_wpmi(sims.to(device), idx.to(device), ops.soft_wpmi_weights(5), a=10.0, lam=1.0)
    torch.testing.assert_close(out.cpu(), torch.zeros(1, 7, dtype=torch.float64), rtol=0, atol=1e-10)


def test_soft_wpmi_single_concept(device):
    # softmax over one concept is 1: L = k log(1 + eps) for every neuron
    sims, idx = make_inputs(30, 1, 4, 5, seed=6)
    out = ops.soft_wpmi(sims.to(device), idx.to(device), ops.soft_wpmi_weights(5), a=10.0, lam=0.6)
    expected = torch.full((4, 1), 0.4 * 5 * math.log(1 + 1e-7), dtype=torch.float64)
    torch.testing.assert_close(out.cpu(), expected, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_soft_wpmi_k0(device, dtype):
    sims, _ = make_inputs(10, 4, 3, 1, seed=7, dtype=dtype)
    idx = torch.zeros(0, 3, dtype=torch.long)
    out = ops.soft_wpmi(sims.to(device), idx.to(device), torch.zeros(0), **SOFT)
    assert out.shape == (3, 4) and out.dtype == dtype
    torch.testing.assert_close(out.cpu(), reference.soft_wpmi(sims, idx, torch.zeros(0), **SOFT))
    assert torch.equal(out.cpu(), torch.zeros(3, 4, dtype=dtype))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_soft_wpmi_no_neurons(device, dtype):
    sims, _ = make_inputs(10, 4, 1, 1, seed=8, dtype=dtype)
    idx = torch.zeros(5, 0, dtype=torch.long)
    out = ops.soft_wpmi(sims.to(device), idx.to(device), ops.soft_wpmi_weights(5), **SOFT)
    assert out.shape == (0, 4) and out.dtype == dtype and out.device.type == device


def test_soft_wpmi_does_not_mutate_inputs(device):
    sims, idx = make_inputs(20, 5, 3, 4, seed=9)
    sims, idx = sims.to(device), idx.to(device)
    p = ops.soft_wpmi_weights(4).to(device)
    copies = sims.clone(), idx.clone(), p.clone()
    ops.soft_wpmi(sims, idx, p, **SOFT)
    for before, after in zip(copies, (sims, idx, p)):
        assert torch.equal(before, after)


# ----------------------------------------------------------------------------------------------
# errors: the messages name the argument


def _valid(device, n=10, m=4, K=3, k=2):
    sims, idx = make_inputs(n, m, K, k, seed=10)
    return sims.to(device), idx.to(device), ops.soft_wpmi_weights(k)


@pytest.mark.parametrize(
    "value, match",
    [
        pytest.param(float("nan"), r"NaN|finite", id="nan"),
        pytest.param(float("inf"), r"inf|finite", id="+inf"),
        pytest.param(float("-inf"), r"inf|finite", id="-inf"),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_soft_wpmi_non_finite_sims(device, dtype, value, match):
    sims, idx, p = _valid(device)
    sims = sims.to(dtype)
    sims[3, 2] = value  # row 3 need not be one of the gathered images: the check covers all of sims
    with pytest.raises(RuntimeError, match=match):
        ops.soft_wpmi(sims, idx, p, **SOFT)


@pytest.mark.parametrize("bad", [10, 11, -1], ids=["N", "N+1", "negative"])
def test_soft_wpmi_index_out_of_range(device, bad):
    sims, idx, p = _valid(device, n=10)
    idx = idx.clone()
    idx[1, 2] = bad
    with pytest.raises(RuntimeError, match=r"topk_idx"):
        ops.soft_wpmi(sims, idx, p, **SOFT)


@pytest.mark.parametrize(
    "p",
    [
        pytest.param([1.0, 0.9, 0.8], id="too-long"),
        pytest.param([1.0], id="too-short"),
        pytest.param([1.0, 1.5], id="above-1"),
        pytest.param([-0.1, 0.5], id="negative"),
        pytest.param([float("nan"), 0.5], id="nan"),
        pytest.param([[1.0, 0.9]], id="2-D"),
    ],
)
def test_soft_wpmi_bad_p(device, p):
    sims, idx, _ = _valid(device, k=2)
    with pytest.raises(RuntimeError, match=r"\bp\b"):
        ops.soft_wpmi(sims, idx, torch.tensor(p), **SOFT)


@pytest.mark.parametrize("dtype", [torch.int32, torch.float32, torch.uint8], ids=str)
def test_soft_wpmi_index_dtype(device, dtype):
    sims, idx, p = _valid(device)
    with pytest.raises(RuntimeError, match=r"topk_idx.*int64|int64.*topk_idx"):
        ops.soft_wpmi(sims, idx.to(dtype), p, **SOFT)


def test_soft_wpmi_bad_shapes(device):
    sims, idx, p = _valid(device)
    with pytest.raises(RuntimeError, match=r"topk_idx"):
        ops.soft_wpmi(sims, idx[:, 0], p, **SOFT)  # 1-D indices
    with pytest.raises(RuntimeError, match=r"sims"):
        ops.soft_wpmi(sims[0], idx, p, **SOFT)  # 1-D sims
    with pytest.raises(RuntimeError, match=r"sims"):
        ops.soft_wpmi(sims.long(), idx, p, **SOFT)  # integer sims


@pytest.mark.parametrize(
    "kwargs, match",
    [
        pytest.param({"a": float("nan"), "lam": 1.0}, r"\ba\b", id="a-nan"),
        pytest.param({"a": 10.0, "lam": float("inf")}, r"\blam\b", id="lam-inf"),
        pytest.param({"a": 10.0, "lam": 1.0, "eps": -1e-7}, r"\beps\b", id="eps-negative"),
    ],
)
def test_soft_wpmi_bad_scalars(device, kwargs, match):
    sims, idx, p = _valid(device)
    with pytest.raises(RuntimeError, match=match):
        ops.soft_wpmi(sims, idx, p, **kwargs)


def test_soft_wpmi_not_a_tensor():
    with pytest.raises(TypeError, match=r"sims must be a torch.Tensor"):
        ops.soft_wpmi([[0.1, 0.2]], torch.zeros(1, 1, dtype=torch.long), [1.0], **SOFT)


@pytest.mark.cuda
def test_soft_wpmi_mismatched_devices():
    sims, idx, p = _valid("cpu")
    with pytest.raises(RuntimeError, match=r"device"):
        ops.soft_wpmi(sims.cuda(), idx, p, **SOFT)
    with pytest.raises(RuntimeError, match=r"device"):
        ops.soft_wpmi(sims, idx.cuda(), p, **SOFT)


# ----------------------------------------------------------------------------------------------
# properties


@pytest.mark.parametrize("seed", [0, 1])
def test_permuting_neurons_permutes_rows(device, seed):
    sims, idx = make_inputs(60, 15, 8, 6, seed=20 + seed)
    perm = torch.randperm(8, generator=generator(seed))
    p = ops.soft_wpmi_weights(6)
    out = ops.soft_wpmi(sims.to(device), idx.to(device), p, **SOFT)
    permuted = ops.soft_wpmi(sims.to(device), idx[:, perm].to(device), p, **SOFT)
    torch.testing.assert_close(permuted, out[perm.to(device)], rtol=1e-12, atol=1e-12)


def test_permuting_concepts_permutes_columns(device):
    sims, idx = make_inputs(60, 15, 8, 6, seed=30)
    perm = torch.randperm(15, generator=generator(3))
    p = ops.soft_wpmi_weights(6)
    out = ops.soft_wpmi(sims.to(device), idx.to(device), p, **SOFT)
    permuted = ops.soft_wpmi(sims[:, perm].to(device), idx.to(device), p, **SOFT)
    torch.testing.assert_close(permuted, out[:, perm.to(device)], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["soft", "hard"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_planted_concept_ranks_first(device, kind, seed):
    """A neuron whose activations equal concept m's similarity column is labelled m."""
    N, M, K, k = 300, 25, 8, 20
    g = generator(seed)
    sims = 0.2 + 0.05 * torch.randn(N, M, generator=g, dtype=torch.float64)
    acts = torch.randn(N, K, generator=g, dtype=torch.float64)
    planted = {j: int(m) for j, m in zip(range(0, K, 2), torch.randperm(M, generator=g)[: K // 2])}
    for j, m in planted.items():
        acts[:, j] = sims[:, m]
    idx = reference.topk(acts, k)[1]
    out = ops.soft_wpmi(sims.to(device), idx.to(device), weights_for(kind, k), **params_for(kind))
    labels = out.argmax(1).cpu()
    assert {j: int(labels[j]) for j in planted} == planted


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("n, m, K, k", SHAPES)
def test_soft_wpmi_cpu_cuda_parity(n, m, K, k, dtype):
    sims, idx = make_inputs(n, m, K, k, seed=n * m, dtype=dtype)
    p = ops.soft_wpmi_weights(k)
    cpu = ops.soft_wpmi(sims, idx, p, **SOFT)
    cuda = ops.soft_wpmi(sims.cuda(), idx.cuda(), p, **SOFT)
    tol = 1e-10 if dtype == torch.float64 else 1e-5  # float32: both within ~3e-6 of float64
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_soft_wpmi_opcheck(device, dtype):
    sims, idx = make_inputs(30, 6, 4, 5, seed=11, dtype=dtype)
    p = ops.soft_wpmi_weights(5).to(device)
    torch.library.opcheck(torch.ops.neurocore.soft_wpmi.default, (sims.to(device), idx.to(device), p, 10.0, 1.0, 1e-7))


# ----------------------------------------------------------------------------------------------
# tile, group and panel boundaries (sizes from python_tests/_constants.py, parsed from
# csrc/cpu/soft_wpmi.cpp, csrc/kernels/soft_wpmi.h and csrc/kernels/soft_wpmi_cuda.cuh)

from _constants import (  # noqa: E402
    WPMI_CUDA_BLOCK,
    WPMI_CUDA_MAX_NEURON_BLOCKS,
    WPMI_FLOOR_LOG10_DOUBLE,
    WPMI_FLOOR_LOG10_FLOAT,
    WPMI_GROUP,
    WPMI_PANEL_BYTES,
    WPMI_TILE,
    WPMI_TILES_PER_GROUP,
    around,
    wpmi_cpu_group_width,
    wpmi_factors_per_log,
)

# Concept counts around a CPU tile, a CUDA block and a CPU group (a new pass over sims: the path
# real concept sets of 1,000 to 82,000 take), and several groups ending in a partial tile.
BOUNDARY_CONCEPTS = sorted(
    set(around(WPMI_TILE) + around(WPMI_CUDA_BLOCK) + around(WPMI_GROUP) + [3 * WPMI_GROUP + WPMI_TILE + 1])
)


def check_against_reference(sims, idx, p, params, device, dtype):
    out = ops.soft_wpmi(sims.to(device), idx.to(device), p, **params)
    expected = reference.soft_wpmi(sims.double(), idx, p, **params, neuron_chunk=1024)
    assert out.dtype == dtype and out.shape == expected.shape
    if dtype == torch.float64:
        torch.testing.assert_close(out.cpu(), expected, rtol=1e-10, atol=1e-10)
    else:
        tol = float32_tolerance(sims, idx, p, eps=1e-7, device=device, expected=expected, **params)
        assert_within_float32_tolerance(out.cpu(), expected, tol)


@pytest.mark.parametrize("kind", ["soft", "hard"])
@pytest.mark.parametrize("m", BOUNDARY_CONCEPTS, ids=lambda m: f"M{m}")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_soft_wpmi_concept_boundaries(device, dtype, m, kind):
    sims, idx = make_inputs(40, m, 5, 6, seed=m, dtype=dtype)
    check_against_reference(sims, idx, weights_for(kind, 6), params_for(kind), device, dtype)


def _panel_cases():
    """N around where a group's panels outgrow WPMI_PANEL_BYTES (fewer tiles per group), per dtype,
    with M spanning two groups at any width."""
    cases = []
    for dtype in (torch.float64, torch.float32):
        size = torch.finfo(dtype).bits // 8
        n_edge = WPMI_PANEL_BYTES // (WPMI_TILES_PER_GROUP * WPMI_TILE * size)
        for n in around(n_edge):
            cases.append(pytest.param(dtype, n, WPMI_GROUP + WPMI_TILE + 1, id=f"{str(dtype)[6:]}-N{n}-group{wpmi_cpu_group_width(n, size)}"))
    # N past where one tile's panel outgrows the budget: tiles narrower than WPMI_TILE
    n_tile = WPMI_PANEL_BYTES // (WPMI_TILE * 8) + 1
    cases.append(pytest.param(torch.float64, n_tile, WPMI_TILE + 7, id=f"float64-N{n_tile}-group{wpmi_cpu_group_width(n_tile, 8)}"))
    return cases


@pytest.mark.parametrize("dtype, n, m", _panel_cases())
def test_soft_wpmi_cpu_panel_boundaries(dtype, n, m):
    sims, idx = make_inputs(n, m, 3, 4, seed=n, dtype=dtype)
    check_against_reference(sims, idx, weights_for("soft", 4), SOFT, "cpu", dtype)


def _factor_cases():
    """k around the number of factors multiplied before one log (csrc/kernels/soft_wpmi.h), for
    WPMI's p = 1 and a constant p = 0.99, in both precisions, and several groups of factors."""
    cases = []
    for dtype, floor in ((torch.float32, WPMI_FLOOR_LOG10_FLOAT), (torch.float64, WPMI_FLOOR_LOG10_DOUBLE)):
        for p in (1.0, 0.99):
            g = wpmi_factors_per_log(1.0 - p + 1e-7, floor)
            for k in around(g) + [4 * g + 1]:
                cases.append(pytest.param(dtype, p, k, id=f"{str(dtype)[6:]}-p{p}-g{g}-k{k}"))
    return cases


@pytest.mark.parametrize("dtype, p_value, k", _factor_cases())
def test_soft_wpmi_factor_group_boundaries(device, dtype, p_value, k):
    sims, idx = make_inputs(max(300, k), 20, 4, k, seed=k, dtype=dtype)
    p = torch.full((k,), p_value, dtype=torch.float64)
    check_against_reference(sims, idx, p, HARD, device, dtype)


@pytest.mark.cuda
@pytest.mark.parametrize("K", around(WPMI_CUDA_MAX_NEURON_BLOCKS, low=2)[1:] + [WPMI_CUDA_MAX_NEURON_BLOCKS + 2])
def test_soft_wpmi_cuda_neuron_grid_boundary(K):
    # past WPMI_CUDA_MAX_NEURON_BLOCKS neurons, a block scores several neurons
    sims, idx = make_inputs(30, 3, K, 2, seed=K)
    check_against_reference(sims, idx, weights_for("soft", 2), SOFT, "cuda", torch.float64)
