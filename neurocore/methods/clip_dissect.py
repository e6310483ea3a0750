"""CLIP-Dissect (Oikarinen & Weng, ICLR 2023): label each neuron with the concept whose image scores
best match the neuron's activations over a probe set.

Three layers, from pure to pipeline (STYLE.md §2-3):

* the similarity functions, pure: ``sims (Tensor[N, M])`` image–concept scores and ``acts (Tensor[N,
  K])`` summarised activations in, a ``Tensor[K, M]`` of neuron–concept scores out (:func:`scores`
  dispatches by name; :func:`soft_wpmi`, :func:`wpmi`, :func:`rank_reorder`, :func:`cos`,
  :func:`cos_cubed`);
* :class:`ClipDissect`, the registered method (``"clip_dissect"``): settings, then
  :meth:`ClipDissect.explain` turns an :class:`~neurocore.probe.ActivationStore` and a
  :class:`~neurocore.concepts.ConceptScores` into :class:`~neurocore.methods.Explanations`;
* :func:`dissect`, the one-call pipeline: record the model, score the probe with a vision–language
  model (or take given scores), explain.

What the scores mean (ALGORITHMS.md §1): they are **not bounded** (SoftWPMI is a log-probability
ratio, rank-reorder a negative error, only ``cos`` lies in [-1, 1]); they depend on the concept set
(the softmax over concepts of SoftWPMI/WPMI, the size M) and, for SoftWPMI and WPMI, on **which
neurons are scored in the same call**: the marginal ``log p(t_m)`` averages over those neurons
(the paper's layer ``C``). Scoring a layer's neurons one at a time, or together with another
layer's, gives other numbers. Compare scores only within one call.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from neurocore import ops
from neurocore._errors import NeurocoreError, close_matches
from neurocore._alignment import check_same_images
from neurocore.methods._base import Explanations, NeuronExplanation, probe_identity, register_method, top_image_refs

__all__ = [
    "SIMILARITIES",
    "DEFAULT_PARAMS",
    "SOFT_WPMI_INTERPRETABLE_THRESHOLD",
    "scores",
    "soft_wpmi",
    "wpmi",
    "rank_reorder",
    "cos",
    "cos_cubed",
    "similarity_params",
    "required_top_k",
    "ClipDissect",
    "dissect",
]

SIMILARITIES = ("soft_wpmi", "wpmi", "rank_reorder", "cos", "cos_cubed")

# The published defaults (paper appendix A.1; ALGORITHMS.md §1; the authors' released code).
DEFAULT_PARAMS: Mapping[str, Mapping[str, Any]] = {
    "soft_wpmi": {"top_k": 100, "a": 10.0, "p_start": 0.998, "p_end": 0.97, "lam": 1.0, "eps": 1e-7},
    "wpmi": {"top_k": 28, "a": 2.0, "lam": 0.6, "eps": 1e-7},
    "rank_reorder": {"p": 3.0, "top_fraction": 0.05, "scale_p": 0.5, "n_random": 5, "seed": 0},
    "cos": {},
    "cos_cubed": {"min_norm": 1e-3},
}

# Paper A.8: the lowest cutoff at which neurons above it had a mean human description score >= 0.75
# (ResNet-18/Places365 and ResNet-50/ImageNet layers, CLIP ViT-B/16, the 20k word list, SoftWPMI).
SOFT_WPMI_INTERPRETABLE_THRESHOLD = 0.16

# ClipDissect's similarity parameters (explicit settings; each similarity takes some of them).
_SIMILARITY_SETTINGS = ("top_k", "a", "p_start", "p_end", "lam", "eps", "p", "top_fraction", "scale_p", "n_random", "min_norm")

# Elements of one [top images, neurons, concepts] block in rank_reorder / cos_cubed (bounds memory).
_BLOCK_ELEMENTS = 1 << 23


# ----------------------------------------------------------------------------------------------
# input checks


def _check_pair(sims, acts) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate ``sims [N, M]`` and ``acts [N, K]``; return both in one floating dtype (float64 if
    either is float64, else float32), without copying when they already are."""
    for name, t, shape in (("sims", sims, "[N, M]"), ("acts", acts, "[N, K]")):
        if not isinstance(t, torch.Tensor):
            raise NeurocoreError(f"{name} must be a torch.Tensor{shape}; got {type(t).__name__}")
        if t.dim() != 2:
            raise NeurocoreError(f"{name} must be a 2-D Tensor{shape}; got shape {tuple(t.shape)}")
        if t.is_complex() or t.dtype == torch.bool:
            raise NeurocoreError(f"{name} must be a real floating tensor; got dtype {t.dtype}")
    if sims.shape[0] != acts.shape[0]:
        raise NeurocoreError(
            f"sims has {sims.shape[0]} rows (images) but acts has {acts.shape[0]}: both must hold the "
            "same probe images in the same order (row i of each = image i)"
        )
    if sims.shape[0] == 0:
        raise NeurocoreError("sims and acts have no rows: the probe set is empty")
    if sims.shape[1] == 0:
        raise NeurocoreError("sims has no columns: the concept set is empty")
    if sims.device != acts.device:
        raise NeurocoreError(f"sims is on {sims.device} but acts on {acts.device}: put both on one device")
    dtype = torch.float64 if torch.float64 in (sims.dtype, acts.dtype) else torch.float32
    sims, acts = sims.to(dtype), acts.to(dtype)
    if not torch.isfinite(sims).all():
        raise NeurocoreError("sims contains NaN or inf; image–concept scores must be finite")
    if not torch.isfinite(acts).all():
        bad = (~torch.isfinite(acts)).any(0).nonzero().flatten()[:5].tolist()
        raise NeurocoreError(f"acts contains NaN or inf (neurons {bad}...); check the model and its inputs")
    return sims, acts


def _top_indices(acts: torch.Tensor, k: int, top_indices) -> torch.Tensor:
    """Each neuron's ``min(k, N)`` most activating rows, best first: the given ``top_indices`` when
    they have enough rows, else recomputed from ``acts`` with :func:`neurocore.ops.topk`."""
    n, K = acts.shape
    k = min(int(k), n)
    if top_indices is not None:
        if not isinstance(top_indices, torch.Tensor) or top_indices.dim() != 2 or top_indices.shape[1] != K:
            shape = tuple(top_indices.shape) if isinstance(top_indices, torch.Tensor) else type(top_indices).__name__
            raise NeurocoreError(
                f"top_indices must be a Tensor[k, K={K}] of image indices (rank-major, as "
                f"neurocore.ops.topk returns them); got {shape}"
            )
        if top_indices.shape[0] >= k:
            idx = top_indices[:k].to(device=acts.device, dtype=torch.int64)
            if idx.numel() and (idx.min() < 0 or idx.max() >= n):
                raise NeurocoreError(f"top_indices must lie in [0, N={n}); got values in [{idx.min()}, {idx.max()}]")
            return idx
    return ops.topk(acts, k)[1]


def _number(method: str, name: str, value, *, integer=False, low=None, high=None, low_open=False) -> float | int:
    ok = isinstance(value, numbers.Integral) if integer else isinstance(value, numbers.Real)
    if isinstance(value, bool) or not ok or not math.isfinite(float(value)):
        kind = "an integer" if integer else "a finite number"
        raise NeurocoreError(f"{method}: {name} must be {kind}; got {value!r}")
    value = int(value) if integer else float(value)
    if low is not None and (value <= low if low_open else value < low):
        raise NeurocoreError(f"{method}: {name} must be {'>' if low_open else '>='} {low}; got {value}")
    if high is not None and value > high:
        raise NeurocoreError(f"{method}: {name} must be <= {high}; got {value}")
    return value


def similarity_params(method: str = "soft_wpmi", **params) -> dict[str, Any]:
    """The full, validated parameters of a similarity function: its published defaults
    (:data:`DEFAULT_PARAMS`) updated with ``params``.

    Raises:
        NeurocoreError: unknown method or parameter (the message lists the valid ones), or a value
            out of range.

    Example:
        >>> similarity_params("wpmi", top_k=10)
        {'top_k': 10, 'a': 2.0, 'lam': 0.6, 'eps': 1e-07}
    """
    if method not in DEFAULT_PARAMS:
        hint = close_matches(str(method), SIMILARITIES)
        raise NeurocoreError(
            f"unknown similarity method {method!r}; valid methods: {', '.join(SIMILARITIES)}"
            + (f" (did you mean {hint[0]!r}?)" if hint else "")
        )
    defaults = DEFAULT_PARAMS[method]
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        valid = ", ".join(defaults) if defaults else "none"
        raise NeurocoreError(f"unknown parameter(s) {unknown} for similarity {method!r}; valid parameters: {valid}")
    p = {**defaults, **params}
    if method in ("soft_wpmi", "wpmi"):
        p["top_k"] = _number(method, "top_k", p["top_k"], integer=True, low=1)
        p["a"] = _number(method, "a", p["a"])
        p["lam"] = _number(method, "lam", p["lam"])
        p["eps"] = _number(method, "eps", p["eps"], low=0, low_open=True)
    if method == "soft_wpmi":
        p["p_start"] = _number(method, "p_start", p["p_start"], low=0, high=1)
        p["p_end"] = _number(method, "p_end", p["p_end"], low=0, high=1)
    if method == "rank_reorder":
        p["p"] = _number(method, "p", p["p"], low=0, low_open=True)
        p["top_fraction"] = _number(method, "top_fraction", p["top_fraction"], low=0, high=1, low_open=True)
        p["scale_p"] = _number(method, "scale_p", p["scale_p"], low=0)
        p["n_random"] = _number(method, "n_random", p["n_random"], integer=True, low=1)
        p["seed"] = _number(method, "seed", p["seed"], integer=True)
    if method == "cos_cubed":
        p["min_norm"] = _number(method, "min_norm", p["min_norm"], low=0, low_open=True)
    return p


def required_top_k(method: str, num_images: int, **params) -> int:
    """How many top images per neuron ``method`` reads (0 when it reads all images).

    SoftWPMI and WPMI read ``top_k``; rank-reorder reads ``int(num_images * top_fraction)``; cos and
    cos_cubed read every image. A recording (:func:`neurocore.probe.record`) that keeps at least this
    many lets :meth:`ClipDissect.explain` use the store's top-k instead of recomputing it.

    Example:
        >>> required_top_k("soft_wpmi", 5000), required_top_k("rank_reorder", 5000), required_top_k("cos", 5000)
        (100, 250, 0)
    """
    p = similarity_params(method, **params)
    if method in ("soft_wpmi", "wpmi"):
        return p["top_k"]
    if method == "rank_reorder":
        return int(num_images * p["top_fraction"])
    return 0


# ----------------------------------------------------------------------------------------------
# similarity functions


def soft_wpmi(
    sims: torch.Tensor,
    acts: torch.Tensor,
    top_k: int = 100,
    a: float = 10.0,
    p_start: float = 0.998,
    p_end: float = 0.97,
    lam: float = 1.0,
    eps: float = 1e-7,
    top_indices: torch.Tensor | None = None,
) -> torch.Tensor:
    """SoftWPMI (paper eq. 14; ALGORITHMS.md §1), CLIP-Dissect's default similarity.

    With ``P = softmax(a * sims)`` over concepts per image and neuron k's top images ``x_0, x_1, ...``
    (by activation)::

        L[k, m]   = sum_{i < top_k} log(1 + p_i (P[x_i, m] - 1) + eps),   p_i = p_start - (i/top_k)(p_start - p_end)
        out[k, m] = L[k, m] - lam * (logsumexp_k' L[k', m] - log K)

    The second term is the marginal ``log p(t_m)`` over the K neurons of this call: scores depend on
    which neurons are scored together, and are not bounded below (with ``lam = 1`` they are at most
    ``log K``, reached when the neuron dominates the concept's marginal; a call with one neuron
    scores every concept 0). Two neurons with the same top images share a concept's marginal and
    both lose ``lam * log 2`` on it. Computed by the fused kernel :func:`neurocore.ops.soft_wpmi`
    (the N x M softmax is never materialised).

    Args:
        sims (Tensor[N, M]): image–concept scores (a vision–language model's cosines; finite).
        acts (Tensor[N, K]): summarised activations of the same N images (no NaN).
        top_k: images per neuron with non-zero membership probability (``min(top_k, N)`` are used;
            ``p_i`` keeps its definition relative to ``top_k``).
        a: softmax temperature. p_start, p_end: membership probability of the first and the
            ``top_k``-th image. lam: weight of the marginal. eps: inside the log (a zero probability
            would give -inf).
        top_indices (Tensor[k, K], int64, optional): each neuron's top images, best first (e.g. an
            :class:`~neurocore.probe.ActivationStore`'s ``top_indices``); used when ``k >= min(top_k,
            N)``, otherwise recomputed from ``acts``.

    Returns:
        Tensor[K, M]: float64 if sims or acts is float64, else float32.

    Raises:
        NeurocoreError: shapes that do not match, NaN/inf, parameters out of range.

    Example:
        >>> sims, acts = torch.rand(200, 6), torch.randn(200, 4)
        >>> soft_wpmi(sims, acts).shape
        torch.Size([4, 6])
    """
    p = similarity_params("soft_wpmi", top_k=top_k, a=a, p_start=p_start, p_end=p_end, lam=lam, eps=eps)
    sims, acts = _check_pair(sims, acts)
    if acts.shape[1] == 0:
        return sims.new_zeros(0, sims.shape[1])
    idx = _top_indices(acts, p["top_k"], top_indices)
    weights = ops.soft_wpmi_weights(p["top_k"], p["p_start"], p["p_end"])[: idx.shape[0]]
    return ops.soft_wpmi(sims, idx, weights, a=p["a"], lam=p["lam"], eps=p["eps"])


def wpmi(
    sims: torch.Tensor,
    acts: torch.Tensor,
    top_k: int = 28,
    a: float = 2.0,
    lam: float = 0.6,
    eps: float = 1e-7,
    top_indices: torch.Tensor | None = None,
) -> torch.Tensor:
    """WPMI (paper eq. 8): SoftWPMI with membership 1 for the top ``top_k`` images, 0 for the rest::

        out[k, m] = sum_{i < top_k} log(P[x_i, m] + eps) - lam * (logsumexp_k' L[k', m] - log K)

    Arguments, return value and caveats as :func:`soft_wpmi` (published defaults a=2, top_k=28,
    lam=0.6).

    Example:
        >>> wpmi(torch.rand(100, 5), torch.randn(100, 3)).shape
        torch.Size([3, 5])
    """
    p = similarity_params("wpmi", top_k=top_k, a=a, lam=lam, eps=eps)
    sims, acts = _check_pair(sims, acts)
    if acts.shape[1] == 0:
        return sims.new_zeros(0, sims.shape[1])
    idx = _top_indices(acts, p["top_k"], top_indices)
    ones = torch.ones(idx.shape[0], dtype=torch.float64)
    return ops.soft_wpmi(sims, idx, ones, a=p["a"], lam=p["lam"], eps=p["eps"])


def _rank_ascending_ties_in_order(block: torch.Tensor) -> torch.Tensor:
    """Ranks (0 = smallest) along dim 0; equal values rank in reverse row order, so that among
    images with the same concept score the more activating one (lower row) gets the higher rank."""
    order = torch.argsort(block.flip(0), dim=0, stable=True)
    position = torch.arange(block.shape[0], device=block.device).view(-1, *([1] * (block.dim() - 1)))
    ranks = torch.empty_like(order).scatter_(0, order, position.expand_as(order))
    return ranks.flip(0)


def rank_reorder(
    sims: torch.Tensor,
    acts: torch.Tensor,
    p: float = 3.0,
    top_fraction: float = 0.05,
    scale_p: float = 0.5,
    n_random: int = 5,
    seed: int = 0,
    top_indices: torch.Tensor | None = None,
) -> torch.Tensor:
    """Rank reorder (paper eq. 2 and A.1, with the normalisations of the authors' released code).

    For neuron k, take its ``n = int(N * top_fraction)`` most activating images, with activations
    ``q_0 >= q_1 >= ... >= q_{n-1}``. For concept m, ``q'`` gives each of these images the activation
    of the same rank in the concept's order: the image with the highest ``sims[:, m]`` among them gets
    ``q_0``, the second highest ``q_1``, and so on. Then::

        err[k, m]  = mean_i |q_i - q'_i|^p
        base[k]    = mean over n_random random orderings pi and i of |q_(i) - q_(pi(i))|^p
        out[k, m]  = -(err[k, m] / base[k]) / mean_i(sims[x_i, m]) ** scale_p

    ``base`` is the error of random orderings (it scales errors of different neurons alike and does
    not change a neuron's ranking of concepts); the division by the concept's mean score over the
    images favours concepts present in them. The released code draws the random orderings unseeded;
    here they are ``neurocore.ops.sample_permutations(K * n_random, n, seed)`` (neuron k uses rows
    ``k*n_random ... (k+1)*n_random - 1``), so the same seed gives the same scores.

    Conventions where the released code is undefined (documented choices): equal concept scores rank
    in the neuron's own order (a tie costs nothing; the released code's unstable sort orders ties
    arbitrarily); a neuron whose top activations are all equal has no order to compare, its
    errors are 0; a concept whose mean score over the images is <= 0 (with ``scale_p > 0``) scores
    ``-inf`` (the released code gives NaN or inf).

    Args:
        sims (Tensor[N, M]), acts (Tensor[N, K]): as :func:`soft_wpmi`.
        p: exponent of the error. top_fraction: fraction of the probe set used per neuron (the
            images count ``int(N * top_fraction)`` must be at least 2). scale_p: exponent of the mean
            score. n_random: random orderings for the baseline. seed: their seed.
        top_indices (Tensor[k, K], int64, optional): precomputed top images (used when ``k >= n``).

    Returns:
        Tensor[K, M], <= 0 (or -inf), float64 if an input is float64, else float32.

    Example:
        >>> sims, acts = torch.rand(100, 6), torch.randn(100, 3)
        >>> out = rank_reorder(sims, acts, seed=1)
        >>> out.shape, bool((out <= 0).all()), torch.equal(out, rank_reorder(sims, acts, seed=1))
        (torch.Size([3, 6]), True, True)
    """
    prm = similarity_params("rank_reorder", p=p, top_fraction=top_fraction, scale_p=scale_p, n_random=n_random, seed=seed)
    sims, acts = _check_pair(sims, acts)
    N, K = acts.shape
    M = sims.shape[1]
    n = int(N * prm["top_fraction"])
    if n < 2:
        raise NeurocoreError(
            f"rank_reorder: int(N * top_fraction) = int({N} * {prm['top_fraction']}) = {n} images per "
            "neuron; at least 2 are needed to compare orders: use more probe images or a larger top_fraction"
        )
    out = sims.new_empty(K, M)
    if K == 0:
        return out
    idx = _top_indices(acts, n, top_indices)  # [n, K]
    vals = acts.gather(0, idx)  # descending per neuron
    asc = vals.flip(0)  # ascending: asc[r] = activation of rank r (0 = smallest)
    perms = ops.sample_permutations(K * prm["n_random"], n, seed=prm["seed"]).to(acts.device)
    perms = perms.view(K, prm["n_random"] * n)
    asc_t = asc.T.contiguous()  # [K, n]
    shuffled = asc_t.gather(1, perms).view(K, prm["n_random"], n)
    base = (asc_t.unsqueeze(1) - shuffled).abs().pow(prm["p"]).mean(dim=(1, 2))  # [K]
    power = prm["p"]
    tiny = torch.finfo(sims.dtype).tiny
    chunk = max(1, _BLOCK_ELEMENTS // (n * M))
    m_chunk = min(M, max(1, _BLOCK_ELEMENTS // (n * chunk)))
    for k0 in range(0, K, chunk):
        ks = slice(k0, min(K, k0 + chunk))
        idx_k, vals_k, asc_k, base_k = idx[:, ks], vals[:, ks], asc[:, ks], base[ks]
        for m0 in range(0, M, m_chunk):
            ms = slice(m0, min(M, m0 + m_chunk))
            block = sims[:, ms][idx_k]  # [n, c, mc]: concept scores of each neuron's top images
            mean = block.mean(0)  # [c, mc]
            ranks = _rank_ascending_ties_in_order(block)
            reordered = asc_k.unsqueeze(-1).expand_as(block).gather(0, ranks)
            err = (vals_k.unsqueeze(-1) - reordered).abs().pow(power).mean(0)  # [c, mc]
            # base = 0 only when all top activations are equal; then every error is 0 too
            base_c = base_k.unsqueeze(-1)
            ratio = torch.where(base_c > 0, err / base_c.clamp_min(tiny), torch.zeros_like(err))
            if prm["scale_p"] == 0:
                out[ks, ms] = -ratio
            else:
                scaled = -ratio / mean.clamp_min(tiny).pow(prm["scale_p"])
                out[ks, ms] = torch.where(mean > 0, scaled, torch.full_like(scaled, -math.inf))
    return out


def cos(sims: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
    """Cosine similarity (paper eq. 1) between each neuron's activation column and each concept's
    score column over the images, without centring::

        out[k, m] = <acts[:, k], sims[:, m]> / (||acts[:, k]|| ||sims[:, m]||)

    A column of zeros has no direction: its cosines are 0 (the released code gives NaN).

    Returns:
        Tensor[K, M] in [-1, 1].

    Example:
        >>> acts = torch.rand(50, 2)
        >>> out = cos(torch.cat([acts[:, :1], torch.rand(50, 3)], 1), acts)
        >>> int(out[0].argmax())
        0
    """
    sims, acts = _check_pair(sims, acts)
    num = acts.T @ sims
    den = torch.linalg.vector_norm(acts, dim=0).unsqueeze(1) * torch.linalg.vector_norm(sims, dim=0).unsqueeze(0)
    return torch.where(den > 0, num / den.clamp_min(torch.finfo(den.dtype).tiny), torch.zeros_like(num))


def _cubed_unit_columns(x: torch.Tensor, min_norm: float) -> torch.Tensor:
    x = (x - x.mean(dim=0, keepdim=True)).pow(3)
    return x / torch.linalg.vector_norm(x, dim=0, keepdim=True).clamp_min(min_norm)


def cos_cubed(sims: torch.Tensor, acts: torch.Tensor, min_norm: float = 1e-3) -> torch.Tensor:
    """Cosine of centred, cubed columns (the authors' released ``cos_similarity_cubed``)::

        f(v) = (v - mean(v))^3 / max(||(v - mean(v))^3||, min_norm)
        out[k, m] = <f(acts[:, k]), f(sims[:, m])>

    Cubing weights the images far from the mean (the most activating ones) most. The norm floor
    keeps near-constant columns from being blown up to unit length: their scores go to 0 instead.

    Returns:
        Tensor[K, M], in [-1, 1].

    Example:
        >>> acts = torch.rand(50, 2)
        >>> out = cos_cubed(torch.cat([torch.rand(50, 3), acts[:, 1:]], 1), acts)
        >>> int(out[1].argmax())
        3
    """
    prm = similarity_params("cos_cubed", min_norm=min_norm)
    sims, acts = _check_pair(sims, acts)
    a = _cubed_unit_columns(acts, prm["min_norm"])
    N, M = sims.shape
    out = sims.new_empty(acts.shape[1], M)
    step = max(1, _BLOCK_ELEMENTS // N)  # a centred copy of sims is made one block of columns at a time
    for m0 in range(0, M, step):
        out[:, m0 : m0 + step] = a.T @ _cubed_unit_columns(sims[:, m0 : m0 + step], prm["min_norm"])
    return out


_FUNCTIONS: Mapping[str, Callable[..., torch.Tensor]] = {
    "soft_wpmi": soft_wpmi,
    "wpmi": wpmi,
    "rank_reorder": rank_reorder,
    "cos": cos,
    "cos_cubed": cos_cubed,
}


def scores(
    sims: torch.Tensor,
    acts: torch.Tensor,
    method: str = "soft_wpmi",
    *,
    top_indices: torch.Tensor | None = None,
    **params,
) -> torch.Tensor:
    """Score every (neuron, concept) pair with a CLIP-Dissect similarity function.

    Args:
        sims (Tensor[N, M]): image–concept scores, row i = probe image i (finite).
        acts (Tensor[N, K]): summarised activations of the same images (no NaN).
        method: one of :data:`SIMILARITIES` — ``"soft_wpmi"`` (default; a=10, top_k=100,
            p_start=0.998, p_end=0.97, lam=1), ``"wpmi"`` (a=2, top_k=28, lam=0.6),
            ``"rank_reorder"`` (p=3, top_fraction=0.05, scale_p=0.5, n_random=5, seed=0), ``"cos"``,
            ``"cos_cubed"`` (min_norm=1e-3).
        top_indices (Tensor[k, K], int64, optional): each neuron's top images, best first; used by
            the top-image methods when it has enough rows (see :func:`required_top_k`), ignored by
            cos and cos_cubed.
        **params: overrides of the method's defaults (:data:`DEFAULT_PARAMS`).

    Returns:
        Tensor[K, M]: higher = better match; the label of neuron k is ``argmax_m out[k, m]``.
        Scores are not bounded, depend on the concept set, and for soft_wpmi/wpmi on which
        neurons are in the call (module docstring).

    Raises:
        NeurocoreError: unknown method or parameter (listing the valid ones), shapes that do not
            match, NaN or inf in the inputs.

    Example:
        >>> sims = torch.rand(300, 5)
        >>> acts = sims[:, [3, 1]] + 0.01 * torch.randn(300, 2)   # neuron 0 follows concept 3
        >>> scores(sims, acts, "soft_wpmi").argmax(1).tolist()
        [3, 1]
    """
    prm = similarity_params(method, **params)
    if method in ("cos", "cos_cubed"):
        return _FUNCTIONS[method](sims, acts, **prm)
    return _FUNCTIONS[method](sims, acts, top_indices=top_indices, **prm)


# ----------------------------------------------------------------------------------------------
# the registered method


def _composite_pairs(names: Sequence[str], top: torch.Tensor) -> list[list[str]]:
    """Per neuron, the texts ``"c1 c2"`` of every pair among its top concepts (``top [n, K]``,
    best first), the better-ranked concept first."""
    out = []
    for j in range(top.shape[1]):
        ranked = [names[i] for i in top[:, j].tolist()]
        out.append([f"{ranked[a]} {ranked[b]}" for a in range(len(ranked)) for b in range(a + 1, len(ranked))])
    return out


@register_method("clip_dissect")
class ClipDissect:
    """CLIP-Dissect: each neuron's label is the concept maximising a similarity function between
    its activations and the concept's image scores over the probe set (paper §3).

    ``__init__`` only stores settings; :meth:`explain` validates them and does the work.

    Args:
        similarity: the similarity function (:data:`SIMILARITIES`; default ``"soft_wpmi"``).
        n_top_concepts: concepts kept per neuron, best first, with their scores (5).
        interpretable_threshold: a neuron is interpretable when its best score is > this.
            ``"auto"`` (default) = 0.16 for soft_wpmi (paper A.8; calibrated with the published
            SoftWPMI defaults, CLIP ViT-B/16, the 20k word list, whole ResNet layers) and None for
            the other methods, which have no published cutoff. None = no cutoff: every neuron with
            a label is interpretable.
        compositional: also search two-concept descriptions ``"c1 c2"`` (paper A.4): for every
            neuron, all pairs among its ``composite_top_n`` best single concepts. The composite
            texts need image scores, so :meth:`explain` needs ``encode_composites`` (or use
            :func:`dissect` with a vision–language model). Composites are scored with the same
            similarity function, as extra columns of one concept set (singles + every neuron's
            candidates, so the SoftWPMI softmax and marginal see them all); each neuron then picks
            among the singles and its own candidates. Cost: up to ``K * n(n-1)/2`` texts per layer;
            the paper's n=100 suits a few neurons, use a small n (e.g. 10) for whole layers.
        composite_top_n: n above (100, as the paper).
        n_top_images: most activating images kept per neuron (10; fewer if the store kept fewer),
            as store rows, dataset indices and image ids (:class:`~neurocore.methods.NeuronExplanation`).
        seed: seed of rank_reorder's random baseline (ignored by the other methods).
        top_k, a, p_start, p_end, lam, eps, p, top_fraction, scale_p, n_random, min_norm: similarity
            parameters; None (default) = the published default of the chosen similarity
            (:data:`DEFAULT_PARAMS`). Giving one the chosen similarity does not take is an error when
            :meth:`explain` runs (e.g. ``a`` with ``"cos"``).
        method: deprecated name of ``similarity`` (a ``DeprecationWarning``).

    A misspelt setting raises :class:`~neurocore.methods.UnknownSettingError` (a ``TypeError``)
    naming its close matches: ``ClipDissect(n_top_concept=3)`` suggests ``n_top_concepts``.

    Dead and constant neurons: a neuron whose activation never reaches 0.01 on the probe set is
    flagged ``dead=True`` and ``interpretable=False`` but keeps its label: the similarity functions
    read the order of activations, not their sign or size, and units such as final-layer logits or
    pre-activation channels can stay below 0.01 everywhere yet be ordered meaningfully; the flag
    says that the probe set never made it fire. A neuron with the same activation on every image has
    no order at all: its top images would be chosen by index alone, so it gets no label (description
    ``""``, similarity NaN, no concepts, not interpretable).

    Example:
        >>> from neurocore.probe import ActivationStore
        >>> from neurocore.concepts import ConceptScores
        >>> sims = torch.rand(300, 4)
        >>> store = ActivationStore.from_tensor(sims[:, [2, 0]] + 0.01 * torch.randn(300, 2))
        >>> cs = ConceptScores.from_tensor(sims, ["cat", "dog", "car", "sky"])
        >>> ex = ClipDissect().explain(store, cs)
        >>> ex.descriptions, ex.labels, len(ex[0].concepts), len(ex[0].top_images)
        (['car', 'cat'], ['car', 'cat'], 4, 10)
    """

    name = "clip_dissect"
    needs = frozenset({"store", "scores"})

    def __init__(
        self,
        similarity: str = "soft_wpmi",
        n_top_concepts: int = 5,
        interpretable_threshold: float | str | None = "auto",
        compositional: bool = False,
        composite_top_n: int = 100,
        n_top_images: int = 10,
        seed: int = 0,
        *,
        top_k: int | None = None,
        a: float | None = None,
        p_start: float | None = None,
        p_end: float | None = None,
        lam: float | None = None,
        eps: float | None = None,
        p: float | None = None,
        top_fraction: float | None = None,
        scale_p: float | None = None,
        n_random: int | None = None,
        min_norm: float | None = None,
        method: str | None = None,
    ):
        if method is not None:
            warnings.warn(
                "ClipDissect(method=...) is deprecated: the similarity function is now similarity=... "
                f"(ClipDissect(similarity={method!r}))",
                DeprecationWarning,
                stacklevel=3,  # past register_method's settings check, to the caller
            )
            similarity = method
        self.similarity = similarity
        self.n_top_concepts = n_top_concepts
        self.interpretable_threshold = interpretable_threshold
        self.compositional = compositional
        self.composite_top_n = composite_top_n
        self.n_top_images = n_top_images
        self.seed = seed
        self.top_k = top_k
        self.a = a
        self.p_start = p_start
        self.p_end = p_end
        self.lam = lam
        self.eps = eps
        self.p = p
        self.top_fraction = top_fraction
        self.scale_p = scale_p
        self.n_random = n_random
        self.min_norm = min_norm

    @property
    def method(self) -> str:
        """The similarity function's name (read-only alias of :attr:`similarity`, the old name)."""
        return self.similarity

    @property
    def params(self) -> dict[str, Any]:
        """The similarity parameters given (not None), before defaults: what overrides :data:`DEFAULT_PARAMS`."""
        return {k: getattr(self, k) for k in _SIMILARITY_SETTINGS if getattr(self, k) is not None}

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self.params.items())
        return f"ClipDissect(similarity={self.similarity!r}, compositional={self.compositional!r}{extra})"

    # -- settings ------------------------------------------------------------------------------

    def similarity_params(self) -> dict[str, Any]:
        """The similarity function's full parameters (defaults + overrides; ``seed`` for rank_reorder).

        Raises:
            NeurocoreError: an unknown similarity (with its close match), or a parameter the chosen
                similarity does not take (naming those it takes).
        """
        if self.similarity not in DEFAULT_PARAMS:
            hint = close_matches(str(self.similarity), SIMILARITIES)
            raise NeurocoreError(
                f"ClipDissect: unknown similarity {self.similarity!r}; valid: {', '.join(SIMILARITIES)}"
                + (f" (did you mean {hint[0]!r}?)" if hint else "")
            )
        given = self.params
        takes = set(DEFAULT_PARAMS[self.similarity]) - {"seed"}
        wrong = sorted(set(given) - takes)
        if wrong:
            raise NeurocoreError(
                f"ClipDissect: similarity {self.similarity!r} has no parameter {', '.join(wrong)}; its parameters are: "
                f"{', '.join(sorted(takes)) or 'none'} (set the one you meant, or choose the similarity that takes it)"
            )
        extra = {"seed": self.seed} if self.similarity == "rank_reorder" else {}
        return similarity_params(self.similarity, **given, **extra)

    def threshold(self) -> float | None:
        """The interpretability cutoff in effect (``"auto"`` resolved)."""
        t = self.interpretable_threshold
        if isinstance(t, str):
            if t != "auto":
                raise NeurocoreError(f"interpretable_threshold must be a number, None or 'auto'; got {t!r}")
            return SOFT_WPMI_INTERPRETABLE_THRESHOLD if self.similarity == "soft_wpmi" else None
        return None if t is None else _number("ClipDissect", "interpretable_threshold", t)

    def check_settings(self) -> None:
        """Validate the settings (the method contract's check, run by ``explain`` and, before recording, by
        :func:`neurocore.run_methods`); raises :class:`~neurocore.NeurocoreError` naming the setting."""
        self._settings()

    def _settings(self) -> dict[str, Any]:
        sim = self.similarity_params()
        for name in ("n_top_concepts", "n_top_images", "composite_top_n"):
            _number("ClipDissect", name, getattr(self, name), integer=True, low=1)
        _number("ClipDissect", "seed", self.seed, integer=True)
        if not isinstance(self.compositional, bool):
            raise NeurocoreError(f"compositional must be True or False; got {self.compositional!r}")
        return {
            "similarity": self.similarity,
            "similarity_params": sim,
            "n_top_concepts": int(self.n_top_concepts),
            "interpretable_threshold": self.threshold(),
            "compositional": self.compositional,
            "composite_top_n": int(self.composite_top_n),
            "n_top_images": int(self.n_top_images),
            "seed": int(self.seed),
        }

    def required_top_k(self, num_images: int) -> int:
        """Top images per neuron a recording should keep for :meth:`explain` to use them directly."""
        s = self._settings()
        return max(required_top_k(self.similarity, num_images, **s["similarity_params"]), s["n_top_images"])

    # -- the verb ------------------------------------------------------------------------------

    def explain(
        self,
        store,
        concept_scores,
        layers: str | Sequence[str] | None = None,
        progress: bool = False,
        encode_composites: Callable[[list[str]], torch.Tensor] | None = None,
        *,
        model=None,
        probe=None,
        transform=None,
    ) -> Explanations:
        """Label every neuron of the chosen layers.

        Args:
            store: :class:`~neurocore.probe.ActivationStore` of the model over the probe set.
            concept_scores: :class:`~neurocore.concepts.ConceptScores` of the **same** probe images
                in the same order (row i of both = image i).
            layers: a layer name or names of the store (default: all, in the store's order). Each
                layer is scored in its own call (the SoftWPMI/WPMI marginal runs over its neurons).
            progress: a progress bar over layers.
            encode_composites: for ``compositional=True``: a function from a list of texts to their
                image scores ``Tensor[N, len(texts)]`` over the same probe rows, on the same scale
                as ``concept_scores`` (e.g. cosines of the same vision–language model).
            model, probe, transform: accepted for the method contract (``needs`` does not name
                them: CLIP-Dissect reads the store and the scores only) and ignored.

        Returns:
            :class:`~neurocore.methods.Explanations` with one :class:`NeuronExplanation` per neuron:
            description = label (argmax), similarity = its score, concepts/scores = the
            ``n_top_concepts`` best with their scores, interpretable, dead, top images (the store's
            top-k, best first, at most ``n_top_images``: ``top_images`` as store rows,
            ``top_dataset_indices`` and ``top_image_ids``). ``params`` holds the settings, the
            concept set, the probe size, ``"probe"`` (:func:`~neurocore.methods.probe_identity`:
            digest of the image ids, skipped images) and the store's key.

        Raises:
            NeurocoreError: invalid settings, store and scores with different images (another
                number, or other ids: the message names the first row that differs), unknown layers,
                ``compositional`` without ``encode_composites``.
        """
        from neurocore.concepts import ConceptScores
        from neurocore.probe import ActivationStore

        settings = self._settings()
        if not isinstance(store, ActivationStore):
            raise NeurocoreError(f"store must be an ActivationStore (from neurocore.probe.record); got {type(store).__name__}")
        if not isinstance(concept_scores, ConceptScores):
            raise NeurocoreError(f"concept_scores must be a ConceptScores; got {type(concept_scores).__name__}")
        check_same_images(
            store, concept_scores, "the activation store", "concept_scores",
            "record and score the same dataset (unreadable images are skipped by both), or pass image_ids= to "
            "ActivationStore.from_tensor / ConceptScores.from_tensor in the order of the rows",
        )
        if self.compositional and encode_composites is None:
            raise NeurocoreError(
                "compositional=True scores texts 'c1 c2' that are not in the concept set, so it needs their "
                "image scores: pass encode_composites=fn (texts -> Tensor[N, len(texts)]), or use "
                "neurocore.dissect(..., vlm=...) which builds it from the vision–language model; a fixed "
                "score matrix alone cannot score new texts"
            )
        names = _resolve_layers(store, layers)
        sims = concept_scores.scores
        concepts = list(concept_scores.concepts)
        sim_params = settings["similarity_params"]
        need = required_top_k(self.similarity, store.num_images, **sim_params)

        def layer_scores(layer_acts, sims_used):
            top = layer_acts.top_indices if need and layer_acts.top_indices.shape[0] >= min(need, store.num_images) else None
            return scores(sims_used, layer_acts.summaries, self.similarity, top_indices=top, **sim_params)

        # A concept whose score is the same on every probe image (a class with no images, an empty
        # column) carries no evidence about any neuron, yet SoftWPMI's marginal can rank it first.
        constant = (sims.amax(dim=0) == sims.amin(dim=0)) if sims.shape[0] else torch.zeros(len(concepts), dtype=torch.bool)
        if bool(constant.all()):
            raise NeurocoreError(
                "every concept has the same score on every probe image: the scores say nothing about the images; "
                "check the concept scores (e.g. labels of one class only)"
            )
        if bool(constant.any()):
            left_out = [concepts[i] for i in constant.nonzero().flatten().tolist()]
            warnings.warn(
                f"{len(left_out)} concept(s) have the same score on every probe image and cannot describe a neuron "
                f"(no image shows them, e.g. an empty class folder): {left_out[:5]}; they are left out of the labels",
                stacklevel=2,
            )
        composite_cache: dict[str, torch.Tensor] = {}
        neurons: list[NeuronExplanation] = []
        iterator = names
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(names, desc="clip_dissect", unit="layer")
        for name in iterator:
            la = store[name]
            K = la.num_neurons
            sc = layer_scores(la, sims)
            if bool(constant.any()):
                sc = sc.clone()
                sc[:, constant.to(sc.device)] = -math.inf
            column_names, allowed = concepts, None
            if self.compositional and K:
                sc, column_names, allowed = self._with_composites(
                    la, sc, sims, concepts, encode_composites, composite_cache, layer_scores, settings
                )
            neurons += self._neurons(la, sc, column_names, settings, allowed, store)
        params = dict(settings)
        params.update(
            concepts=concepts,
            concept_source=concept_scores.source,
            num_images=store.num_images,
            layers=list(names),
            store_key=dict(store.key),
            probe=probe_identity(store),
        )
        return Explanations(method=self.name, neurons=tuple(neurons), params=params)

    def _with_composites(self, la, sc, sims, concepts, encode, cache, layer_scores, settings):
        """Extend one layer's scores with its neurons' composite candidates (paper A.4)."""
        M = len(concepts)
        n = min(settings["composite_top_n"], M)
        top = ops.topk(sc.T.contiguous(), n)[1]  # [n, K] best singles per neuron
        singles = set(concepts)
        # a pair whose text is already a single concept ("hot" + "dog" = "hot dog") is that concept
        per_neuron = [[t for t in texts if t not in singles] for texts in _composite_pairs(concepts, top)]
        texts = list(dict.fromkeys(t for texts in per_neuron for t in texts))
        N = sims.shape[0]
        if N * (M + len(texts)) > (1 << 31):
            raise NeurocoreError(
                f"compositional: {len(texts)} composite texts over {N} images would need a "
                f"{N} x {M + len(texts)} score matrix; lower composite_top_n (now {n}) or dissect fewer neurons"
            )
        missing = [t for t in texts if t not in cache]
        if missing:
            new = encode(missing)
            if not isinstance(new, torch.Tensor) or tuple(new.shape) != (N, len(missing)):
                shape = tuple(new.shape) if isinstance(new, torch.Tensor) else type(new).__name__
                raise NeurocoreError(
                    f"encode_composites must return a Tensor[N={N}, {len(missing)}] of image scores; got {shape}"
                )
            new = new.detach().to("cpu", sims.dtype)
            if not torch.isfinite(new).all():
                raise NeurocoreError("encode_composites returned NaN or inf scores")
            for j, t in enumerate(missing):
                cache[t] = new[:, j]
        if not texts:
            return sc, concepts, None
        ext = torch.cat([sims, torch.stack([cache[t] for t in texts], 1)], 1)
        ext_scores = layer_scores(la, ext)
        column = {t: M + j for j, t in enumerate(texts)}
        allowed = torch.zeros(la.num_neurons, M + len(texts), dtype=torch.bool)
        allowed[:, :M] = True
        for k, cand in enumerate(per_neuron):
            allowed[k, [column[t] for t in cand]] = True
        ext_scores = ext_scores.masked_fill(~allowed.to(ext_scores.device), -math.inf)
        return ext_scores, concepts + texts, allowed.sum(1)

    def _neurons(self, la, sc, names, settings, allowed, store) -> list[NeuronExplanation]:
        """One layer's explanations from its scores ``sc [K, columns]``; ``allowed [K]``: how many
        columns each neuron may choose from (compositional: the singles and its own candidates)."""
        K = la.num_neurons
        if K == 0:
            return []
        n_top = min(settings["n_top_concepts"], sc.shape[1])
        top_vals, top_idx = ops.topk(sc.T.contiguous().cpu(), n_top)  # [n_top, K], ties -> lower concept index
        dead = la.dead()
        constant = la.summaries.amax(0) == la.summaries.amin(0)
        threshold = settings["interpretable_threshold"]
        images = la.top_indices[: settings["n_top_images"]]
        out = []
        for k in range(K):
            refs = top_image_refs(store, images[:, k].tolist())
            if bool(constant[k]):
                out.append(NeuronExplanation(la.layer, k, "", math.nan, interpretable=False, dead=bool(dead[k]), **refs))
                continue
            keep = n_top if allowed is None else min(n_top, int(allowed[k]))
            finite = [j for j in range(keep) if top_vals[j, k] > -math.inf]  # concepts left out score -inf
            vals = top_vals[finite, k].tolist()
            labels = tuple(names[top_idx[j, k]] for j in finite)
            interpretable = not bool(dead[k]) and (threshold is None or vals[0] > threshold)
            out.append(
                NeuronExplanation(
                    layer=la.layer,
                    unit=k,
                    description=labels[0],
                    similarity=float(vals[0]),
                    concepts=labels,
                    scores=tuple(float(v) for v in vals),
                    interpretable=interpretable,
                    dead=bool(dead[k]),
                    label=labels[0],
                    **refs,
                )
            )
        return out


def _resolve_layers(store, layers) -> list[str]:
    available = list(store.layers)
    if layers is None:
        return available
    names = [layers] if isinstance(layers, str) else list(layers)
    if not names:
        raise NeurocoreError(f"layers is empty; give layer names of the store ({', '.join(available)}) or None for all")
    for name in names:
        if name not in store.layers:
            hint = close_matches(str(name), available)
            raise NeurocoreError(
                f"layer {name!r} is not in the activation store; it has: {', '.join(available)}"
                + (f"; close matches: {', '.join(hint)}" if hint else "")
            )
    return list(dict.fromkeys(names))


# ----------------------------------------------------------------------------------------------
# the pipeline


def dissect(
    model,
    layers,
    probe,
    concepts=None,
    scores=None,
    vlm=None,
    method: str | None = None,
    summary: str = "mean",
    cache_dir=None,
    batch_size: int = 64,
    device=None,
    progress: bool = True,
    transform=None,
    num_workers: int = 0,
    compositional: bool = False,
    template: str | None = None,
    *,
    similarity: str | None = None,
    layout="auto",
    **params,
) -> Explanations:
    """CLIP-Dissect in one call: record ``model`` over ``probe``, score the probe against the
    concepts, label every neuron of ``layers`` (the pipeline of ``neurocore dissect`` and the demo).

    Args:
        model: a ``torch.nn.Module`` (put in eval mode by the recording; never moved).
        layers: module name(s) as ``model.named_modules()`` spells them.
        probe: the probe images: a dataset yielding images or ``(image, label)`` (see
            :func:`neurocore.probe.record`).
        concepts: the concept set: anything :func:`neurocore.concepts.load_concepts` accepts (a
            built-in name such as ``"20k"``, a file path, a list of strings). May be None when
            ``scores`` is a ConceptScores (its concepts are used).
        scores: given image–concept scores: a ConceptScores, or a ``Tensor[N, M]`` whose columns are
            ``concepts`` and whose rows are the readable probe images in order, or all probe images
            in order (rows of images the recording skips are then dropped). Exactly one of
            ``scores`` and ``vlm``.
        vlm: a vision–language model adapter (:mod:`neurocore.vlm`) or a spec string
            ``"open_clip:NAME:TAG_OR_FILE"`` (loaded on ``device``); it encodes the probe images (with
            its own preprocessing: the probe must then yield PIL images) and the concepts.
        method: deprecated name of ``similarity``.
        summary: how activation maps are reduced per neuron (``"mean"``, ``"max"``, ``"first"``).
        layout: where batch and channels sit in each layer's output (``"auto"``, ``"NCHW"``, ``"NHWC"``,
            ``"NLC"``, ``"LNC"``, ``"NCL"``, ``"NC"``, or a dict layer -> layout; see
            :func:`neurocore.probe.record`).
        cache_dir: where activations and embeddings are cached (keyed by what determines them).
        batch_size, device, num_workers: for recording and encoding. device: where the model runs
            (default: where its parameters are).
        progress: progress bars.
        transform: the model's preprocessing, applied to probe images before the model (needed
            for datasets of PIL images); the vision–language model uses its own.
        compositional: search two-concept descriptions (needs ``vlm``; see :class:`ClipDissect`).
        template: prompt template for the concepts, e.g. ``"a photo of {}"`` (default none, as the
            paper).
        similarity: the similarity function (:data:`SIMILARITIES`; default ``"soft_wpmi"``).
        **params: :class:`ClipDissect` settings (``n_top_concepts``, ``interpretable_threshold``,
            ``composite_top_n``, ``n_top_images``, ``seed``) and similarity parameters.

    Returns:
        :class:`~neurocore.methods.Explanations` (see :meth:`ClipDissect.explain`).

    Raises:
        NeurocoreError: both or neither of ``scores``/``vlm``; a score tensor whose shape does not
            match the concepts or the probe; ``compositional`` without a vision–language model;
            invalid settings (checked before any recording).

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1), torch.nn.Flatten(1))
        >>> probe = [torch.rand(3, 1, 1) for _ in range(30)]
        >>> sims = torch.cat([p.view(1, 3) for p in probe])
        >>> ex = dissect(model, ["0"], probe, ["red", "green", "blue"], scores=sims, similarity="cos", progress=False)
        >>> len(ex), ex[0].description in ("red", "green", "blue")
        (2, True)
    """
    from neurocore._pipeline import run_dissection

    similarity = _similarity_keyword(similarity, method)
    explainer = ClipDissect(similarity=similarity, compositional=compositional, **params)
    run = run_dissection(
        model, layers, probe, explainer, scores=scores, concepts=concepts, vlm=vlm, template=template,
        summary=summary, layout=layout, transform=transform, batch_size=batch_size, device=device, cache_dir=cache_dir,
        num_workers=num_workers, progress=progress,
    )
    return run.explanations


def _similarity_keyword(similarity, method) -> str:
    """``similarity=``, or the deprecated ``method=`` with a warning; never both."""
    if method is not None:
        import warnings

        if similarity is not None:
            raise NeurocoreError("give similarity= only (method= is its deprecated old name); got both")
        warnings.warn("method= is deprecated: use similarity= (the same values)", DeprecationWarning, stacklevel=3)
        return method
    return "soft_wpmi" if similarity is None else similarity
