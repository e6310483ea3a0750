"""LE's elastic net (ALGORITHMS.md §2 steps 1-2) against scikit-learn's ElasticNet on the same
standardised data (same objective: 1/(2n)||Zw - q||^2 + lam(eta|w|_1 + (1-eta)/2 |w|^2)), against
the optimality conditions computed from the samples, and rank_concepts (step 3) against sorted()."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from sklearn.linear_model import ElasticNet

from neurocore._errors import NeurocoreError
from neurocore.methods._linear_learn import DEFAULT_ETA, DEFAULT_LAM, elastic_net, rank_concepts


def standardise(X):
    """The documented standardisation: train mean, unbiased std, constant columns to zero."""
    X = X.double()
    std = X.std(0)
    constant = X.amax(0) == X.amin(0)
    return torch.where(constant, torch.zeros_like(X), (X - X.mean(0)) / torch.where(constant, 1.0, std))


def objective(Z, q, w, lam=DEFAULT_LAM, eta=DEFAULT_ETA):
    n = Z.shape[0]
    return float(((Z @ w - q) ** 2).sum() / (2 * n) + lam * (eta * w.abs().sum() + (1 - eta) / 2 * (w**2).sum()))


def sklearn_weights(Z, Q, lam=DEFAULT_LAM, eta=DEFAULT_ETA):
    out = []
    for k in range(Q.shape[1]):
        model = ElasticNet(alpha=lam, l1_ratio=eta, fit_intercept=False, tol=1e-14, max_iter=200_000)
        out.append(torch.from_numpy(model.fit(Z.numpy(), Q[:, k].numpy()).coef_.copy()))
    return torch.stack(out)


def correlated_data(seed: int, n: int, M: int, K: int, factors: int = 8):
    """Concepts sharing latent factors (strongly correlated columns, as SigLIP concepts are) and
    neurons that are sparse combinations of them plus noise."""
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(n, factors, generator=g, dtype=torch.float64)
    P = torch.sigmoid(f @ torch.randn(factors, M, generator=g, dtype=torch.float64)
                      + 0.5 * torch.randn(n, M, generator=g, dtype=torch.float64))
    W = torch.zeros(M, K, dtype=torch.float64)
    for k in range(K):
        cols = torch.randperm(M, generator=g)[: 1 + k % 6]
        W[cols, k] = torch.randn(len(cols), generator=g, dtype=torch.float64)
    acts = P @ W + 0.3 * torch.randn(n, K, generator=g, dtype=torch.float64) + 2.0
    return P, acts


def kkt_violation(P, acts, weights, lam=DEFAULT_LAM, eta=DEFAULT_ETA):
    """Largest violation of the elastic net's optimality conditions, from the samples."""
    Z, Q = standardise(P), standardise(acts)
    n = Z.shape[0]
    w = weights.double().T  # [M, K]
    R = Z.T @ (Q - Z @ w) / n
    l1, l2 = lam * eta, lam * (1 - eta)
    on = (R - l2 * w - l1 * torch.sign(w)).abs()
    off = (R.abs() - l1).clamp(min=0)
    return float(torch.where(w != 0, on, off).max())


@pytest.mark.parametrize("n,M,K,seed", [(300, 40, 6, 0), (120, 200, 5, 1), (500, 25, 3, 2)])
def test_matches_sklearn(n, M, K, seed):
    # (120, 200): more concepts than samples, as for the 8,438 SigLIP concepts on small probe sets
    P, acts = correlated_data(seed, n, M, K)
    ours = elastic_net(P, acts, tol=1e-9)
    Z, Q = standardise(P), standardise(acts)
    ref = sklearn_weights(Z, Q)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-5)
    for k in range(K):
        f_ours, f_ref = objective(Z, Q[:, k], ours[k]), objective(Z, Q[:, k], ref[k])
        assert f_ours <= f_ref * (1 + 1e-6), (k, f_ours, f_ref)
        assert ((ours[k] != 0) == (ref[k] != 0)).all()
    assert (ours != 0).sum() > K  # sparse, but not trivially zero
    assert kkt_violation(P, acts, ours) < 1e-8


def test_label_mode_collinear_columns_match_sklearn():
    # Label mode: one-hot classes plus superclass columns that are sums of them, so the standardised
    # columns are exactly collinear; only the small L2 part keeps the optimum unique.
    g = torch.Generator().manual_seed(14)
    n, classes = 400, 20
    onehot = torch.nn.functional.one_hot(torch.randint(classes, (n,), generator=g), classes).double()
    members = torch.rand(12, classes, generator=g) < 0.3
    members[members.sum(1) < 2, :2] = True
    P = torch.cat([onehot, onehot @ members.double().T], 1)
    acts = torch.relu(onehot @ torch.randn(classes, 5, generator=g, dtype=torch.float64)
                      + 0.5 * torch.randn(n, 5, generator=g, dtype=torch.float64))
    ours = elastic_net(P, acts, tol=1e-10)
    Z, Q = standardise(P), standardise(acts)
    ref = sklearn_weights(Z, Q)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-5)
    for k in range(5):
        assert objective(Z, Q[:, k], ours[k]) <= objective(Z, Q[:, k], ref[k]) * (1 + 1e-9)
    assert kkt_violation(P, acts, ours) < 1e-9


@pytest.mark.parametrize("lam,eta", [(0.01, 0.5), (0.2, 1.0), (0.003, 0.99)])
def test_other_regularisation_matches_sklearn(lam, eta):
    P, acts = correlated_data(3, 200, 30, 4)
    ours = elastic_net(P, acts, lam=lam, eta=eta, tol=1e-9)
    Z, Q = standardise(P), standardise(acts)
    ref = sklearn_weights(Z, Q, lam, eta)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-4)
    for k in range(4):
        assert objective(Z, Q[:, k], ours[k], lam, eta) <= objective(Z, Q[:, k], ref[k], lam, eta) * (1 + 1e-6)


def test_device_follows_inputs(device):
    P, acts = correlated_data(18, 200, 30, 4)
    ours = elastic_net(P.to(device), acts.to(device))
    assert ours.device.type == torch.device(device).type
    torch.testing.assert_close(ours.cpu(), elastic_net(P, acts), atol=1e-9, rtol=1e-7)


def test_float32_inputs():
    P, acts = correlated_data(4, 300, 40, 5)
    ours = elastic_net(P.float(), acts.float())
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours.double(), elastic_net(P, acts), atol=1e-4, rtol=1e-3)


def test_dead_neurons_and_constant_columns_get_zero_weights():
    P, acts = correlated_data(5, 200, 20, 4)
    full = elastic_net(P, acts)
    P2 = torch.cat([P, torch.full((200, 1), 0.3, dtype=torch.float64), torch.zeros(200, 1, dtype=torch.float64)], 1)
    acts2 = torch.cat([acts, torch.full((200, 1), 1.5, dtype=torch.float64), torch.zeros(200, 1, dtype=torch.float64)], 1)
    w = elastic_net(P2, acts2)
    assert torch.isfinite(w).all()
    assert (w[:, 20:] == 0).all() and (w[4:] == 0).all()
    # constant columns change nothing for the other concepts
    torch.testing.assert_close(w[:4, :20], full, atol=1e-10, rtol=0)


def test_duplicate_columns_share_their_weight():
    # the L2 part makes the optimum unique: duplicated concepts split the weight equally
    P, acts = correlated_data(6, 300, 15, 3)
    P2 = torch.cat([P, P[:, :3]], 1)
    w = elastic_net(P2, acts, tol=1e-9)
    assert torch.isfinite(w).all()
    torch.testing.assert_close(w[:, :3], w[:, 15:], atol=1e-7, rtol=0)
    assert (w[:, :3] != 0).any()
    assert kkt_violation(P2, acts, w) < 1e-8
    Z, Q = standardise(P2), standardise(acts)
    ref = sklearn_weights(Z, Q)
    for k in range(3):
        assert objective(Z, Q[:, k], w[k]) <= objective(Z, Q[:, k], ref[k]) * (1 + 1e-9)


def test_pure_lasso_with_duplicates_reaches_the_optimum():
    # eta = 1: no L2 part, duplicated columns make the optimum non-unique and the support systems
    # singular; any optimum will do, but it must be one
    P, acts = correlated_data(16, 300, 15, 3)
    P2 = torch.cat([P, P[:, :4]], 1)
    w = elastic_net(P2, acts, lam=0.02, eta=1.0, tol=1e-9)
    assert torch.isfinite(w).all()
    assert kkt_violation(P2, acts, w, lam=0.02, eta=1.0) < 1e-8
    Z, Q = standardise(P2), standardise(acts)
    ref = sklearn_weights(Z, Q, 0.02, 1.0)
    for k in range(3):
        assert objective(Z, Q[:, k], w[k], 0.02, 1.0) <= objective(Z, Q[:, k], ref[k], 0.02, 1.0) + 1e-10


def test_planted_single_concept_dominates():
    P, _ = correlated_data(7, 400, 30, 1)
    acts = 3.0 * P[:, [11]] + 1.0
    w = elastic_net(P, acts)
    assert int(w[0].argmax()) == 11
    assert int(rank_concepts(w)[0, 0]) == 11


def test_strong_regularisation_zeroes_everything():
    P, acts = correlated_data(8, 200, 20, 3)
    Z, Q = standardise(P), standardise(acts)
    lam_max = float((Z.T @ Q / 200).abs().max()) / DEFAULT_ETA
    assert (elastic_net(P, acts, lam=lam_max * 1.001) == 0).all()
    assert (elastic_net(P, acts, lam=lam_max * 0.9) != 0).any()


def test_chunking_and_neuron_order_do_not_change_the_answer():
    P, acts = correlated_data(9, 250, 35, 7)
    whole = elastic_net(P, acts, chunk_size=1024)
    torch.testing.assert_close(elastic_net(P, acts, chunk_size=2), whole, atol=1e-12, rtol=0)
    perm = torch.randperm(7, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(elastic_net(P, acts[:, perm]), whole[perm], atol=1e-12, rtol=0)


def test_not_converging_warns():
    P, acts = correlated_data(10, 150, 60, 3)
    with pytest.warns(RuntimeWarning, match="did not converge"):
        w = elastic_net(P, acts, max_iter=1, tol=1e-14)
    assert torch.isfinite(w).all()


def test_converging_does_not_warn_and_inputs_are_untouched():
    P, acts = correlated_data(11, 150, 20, 3)
    P0, a0 = P.clone(), acts.clone()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        elastic_net(P, acts)
    assert torch.equal(P, P0) and torch.equal(acts, a0)


def test_without_l1_is_ridge_or_least_squares():
    # eta = 0: ridge; lam = 0: least squares, minimum-norm when columns are collinear (M > n here)
    for n, M in ((200, 20), (60, 90)):
        P, acts = correlated_data(17, n, M, 3)
        Z, Q = standardise(P), standardise(acts)
        ridge = torch.linalg.solve(Z.T @ Z / n + 0.1 * torch.eye(M, dtype=torch.float64), Z.T @ Q / n).T
        torch.testing.assert_close(elastic_net(P, acts, lam=0.1, eta=0.0), ridge, atol=1e-9, rtol=1e-7)
        ols = torch.linalg.lstsq(Z, Q, driver="gelsd").solution.T
        torch.testing.assert_close(elastic_net(P, acts, lam=0.0), ols, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("kwargs,match", [
    (dict(lam=-0.1), "lam"),
    (dict(lam=math.inf), "lam"),
    (dict(eta=-0.5), "eta"),
    (dict(eta=1.5), "eta"),
    (dict(max_iter=0), "max_iter"),
    (dict(tol=-1.0), "tol"),
    (dict(chunk_size=0), "chunk_size"),
])
def test_bad_parameters(kwargs, match):
    P, acts = correlated_data(12, 50, 5, 2)
    with pytest.raises(NeurocoreError, match=match):
        elastic_net(P, acts, **kwargs)


def test_bad_inputs():
    P, acts = correlated_data(13, 50, 5, 2)
    with pytest.raises(NeurocoreError, match="same number of rows"):
        elastic_net(P, acts[:40])
    bad = P.clone()
    bad[3, 2] = math.nan
    with pytest.raises(NeurocoreError, match="NaN"):
        elastic_net(bad, acts)
    with pytest.raises(NeurocoreError, match="at least 2 samples"):
        elastic_net(P[:1], acts[:1])
    with pytest.raises(NeurocoreError, match="floating"):
        elastic_net(P.long(), acts)
    with pytest.raises(NeurocoreError, match="no concept columns"):
        elastic_net(P[:, :0], acts)


def test_sign_step_lowers_the_objective_and_drops_a_weight():
    # the solver's escape from slow coordinate descent: step towards the orthant's minimiser until
    # the first weight hits zero (feature-sign step)
    from neurocore.methods._linear_learn import _sign_step

    g = torch.Generator().manual_seed(15)
    S, l1, l2 = 6, 0.05, 0.01
    X = torch.randn(50, S, generator=g, dtype=torch.float64)
    G, c = X.T @ X / 50, torch.randn(S, generator=g, dtype=torch.float64)

    def F(w):
        return float(0.5 * w @ G @ w - c @ w + l1 * w.abs().sum() + l2 / 2 * (w @ w))

    for _ in range(20):
        w = torch.randn(S, generator=g, dtype=torch.float64) * (torch.rand(S, generator=g) < 0.7)
        on = w != 0
        target = torch.zeros(S, dtype=torch.float64)
        A = G[on][:, on] + l2 * torch.eye(int(on.sum()), dtype=torch.float64)
        target[on] = torch.linalg.solve(A, c[on] - l1 * torch.sign(w[on]))
        stepped = _sign_step(w.unsqueeze(0), target.unsqueeze(0))[0]
        assert F(stepped) <= F(w) + 1e-12
        assert ((stepped == 0) | (torch.sign(stepped) == torch.sign(w))).all()
        flips = (on & (torch.sign(target) != torch.sign(w))).any()
        assert bool(flips) == bool(((stepped == 0) & on).any())
        if not flips:
            torch.testing.assert_close(stepped, target)


# ----------------------------------------------------------------------------------------------
# rank_concepts


def test_rank_concepts_matches_sorted():
    g = torch.Generator().manual_seed(0)
    # few distinct values: many ties, resolved by index
    w = torch.randint(-3, 4, (6, 40), generator=g).double() / 2
    expected = [sorted(range(40), key=lambda j: (-float(row[j]), j)) for row in w]
    ranking = rank_concepts(w)
    assert ranking.dtype == torch.int64
    assert ranking.tolist() == expected


def test_rank_concepts_signed_and_stable():
    w = torch.tensor([[0.0, -2.0, 0.5, 0.0, 0.5, 1.0]])
    assert rank_concepts(w).tolist() == [[5, 2, 4, 0, 3, 1]]
    assert rank_concepts(torch.zeros(2, 3)).tolist() == [[0, 1, 2], [0, 1, 2]]


def test_rank_concepts_bad_input():
    with pytest.raises(NeurocoreError, match="NaN"):
        rank_concepts(torch.tensor([[0.0, math.nan]]))
    with pytest.raises(NeurocoreError, match="Tensor\\[K, M\\]"):
        rank_concepts(torch.zeros(3))


# ----------------------------------------------------------------------------------------------
# row-block boundaries of the Gram accumulation (sizes from python_tests/_constants.py: LE streams
# a split in blocks of LE_ROW_CHUNK rows, sums LE_BLOCKS_PER_FLUSH blocks in the inputs' precision,
# then accumulates in float64; see _linear_learn._gram)

from _constants import LE_BLOCKS_PER_FLUSH, LE_ROW_CHUNK, around  # noqa: E402
from neurocore.methods import _linear_learn  # noqa: E402

FLUSH_ROWS = LE_ROW_CHUNK * LE_BLOCKS_PER_FLUSH
# below, at and past one block; around one flush; two flushes and a partial block
BOUNDARY_ROWS = around(LE_ROW_CHUNK) + around(FLUSH_ROWS) + [2 * FLUSH_ROWS + LE_ROW_CHUNK + 1]


def gram_data(n, M=6, K=3, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    P = torch.rand(n, M, generator=g, dtype=torch.float64) + 0.5  # non-zero means: centring matters
    acts = P[:, :2] @ torch.tensor([[1.0, -2.0, 0.5], [0.3, 1.0, 0.0]], dtype=torch.float64)[:, :K]
    acts = acts + 0.2 * torch.randn(n, K, generator=g, dtype=torch.float64)
    return P.to(dtype), acts.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("n", BOUNDARY_ROWS, ids=lambda n: f"n{n}")
def test_gram_block_boundaries_match_float64(n, dtype):
    P, acts = gram_data(n, seed=n, dtype=dtype)
    G, C, const_p, const_q = _linear_learn._gram(P, acts)
    Z, Q = standardise(P), standardise(acts)  # float64 from the same (rounded) inputs
    G_ref, C_ref = Z.T @ Z / n, Z.T @ Q / n
    assert not const_p.any() and not const_q.any()
    if dtype == torch.float64:
        torch.testing.assert_close(G, G_ref, rtol=1e-12, atol=1e-13)
        torch.testing.assert_close(C, C_ref, rtol=1e-12, atol=1e-13)
        return
    # float32: each entry sums up to FLUSH_ROWS products in float32 before going to float64
    # (error <= rows * u * mean |z_i z_j|, u = 2^-24), and each z carries a few roundings of
    # its standardisation (x - mean) * (1 / std): ~4u relative per factor.
    u = 2.0**-24
    rows = min(n, FLUSH_ROWS)
    for got, A, B in ((G, Z, Z), (C, Z, Q)):
        tol = (rows + 8) * u * (A.abs().T @ B.abs()) / n
        err = (got - A.T @ B / n).abs()
        assert bool((err <= tol).all()), f"n={n}: error {float(err.max()):.3g} beyond {float((err - tol).max() + tol.max()):.3g}"


@pytest.mark.parametrize("n", [LE_ROW_CHUNK + 1, FLUSH_ROWS + 1, 10_000], ids=lambda n: f"n{n}")
def test_elastic_net_past_one_block_matches_sklearn(n):
    # the case: a broken block accumulation visibly changed the weights at 10,000 rows
    P, acts = correlated_data(n % 97, n, 12, 3)
    ours = elastic_net(P, acts, tol=1e-9)
    Z, Q = standardise(P), standardise(acts)
    ref = sklearn_weights(Z, Q)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-5)
    assert kkt_violation(P, acts, ours) < 1e-8
