"""ops.shapley_permutation (Monte-Carlo permutation Shapley values of link(weight @ z + bias))
against reference.shapley_permutation, the efficiency property, the identity link's closed form, and
exact Shapley values (all D! permutations) against the coalition formula."""

from __future__ import annotations

import itertools

import pytest
import torch

from neurocore import ops, reference

LINKS = ["identity", "sigmoid", "softmax"]


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def make_model(R: int, D: int, C: int, seed: int, dtype=torch.float64):
    """x, weight, bias, background (float64, then cast to dtype)."""
    g = generator(seed)
    x = torch.randn(R, D, generator=g, dtype=torch.float64)
    weight = torch.randn(C, D, generator=g, dtype=torch.float64)
    bias = torch.randn(C, generator=g, dtype=torch.float64)
    background = 0.5 * torch.randn(R, D, generator=g, dtype=torch.float64)
    return tuple(t.to(dtype) for t in (x, weight, bias, background))


def f(z, weight, bias, link):
    logits = z.double() @ weight.double().T + bias.double()
    if link == "sigmoid":
        return torch.sigmoid(logits)
    if link == "softmax":
        return torch.softmax(logits, dim=-1)
    return logits


def float32_tolerance(x, weight, bias, background, P, link, expected):
    """Per-element error bound of a float32 result (first order, worst case), from the problem.

    ops.shapley_permutation documents no float32 accuracy; both kernels walk in the input's
    precision, so the bound follows the walk (csrc/kernels/shapley.h). After j of the D switches a
    logit has summed j float32 terms: error <= D u S, S = |start| + sum_d |W[c, d] (x_d - bg_d)|
    (u = 2^-24). The link moves f by at most that times its Lipschitz constant (1/4 for sigmoid, 1
    for softmax), plus fast_exp's ~2e-7 (csrc/kernels/common.h) and (C + 2) roundings of
    normalising; a credit f_new - f_old carries twice the error of f. Summing P credits (|credit|
    <= 1) in float32, in any order (CUDA adds atomically), adds P u; the result's rounding u |phi|.
    The identity link's closed form rounds a few times, relative to |w| (|x| + |bg|).
    """
    u = 2.0**-24
    xd, wd, bd, bgd = (t.double().cpu() for t in (x, weight, bias, background))
    if link == "identity":  # w (x - bg) or w x - w bg: a few roundings of terms of size |w| (|x| + |bg|)
        return 2 * u * wd.abs().unsqueeze(0) * (xd.abs() + bgd.abs()).unsqueeze(1) + u * expected.abs()
    start = bgd @ wd.T + bd  # [R, C]
    S = start.abs() + (wd.abs().unsqueeze(0) * (xd - bgd).abs().unsqueeze(1)).sum(-1)  # [R, C]
    lipschitz = 0.25 if link == "sigmoid" else 1.0
    D, C = x.shape[1], weight.shape[0]
    S = S.amax(1, keepdim=True) if link == "softmax" else S  # softmax mixes every logit
    err_f = lipschitz * D * u * S + 2e-7 + (C + 2) * u
    return (2 * err_f).unsqueeze(-1) + P * u + u * expected.abs()


def assert_within_float32_tolerance(out, expected, tol):
    err = (out.double().cpu() - expected).abs()
    worst = int((err - tol).flatten().argmax())
    assert bool((err <= tol).all()), (
        f"float32 result off by {float(err.flatten()[worst]):.3g} at flat index {worst} "
        f"(sample {worst // (expected.shape[1] * expected.shape[2])}), beyond its bound {float(tol.flatten()[worst]):.3g}"
    )


def on(device, *tensors):
    return tuple(t.to(device) for t in tensors)


# ----------------------------------------------------------------------------------------------
# against the reference


@pytest.mark.parametrize("C", [1, 3], ids=lambda c: f"C{c}")
@pytest.mark.parametrize("link", LINKS)
@pytest.mark.parametrize("R, D, P", [(5, 6, 16), (1, 9, 3), (33, 4, 40)], ids=["R5-D6-P16", "R1-D9-P3", "R33-D4-P40"])
def test_shapley_float64_matches_reference(device, link, C, R, D, P):
    x, w, b, bg = make_model(R, D, C, seed=R * 100 + D * 10 + C)
    perms = ops.sample_permutations(P, D, seed=R + D)
    out = ops.shapley_permutation(*on(device, x, w, b, bg, perms), link)
    assert out.shape == (R, C, D) and out.dtype == torch.float64 and out.device.type == device
    expected = reference.shapley_permutation(x, w, b, bg, perms, link)
    torch.testing.assert_close(out.cpu(), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("C", [1, 3], ids=lambda c: f"C{c}")
@pytest.mark.parametrize("link", LINKS)
def test_shapley_float32_matches_float64_reference(device, link, C):
    x, w, b, bg = make_model(6, 7, C, seed=C, dtype=torch.float32)
    perms = ops.sample_permutations(12, 7, seed=1)
    out = ops.shapley_permutation(*on(device, x, w, b, bg, perms), link)
    assert out.dtype == torch.float32 and out.shape == (6, C, 7)
    expected = reference.shapley_permutation(x.double(), w.double(), b.double(), bg.double(), perms, link)
    assert_within_float32_tolerance(out, expected, float32_tolerance(x, w, b, bg, 12, link, expected))


def test_shapley_docstring_example(device):
    g = generator(0)
    x, bg = torch.randn(4, 5, generator=g), torch.zeros(4, 5)
    w, b = torch.randn(1, 5, generator=g), torch.zeros(1)
    phi = ops.shapley_permutation(*on(device, x, w, b, bg, ops.sample_permutations(8, 5)), "sigmoid")
    torch.testing.assert_close(phi.sum(-1).cpu(), torch.sigmoid(x @ w.T + b) - torch.sigmoid(bg @ w.T + b))


def test_shapley_non_contiguous_inputs(device):
    x, w, b, bg = make_model(6, 5, 3, seed=2)
    perms = ops.sample_permutations(10, 5, seed=2)
    expected = reference.shapley_permutation(x, w, b, bg, perms, "softmax")
    xt, wt, bgt, pt = (t.T.contiguous().T for t in (x, w, bg, perms))
    assert not xt.is_contiguous() and not wt.is_contiguous() and not pt.is_contiguous()
    out = ops.shapley_permutation(*on(device, xt, wt, b, bgt, pt), "softmax")
    torch.testing.assert_close(out.cpu(), expected, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# properties


@pytest.mark.parametrize("C", [1, 3], ids=lambda c: f"C{c}")
@pytest.mark.parametrize("link", LINKS)
def test_efficiency_for_every_single_permutation(device, link, C):
    x, w, b, bg = make_model(7, 6, C, seed=40 + C)
    gap = f(x, w, b, link) - f(bg, w, b, link)  # [R, C]
    for perm in ops.sample_permutations(6, 6, seed=3):
        phi = ops.shapley_permutation(*on(device, x, w, b, bg, perm.unsqueeze(0)), link)
        torch.testing.assert_close(phi.sum(-1).cpu(), gap, rtol=1e-12, atol=1e-12)
    phi = ops.shapley_permutation(*on(device, x, w, b, bg, ops.sample_permutations(25, 6, seed=4)), link)
    torch.testing.assert_close(phi.sum(-1).cpu(), gap, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("P", [0, 1, 9])
def test_identity_link_is_exact(device, P):
    x, w, b, bg = make_model(5, 6, 3, seed=5)
    phi = ops.shapley_permutation(*on(device, x, w, b, bg, ops.sample_permutations(P, 6)), "identity")
    assert torch.equal(phi.cpu(), w[None] * (x - bg)[:, None])


@pytest.mark.parametrize("link, C", [("sigmoid", 1), ("sigmoid", 3), ("softmax", 3), ("softmax", 2)])
@pytest.mark.parametrize("D", [1, 3, 5, 6])
def test_all_permutations_give_exact_shapley(device, link, C, D):
    x, w, b, bg = make_model(3, D, C, seed=D * 10 + C)
    perms = torch.tensor(list(itertools.permutations(range(D))), dtype=torch.long)
    out = ops.shapley_permutation(*on(device, x, w, b, bg, perms), link)
    exact = reference.shapley_exact(x, w, b, bg, link)
    torch.testing.assert_close(out.cpu(), exact, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("link", ["sigmoid", "softmax"])
def test_reference_walk_matches_coalition_formula(link):
    # the oracle checks itself: the two reference definitions agree over all permutations
    x, w, b, bg = make_model(2, 4, 3, seed=6)
    perms = torch.tensor(list(itertools.permutations(range(4))), dtype=torch.long)
    walk = reference.shapley_permutation(x, w, b, bg, perms, link)
    torch.testing.assert_close(walk, reference.shapley_exact(x, w, b, bg, link), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("link", LINKS)
def test_permuting_samples_permutes_rows(device, link):
    x, w, b, bg = make_model(8, 5, 3, seed=7)
    perms = ops.sample_permutations(10, 5, seed=7)
    order = torch.randperm(8, generator=generator(7))
    out = ops.shapley_permutation(*on(device, x, w, b, bg, perms), link)
    permuted = ops.shapley_permutation(*on(device, x[order], w, b, bg[order], perms), link)
    torch.testing.assert_close(permuted.cpu(), out.cpu()[order], rtol=1e-12, atol=1e-14)


def test_does_not_mutate_inputs(device):
    tensors = on(device, *make_model(4, 5, 3, seed=8), ops.sample_permutations(5, 5))
    copies = [t.clone() for t in tensors]
    ops.shapley_permutation(*tensors, "softmax")
    assert all(torch.equal(a, b) for a, b in zip(tensors, copies))


# ----------------------------------------------------------------------------------------------
# sample_permutations


def test_sample_permutations_same_seed_same_tensor():
    a = ops.sample_permutations(50, 7, seed=123)
    b = ops.sample_permutations(50, 7, seed=123)
    assert torch.equal(a, b)
    assert not torch.equal(a, ops.sample_permutations(50, 7, seed=124))
    assert torch.equal(ops.sample_permutations(2, 4), ops.sample_permutations(2, 4, seed=0))


@pytest.mark.parametrize("num, D", [(50, 7), (3, 1), (0, 5), (4, 0)])
def test_sample_permutations_rows_are_permutations(num, D):
    perms = ops.sample_permutations(num, D, seed=9)
    assert perms.shape == (num, D) and perms.dtype == torch.int64 and perms.device.type == "cpu"
    assert torch.equal(perms.sort(1).values, torch.arange(D).expand(num, D))


def test_sample_permutations_ignores_global_rng():
    torch.manual_seed(0)
    a = ops.sample_permutations(5, 6, seed=1)
    torch.manual_seed(99)
    torch.rand(10)
    assert torch.equal(a, ops.sample_permutations(5, 6, seed=1))


# ----------------------------------------------------------------------------------------------
# edge shapes


@pytest.mark.parametrize("link", LINKS)
def test_single_feature(device, link):
    # D = 1: the one feature gets the whole change, for every permutation count >= 1
    x, w, b, bg = make_model(4, 1, 3, seed=10)
    phi = ops.shapley_permutation(*on(device, x, w, b, bg, torch.zeros(3, 1, dtype=torch.long)), link)
    torch.testing.assert_close(phi.cpu()[..., 0], f(x, w, b, link) - f(bg, w, b, link), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("link", LINKS)
def test_no_samples(device, link):
    x, w, b, bg = make_model(0, 5, 3, seed=11)
    phi = ops.shapley_permutation(*on(device, x, w, b, bg, ops.sample_permutations(4, 5)), link)
    assert phi.shape == (0, 3, 5) and phi.dtype == torch.float64 and phi.device.type == device


@pytest.mark.parametrize("link", LINKS)
def test_no_permutations(device, link):
    # P = 0: the reference defines the result: zeros for a sampled link (an empty mean), the closed
    # form for the identity link (no sampling needed)
    x, w, b, bg = make_model(4, 5, 3, seed=12)
    perms = torch.zeros(0, 5, dtype=torch.long)
    phi = ops.shapley_permutation(*on(device, x, w, b, bg, perms), link)
    expected = reference.shapley_permutation(x, w, b, bg, perms, link)
    assert phi.shape == (4, 3, 5)
    assert torch.equal(phi.cpu(), expected)
    if link != "identity":
        assert torch.equal(phi.cpu(), torch.zeros(4, 3, 5, dtype=torch.float64))


# ----------------------------------------------------------------------------------------------
# errors


def test_unknown_link_names_the_valid_ones(device):
    args = on(device, *make_model(2, 3, 1, seed=13), ops.sample_permutations(2, 3))
    with pytest.raises(ValueError, match=r"link must be one of \('identity', 'sigmoid', 'softmax'\); got 'relu'"):
        ops.shapley_permutation(*args, "relu")


@pytest.mark.parametrize(
    "perms",
    [
        pytest.param([[0, 1, 2, 3], [0, 0, 2, 3]], id="repeated-feature"),
        pytest.param([[0, 1, 2, 4]], id="index-D"),
        pytest.param([[0, 1, -1, 3]], id="negative"),
        pytest.param([[0, 1, 2]], id="too-short"),
        pytest.param([[0, 1, 2, 3, 4]], id="too-long"),
    ],
)
def test_bad_permutations(device, perms):
    x, w, b, bg = on(device, *make_model(2, 4, 1, seed=14))
    with pytest.raises(RuntimeError, match=r"perms"):
        ops.shapley_permutation(x, w, b, bg, torch.tensor(perms, device=device), "sigmoid")


def test_perms_dtype_and_dim(device):
    x, w, b, bg = on(device, *make_model(2, 4, 1, seed=15))
    perms = ops.sample_permutations(3, 4).to(device)
    with pytest.raises(RuntimeError, match=r"perms.*int64|int64.*perms"):
        ops.shapley_permutation(x, w, b, bg, perms.int(), "sigmoid")
    with pytest.raises(RuntimeError, match=r"perms"):
        ops.shapley_permutation(x, w, b, bg, perms[0], "sigmoid")


@pytest.mark.parametrize(
    "name, make_bad, match",
    [
        # x defines R and D, weight defines C: a D that disagrees with x's names x or weight
        pytest.param("x", lambda t: t[:, :3], r"\bx\b|weight", id="x-wrong-D"),
        pytest.param("x", lambda t: t[0], r"\bx\b", id="x-1-D"),
        pytest.param("weight", lambda t: t[:, :3], r"weight", id="weight-wrong-D"),
        pytest.param("weight", lambda t: t[0], r"weight", id="weight-1-D"),
        pytest.param("bias", lambda t: t[:1], r"bias", id="bias-wrong-C"),
        pytest.param("bias", lambda t: t[None], r"bias", id="bias-2-D"),
        pytest.param("background", lambda t: t[:1], r"background", id="background-wrong-R"),
        pytest.param("background", lambda t: t[:, :3], r"background", id="background-wrong-D"),
    ],
)
def test_shape_mismatches_name_the_argument(device, name, make_bad, match):
    args = dict(zip(("x", "weight", "bias", "background"), on(device, *make_model(2, 4, 2, seed=16))))
    args[name] = make_bad(args[name])
    with pytest.raises(RuntimeError, match=match):
        ops.shapley_permutation(**args, perms=ops.sample_permutations(3, 4).to(device), link="softmax")


@pytest.mark.parametrize("name", ["x", "weight", "bias", "background"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_non_finite_inputs(device, name, value):
    args = dict(zip(("x", "weight", "bias", "background"), on(device, *make_model(2, 4, 2, seed=21))))
    args[name] = args[name].clone()
    args[name].view(-1)[1] = value
    with pytest.raises(RuntimeError, match=r"finite|NaN"):
        ops.shapley_permutation(**args, perms=ops.sample_permutations(3, 4).to(device), link="sigmoid")


def test_not_a_tensor():
    x, w, b, bg = make_model(2, 4, 1, seed=17)
    with pytest.raises(TypeError, match=r"weight must be a torch.Tensor"):
        ops.shapley_permutation(x, w.tolist(), b, bg, ops.sample_permutations(2, 4), "sigmoid")


@pytest.mark.cuda
def test_mismatched_devices():
    x, w, b, bg = make_model(2, 4, 1, seed=18)
    perms = ops.sample_permutations(2, 4)
    with pytest.raises(RuntimeError, match=r"device"):
        ops.shapley_permutation(x.cuda(), w, b, bg, perms, "sigmoid")
    with pytest.raises(RuntimeError, match=r"device"):
        ops.shapley_permutation(x.cuda(), w.cuda(), b.cuda(), bg.cuda(), perms, "sigmoid")


# ----------------------------------------------------------------------------------------------
# devices and registration


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("link", LINKS)
def test_cpu_cuda_parity(link, dtype):
    x, w, b, bg = make_model(40, 12, 3, seed=19, dtype=dtype)
    perms = ops.sample_permutations(64, 12, seed=19)
    cpu = ops.shapley_permutation(x, w, b, bg, perms, link)
    cuda = ops.shapley_permutation(*on("cuda", x, w, b, bg, perms), link)
    tol = 1e-12 if dtype == torch.float64 else 1e-5  # float32 walks, summed in any order
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=tol, atol=tol)


@pytest.mark.parametrize("link", LINKS)
def test_shapley_opcheck(device, link):
    args = on(device, *make_model(3, 4, 2, seed=20), ops.sample_permutations(5, 4))
    torch.library.opcheck(torch.ops.neurocore.shapley_permutation.default, (*args, link))


# ----------------------------------------------------------------------------------------------
# sample-block boundaries (sizes from python_tests/_constants.py, parsed from csrc/cpu/shapley.cpp
# and csrc/cuda/shapley.cu): the CPU walks SHAPLEY_LANES samples per block (16 float32, 8 float64)

from _constants import SHAPLEY_CUDA_SCRATCH, around, shapley_lanes  # noqa: E402


def _block_rows(dtype):
    L = shapley_lanes(torch.finfo(dtype).bits // 8)
    return sorted(set(around(L) + around(2 * L) + [3 * L + 5]))


@pytest.mark.parametrize("link, C", [("sigmoid", 1), ("sigmoid", 3), ("softmax", 3)], ids=["sigmoid-C1", "sigmoid-C3", "softmax-C3"])
@pytest.mark.parametrize(
    "dtype, R",
    [pytest.param(d, R, id=f"{str(d)[6:]}-R{R}") for d in (torch.float32, torch.float64) for R in _block_rows(d)],
)
def test_shapley_sample_block_boundaries(device, dtype, R, link, C):
    x, w, b, bg = make_model(R, 7, C, seed=R * 10 + C, dtype=dtype)
    perms = ops.sample_permutations(12, 7, seed=R)
    out = ops.shapley_permutation(*on(device, x, w, b, bg, perms), link)
    expected = reference.shapley_permutation(x.double(), w.double(), b.double(), bg.double(), perms, link)
    assert out.dtype == dtype and out.shape == (R, C, 7)
    if dtype == torch.float64:
        torch.testing.assert_close(out.cpu(), expected, rtol=1e-10, atol=1e-12)
    else:
        assert_within_float32_tolerance(out, expected, float32_tolerance(x, w, b, bg, 12, link, expected))


@pytest.mark.cuda
@pytest.mark.parametrize("link", ["sigmoid", "softmax"])
def test_shapley_cuda_launch_boundaries(link):
    """Samples per CUDA launch = SHAPLEY_CUDA_SCRATCH // (P * 3 * C): R around it and past two launches."""
    P, C, D = 1024, 16, 3
    rows = SHAPLEY_CUDA_SCRATCH // (P * 3 * C)
    perms = ops.sample_permutations(P, D, seed=3)
    for R in around(rows) + [2 * rows + 1]:
        x, w, b, bg = make_model(R, D, C, seed=R)
        out = ops.shapley_permutation(*on("cuda", x, w, b, bg, perms), link)
        expected = reference.shapley_permutation(x, w, b, bg, perms, link)
        torch.testing.assert_close(out.cpu(), expected, rtol=1e-10, atol=1e-12, msg=lambda m, R=R: f"R={R}: {m}")
