"""ops.gram_stats and ops.lstsq_gram (LE's greedy-search step, ALGORITHMS.md §2 step 4) against
direct formulas, reference.lstsq_gram (same normal equations) and reference.lstsq_samples
(torch.linalg.lstsq on the samples: the definition)."""

from __future__ import annotations

import pytest
import torch

from neurocore import ops, reference
from neurocore.ops import GramStats

N_SAMPLES, M, K = 300, 12, 4
N_TRAIN = 210


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def make_data(seed: int = 0, constant_column: int | None = None, constant_value: float = 1.0):
    """P [n, M] concept activations; Y [n, K] a noisy linear function of a few columns each."""
    g = generator(seed)
    P = torch.rand(N_SAMPLES, M, generator=g, dtype=torch.float64)
    W = torch.zeros(M, K, dtype=torch.float64)
    for k in range(K):
        cols = torch.randperm(M, generator=g)[:3]
        W[cols, k] = torch.randn(3, generator=g, dtype=torch.float64)
    Y = P @ W + 0.3 * torch.randn(N_SAMPLES, K, generator=g, dtype=torch.float64) + 0.5
    if constant_column is not None:
        P[:, constant_column] = constant_value
    return P, Y


def split(P, Y):
    return P[:N_TRAIN], Y[:N_TRAIN], P[N_TRAIN:], Y[N_TRAIN:]


def stats(P, Y, device="cpu"):
    tp, ty, vp, vy = split(P, Y)
    return ops.gram_stats(tp.to(device), ty.to(device)), ops.gram_stats(vp.to(device), vy.to(device))


def random_sets(s: int, R: int, seed: int, padded: bool) -> torch.Tensor:
    """[K, R, s] sets of distinct concepts; with ``padded`` each set keeps 1..s slots (-1 elsewhere),
    trailing for most sets and in the middle for one."""
    g = generator(seed)
    sets = torch.stack([torch.stack([torch.randperm(M, generator=g)[:s] for _ in range(R)]) for _ in range(K)])
    if padded and s > 1:
        keep = torch.randint(1, s + 1, (K, R), generator=g)
        sets[torch.arange(s).view(1, 1, s) >= keep.unsqueeze(-1)] = -1
        sets[0, 0] = torch.randperm(M, generator=g)[:s]
        sets[0, 0, s // 2] = -1  # a hole in the middle (trailing for s = 2)
    return sets


def to_stats(st: GramStats, **changes) -> GramStats:
    fields = {f: getattr(st, f) for f in ("n", "mean", "cov", "target_mean", "cross", "target_var")}
    fields.update(changes)
    return GramStats(**fields)


def stats_to(st: GramStats, device=None, dtype=None) -> GramStats:
    tensors = ("mean", "cov", "target_mean", "cross", "target_var")
    return to_stats(st, **{f: getattr(st, f).to(device=device, dtype=dtype) for f in tensors})


def predict(P, sets, weights, bias):
    """Predictions [K, R, n] of every fitted model on samples P (padded slots read column 0 × weight 0)."""
    cols = P[:, sets.clamp(min=0)]  # [n, K, R, s]
    return (cols * weights).sum(-1).permute(1, 2, 0) + bias.unsqueeze(-1)


# ----------------------------------------------------------------------------------------------
# gram_stats


@pytest.mark.parametrize("chunk_size", [8192, 64, 7, 1])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_gram_stats_matches_direct_formulas(device, dtype, chunk_size):
    P, Y = make_data(1)
    P, Y = P.to(dtype), Y.to(dtype)
    st = ops.gram_stats(P.to(device), Y.to(device), chunk_size=chunk_size)
    Pd, Yd = P.double(), Y.double()
    n = Pd.shape[0]
    Pc, Yc = Pd - Pd.mean(0), Yd - Yd.mean(0)
    assert st.n == n
    expected = {
        "mean": Pd.mean(0),
        "cov": Pc.T @ Pc / n,
        "target_mean": Yd.mean(0),
        "cross": Pc.T @ Yc / n,
        "target_var": Yd.var(0, unbiased=False),
    }
    for name, value in expected.items():
        got = getattr(st, name)
        assert got.dtype == torch.float64 and got.device.type == device, name
        torch.testing.assert_close(got.cpu(), value, rtol=1e-12, atol=1e-14, msg=lambda m, n=name: f"{n}: {m}")


def test_gram_stats_errors():
    with pytest.raises(ValueError, match=r"same n"):
        ops.gram_stats(torch.zeros(5, 3), torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"P must be \[n, M\]"):
        ops.gram_stats(torch.zeros(5), torch.zeros(5, 2))
    with pytest.raises(ValueError, match=r"no samples"):
        ops.gram_stats(torch.zeros(0, 3), torch.zeros(0, 2))


# ----------------------------------------------------------------------------------------------
# lstsq_gram against the references


@pytest.mark.parametrize("padded", [False, True], ids=["full", "padded"])
@pytest.mark.parametrize("s", range(1, 7), ids=lambda s: f"s{s}")
def test_lstsq_gram_matches_reference(device, s, padded):
    P, Y = make_data(2)
    train, val = stats(P, Y)
    sets = random_sets(s, R=5, seed=10 * s + padded, padded=padded)
    train_d, val_d = stats_to(train, device), stats_to(val, device)
    out = ops.lstsq_gram(train_d, val_d, sets.to(device))
    expected = reference.lstsq_gram(train, val, sets)
    for name in ("weights", "bias", "val_corr"):
        got = getattr(out, name)
        assert got.dtype == torch.float64 and got.device.type == device, name
        assert got.shape == getattr(expected, name).shape, name
        exp = getattr(expected, name)
        torch.testing.assert_close(got.cpu(), exp, rtol=1e-9, atol=1e-12, msg=lambda m, n=name: f"{n}: {m}")
    # padded slots hold exactly 0
    assert torch.equal(out.weights.cpu()[sets < 0], torch.zeros(int((sets < 0).sum()), dtype=torch.float64))


@pytest.mark.parametrize("padded", [False, True], ids=["full", "padded"])
@pytest.mark.parametrize("s", range(1, 7), ids=lambda s: f"s{s}")
def test_lstsq_gram_matches_lstsq_on_samples(device, s, padded):
    P, Y = make_data(3)
    train, val = stats(P, Y, device)
    sets = random_sets(s, R=4, seed=100 + 10 * s + padded, padded=padded)
    out = ops.lstsq_gram(train, val, sets.to(device))
    expected = reference.lstsq_samples(*split(P, Y), sets)
    torch.testing.assert_close(out.weights.cpu(), expected.weights, rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(out.bias.cpu(), expected.bias, rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(out.val_corr.cpu(), expected.val_corr, rtol=0, atol=1e-9)


def test_lstsq_gram_docstring_example(device):
    g = generator(4)
    P, Y = torch.randn(200, 6, generator=g), torch.randn(200, 2, generator=g)
    P, Y = P.to(device), Y.to(device)
    tr, va = ops.gram_stats(P[:150], Y[:150]), ops.gram_stats(P[150:], Y[150:])
    sets = torch.tensor([[[0, 1], [2, -1]], [[3, 4], [5, 0]]], device=device)
    out = ops.lstsq_gram(tr, va, sets)
    assert out.weights.shape == (2, 2, 2) and out.bias.shape == (2, 2) and out.val_corr.shape == (2, 2)
    assert out.weights[0, 1, 1].item() == 0.0


def test_lstsq_gram_recovers_planted_model(device):
    # noise-free Y = 2 P[:, 3] - P[:, 7] + 0.25: exact weights and a perfect validation correlation
    P, _ = make_data(5)
    Y = (2 * P[:, 3] - P[:, 7] + 0.25).unsqueeze(1)
    tp, ty, vp, vy = split(P, Y)
    train, val = ops.gram_stats(tp.to(device), ty.to(device)), ops.gram_stats(vp.to(device), vy.to(device))
    out = ops.lstsq_gram(train, val, torch.tensor([[[3, 7], [7, 3], [3, -1]]], device=device))

    def f64(*values):
        return torch.tensor(values, dtype=torch.float64)

    torch.testing.assert_close(out.weights[0, 0].cpu(), f64(2.0, -1.0), rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(out.weights[0, 1].cpu(), f64(-1.0, 2.0), rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(out.bias[0, :2].cpu(), f64(0.25, 0.25), rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(out.val_corr[0, :2].cpu(), torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-9)
    assert 0 < out.val_corr[0, 2].item() < 1


# ----------------------------------------------------------------------------------------------
# degenerate sets


def min_norm_lstsq(P, Y, sets):
    """Per (neuron, set): least squares with intercept on the train split by an SVD solver (gelsd),
    which handles rank-deficient designs (duplicate or constant columns); returns the validation
    predictions [K, R, n_val] and Pearson correlations [K, R] (0 for a constant prediction)."""
    tp, ty, vp, vy = split(P, Y)
    Ks, R, _ = sets.shape
    preds = torch.zeros(Ks, R, vp.shape[0], dtype=torch.float64)
    corr = torch.zeros(Ks, R, dtype=torch.float64)
    for k in range(Ks):
        for r in range(R):
            cols = [c for c in sets[k, r].tolist() if c >= 0]
            X = torch.cat([tp[:, cols], torch.ones(tp.shape[0], 1, dtype=torch.float64)], 1)
            sol = torch.linalg.lstsq(X, ty[:, k : k + 1], driver="gelsd").solution.squeeze(1)
            preds[k, r] = vp[:, cols] @ sol[:-1] + sol[-1]
            if preds[k, r].std() > 1e-12:
                corr[k, r] = torch.corrcoef(torch.stack([preds[k, r], vy[:, k]]))[0, 1]
    return preds, corr


# [K=4, R=3, s=2]: the same column twice, next to ordinary pairs
DUPLICATE_PAIRS = torch.tensor(
    [[[2, 2], [5, 5], [8, 9]], [[1, 1], [1, 4], [0, 3]], [[3, 3], [6, 6], [7, 7]], [[10, 10], [11, 0], [9, 9]]]
)
DUPLICATE_TRIPLES = torch.tensor([[[4, 4, 4], [4, 9, 4], [4, -1, 4]]] * K)  # the same column three times


@pytest.mark.parametrize("sets", [DUPLICATE_PAIRS, DUPLICATE_TRIPLES], ids=["pairs", "triples"])
def test_duplicate_concepts_give_finite_weights_with_lstsq_prediction(device, sets):
    P, Y = make_data(6)
    train, val = stats(P, Y, device)
    out = ops.lstsq_gram(train, val, sets.to(device))
    assert torch.isfinite(out.weights).all() and torch.isfinite(out.bias).all() and torch.isfinite(out.val_corr).all()
    preds, corr = min_norm_lstsq(P, Y, sets)
    ours = predict(split(P, Y)[2], sets, out.weights.cpu(), out.bias.cpu())
    torch.testing.assert_close(ours, preds, rtol=1e-7, atol=1e-8)
    torch.testing.assert_close(out.val_corr.cpu(), corr, rtol=0, atol=1e-7)
    # the ridge splits a duplicated concept's weight evenly (minimum norm), up to the rounding that
    # the tiny ridge amplifies (condition number ~ 1 / ridge = 1e10: ~1e-6 relative)
    w = out.weights.cpu()
    torch.testing.assert_close(w[0, 0, 0], w[0, 0, 1], rtol=1e-4, atol=1e-9)


# 0.3 is not exactly representable: its rounded mean used to leave ~1e-32 of variance in the
# statistics, which the solver fitted with a meaningless weight of about 1.7 (gram_stats now gives
# an exactly constant column exactly zero statistics).
@pytest.mark.parametrize("value", [1.0, 0.3])
def test_constant_column(device, value):
    const = 5
    P, Y = make_data(7, constant_column=const, constant_value=value)
    train, val = stats(P, Y, device)
    sets = torch.tensor([[[const, -1], [const, 2], [3, const]]] * K)  # alone, then with another column
    out = ops.lstsq_gram(train, val, sets.to(device))
    assert torch.isfinite(out.weights).all() and torch.isfinite(out.bias).all()
    weights, bias, corr = (t.cpu() for t in out)
    # a concept without variance gets weight 0; alone, the model is the train mean and scores 0
    assert torch.all(weights[sets == const].abs() <= 1e-12)
    torch.testing.assert_close(bias[:, 0], train.target_mean.cpu(), rtol=1e-12, atol=1e-12)
    assert torch.equal(corr[:, 0], torch.zeros(K, dtype=torch.float64))
    preds, expected_corr = min_norm_lstsq(P, Y, sets)
    torch.testing.assert_close(predict(split(P, Y)[2], sets, weights, bias), preds, rtol=1e-7, atol=1e-8)
    torch.testing.assert_close(corr, expected_corr, rtol=0, atol=1e-9)
    expected = reference.lstsq_gram(stats_to(train, "cpu"), stats_to(val, "cpu"), sets)
    for got, exp in zip((weights, bias, corr), expected):
        torch.testing.assert_close(got, exp, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("sets", [DUPLICATE_PAIRS, DUPLICATE_TRIPLES], ids=["duplicates", "triples"])
def test_reference_lstsq_samples_on_rank_deficient_sets(sets):
    """The oracle itself: reference.lstsq_samples must give least-squares predictions when a set
    repeats a column (torch.linalg.lstsq's default CPU driver, gelsy, can return a worse fit there)."""
    P, Y = make_data(6)
    expected = reference.lstsq_samples(*split(P, Y), sets)
    preds, corr = min_norm_lstsq(P, Y, sets)
    theirs = predict(split(P, Y)[2], sets, expected.weights, expected.bias)
    torch.testing.assert_close(theirs, preds, rtol=1e-7, atol=1e-8)
    torch.testing.assert_close(expected.val_corr, corr, rtol=0, atol=1e-7)


def test_empty_sets(device):
    P, Y = make_data(8)
    train, val = stats(P, Y, device)
    sets = torch.zeros(K, 3, 0, dtype=torch.long, device=device)
    out = ops.lstsq_gram(train, val, sets)
    assert out.weights.shape == (K, 3, 0) and out.bias.shape == (K, 3) and out.val_corr.shape == (K, 3)
    torch.testing.assert_close(out.bias.cpu(), train.target_mean.cpu().unsqueeze(1).expand(K, 3))
    assert torch.equal(out.val_corr.cpu(), torch.zeros(K, 3, dtype=torch.float64))


def test_fully_padded_sets(device):
    P, Y = make_data(8)
    train, val = stats(P, Y, device)
    sets = torch.full((K, 2, 3), -1, dtype=torch.long)
    out = ops.lstsq_gram(train, val, sets.to(device))
    assert torch.equal(out.weights.cpu(), torch.zeros(K, 2, 3, dtype=torch.float64))
    torch.testing.assert_close(out.bias.cpu(), train.target_mean.cpu().unsqueeze(1).expand(K, 2))
    assert torch.equal(out.val_corr.cpu(), torch.zeros(K, 2, dtype=torch.float64))
    expected = reference.lstsq_gram(stats_to(train, "cpu"), stats_to(val, "cpu"), sets)
    torch.testing.assert_close(out.bias.cpu(), expected.bias)


@pytest.mark.parametrize("R, s", [(0, 3), (2, 3)], ids=["R0", "R2"])
def test_no_neurons(device, R, s):
    P, Y = make_data(9)
    train, val = stats(P, Y[:, :0], device)
    out = ops.lstsq_gram(train, val, torch.zeros(0, R, s, dtype=torch.long, device=device))
    assert out.weights.shape == (0, R, s) and out.bias.shape == (0, R) and out.val_corr.shape == (0, R)


def test_no_candidate_sets(device):
    P, Y = make_data(9)
    train, val = stats(P, Y, device)
    out = ops.lstsq_gram(train, val, torch.zeros(K, 0, 2, dtype=torch.long, device=device))
    assert out.weights.shape == (K, 0, 2) and out.bias.shape == (K, 0)


def test_max_set_size_32(device):
    g = generator(11)
    P = torch.rand(400, 40, generator=g, dtype=torch.float64)
    Y = P[:, :5].sum(1, keepdim=True) + 0.1 * torch.randn(400, 1, generator=g, dtype=torch.float64)
    train = ops.gram_stats(P[:300].to(device), Y[:300].to(device))
    val = ops.gram_stats(P[300:].to(device), Y[300:].to(device))
    sets = torch.stack([torch.randperm(40, generator=g)[:32] for _ in range(3)]).unsqueeze(0)
    out = ops.lstsq_gram(train, val, sets.to(device))
    expected = reference.lstsq_gram(stats_to(train, "cpu"), stats_to(val, "cpu"), sets)
    for got, exp in zip(out, expected):
        torch.testing.assert_close(got.cpu(), exp, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("ridge", [0.0, 1e-10, 1e-3, 1.0])
def test_ridge(device, ridge):
    P, Y = make_data(12)
    train, val = stats(P, Y, device)
    sets = random_sets(4, R=3, seed=12, padded=True)
    out = ops.lstsq_gram(train, val, sets.to(device), ridge=ridge)
    expected = reference.lstsq_gram(stats_to(train, "cpu"), stats_to(val, "cpu"), sets, ridge=ridge)
    for got, exp in zip(out, expected):
        torch.testing.assert_close(got.cpu(), exp, rtol=1e-9, atol=1e-12)


def test_float32_stats_accepted(device):
    P, Y = make_data(13)
    train, val = stats(P, Y)
    sets = random_sets(3, R=4, seed=13, padded=True)
    train32, val32 = stats_to(train, device, torch.float32), stats_to(val, device, torch.float32)
    out = ops.lstsq_gram(train32, val32, sets.to(device))
    assert all(t.dtype == torch.float64 for t in out)
    # computed in float64 from the float32 statistics ...
    same_data = reference.lstsq_gram(stats_to(train32, "cpu"), stats_to(val32, "cpu"), sets)
    for got, exp in zip(out, same_data):
        torch.testing.assert_close(got.cpu(), exp, rtol=1e-8, atol=1e-10)
    # ... and close to the float64 statistics' answer
    full = reference.lstsq_gram(train, val, sets)
    for got, exp in zip(out, full):
        torch.testing.assert_close(got.cpu(), exp, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# invariances


def test_permuting_candidates_and_slots(device):
    P, Y = make_data(14)
    train, val = stats(P, Y, device)
    sets = random_sets(4, R=6, seed=14, padded=True)
    out = ops.lstsq_gram(train, val, sets.to(device))
    g = generator(15)
    r_perm, s_perm = torch.randperm(6, generator=g), torch.randperm(4, generator=g)
    permuted = ops.lstsq_gram(train, val, sets[:, r_perm][:, :, s_perm].to(device))
    dev_r, dev_s = r_perm.to(device), s_perm.to(device)
    torch.testing.assert_close(permuted.weights, out.weights[:, dev_r][:, :, dev_s], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(permuted.bias, out.bias[:, dev_r], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(permuted.val_corr, out.val_corr[:, dev_r], rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# errors


def _args(device, s=2):
    P, Y = make_data(16)
    train, val = stats(P, Y, device)
    return train, val, random_sets(s, R=2, seed=16, padded=False).to(device)


@pytest.mark.parametrize("bad", [M, M + 5, -2], ids=["M", "M+5", "-2"])
def test_sets_index_out_of_range(device, bad):
    train, val, sets = _args(device)
    sets = sets.clone()
    sets[1, 1, 0] = bad
    with pytest.raises(RuntimeError, match=r"sets"):
        ops.lstsq_gram(train, val, sets)


def test_sets_larger_than_32(device):
    train, val, _ = _args(device)
    sets = torch.full((K, 1, 33), -1, dtype=torch.long, device=device)
    sets[:, :, :M] = torch.arange(M, device=device)
    with pytest.raises(RuntimeError, match=r"32"):
        ops.lstsq_gram(train, val, sets)


def test_sets_dtype_and_shape(device):
    train, val, sets = _args(device)
    with pytest.raises(RuntimeError, match=r"sets.*int64|int64.*sets"):
        ops.lstsq_gram(train, val, sets.int())
    with pytest.raises(RuntimeError, match=r"sets"):
        ops.lstsq_gram(train, val, sets[0])  # 2-D
    with pytest.raises(RuntimeError, match=r"sets|cross"):
        ops.lstsq_gram(train, val, sets[:2])  # sets for K = 2 neurons, statistics for K = 4


@pytest.mark.parametrize(
    "which, field, make_bad, match",
    [
        pytest.param("train", "cross", lambda t: t[:, :3], r"cross", id="train-cross-wrong-K"),
        pytest.param("val", "cross", lambda t: t[:, :3], r"cross", id="val-cross-wrong-K"),
        pytest.param("train", "cross", lambda t: t[:5], r"cross", id="train-cross-wrong-M"),
        pytest.param("train", "cov", lambda t: t[:, :5], r"cov", id="train-cov-not-square"),
        pytest.param("val", "cov", lambda t: t[:5, :5], r"cov", id="val-cov-wrong-M"),
        pytest.param("train", "mean", lambda t: t[:5], r"mean", id="train-mean-wrong-M"),
        pytest.param("train", "target_mean", lambda t: t[:2], r"target_mean", id="target-mean-wrong-K"),
        pytest.param("val", "target_var", lambda t: t[:2], r"target_var", id="target-var-wrong-K"),
    ],
)
def test_mismatched_shapes(device, which, field, make_bad, match):
    train, val, sets = _args(device)
    target = train if which == "train" else val
    bad = to_stats(target, **{field: make_bad(getattr(target, field))})
    train, val = (bad, val) if which == "train" else (train, bad)
    with pytest.raises(RuntimeError, match=match):
        ops.lstsq_gram(train, val, sets)


@pytest.mark.parametrize("ridge", [-1e-3, float("nan"), float("inf")], ids=["negative", "nan", "inf"])
def test_bad_ridge(device, ridge):
    train, val, sets = _args(device)
    with pytest.raises(RuntimeError, match=r"ridge"):
        ops.lstsq_gram(train, val, sets, ridge=ridge)


def test_sets_not_a_tensor():
    train, val, _ = _args("cpu")
    with pytest.raises(TypeError, match=r"sets must be a torch.Tensor"):
        ops.lstsq_gram(train, val, [[[0, 1]]])


@pytest.mark.cuda
def test_mismatched_devices():
    train, val, sets = _args("cpu")
    with pytest.raises(RuntimeError, match=r"device"):
        ops.lstsq_gram(train, val, sets.cuda())
    with pytest.raises(RuntimeError, match=r"device"):
        ops.lstsq_gram(stats_to(train, "cuda"), val, sets.cuda())


# ----------------------------------------------------------------------------------------------
# devices and registration


@pytest.mark.cuda
@pytest.mark.parametrize("s", [1, 3, 6, 32])
def test_cpu_cuda_parity(s):
    g = generator(17)
    P = torch.rand(300, 40, generator=g, dtype=torch.float64)
    W = torch.randn(4, 3, generator=g, dtype=torch.float64)
    Y = P[:, :4] @ W + 0.2 * torch.randn(300, 3, generator=g, dtype=torch.float64)
    train, val = ops.gram_stats(P[:200], Y[:200]), ops.gram_stats(P[200:], Y[200:])
    sets = torch.stack([torch.stack([torch.randperm(40, generator=g)[:s] for _ in range(5)]) for _ in range(3)])
    sets[0, 0, s - 1] = -1
    cpu = ops.lstsq_gram(train, val, sets)
    cuda = ops.lstsq_gram(stats_to(train, "cuda"), stats_to(val, "cuda"), sets.cuda())
    for got, exp in zip(cuda, cpu):
        torch.testing.assert_close(got.cpu(), exp, rtol=1e-9, atol=1e-12)


def test_lstsq_gram_opcheck(device):
    train, val, sets = _args(device, s=3)
    sets[0, 0, 2] = -1
    args = (train.cov, train.mean, train.cross, train.target_mean, val.cov, val.cross, val.target_var, sets, 1e-10)
    torch.library.opcheck(torch.ops.neurocore.lstsq_gram.default, args)


# ----------------------------------------------------------------------------------------------
# chunk and batch boundaries (sizes from python_tests/_constants.py: gram_stats's row chunk, the
# CPU's parallel grain and the CUDA block of lstsq_gram, its largest set)

from _constants import GRAM_STATS_CHUNK, LSTSQ_CPU_GRAIN, LSTSQ_CUDA_BLOCK, LSTSQ_MAX_SET, around  # noqa: E402


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("n", around(GRAM_STATS_CHUNK) + [3 * GRAM_STATS_CHUNK + 5], ids=lambda n: f"n{n}")
def test_gram_stats_default_chunk_boundaries(device, n, dtype):
    g = generator(n)
    P = (torch.rand(n, 5, generator=g, dtype=torch.float64) + 1.0).to(dtype)
    Y = (P[:, :2].double().sum(1, keepdim=True) + torch.randn(n, 2, generator=g, dtype=torch.float64)).to(dtype)
    st = ops.gram_stats(P.to(device), Y.to(device))
    Pd, Yd = P.double(), Y.double()
    Pc, Yc = Pd - Pd.mean(0), Yd - Yd.mean(0)
    # float64 throughout (the inputs are converted exactly): only summation order differs
    expected = {"mean": Pd.mean(0), "cov": Pc.T @ Pc / n, "cross": Pc.T @ Yc / n, "target_var": Yd.var(0, unbiased=False)}
    for name, value in expected.items():
        torch.testing.assert_close(getattr(st, name).cpu(), value, rtol=1e-12, atol=1e-14, msg=lambda m, k=name: f"{k}: {m}")


def _system_counts():
    """(K, R) with K * R systems around the CPU grain and the CUDA block, and several of each; two
    neurons where the count allows (the kernels find a system's neuron as sys / R)."""
    counts = sorted(set(around(LSTSQ_CPU_GRAIN) + around(LSTSQ_CUDA_BLOCK) + [3 * LSTSQ_CUDA_BLOCK + 5]))
    return [pytest.param(2 - c % 2, c // (2 - c % 2), id=f"systems{c}") for c in counts]


@pytest.mark.parametrize("K_, R", _system_counts())
def test_lstsq_gram_system_count_boundaries(device, K_, R):
    P, Y = make_data(20)
    train, val = stats(P, Y[:, :K_], device)
    g = generator(R)
    sets = torch.stack([torch.randperm(M, generator=g)[:3] for _ in range(K_ * R)]).view(K_, R, 3)
    out = ops.lstsq_gram(train, val, sets.to(device))
    expected = reference.lstsq_gram(stats_to(train, "cpu"), stats_to(val, "cpu"), sets)
    for got, exp in zip(out, expected):
        torch.testing.assert_close(got.cpu(), exp, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("s", [LSTSQ_MAX_SET - 1, LSTSQ_MAX_SET], ids=lambda s: f"s{s}")
def test_lstsq_gram_set_size_boundary(device, s):
    g = generator(s)
    P = torch.rand(400, 40, generator=g, dtype=torch.float64)
    Y = P[:, :5].sum(1, keepdim=True) + 0.1 * torch.randn(400, 2, generator=g, dtype=torch.float64)
    train = ops.gram_stats(P[:300].to(device), Y[:300].to(device))
    val = ops.gram_stats(P[300:].to(device), Y[300:].to(device))
    sets = torch.stack([torch.randperm(40, generator=g)[:s] for _ in range(2 * 3)]).view(2, 3, s)
    sets[1, 2, s // 2] = -1  # a padded slot in a full-size set
    out = ops.lstsq_gram(train, val, sets.to(device))
    expected = reference.lstsq_gram(stats_to(train, "cpu"), stats_to(val, "cpu"), sets)
    for got, exp in zip(out, expected):
        torch.testing.assert_close(got.cpu(), exp, rtol=1e-8, atol=1e-10)
    too_big = torch.full((2, 1, s + 1), -1, dtype=torch.long, device=device)
    if s + 1 > LSTSQ_MAX_SET:
        with pytest.raises(RuntimeError, match=str(LSTSQ_MAX_SET)):
            ops.lstsq_gram(train, val, too_big)
