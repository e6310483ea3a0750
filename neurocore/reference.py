"""Pure-torch twins of every kernel in :mod:`neurocore.ops`: plain transcriptions of the papers'
equations, float64-capable, written to be obviously correct rather than fast.

They are the test oracle and the baseline of every benchmark. Each takes the same arguments and
returns the same result as its op in :mod:`neurocore.ops`.
"""

from __future__ import annotations

import math

import torch

from neurocore.ops import SHAPLEY_LINKS, GramStats, LstsqResult

__all__ = [
    "topk",
    "topk_merge",
    "soft_wpmi",
    "soft_wpmi_per_neuron_loop",
    "lstsq_gram",
    "lstsq_samples",
    "shapley_permutation",
    "shapley_exact",
]


def _reject_nan(x: torch.Tensor, what: str) -> None:
    if torch.isnan(x).any():
        raise ValueError(f"{what} contains NaN")


def _rank(values: torch.Tensor, indices: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    # Order by index, then stable-sort by value (descending): equal values keep the lower index first.
    by_index = torch.argsort(indices, dim=0, stable=True)
    values, indices = values.gather(0, by_index), indices.gather(0, by_index)
    order = torch.sort(values, dim=0, descending=True, stable=True).indices[:k]
    return values.gather(0, order), indices.gather(0, order)


def topk(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Twin of :func:`neurocore.ops.topk`: a stable descending sort of each column.

    Example:
        >>> x = torch.tensor([[1., 5.], [3., 5.], [2., 0.]])
        >>> [t.tolist() for t in topk(x, 2)]
        [[[3.0, 5.0], [2.0, 5.0]], [[1, 0], [2, 1]]]
    """
    _reject_nan(x, "x")
    rows = torch.arange(x.shape[0], device=x.device).unsqueeze(1).expand_as(x)
    return _rank(x, rows, min(k, x.shape[0]))


def topk_merge(values_a, indices_a, values_b, indices_b, k=None):
    """Twin of :func:`neurocore.ops.topk_merge`: rank the union of both parts.

    Example:
        >>> x = torch.tensor([[4.], [1.], [3.], [5.]])
        >>> va, ia = topk(x[:2], 2)
        >>> vb, ib = topk(x[2:], 2)
        >>> topk_merge(va, ia, vb, ib + 2)[1].flatten().tolist()
        [3, 0]
    """
    if k is None:
        k = max(values_a.shape[0], values_b.shape[0])
    values, indices = torch.cat([values_a, values_b]), torch.cat([indices_a, indices_b])
    _reject_nan(values, "values")
    return _rank(values, indices, min(k, values.shape[0]))


def _soft_wpmi_marginal(L: torch.Tensor, lam: float) -> torch.Tensor:
    # log P(m) = logsumexp over the call's K neurons of L - log K (ALGORITHMS.md §1)
    return L - lam * (torch.logsumexp(L, dim=0, keepdim=True) - math.log(L.shape[0]))


def soft_wpmi(sims, topk_idx, p, a, lam, eps=1e-7, neuron_chunk: int = 64) -> torch.Tensor:
    """Twin of :func:`neurocore.ops.soft_wpmi`, vectorised over chunks of neurons, in float64.

    Materialises ``softmax(a * sims)`` (N x M) and gathers ``[k, chunk, M]`` per chunk.

    Example:
        >>> from neurocore import ops
        >>> sims, idx, p = torch.randn(30, 6).div(10), torch.randint(0, 30, (4, 3)), ops.soft_wpmi_weights(4)
        >>> torch.allclose(soft_wpmi(sims.double(), idx, p, 10.0, 1.0), ops.soft_wpmi(sims.double(), idx, p, 10.0, 1.0))
        True
    """
    _reject_nan(sims, "sims")
    K, M = topk_idx.shape[1], sims.shape[1]
    P = torch.softmax(a * sims.double(), dim=1)
    p = torch.as_tensor(p, dtype=torch.float64, device=sims.device).view(-1, 1, 1)
    L = torch.zeros(K, M, dtype=torch.float64, device=sims.device)
    for start in range(0, K, neuron_chunk):
        idx = topk_idx[:, start : start + neuron_chunk]
        gathered = P[idx]  # [k, chunk, M]
        L[start : start + neuron_chunk] = torch.log(1 + p * (gathered - 1) + eps).sum(0)
    if K == 0:
        return L.to(sims.dtype)
    return _soft_wpmi_marginal(L, lam).to(sims.dtype)


def soft_wpmi_per_neuron_loop(sims, topk_idx, p, a, lam, eps=1e-7) -> torch.Tensor:
    """SoftWPMI as the authors' code computes it: a materialised softmax, then a Python loop over
    neurons. Kept as the benchmark baseline that the kernel replaces; same result as :func:`soft_wpmi`.

    Example:
        >>> sims, idx, p = torch.randn(30, 6).div(10), torch.randint(0, 30, (4, 3)), torch.ones(4)
        >>> loop = soft_wpmi_per_neuron_loop(sims, idx, p, 2.0, 0.6)
        >>> torch.allclose(loop.double(), soft_wpmi(sims.double(), idx, p, 2.0, 0.6), atol=1e-5)
        True
    """
    P = torch.softmax(a * sims.float(), dim=1)
    p = torch.as_tensor(p, dtype=torch.float32, device=sims.device).view(-1, 1)
    rows = []
    for j in range(topk_idx.shape[1]):
        rows.append(torch.sum(torch.log(1 + p * (P[topk_idx[:, j]] - 1) + eps), dim=0))
    L = torch.stack(rows).double()
    return _soft_wpmi_marginal(L, lam).to(sims.dtype)


def _gather_sets(sets: torch.Tensor, train: GramStats, val: GramStats):
    valid = sets >= 0
    safe = sets.clamp(min=0)
    k_index = torch.arange(sets.shape[0], device=sets.device).view(-1, 1, 1)
    mask2 = (valid.unsqueeze(-1) & valid.unsqueeze(-2)).double()
    cov_t = train.cov.double()[safe.unsqueeze(-1), safe.unsqueeze(-2)] * mask2
    cov_v = val.cov.double()[safe.unsqueeze(-1), safe.unsqueeze(-2)] * mask2
    cross_t = train.cross.double()[safe, k_index] * valid
    cross_v = val.cross.double()[safe, k_index] * valid
    return valid, safe, cov_t, cov_v, cross_t, cross_v


def lstsq_gram(train: GramStats, val: GramStats, sets: torch.Tensor, ridge: float = 1e-10) -> LstsqResult:
    """Twin of :func:`neurocore.ops.lstsq_gram`: gather the systems and ``torch.linalg.solve`` them.

    Example:
        >>> from neurocore.ops import gram_stats
        >>> P = torch.randn(100, 3, dtype=torch.float64)
        >>> Y = P @ torch.tensor([[2.], [0.], [-1.]], dtype=torch.float64) + 0.5
        >>> w, b, corr = lstsq_gram(gram_stats(P[:80], Y[:80]), gram_stats(P[80:], Y[80:]), torch.tensor([[[0, 2]]]))
        >>> [round(v, 6) for v in w.flatten().tolist()], round(float(b), 6), round(float(corr), 6)
        ([2.0, -1.0], 0.5, 1.0)
    """
    valid, safe, cov_t, cov_v, cross_t, cross_v = _gather_sets(sets, train, val)
    s = sets.shape[-1]
    eye = torch.eye(s, dtype=torch.float64, device=sets.device)
    n_valid = valid.sum(-1).clamp(min=1)
    diag = torch.diagonal(cov_t, dim1=-2, dim2=-1).sum(-1) / n_valid
    delta = torch.where(diag > 0, ridge * diag, torch.ones_like(diag))
    # padded slots: identity rows with a zero right-hand side give weight 0
    pad = (~valid).double().unsqueeze(-1) * eye
    A = cov_t + delta[..., None, None] * eye * valid.double().unsqueeze(-1) + pad
    w = torch.linalg.solve(A, cross_t.unsqueeze(-1)).squeeze(-1)
    bias = train.target_mean.double().view(-1, 1) - (train.mean.double()[safe] * valid * w).sum(-1)
    cov_pred = (w * cross_v).sum(-1)
    var_pred = torch.einsum("krs,krst,krt->kr", w, cov_v, w)
    denom = torch.sqrt(var_pred.clamp(min=0) * val.target_var.double().view(-1, 1))
    corr = torch.where(denom > 0, cov_pred / denom, torch.zeros_like(denom))
    return LstsqResult(w, bias, corr)


def lstsq_samples(train_P, train_Y, val_P, val_Y, sets) -> LstsqResult:
    """The definition on samples: per (neuron, set), ``torch.linalg.lstsq`` with an intercept
    column on the train split, then Pearson correlation of the predictions on the val split.
    Slow (a Python loop); for tests only.

    Example:
        >>> P = torch.randn(100, 3, dtype=torch.float64)
        >>> Y = P @ torch.tensor([[2.], [0.], [-1.]], dtype=torch.float64) + 0.5
        >>> w, b, corr = lstsq_samples(P[:80], Y[:80], P[80:], Y[80:], torch.tensor([[[0, 2]]]))
        >>> [round(v, 6) for v in w.flatten().tolist()], round(float(b), 6), round(float(corr), 6)
        ([2.0, -1.0], 0.5, 1.0)
    """
    K, R, s = sets.shape
    weights = torch.zeros(K, R, s, dtype=torch.float64)
    bias = torch.zeros(K, R, dtype=torch.float64)
    corr = torch.zeros(K, R, dtype=torch.float64)
    for k in range(K):
        for r in range(R):
            cols = [c for c in sets[k, r].tolist() if c >= 0]
            X = torch.cat([train_P[:, cols].double(), torch.ones(train_P.shape[0], 1, dtype=torch.float64)], 1)
            # gelsd (SVD): the minimum-norm solution also for rank-deficient sets (duplicate concepts)
            sol = torch.linalg.lstsq(X, train_Y[:, k : k + 1].double(), driver="gelsd").solution.squeeze(1)
            slots = [i for i, c in enumerate(sets[k, r].tolist()) if c >= 0]
            weights[k, r, slots] = sol[:-1]
            bias[k, r] = sol[-1]
            pred = val_P[:, cols].double() @ sol[:-1]
            stacked = torch.stack([pred, val_Y[:, k].double()])
            c = torch.corrcoef(stacked)[0, 1]
            corr[k, r] = 0.0 if torch.isnan(c) else c
    return LstsqResult(weights, bias, corr)


def _link(logits: torch.Tensor, link: str) -> torch.Tensor:
    if link == "identity":
        return logits
    if link == "sigmoid":
        return torch.sigmoid(logits)
    if link == "softmax":
        return torch.softmax(logits, dim=-1)
    raise ValueError(f"link must be one of {SHAPLEY_LINKS}; got {link!r}")


def shapley_permutation(x, weight, bias, background, perms, link) -> torch.Tensor:
    """Twin of :func:`neurocore.ops.shapley_permutation`: for each permutation, the logits along
    the walk from background to x are a cumulative sum of per-feature logit changes taken in the
    permutation's order; the link's change at each step is credited to the feature switched.
    Vectorised over samples and features, a loop over permutations.

    Example:
        >>> from neurocore.ops import sample_permutations
        >>> x, bg, w, b = torch.randn(2, 4), torch.zeros(2, 4), torch.randn(1, 4), torch.zeros(1)
        >>> phi = shapley_permutation(x, w, b, bg, sample_permutations(6, 4), "sigmoid")
        >>> phi.shape, torch.allclose(phi.sum(-1), torch.sigmoid(x @ w.T) - 0.5)
        (torch.Size([2, 1, 4]), True)
    """
    R, D = x.shape
    C = weight.shape[0]
    out_dtype = x.dtype
    x, weight, bias, background = x.double(), weight.double(), bias.double(), background.double()
    phi = torch.zeros(R, C, D, dtype=torch.float64, device=x.device)
    if link == "identity":
        return (weight.unsqueeze(0) * (x - background).unsqueeze(1)).to(out_dtype)
    start = background @ weight.T + bias  # [R, C]
    step = weight.unsqueeze(0) * (x - background).unsqueeze(1)  # [R, C, D]: logit change per feature
    for perm in perms:
        path = start.unsqueeze(-1) + torch.cumsum(step[:, :, perm], dim=-1)  # logits after each switch
        path = torch.cat([start.unsqueeze(-1), path], dim=-1)  # [R, C, D + 1]
        f = _link(path.transpose(1, 2), link).transpose(1, 2)
        phi[:, :, perm] += f[:, :, 1:] - f[:, :, :-1]
    return (phi / max(len(perms), 1)).to(out_dtype)


def shapley_exact(x, weight, bias, background, link) -> torch.Tensor:
    """Exact Shapley values from the coalition formula (D <= 10), evaluating f afresh for every
    coalition: ``phi_d = sum_S |S|! (D - |S| - 1)! / D! * (f(x_{S+d}) - f(x_S))``, where features
    in the coalition take x's values and the others the background's. Independent of the walk.

    Example:
        >>> x, bg, w, b = torch.randn(2, 4), torch.zeros(2, 4), torch.randn(1, 4), torch.zeros(1)
        >>> torch.allclose(shapley_exact(x, w, b, bg, "identity"), (w * x).double()[:, None, :])
        True
    """
    import itertools

    R, D = x.shape
    if D > 10:
        raise ValueError(f"shapley_exact enumerates 2^D coalitions; D={D} is too many")
    x, weight, bias, background = x.double(), weight.double(), bias.double(), background.double()

    def f(mask):  # mask: [D] bool, True = feature taken from x
        z = torch.where(mask, x, background)
        return _link(z @ weight.T + bias, link)

    phi = torch.zeros(R, weight.shape[0], D, dtype=torch.float64)
    for d in range(D):
        others = [j for j in range(D) if j != d]
        for size in range(D):
            coef = math.factorial(size) * math.factorial(D - size - 1) / math.factorial(D)
            for coalition in itertools.combinations(others, size):
                mask = torch.zeros(D, dtype=torch.bool)
                mask[list(coalition)] = True
                with_d = mask.clone()
                with_d[d] = True
                phi[:, :, d] += coef * (f(with_d) - f(mask))
    return phi
