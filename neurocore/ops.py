"""The compiled kernels of neurocore (``torch.ops.neurocore.*``): shapes, dtypes and semantics.

Every op has a pure-torch twin in :mod:`neurocore.reference` (the test oracle and benchmark
baseline), a CPU kernel, and a CUDA kernel where neurocore was built with CUDA
(:func:`neurocore.built_with_cuda`). Ops follow their inputs' device; fake kernels make them
traceable by ``torch.compile``.

Conventions: N probe images, K neurons, M concepts, k images kept per neuron.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from neurocore import _extension

_extension.load()  # defines the torch.ops.neurocore schemas

__all__ = [
    "topk",
    "topk_merge",
    "soft_wpmi",
    "soft_wpmi_weights",
    "GramStats",
    "gram_stats",
    "LstsqResult",
    "lstsq_gram",
    "shapley_permutation",
    "sample_permutations",
    "SHAPLEY_LINKS",
]

SHAPLEY_LINKS = ("identity", "sigmoid", "softmax")


def _check_tensor(value, name: str, op: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"neurocore.ops.{op}: {name} must be a torch.Tensor; got {type(value).__name__}")
    if value.is_cuda and not _extension.built_with_cuda():
        raise RuntimeError(
            f"neurocore.ops.{op}: {name} is a CUDA tensor but neurocore was built without its CUDA "
            "kernels; rebuild with a CUDA build of torch and nvcc: "
            "`NEUROCORE_CUDA=1 pip install --no-build-isolation -e .`, or pass CPU tensors (.cpu())"
        )
    return value


# ----------------------------------------------------------------------------------------------
# top-k selection


def topk(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per column (neuron), the k largest values over rows (images), best first.

    Args:
        x (Tensor[N, K]): activations, any floating dtype. NaN is an error.
        k: how many rows to keep per column; ``k > N`` keeps all N.

    Returns:
        (values, indices): ``values (Tensor[min(k, N), K])`` in x's dtype, descending per column;
        ``indices (Tensor[min(k, N), K], int64)`` the rows they came from. Equal values are ordered
        by the lower row index, so the result is deterministic and equal on every device.

    Raises:
        RuntimeError: x contains NaN, or has the wrong shape or dtype.

    Example:
        >>> x = torch.tensor([[1., 5.], [3., 5.], [2., 0.]])
        >>> values, indices = topk(x, 2)
        >>> values.tolist(), indices.tolist()
        ([[3.0, 5.0], [2.0, 5.0]], [[1, 0], [2, 1]])
    """
    _check_tensor(x, "x", "topk")
    return torch.ops.neurocore.topk(x, int(k))


def topk_merge(
    values_a: torch.Tensor,
    indices_a: torch.Tensor,
    values_b: torch.Tensor,
    indices_b: torch.Tensor,
    k: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge two partial top-k results of the same K columns (streaming over image chunks).

    Indices must be global row numbers (offset each chunk's indices by its first row). The merge
    orders by value, then by lower index, exactly as :func:`topk` over the concatenated rows.

    Args:
        values_a (Tensor[k_a, K]), indices_a (Tensor[k_a, K], int64): one partial result.
        values_b (Tensor[k_b, K]), indices_b (Tensor[k_b, K], int64): the other, same dtype.
        k: rows to keep; default ``max(k_a, k_b)``. Pass it when both parts may be shorter than k
            (chunks smaller than k).

    Returns:
        (values, indices) of shape ``[min(k, k_a + k_b), K]``.

    Example:
        >>> x = torch.randn(10, 3)
        >>> va, ia = topk(x[:6], 4)
        >>> vb, ib = topk(x[6:], 4)
        >>> v, i = topk_merge(va, ia, vb, ib + 6)
        >>> torch.equal(i, topk(x, 4)[1])
        True
    """
    for name, t in (("values_a", values_a), ("indices_a", indices_a), ("values_b", values_b), ("indices_b", indices_b)):
        _check_tensor(t, name, "topk_merge")
    if k is None:
        k = max(values_a.shape[0], values_b.shape[0]) if values_a.dim() == 2 and values_b.dim() == 2 else 0
    return torch.ops.neurocore.topk_merge(values_a, indices_a, values_b, indices_b, int(k))


# ----------------------------------------------------------------------------------------------
# SoftWPMI


def soft_wpmi_weights(top_k: int = 100, p_start: float = 0.998, p_end: float = 0.97, dtype=torch.float64) -> torch.Tensor:
    """CLIP-Dissect's per-rank weights ``p_i = p_start - (i / top_k)(p_start - p_end)``, i < top_k.

    Example:
        >>> soft_wpmi_weights(4, 1.0, 0.5).tolist()
        [1.0, 0.875, 0.75, 0.625]
    """
    i = torch.arange(top_k, dtype=dtype)
    return p_start - (i / top_k) * (p_start - p_end)


def soft_wpmi(
    sims: torch.Tensor,
    topk_idx: torch.Tensor,
    p: torch.Tensor,
    a: float,
    lam: float,
    eps: float = 1e-7,
) -> torch.Tensor:
    """CLIP-Dissect's SoftWPMI (WPMI when ``p = 1``) for every neuron and concept, fused.

    With ``P = softmax(a * sims, dim=1)`` (per image, over concepts) and neuron j's top images
    ``x_i = topk_idx[i, j]``::

        L[j, m]   = sum_i log(1 + p_i * (P[x_i, m] - 1) + eps)
        out[j, m] = L[j, m] - lam * (logsumexp_j' L[j', m] - log K)

    The marginal runs over the K neurons of this call, so scores depend on which neurons are
    scored together (ALGORITHMS.md §1). The N x M softmax is never materialised: the kernel computes
    each image's log-sum-exp once and reads only the gathered rows; extra memory is O(N + tile).

    Args:
        sims (Tensor[N, M]): image-concept cosine similarities (float32 or float64; finite).
        topk_idx (Tensor[k, K], int64): each neuron's top images, rank-major (as :func:`topk`
            returns them), values in ``[0, N)``.
        p (Tensor[k]): per-rank weights in [0, 1] (:func:`soft_wpmi_weights`; ones for WPMI).
        a: softmax temperature (10 for SoftWPMI, 2 for WPMI).
        lam: weight of the marginal (1 for SoftWPMI, 0.6 for WPMI).
        eps: added inside the log (1e-7): a zero probability would otherwise give -inf.

    Returns:
        Tensor[K, M] in sims' dtype. Products, logs and sums are taken in float64; the softmax's
        exponentials in sims' precision on the CPU (float32 input: ~1e-6 absolute error).

    Raises:
        RuntimeError: non-finite sims, indices out of range, p outside [0, 1], shape mismatches.

    Example:
        >>> sims = torch.randn(50, 8).div(10)
        >>> idx = topk(torch.randn(50, 3), 5)[1]
        >>> soft_wpmi(sims, idx, soft_wpmi_weights(5), a=10.0, lam=1.0).shape
        torch.Size([3, 8])
    """
    _check_tensor(sims, "sims", "soft_wpmi")
    _check_tensor(topk_idx, "topk_idx", "soft_wpmi")
    p = torch.as_tensor(p, dtype=torch.float64, device=sims.device)
    return torch.ops.neurocore.soft_wpmi(sims, topk_idx, p, float(a), float(lam), float(eps))


# ----------------------------------------------------------------------------------------------
# Batched small least squares from Gram statistics (LE's greedy search)


@dataclass(frozen=True)
class GramStats:
    """Second-order statistics of one data split, enough to fit and score any linear model on it.

    Attributes:
        n: number of samples.
        mean (Tensor[M]): column means of the concept matrix P.
        cov (Tensor[M, M]): centred covariance of P's columns, ``(P - mean)^T (P - mean) / n``.
        target_mean (Tensor[K]): mean of each neuron's activation.
        cross (Tensor[M, K]): centred cross-covariance ``(P - mean)^T (Y - target_mean) / n``.
        target_var (Tensor[K]): variance of each neuron's activation (divisor n).
    """

    n: int
    mean: torch.Tensor
    cov: torch.Tensor
    target_mean: torch.Tensor
    cross: torch.Tensor
    target_var: torch.Tensor


def gram_stats(P: torch.Tensor, Y: torch.Tensor, chunk_size: int = 8192) -> GramStats:
    """Compute :class:`GramStats` of a split from samples, in float64, streaming over row chunks.

    Args:
        P (Tensor[n, M]): concept activations of the split.
        Y (Tensor[n, K]): neuron activations of the same samples.
        chunk_size: rows per chunk (bounds the float64 copies).

    Example:
        >>> s = gram_stats(torch.randn(100, 5), torch.randn(100, 2))
        >>> s.cov.shape, s.cross.shape
        (torch.Size([5, 5]), torch.Size([5, 2]))
    """
    if P.dim() != 2 or Y.dim() != 2 or P.shape[0] != Y.shape[0]:
        raise ValueError(
            f"gram_stats: P must be [n, M] and Y [n, K] with the same n; got P {tuple(P.shape)}, Y {tuple(Y.shape)}"
        )
    n = P.shape[0]
    if n == 0:
        raise ValueError("gram_stats: the split has no samples")
    mean = P.double().mean(0)
    target_mean = Y.double().mean(0)
    M, K = P.shape[1], Y.shape[1]
    cov = torch.zeros(M, M, dtype=torch.float64, device=P.device)
    cross = torch.zeros(M, K, dtype=torch.float64, device=P.device)
    target_var = torch.zeros(K, dtype=torch.float64, device=P.device)
    # An exactly constant column has no variance; centring it with a rounded mean would leave noise
    # (~1e-32) that a solver could fit with a meaningless weight.
    constant = (P.amax(0) == P.amin(0)).to(P.device)
    mean = torch.where(constant, P[0].double(), mean)
    for start in range(0, n, chunk_size):
        pc = P[start : start + chunk_size].double() - mean
        yc = Y[start : start + chunk_size].double() - target_mean
        cov += pc.T @ pc
        cross += pc.T @ yc
        target_var += (yc * yc).sum(0)
    return GramStats(n, mean, cov / n, target_mean, cross / n, target_var / n)


class LstsqResult(NamedTuple):
    """Per (neuron, candidate set): OLS weights, intercept and validation Pearson correlation."""

    weights: torch.Tensor  # [K, R, s], 0 in padded slots
    bias: torch.Tensor  # [K, R]
    val_corr: torch.Tensor  # [K, R]


def lstsq_gram(train: GramStats, val: GramStats, sets: torch.Tensor, ridge: float = 1e-10) -> LstsqResult:
    """Fit ordinary least squares with intercept for many (neuron, concept set) pairs at once.

    For neuron k and candidate set ``S = sets[k, r]`` (concept column indices; ``-1`` pads a
    shorter set), solves the normal equations from the train split's statistics::

        (train.cov[S, S] + delta * I) w = train.cross[S, k],   b = train.target_mean[k] - train.mean[S] . w

    and scores the fitted model on the validation split without touching samples::

        val_corr = w . val.cross[S, k] / sqrt((w^T val.cov[S, S] w) * val.target_var[k])

    ``delta = ridge * mean(diag(train.cov[S, S]))`` is a tiny ridge so near-singular sets (duplicate
    or constant concepts) give a finite, minimum-norm-like solution instead of NaN; for
    well-conditioned sets the result equals ``torch.linalg.lstsq`` on the samples. A prediction or
    target with zero validation variance has correlation 0. This is LE's greedy-search step
    (ALGORITHMS.md §2, step 4), solved in float64.

    Args:
        train, val: :class:`GramStats` of the train and validation splits (same M and K).
        sets (Tensor[K, R, s], int64): candidate sets per neuron; s <= 32; -1 = unused slot.
        ridge: relative ridge (see above).

    Returns:
        :class:`LstsqResult` ``(weights [K, R, s], bias [K, R], val_corr [K, R])`` in float64.

    Example:
        >>> P, Y = torch.randn(200, 6), torch.randn(200, 2)
        >>> tr, va = gram_stats(P[:150], Y[:150]), gram_stats(P[150:], Y[150:])
        >>> sets = torch.tensor([[[0, 1], [2, -1]], [[3, 4], [5, 0]]])
        >>> lstsq_gram(tr, va, sets).weights.shape
        torch.Size([2, 2, 2])
    """
    for name, t in (("sets", sets), ("train.cov", train.cov), ("val.cov", val.cov)):
        _check_tensor(t, name, "lstsq_gram")
    weights, bias, corr = torch.ops.neurocore.lstsq_gram(
        train.cov,
        train.mean,
        train.cross,
        train.target_mean,
        val.cov,
        val.cross,
        val.target_var,
        sets,
        float(ridge),
    )
    return LstsqResult(weights, bias, corr)


# ----------------------------------------------------------------------------------------------
# Monte-Carlo permutation Shapley values of a linear model under a link


def sample_permutations(num: int, num_features: int, seed: int = 0) -> torch.Tensor:
    """``num`` random permutations of ``range(num_features)`` from a seeded CPU generator.

    Returns:
        Tensor[num, num_features] int64; the same seed gives the same permutations everywhere.

    Example:
        >>> sample_permutations(2, 4, seed=0).shape
        torch.Size([2, 4])
    """
    gen = torch.Generator().manual_seed(int(seed))
    return torch.argsort(torch.rand(num, num_features, generator=gen), dim=1)


def shapley_permutation(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    background: torch.Tensor,
    perms: torch.Tensor,
    link: str,
) -> torch.Tensor:
    """Monte-Carlo permutation Shapley values of ``f(z) = link(weight @ z + bias)``, per sample.

    For sample r and each permutation, start from ``z = background[r]``, switch features to
    ``x[r]`` in the permutation's order, and credit each change of f to the feature switched; the
    result averages over the permutations. Contributions of a sample sum to
    ``f(x[r]) - f(background[r])`` for every permutation (efficiency). The identity link needs no
    sampling: its walk telescopes to ``weight * (x - background)``, which is returned exactly.

    Args:
        x (Tensor[R, D]): samples (e.g. neuron activations of R cells or images).
        weight (Tensor[C, D]), bias (Tensor[C]): the linear model, C outputs.
        background (Tensor[R, D]): per-sample baseline values of the features.
        perms (Tensor[P, D], int64): permutations of range(D) (:func:`sample_permutations`), passed
            in so that every device sees the same samples.
        link: ``"identity"``, ``"sigmoid"`` (elementwise) or ``"softmax"`` (over the C outputs).
            Sigmoid and softmax with no permutations (P = 0) give zeros.

    Returns:
        Tensor[R, C, D] in x's dtype: ``phi[r, c, d]``, feature d's contribution to output c.

    Example:
        >>> x, bg = torch.randn(4, 5), torch.zeros(4, 5)
        >>> w, b = torch.randn(1, 5), torch.zeros(1)
        >>> phi = shapley_permutation(x, w, b, bg, sample_permutations(8, 5), "sigmoid")
        >>> torch.allclose(phi.sum(-1), torch.sigmoid(x @ w.T + b) - torch.sigmoid(bg @ w.T + b))
        True
    """
    for name, t in (("x", x), ("weight", weight), ("bias", bias), ("background", background), ("perms", perms)):
        _check_tensor(t, name, "shapley_permutation")
    if link not in SHAPLEY_LINKS:
        raise ValueError(f"shapley_permutation: link must be one of {SHAPLEY_LINKS}; got {link!r}")
    return torch.ops.neurocore.shapley_permutation(x, weight, bias, background, perms, link)


# ----------------------------------------------------------------------------------------------
# fake kernels: shapes and dtypes only, for torch.compile and opcheck


# torch.export.save names namedtuple outputs by a registered name (a program returning lstsq_gram's
# result could not be saved otherwise).
try:
    torch.utils._pytree._register_namedtuple(LstsqResult, serialized_type_name="neurocore.ops.LstsqResult")
except (AttributeError, ValueError):  # an older torch without it, or a reload of this module
    pass


@torch.library.register_fake("neurocore::topk")
def _topk_fake(x, k):
    rows = torch.sym_min(k, x.shape[0])
    return x.new_empty(rows, x.shape[1]), x.new_empty(rows, x.shape[1], dtype=torch.long)


@torch.library.register_fake("neurocore::topk_merge")
def _topk_merge_fake(values_a, indices_a, values_b, indices_b, k):
    rows = torch.sym_min(k, values_a.shape[0] + values_b.shape[0])
    K = values_a.shape[1]
    return values_a.new_empty(rows, K), values_a.new_empty(rows, K, dtype=torch.long)


@torch.library.register_fake("neurocore::soft_wpmi")
def _soft_wpmi_fake(sims, topk_idx, p, a, lam, eps):
    return sims.new_empty(topk_idx.shape[1], sims.shape[1])


@torch.library.register_fake("neurocore::lstsq_gram")
def _lstsq_gram_fake(train_cov, train_mean, train_cross, train_target_mean, val_cov, val_cross, val_target_var, sets, ridge):
    K, R, s = sets.shape
    out = train_cov.new_empty
    return out(K, R, s, dtype=torch.float64), out(K, R, dtype=torch.float64), out(K, R, dtype=torch.float64)


@torch.library.register_fake("neurocore::shapley_permutation")
def _shapley_fake(x, weight, bias, background, perms, link):
    return x.new_empty(x.shape[0], weight.shape[0], x.shape[1])
