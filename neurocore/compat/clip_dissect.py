"""CLIP-Dissect's released ``similarity.py``, same names, arguments, defaults and results, on neurocore's kernels.

A script written for the authors' repository swaps one import and keeps everything else::

    # import similarity
    from neurocore.compat import clip_dissect as similarity

    scores = similarity.soft_wpmi(clip_feats, target_feats, device="cuda")   # [K, M]

Every function takes ``clip_feats (Tensor[N, M])``, the image–concept similarities of N probe images
and M concepts, and ``target_feats (Tensor[N, K])``, the summarised activations of K neurons on the
same images, and returns ``Tensor[K, M]`` on ``device``, as the released functions do (ALGORITHMS.md
§1; Oikarinen & Weng, ICLR 2023, eq. 1, 2, 8, 14). What changes is the speed and the memory:
``soft_wpmi`` and ``wpmi`` run the fused kernel :func:`neurocore.ops.soft_wpmi` (no N×M softmax copy,
no Python loop over neurons), the top-image selection runs :func:`neurocore.ops.topk`, and
``rank_reorder`` is vectorised over neurons and concepts.

Differences from the released code, all deliberate:

* ``device``: the released default ``"cuda"`` is kept (a drop-in must not change a default); on a
  machine without CUDA pass ``device="cpu"``: the error says so. No progress bars, no
  ``torch.cuda.empty_cache()``, no ``print``.
* Exactly equal activations: the released ``torch.topk`` orders them arbitrarily; here the lower image
  index comes first. Any other input gives the released numbers (to float64 rounding; the tests compare
  with a transcription of the released functions, near-ties included).
* ``rank_reorder``'s bug (a concept whose mean similarity over a neuron's top images is <= 0 gives NaN
  or inf, as does a neuron whose top activations are all equal) is reproduced by default, so scores
  match; ``fixed=True`` gives ``-inf`` and ``0`` instead (the conventions of
  :func:`neurocore.methods.clip_dissect.rank_reorder`).
* Inputs of float16/bfloat16 are computed in float32 and returned in their own dtype; ``soft_wpmi`` and
  ``wpmi`` reject NaN (the kernels do) where the released code would propagate it.

For neurocore's own pipeline use :mod:`neurocore.methods.clip_dissect`, which adds validation, a
seeded rank-reorder baseline and precomputed top images.

Example:
    >>> from neurocore.compat import clip_dissect as similarity
    >>> clip_feats, target_feats = torch.rand(300, 6), torch.randn(300, 3)
    >>> similarity.soft_wpmi(clip_feats, target_feats, device="cpu").shape
    torch.Size([3, 6])
"""

from __future__ import annotations

import math

import torch

from neurocore import ops
from neurocore._errors import NeurocoreError

__all__ = ["cos_similarity_cubed", "cos_similarity", "soft_wpmi", "wpmi", "rank_reorder"]

# Elements of one [top images, neurons, concepts] block in rank_reorder (bounds memory).
_BLOCK_ELEMENTS = 1 << 23


def _device(device) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise NeurocoreError(
            f"device={str(device)!r} (the released default) but torch sees no CUDA device; "
            "pass device='cpu' (or the device your tensors are on)"
        )
    return dev


def _prepare(clip_feats, target_feats, device) -> tuple[torch.Tensor, torch.Tensor, torch.dtype]:
    """Both inputs on ``device`` in one computing dtype (float32 or float64); the dtype to return."""
    for name, t, shape in (("clip_feats", clip_feats, "[N, M]"), ("target_feats", target_feats, "[N, K]")):
        if not isinstance(t, torch.Tensor) or t.dim() != 2:
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise NeurocoreError(f"{name} must be a 2-D Tensor{shape}; got {got}")
    if clip_feats.shape[0] != target_feats.shape[0]:
        raise NeurocoreError(
            f"clip_feats has {clip_feats.shape[0]} rows (images) but target_feats has {target_feats.shape[0]}: "
            "row i of both must be probe image i"
        )
    dev = _device(device)
    out_dtype = torch.promote_types(clip_feats.dtype, target_feats.dtype)
    if not out_dtype.is_floating_point:
        out_dtype = torch.get_default_dtype()
    work = torch.float64 if out_dtype == torch.float64 else torch.float32
    return clip_feats.to(dev, work), target_feats.to(dev, work), out_dtype


def _top_rows(target_feats: torch.Tensor, k: int, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not 0 < k <= target_feats.shape[0]:
        # the released torch.topk raises here too ("selected index k out of range")
        raise NeurocoreError(
            f"{what} must be between 1 and the number of images N={target_feats.shape[0]}; got {k}"
        )
    return ops.topk(target_feats, k)


def _released_marginal_correction(L_dtype: torch.dtype, K: int, lam: float) -> float:
    # The released code subtracts log(K * torch.ones([1])): log K in the default dtype (float32), also
    # for float64 inputs. The kernel subtracts log K exactly; add back the difference so that float64
    # scores equal the released ones to float64 rounding.
    released = torch.log(K * torch.ones([1])).to(torch.float64).item()
    return lam * (released - math.log(K)) if L_dtype == torch.float64 else 0.0


def _soft_wpmi_released(clip_feats, target_feats, top_k, a, lam, device, min_prob, p) -> torch.Tensor:
    sims, acts, out_dtype = _prepare(clip_feats, target_feats, device)
    idx = _top_rows(acts, int(top_k), "top_k")[1]
    out = ops.soft_wpmi(sims, idx, p, a=float(a), lam=float(lam), eps=float(min_prob))
    fix = _released_marginal_correction(out.dtype, acts.shape[1], float(lam))
    if fix:
        out = out + fix
    return out.to(out_dtype)


def soft_wpmi(clip_feats, target_feats, top_k=100, a=10, lam=1, device="cuda", min_prob=1e-7, p_start=0.998, p_end=0.97):
    """SoftWPMI (paper eq. 14), the released ``similarity.soft_wpmi``, on the fused kernel.

    With ``P = softmax(a * clip_feats, dim=1)`` and neuron j's top images ``x_0, x_1, ...`` (by
    ``target_feats[:, j]``, highest first)::

        L[j, m]   = sum_{i < top_k} log(1 + p_i (P[x_i, m] - 1) + min_prob),  p_i = p_start - (i / top_k)(p_start - p_end)
        out[j, m] = L[j, m] - lam * (logsumexp_j' L[j', m] - log K)

    ``p_i`` is computed in the default dtype (float32) as in the released code, also for float64
    inputs; the marginal runs over the K neurons of the call.

    Args:
        clip_feats (Tensor[N, M]): image–concept similarities (finite).
        target_feats (Tensor[N, K]): activations of the same images (no NaN).
        top_k: images per neuron (1 <= top_k <= N). a: softmax temperature. lam: weight of the
            marginal. device: where to compute and return (released default ``"cuda"``).
        min_prob: added inside the log (a zero probability would give -inf).
        p_start, p_end: membership probability of the first and the ``top_k``-th image.

    Returns:
        Tensor[K, M] on ``device``, in the inputs' (promoted) floating dtype.

    Raises:
        NeurocoreError: shapes that do not match, ``top_k`` outside [1, N], CUDA asked for but absent.
        RuntimeError: NaN or inf in the inputs (from the kernel).

    Example:
        >>> clip_feats = torch.rand(300, 5)
        >>> target_feats = clip_feats[:, [3, 1]] + 0.01 * torch.randn(300, 2)
        >>> soft_wpmi(clip_feats, target_feats, device="cpu").argmax(1).tolist()
        [3, 1]
    """
    p = ops.soft_wpmi_weights(int(top_k), p_start, p_end, dtype=torch.get_default_dtype())
    return _soft_wpmi_released(clip_feats, target_feats, top_k, a, lam, device, min_prob, p)


def wpmi(clip_feats, target_feats, top_k=28, a=2, lam=0.6, device="cuda", min_prob=1e-7):
    """WPMI (paper eq. 8), the released ``similarity.wpmi``: SoftWPMI with membership 1 for the top
    ``top_k`` images::

        out[j, m] = sum_{i < top_k} log(P[x_i, m] + min_prob) - lam * (logsumexp_j' L[j', m] - log K)

    Arguments, return value and errors as :func:`soft_wpmi` (released defaults ``top_k=28, a=2,
    lam=0.6``).

    Example:
        >>> wpmi(torch.rand(100, 5), torch.randn(100, 3), device="cpu").shape
        torch.Size([3, 5])
    """
    p = torch.ones(int(top_k), dtype=torch.float64)
    return _soft_wpmi_released(clip_feats, target_feats, top_k, a, lam, device, min_prob, p)


def _unit_columns(x: torch.Tensor, min_norm: float | None) -> torch.Tensor:
    norm = torch.norm(x, p=2, dim=0, keepdim=True)
    return x / (norm if min_norm is None else torch.clip(norm, min_norm))


def cos_similarity_cubed(clip_feats, target_feats, device="cuda", batch_size=10000, min_norm=1e-3):
    """The released ``similarity.cos_similarity_cubed``: cosine of centred, cubed columns::

        f(v) = (v - mean(v))^3 / max(||(v - mean(v))^3||, min_norm)
        out[j, m] = <f(target_feats[:, j]), f(clip_feats[:, m])>

    Args:
        clip_feats (Tensor[N, M]), target_feats (Tensor[N, K]): as :func:`soft_wpmi`.
        device: where to compute and return (released default ``"cuda"``).
        batch_size: columns per block of the product (bounds the memory of one block; the result
            does not depend on it).
        min_norm: floor of the norm (a near-constant column scores near 0 instead of being blown up).

    Returns:
        Tensor[K, M] on ``device``, in [-1, 1].

    Example:
        >>> target_feats = torch.rand(50, 2)
        >>> clip_feats = torch.cat([torch.rand(50, 3), target_feats[:, 1:]], 1)
        >>> int(cos_similarity_cubed(clip_feats, target_feats, device="cpu")[1].argmax())
        3
    """
    sims, acts, out_dtype = _prepare(clip_feats, target_feats, device)
    a = _unit_columns((acts - acts.mean(dim=0, keepdim=True)) ** 3, min_norm)
    out = sims.new_empty(acts.shape[1], sims.shape[1])
    mean = sims.mean(dim=0, keepdim=True)
    step = max(1, int(batch_size))
    for m0 in range(0, sims.shape[1], step):
        block = sims[:, m0 : m0 + step] - mean[:, m0 : m0 + step]
        out[:, m0 : m0 + step] = a.T @ _unit_columns(block**3, min_norm)
    return out.to(out_dtype)


def cos_similarity(clip_feats, target_feats, device="cuda"):
    """The released ``similarity.cos_similarity`` (paper eq. 1): cosine between each neuron's column
    and each concept's column over the images, without centring. As released, a column of zeros
    gives NaN (:func:`neurocore.methods.clip_dissect.cos` gives 0).

    Returns:
        Tensor[K, M] on ``device``, in [-1, 1].

    Example:
        >>> target_feats = torch.rand(50, 2)
        >>> clip_feats = torch.cat([target_feats[:, :1], torch.rand(50, 3)], 1)
        >>> int(cos_similarity(clip_feats, target_feats, device="cpu")[0].argmax())
        0
    """
    sims, acts, out_dtype = _prepare(clip_feats, target_feats, device)
    return (_unit_columns(acts, None).T @ _unit_columns(sims, None)).to(out_dtype)


def rank_reorder(clip_feats, target_feats, device="cuda", p=3, top_fraction=0.05, scale_p=0.5, *, fixed=False):
    """Rank reorder (paper eq. 2 and A.1), the released ``similarity.rank_reorder``, vectorised.

    For neuron j, take its ``n = int(N * top_fraction)`` most activating images with activations
    ``q_0 >= ... >= q_{n-1}``; for concept m give each of them the activation whose rank equals the
    image's rank by ``clip_feats[:, m]`` (``q'``). Then::

        err[j, m]  = mean_i |q_i - q'_i|^p / base[j]
        base[j]    = mean over 5 random orderings pi and i of |q_(i) - q_(pi(i))|^p
        out[j, m]  = -err[j, m] / mean_i(clip_feats[x_i, m]) ** scale_p

    The random orderings are drawn as in the released code, ``torch.randperm(n)`` five times per neuron
    from torch's global generator (seed it with ``torch.manual_seed`` for repeatable scores): the same
    seed gives the released code's numbers.

    Args:
        clip_feats (Tensor[N, M]), target_feats (Tensor[N, K]): as :func:`soft_wpmi`.
        device: where to compute and return (released default ``"cuda"``).
        p: exponent of the error. top_fraction: fraction of the probe images used per neuron
            (``int(N * top_fraction) >= 1``). scale_p: exponent of the mean similarity.
        fixed: False (default) reproduces the released bug: a concept whose mean similarity over the
            neuron's top images is <= 0 scores NaN (negative mean) or -inf (zero), and a neuron whose
            top activations are all equal scores NaN. True scores those concepts ``-inf`` and such a
            neuron 0 (as :func:`neurocore.methods.clip_dissect.rank_reorder`).

    Returns:
        Tensor[K, M] on ``device``, <= 0 where defined.

    Raises:
        NeurocoreError: shapes that do not match, ``int(N * top_fraction) < 1``.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> target_feats = torch.rand(200, 2)
        >>> clip_feats = torch.cat([torch.rand(200, 3), target_feats[:, :1]], 1)
        >>> int(rank_reorder(clip_feats, target_feats, device="cpu", top_fraction=0.2)[0].argmax())
        3
    """
    sims, acts, out_dtype = _prepare(clip_feats, target_feats, device)
    N, K = acts.shape
    M = sims.shape[1]
    n = int(N * top_fraction)
    if n < 1:
        raise NeurocoreError(
            f"rank_reorder: int(N * top_fraction) = int({N} * {top_fraction}) = {n}: no image per neuron; "
            "use more probe images or a larger top_fraction"
        )
    vals, idx = _top_rows(acts, n, "int(N * top_fraction)")  # [n, K], descending
    asc = vals.flip(0)  # the released "sorted_target": ascending
    # The released baseline: per neuron, in neuron order, five torch.randperm(n) from the global CPU
    # generator; drawing them in the same order gives the same numbers.
    perms = torch.stack([torch.randperm(n) for _ in range(5 * K)]).to(sims.device).view(K, 5, n)
    asc_t = asc.T.unsqueeze(1)  # [K, 1, n]
    shuffled = asc_t.expand(K, 5, n).gather(2, perms)
    base = (asc_t - shuffled).abs().pow(p).mean(dim=(1, 2))  # [K]
    out = sims.new_empty(K, M)
    chunk = max(1, _BLOCK_ELEMENTS // max(1, n * M))
    m_chunk = min(M, max(1, _BLOCK_ELEMENTS // max(1, n * chunk)))
    for k0 in range(0, K, chunk):
        ks = slice(k0, min(K, k0 + chunk))
        for m0 in range(0, M, m_chunk):
            ms = slice(m0, min(M, m0 + m_chunk))
            block = sims[:, ms][idx[:, ks]]  # [n, c, mc]
            mean = block.mean(0)
            ranks = torch.argsort(torch.argsort(block, dim=0), dim=0)
            reordered = asc[:, ks].unsqueeze(-1).expand_as(block).gather(0, ranks)
            err = (vals[:, ks].unsqueeze(-1) - reordered).abs().pow(p).mean(0)
            base_c = base[ks].unsqueeze(-1)
            if not fixed:
                out[ks, ms] = -(err / base_c / mean**scale_p)
                continue
            ratio = torch.where(base_c > 0, err / base_c.clamp_min(torch.finfo(err.dtype).tiny), torch.zeros_like(err))
            if scale_p == 0:
                out[ks, ms] = -ratio
            else:
                scaled = -ratio / mean.clamp_min(torch.finfo(mean.dtype).tiny) ** scale_p
                out[ks, ms] = torch.where(mean > 0, scaled, torch.full_like(scaled, -math.inf))
    return out.to(out_dtype)
