"""The learning step of Linear Explanations (ALGORITHMS.md §2, steps 1-4; paper §3.2 and A.3).

Three pure functions over one layer's neurons at once:

* :func:`elastic_net` -- step 2: a sparse weight vector per neuron on standardised data, solved for
  all neurons together from one Gram matrix (coordinate descent on per-neuron working sets, then an
  exact solve on the found support).
* :func:`rank_concepts` -- step 3: concepts by signed weight, descending.
* :func:`greedy_search` -- step 4: greedy forward selection of at most ``max_length`` concepts per
  neuron, every candidate model of every neuron fitted in closed form by
  :func:`neurocore.ops.lstsq_gram` (one call per round) from Gram statistics computed once.

Sharding (``engine="ray"``, :func:`neurocore.scale.map_neuron_ranges`): what every neuron shares is
computed once on the driver (the standardised Gram matrix ``G`` and the cross-products ``C`` of the
elastic net; the greedy search's Gram statistics over the concepts any neuron can reach), then Ray
tasks solve runs of whole elastic-net chunks (a chunk's coordinate descent batches its neurons, so
its rounding depends on which neurons share it: chunks are never split) and the greedy rounds of
neuron ranges (per neuron: any range). The results equal the local ones bit for bit.

:mod:`neurocore.methods.linear` builds the method on these.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch

from neurocore import ops
from neurocore._errors import NeurocoreError
from neurocore.scale._neurons import check_engine, map_neuron_ranges

__all__ = ["GreedyResult", "elastic_net", "rank_concepts", "greedy_search", "max_ranks_examined"]

# The released code's elastic-net strength: GLM-SAGA's max_reg 0.05 divided by alpha (= eta) 0.99.
DEFAULT_LAM = 0.05 / 0.99
DEFAULT_ETA = 0.99

_ROW_CHUNK = 4096  # rows per block when streaming a split through the Gram products
_WS_GROW = 64  # concepts a neuron's working set gains at least per working-set round
_INNER_FRACTION = 1e-3  # a working-set round solves to this fraction of the current violation
_MAX_WAIT = 8  # most sweeps between two exact-solve tries on a problem
_BLOCK_BYTES = 128 * 2**20  # bound on one batch of gathered [S, S] working-set Gram blocks (held twice)
_MAX_SET = 32  # lstsq_gram's largest set size (csrc/kernels/lstsq_gram.h, kMaxSetSize)


# ----------------------------------------------------------------------------------------------
# input checks


def _check_matrix(x, name: str, fn: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise NeurocoreError(f"{fn}: {name} must be a torch.Tensor; got {type(x).__name__}")
    if x.dim() != 2:
        raise NeurocoreError(f"{fn}: {name} must be 2-D; got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise NeurocoreError(f"{fn}: {name} must be a floating tensor; got dtype {x.dtype} (use .float())")
    if not bool(torch.isfinite(x).all()):
        bad = (~torch.isfinite(x)).any(0).nonzero().flatten()[:5].tolist()
        raise NeurocoreError(
            f"{fn}: {name} holds NaN or inf (columns {bad}...); drop or repair those samples/columns first"
        )
    return x


def _check_rows(a: torch.Tensor, b: torch.Tensor, names: tuple[str, str], fn: str, at_least: int) -> None:
    if a.shape[0] != b.shape[0]:
        raise NeurocoreError(
            f"{fn}: {names[0]} and {names[1]} must have the same number of rows (samples); "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if a.shape[0] < at_least:
        raise NeurocoreError(f"{fn}: {names[0]} needs at least {at_least} samples; got {a.shape[0]}")


def _check_number(value, name: str, fn: str, low: float, high: float = math.inf, low_open: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and value <= high
    if not ok:
        interval = f"{'(' if low_open else '['}{low}, {high}{']' if math.isfinite(high) else ')'}"
        raise NeurocoreError(f"{fn}: {name} must be a finite number in {interval}; got {value!r}")
    return float(value)


def _check_int(value, name: str, fn: str, low: int, high: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise NeurocoreError(f"{fn}: {name} must be an integer {bound}; got {value!r}")
    return value


def _check_engine(engine, shards, address, device: torch.device, fn: str) -> None:
    check_engine(engine, shards, address, fn)
    if engine == "ray" and device.type != "cpu":
        raise NeurocoreError(
            f"{fn}: engine='ray' runs on the Ray cluster's CPU workers; got inputs on {device}: pass CPU "
            "tensors, or use engine='local' on the GPU"
        )


# ----------------------------------------------------------------------------------------------
# step 1-2: standardisation and the elastic net


def _standardisation(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Column mean and unbiased standard deviation (float64) of X, and which columns are constant.

    A column counts as constant when its standard deviation is within rounding noise of its
    magnitude (16 ulp of X's dtype): standardising it would blow that noise up to unit variance.
    Sums accumulate in float64; the centring runs in X's precision (at least float32), exact for a
    constant column (a float64 mean of n equal floats is that float).
    """
    n, M = X.shape
    work = torch.promote_types(X.dtype, torch.float32)
    total = torch.zeros(M, dtype=torch.float64, device=X.device)
    scale = torch.zeros(M, dtype=torch.float64, device=X.device)
    for start in range(0, n, _ROW_CHUNK):
        block = X[start : start + _ROW_CHUNK]
        total += block.sum(0, dtype=torch.float64)
        scale = torch.maximum(scale, block.abs().amax(0).double())
    mean = total / n
    mean_w = mean.to(work)
    var = torch.zeros(M, dtype=torch.float64, device=X.device)
    for start in range(0, n, _ROW_CHUNK):
        d = X[start : start + _ROW_CHUNK].to(work) - mean_w
        var += (d * d).sum(0, dtype=torch.float64)
    std = torch.sqrt(var / (n - 1))
    constant = std <= 16 * torch.finfo(X.dtype).eps * scale
    return mean, std, constant


def _gram(P: torch.Tensor, acts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``G = Z^T Z / n`` [M, M] and ``C = Z^T Q / n`` [M, K] (float64) of the standardised train data.

    Z is P standardised per column, Q the activations standardised per neuron; constant columns and
    constant neurons are zero in Z and Q. Products run in the inputs' precision (at least float32)
    per block of rows, summed in that precision over up to 8 blocks, and accumulated in float64.
    Also returns the constant masks.
    """
    n = P.shape[0]
    mean_p, std_p, const_p = _standardisation(P)
    mean_q, std_q, const_q = _standardisation(acts)
    work = torch.promote_types(torch.promote_types(P.dtype, acts.dtype), torch.float32)
    inv_p = torch.where(const_p, torch.zeros_like(std_p), 1.0 / std_p).to(work)
    inv_q = torch.where(const_q, torch.zeros_like(std_q), 1.0 / std_q).to(work)
    mean_p, mean_q = mean_p.to(work), mean_q.to(work)
    M, K = P.shape[1], acts.shape[1]
    G = torch.zeros(M, M, dtype=torch.float64, device=P.device)
    C = torch.zeros(M, K, dtype=torch.float64, device=P.device)
    G_part = torch.zeros(M, M, dtype=work, device=P.device)
    C_part = torch.zeros(M, K, dtype=work, device=P.device)
    starts = list(range(0, n, _ROW_CHUNK))
    for i, start in enumerate(starts):
        z = (P[start : start + _ROW_CHUNK].to(work) - mean_p) * inv_p
        q = (acts[start : start + _ROW_CHUNK].to(work) - mean_q) * inv_q
        G_part.addmm_(z.T, z)
        C_part.addmm_(z.T, q)
        if i % 8 == 7 or i == len(starts) - 1:
            G += G_part
            C += C_part
            G_part.zero_()
            C_part.zero_()
    return G / n, C / n, const_p, const_q


def _kkt_residual(R: torch.Tensor, w: torch.Tensor, l1: float, l2: float) -> torch.Tensor:
    """Elementwise violation of the optimality conditions, given ``R = c - G w``.

    Stationarity of ``1/2 w^T G w - c^T w + l1 |w|_1 + l2/2 |w|^2`` is ``R - l2 w in l1 d|w|``:
    ``|R - l2 w - l1 sign(w)|`` where w != 0, ``max(|R| - l1, 0)`` where w = 0.
    """
    nonzero = w != 0
    on = (R - l2 * w - l1 * torch.sign(w)).abs()
    off = torch.clamp(R.abs() - l1, min=0.0)
    return torch.where(nonzero, on, off)


def _positions(mask: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row of ``mask [r, M]``, the column indices of its True entries, ascending, padded to
    ``size`` (``size`` >= the largest row count): ``(pos [r, size], live [r, size])``, padding 0."""
    rows, cols = mask.nonzero(as_tuple=True)  # row-major: each row's columns ascending
    count = mask.sum(1)
    slot = torch.arange(rows.numel(), device=mask.device) - (torch.cumsum(count, 0) - count)[rows]
    pos = torch.zeros(mask.shape[0], size, dtype=torch.int64, device=mask.device)
    pos[rows, slot] = cols
    live = torch.arange(size, device=mask.device).unsqueeze(0) < count.unsqueeze(1)
    return pos, live


def _polish(Gs, cs, w, valid, rows, l1: float, l2: float, tol: float):
    """Exact solution on the current support and signs of problems ``rows`` of a batch:
    ``(G_SS + l2 I) w_S = c_S - l1 sign(w_S)``.

    This is the elastic net's optimum whenever the support and signs are the optimal ones, which
    the returned ``ok`` checks (the optimality conditions to ``tol`` on all slots); ``solved`` says
    whether the system could be solved at all (it is singular only without an L2 part). Gathers only
    the needed entries of ``Gs [nb, S, S]``. Returns ``(w [r, S], ok [r], solved [r])``.
    """
    S = Gs.shape[1]
    w, cs, valid = w[rows], cs[rows], valid[rows]
    r = rows.numel()
    support = (w != 0) & valid
    size = int(support.sum(1).max())
    if size == 0:
        cand = torch.zeros_like(w)
        ok = (_kkt_residual(cs, cand, l1, l2) * valid).amax(1) <= tol
        return cand, ok, torch.ones_like(ok)
    pos, live = _positions(support, size)
    base = (rows * S * S).view(-1, 1, 1)
    A = torch.take(Gs, base + pos.unsqueeze(2) * S + pos.unsqueeze(1))  # [r, size, size]
    pair = live.unsqueeze(2) & live.unsqueeze(1)
    eye = torch.eye(size, dtype=A.dtype, device=A.device)
    ridge = torch.full((r, size), l2, dtype=A.dtype, device=A.device).masked_fill(~live, 1.0)
    # unused slots: identity rows with a zero right-hand side
    A = torch.where(pair, A, torch.zeros_like(A)) + eye * ridge.unsqueeze(1)
    rhs = torch.where(live, cs.gather(1, pos) - l1 * torch.sign(w.gather(1, pos)), torch.zeros_like(A[:, 0]))
    sol, info = torch.linalg.solve_ex(A, rhs.unsqueeze(2))
    sol = torch.where(live, sol.squeeze(2), torch.zeros_like(rhs))
    cand = torch.zeros_like(w).scatter(1, pos, sol)
    # R = c - G w for the candidate: only the support's columns of G are needed
    cols = torch.take(Gs, base + torch.arange(S, device=w.device).view(1, -1, 1) * S + pos.unsqueeze(1))
    grad = cs - torch.bmm(cols, sol.unsqueeze(2)).squeeze(2)
    kkt = (_kkt_residual(grad, cand, l1, l2) * valid).amax(1)
    solved = (info == 0) & torch.isfinite(sol).all(1)
    return cand, solved & (kkt <= tol), solved


def _sign_step(w: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Move each row of ``w`` towards ``target`` (same support) until the first weight reaches zero:
    ``w + t (target - w)`` with the largest ``t <= 1`` keeping every sign, blocking weights set to 0."""
    cross = (w != 0) & (torch.sign(target) != torch.sign(w))
    t = torch.where(cross, w / torch.where(cross, w - target, torch.ones_like(w)), torch.ones_like(w))
    t_min = t.amin(1, keepdim=True)
    out = w + t_min * (target - w)
    return torch.where(cross & (t <= t_min), torch.zeros_like(out), out)


def _cd_batch(Gs, cs, w, valid, l1: float, l2: float, tol: torch.Tensor, budget: torch.Tensor):
    """Coordinate descent on a batch of per-neuron problems ``[nb, S, S]`` (padded slots inert).

    Problem i runs sweeps until it meets the optimality conditions to ``tol[i]`` (checked after each
    sweep) or has run ``budget[i]`` sweeps. Once a sweep leaves a problem's signs unchanged, an
    exact solve on its support is tried: accepted if it meets the optimality conditions, otherwise
    used for a sign step (:func:`_sign_step`); after a miss the next try waits twice as long (at
    most ``_MAX_WAIT`` sweeps). Returns ``(w, sweeps [nb])``.
    """
    out = w.clone()
    used = torch.zeros_like(budget)
    idx = torch.arange(w.shape[0], device=w.device)  # problems still in the batch
    S = w.shape[1]
    while idx.numel():
        # Per-coordinate state as [S, nb] rows (neurons last, contiguous): one sweep reads every
        # Gram block once, in order, with a handful of tensor calls per coordinate.
        nb = idx.numel()
        finished = torch.zeros(nb, dtype=torch.bool, device=w.device)
        next_try = torch.zeros(nb, dtype=torch.int64, device=w.device)
        wait = torch.ones(nb, dtype=torch.int64, device=w.device)
        diag = torch.diagonal(Gs, dim1=1, dim2=2)
        inv = torch.where(valid, 1.0 / (diag + l2), torch.zeros_like(diag))  # 0: padded slots stay 0
        G_rows = Gs.permute(1, 2, 0).contiguous().unbind(0)  # row j of every Gram block, [S, nb]
        d_rows, i_rows = diag.T.contiguous().unbind(0), inv.T.contiguous().unbind(0)
        wT = w.T.contiguous()
        gradT = (cs - torch.bmm(Gs, w.unsqueeze(2)).squeeze(2)).T.contiguous()  # R = c - G w
        w_rows, g_rows = wT.unbind(0), gradT.unbind(0)
        while True:
            signs = torch.sign(wT)
            for j in range(S):
                z = torch.addcmul(g_rows[j], d_rows[j], w_rows[j])
                new = (z - z.clamp(-l1, l1)).mul_(i_rows[j])  # soft threshold, then scale
                delta = new - w_rows[j]
                if not bool(delta.any()):
                    continue
                w_rows[j].copy_(new)
                gradT.addcmul_(G_rows[j], delta, value=-1.0)  # G symmetric: row j is column j
            used[idx[~finished]] += 1
            w, grad = wT.T, gradT.T
            # the margin leaves room for the rounding of the caller's full-gradient check
            done = ~finished & ((_kkt_residual(grad, w, l1, l2) * valid).amax(1) <= 0.5 * tol)
            # Coordinate descent creeps towards the optimum once the signs stop changing; the exact
            # solve on the support jumps there.
            steps = used[idx]
            settled = (signs == torch.sign(wT)).all(0) & ~finished & ~done & (next_try <= steps)
            polished = torch.zeros_like(done)
            if bool(settled.any()):
                rows = settled.nonzero().flatten()
                cand, ok, solved = _polish(Gs, cs, w, valid, rows, l1, l2, 0.5 * tol[rows])
                out[idx[rows[ok]]] = cand[ok]
                polished[rows[ok]] = True
                step = solved & ~ok
                if bool(step.any()):
                    # A miss still points downhill: the objective on the current signs' orthant is
                    # a quadratic minimised by the solve, so stepping towards it until the first
                    # weight reaches zero lowers the objective and drops that weight (the
                    # feature-sign step of Lee et al., 2007). Collinear concepts (superclass
                    # columns are sums of class columns) leave coordinate descent crawling
                    # otherwise.
                    moved = rows[step]
                    stepped = _sign_step(w[moved], cand[step])
                    wT[:, moved] = stepped.T
                    gradT[:, moved] = (cs[moved] - torch.bmm(Gs[moved], stepped.unsqueeze(2)).squeeze(2)).T
                miss = rows[~ok]
                next_try[miss] = steps[miss] + wait[miss]
                wait[miss] = torch.clamp(wait[miss] * 2, max=_MAX_WAIT)
            spent = ~finished & ~polished & (done | (steps >= budget[idx]))
            out[idx[spent]] = w[spent]
            finished |= spent | polished
            if bool(finished.all()):
                idx = idx[:0]
                break
            # drop finished problems once they are a quarter of the batch (each drop copies the rest)
            if 4 * int(finished.sum()) >= nb:
                keep = ~finished
                idx, w, Gs, cs, valid, tol = idx[keep], w[keep], Gs[keep], cs[keep], valid[keep], tol[keep]
                break
    return out, used


def _solve_working_sets(G, C, W, ws, todo, l1: float, l2: float, tol: torch.Tensor, budget: torch.Tensor):
    """Coordinate descent for neurons ``todo`` (rows of C and W, both [Kc, M]), each restricted to
    its working set ``ws[k]``, solved to its ``tol[k]`` within ``budget[k]`` sweeps; updates W in
    place and returns the sweeps each neuron of ``todo`` ran. Batches neurons of similar
    working-set size so that the gathered ``[nb, S, S]`` blocks stay under ``_BLOCK_BYTES``.
    """
    sizes = ws[todo].sum(1)
    order = torch.argsort(sizes)
    used = torch.zeros(todo.numel(), dtype=torch.int64, device=C.device)
    todo_sorted, sizes = todo[order], sizes[order].tolist()
    start = 0
    while start < len(sizes):
        # the batch's padded size is its last (largest) member's
        end = start + 1
        while end < len(sizes) and (end - start + 1) * sizes[end] ** 2 * 8 <= _BLOCK_BYTES:
            end += 1
        ks, S = todo_sorted[start:end], sizes[end - 1]
        at = order[start:end]
        start = end
        if S == 0:
            continue
        pos, valid = _positions(ws[ks], S)
        Gs = G[pos.unsqueeze(2), pos.unsqueeze(1)]
        Gs = torch.where(valid.unsqueeze(2) & valid.unsqueeze(1), Gs, torch.zeros_like(Gs))
        rows = ks.unsqueeze(1).expand_as(pos)
        cs = torch.where(valid, C[rows, pos], torch.zeros_like(Gs[:, 0]))
        w0 = torch.where(valid, W[rows, pos], torch.zeros_like(Gs[:, 0]))
        w, sweeps = _cd_batch(Gs, cs, w0, valid, l1, l2, tol[ks], budget[ks])
        W[rows[valid], pos[valid]] = w[valid]
        used[at] = sweeps
    return used


def _residual(G, C, W):
    """``R = C - W G`` for sparse rows of ``W [Kt, M]`` (G symmetric): a sparse-dense product costs
    (support size) x M per neuron instead of M x M (measured ~5x faster than a dense product over
    the union of supports, and than gathering G's rows per neuron)."""
    return C - torch.sparse.mm(W.to_sparse(), G)


def _elastic_net_chunk(G, C, usable, l1: float, l2: float, tol: float, max_iter: int):
    """Working-set loop for one chunk of neurons, ``C [Kc, M]`` (one row per neuron): returns the
    weights ``W [Kc, M]`` and each neuron's final violation of the optimality conditions."""
    Kc, M = C.shape
    W = torch.zeros(Kc, M, dtype=torch.float64, device=C.device)
    ws = torch.zeros(Kc, M, dtype=torch.bool, device=C.device)
    todo = torch.arange(Kc, device=C.device)
    kkt = torch.zeros(Kc, dtype=torch.float64, device=C.device)
    sweeps_left = torch.full((Kc,), max_iter, dtype=torch.int64, device=C.device)  # per neuron
    while True:
        Wt = W[todo]
        resid = _kkt_residual(_residual(G, C[todo], Wt), Wt, l1, l2)
        kkt[todo] = resid.amax(1)
        open_ = (kkt[todo] > tol) & (sweeps_left[todo] > 0)
        todo, Wt, resid = todo[open_], Wt[open_], resid[open_]
        if todo.numel() == 0:
            break
        # grow each open neuron's working set by its worst violators among zero weights (at least
        # _WS_GROW, or as many as it has non-zeros: the sets double while the support grows)
        viol = torch.where((Wt == 0) & usable & (resid > tol), resid, torch.zeros_like(resid))
        grow = torch.clamp(Wt.ne(0).sum(1), min=_WS_GROW)
        top = min(M, int(grow.max()))
        val, pos = torch.topk(viol, top, dim=1)
        take = (val > 0) & (torch.arange(top, device=C.device).unsqueeze(0) < grow.unsqueeze(1))
        rows = todo.unsqueeze(1).expand_as(pos)
        ws[rows[take], pos[take]] = True
        ws[todo] |= Wt != 0
        # Solving a working set far beyond the accuracy of the whole problem is wasted once the set
        # grows: each round asks for a fixed fraction of the current violation (at least tol).
        inner = torch.clamp(_INNER_FRACTION * kkt, min=tol)
        sweeps_left[todo] -= _solve_working_sets(G, C, W, ws, todo, l1, l2, inner, sweeps_left)
    return W, kkt


def _elastic_net_job(chunks: range, shared) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Weights and violations of chunks ``chunks`` of the live neurons (a
    :func:`~neurocore.scale.map_neuron_ranges` job)."""
    G, C, usable, l1, l2, tol, max_iter, live, chunk_size = shared
    out = []
    for c in chunks:
        ks = live[c * chunk_size : (c + 1) * chunk_size]
        out.append(_elastic_net_chunk(G, C[:, ks].T.contiguous(), usable, l1, l2, tol, max_iter))
    return out


def elastic_net(
    train_P: torch.Tensor,
    train_acts: torch.Tensor,
    lam: float = DEFAULT_LAM,
    eta: float = DEFAULT_ETA,
    max_iter: int = 1000,
    tol: float = 1e-6,
    chunk_size: int = 1024,
    *,
    engine: str = "local",
    shards: int | None = None,
    address: str | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Elastic-net weights of every neuron on standardised data (LE step 1-2; paper Eq. 6).

    Each concept column of ``train_P`` is standardised with its train mean and unbiased (n-1)
    standard deviation, and so is each neuron's activation (the released code's ``torch.std``);
    then for every neuron k, with ``Z`` the standardised concepts and ``q`` the standardised
    activation::

        w_k = argmin_w  1/(2n) ||Z w - q||^2 + lam * (eta ||w||_1 + (1 - eta)/2 ||w||^2)

    This is the released code's objective (GLM-SAGA, family ``gaussian``: ``0.5 * mse`` summed over
    neurons, ``lam * alpha * |W|_1 + 0.5 * lam * (1 - alpha) * |W|^2`` with ``alpha = eta``; its
    ``lam = max_reg / alpha = 0.05 / 0.99``) and scikit-learn's ``ElasticNet(alpha=lam,
    l1_ratio=eta, fit_intercept=False)`` on ``(Z, q)``. The paper's Eq. 6 omits the ``1/(2n)``; the
    code has it. Centring makes the intercept zero, so none is fitted. Columns or neurons that are
    constant on train (up to rounding) get weight 0.

    Solver: ``G = Z^T Z / n`` (M x M, float64) and ``C = Z^T Q / n`` are formed once; then, per
    chunk of neurons, coordinate descent on growing per-neuron working sets batched over neurons,
    with exact solves on the support once the signs settle (a failed one still gives a
    sign-preserving descent step, which rescues the exactly collinear label-mode columns), and a
    check of the optimality conditions over all M concepts: the result satisfies them to ``tol``.
    Without an L1 part (``lam = 0`` or ``eta = 0``) the answer is the closed-form ridge / least
    squares. Memory: ``8 M^2`` bytes for G plus ``O(M * chunk_size)``; time ``n M^2`` for G
    (float32 products for float32 inputs). A ResNet-50 layer4 (K = 2,048) on 7,000 train images
    takes ~2-3 s with M = 600 label columns and ~50-90 s with M = 8,438 concepts on one core of
    a shared 2-vCPU machine (benchmarks/RESULTS.md).

    Args:
        train_P (Tensor[n, M]): concept activations of the train split (float).
        train_acts (Tensor[n, K]): the neurons' activations on the same samples (float).
        lam: regularisation strength, >= 0 (default ``0.05 / 0.99`` ~= 0.0505, the released
            value). ``lam = 0`` gives least squares (minimum-norm when columns are collinear).
        eta: share of L1 in the penalty, in [0, 1] (default 0.99; 0 = ridge, solved in closed
            form, like ``lam = 0``).
        max_iter: most coordinate-descent sweeps per neuron; a warning names the neurons that did
            not meet ``tol`` by then (their weights are the last iterate).
        tol: largest violation of the optimality conditions accepted (on the standardised scale,
            where the gradient entries are correlations).
        chunk_size: neurons solved together (bounds the ``[M, chunk_size]`` float64 work arrays). A
            chunk's weights depend (in the last bits) on which neurons share it, never on the others.
        engine: ``"local"`` (default) or ``"ray"``: G and C are formed here once, then runs of whole
            chunks are solved by Ray tasks (:func:`neurocore.scale.map_neuron_ranges`); the weights
            equal the local ones bit for bit (each chunk is the same call on the same inputs), so a
            layer is sharded into at most ``ceil(K / chunk_size)`` tasks: lower ``chunk_size`` for
            more. CPU tensors only.
        shards: runs of chunks with ``engine="ray"``; None = one per Ray CPU.
        address: the Ray cluster to join (None: a local one; ``"auto"``; ``"host:port"``).
        progress: with ``engine="ray"``, a bar over finished runs.

    Returns:
        Tensor[K, M]: the weights (standardised scale), in the inputs' floating dtype and device.

    Raises:
        NeurocoreError: wrong shapes or dtypes, NaN/inf values, fewer than 2 samples, parameters
            out of range.

    Example:
        >>> P = torch.rand(200, 8)
        >>> acts = P[:, :2] @ torch.tensor([[2.0], [-1.0]]) + 0.1 * torch.randn(200, 1)
        >>> w = elastic_net(P, acts)
        >>> w.shape, bool(w[0, 0] > 0), bool(w[0, 1] < 0)
        (torch.Size([1, 8]), True, True)
    """
    fn = "elastic_net"
    _check_matrix(train_P, "train_P", fn)
    _check_matrix(train_acts, "train_acts", fn)
    _check_rows(train_P, train_acts, ("train_P", "train_acts"), fn, at_least=2)
    if train_P.device != train_acts.device:
        raise NeurocoreError(
            f"{fn}: train_P is on {train_P.device} but train_acts on {train_acts.device}; move both to one device"
        )
    lam = _check_number(lam, "lam", fn, 0.0)
    eta = _check_number(eta, "eta", fn, 0.0, 1.0)
    max_iter = _check_int(max_iter, "max_iter", fn, 1)
    tol = _check_number(tol, "tol", fn, 0.0, low_open=True)
    chunk_size = _check_int(chunk_size, "chunk_size", fn, 1)
    _check_engine(engine, shards, address, train_P.device, fn)

    out_dtype = torch.promote_types(train_P.dtype, train_acts.dtype)
    M, K = train_P.shape[1], train_acts.shape[1]
    if M == 0:
        raise NeurocoreError(f"{fn}: train_P has no concept columns; pass a non-empty concept set")
    G, C, const_p, const_q = _gram(train_P, train_acts)
    l1, l2 = lam * eta, lam * (1.0 - eta)
    usable = ~const_p
    weights = torch.zeros(K, M, dtype=out_dtype, device=train_P.device)
    unconverged, worst = [], 0.0
    live = (~const_q).nonzero().flatten()  # constant neurons keep weight 0
    if l1 == 0.0:
        # No L1 part (lam = 0 or eta = 0): ridge, or least squares at lam = 0, in closed form. The
        # eigendecomposition gives the minimum-norm solution when G is singular (M > n, collinear
        # or constant columns) and follows the inputs' device.
        evals, evecs = torch.linalg.eigh(G)
        cutoff = float(evals.abs().max()) * M * torch.finfo(torch.float64).eps if M else 0.0
        inv = torch.where(evals + l2 > cutoff, 1.0 / (evals + l2), torch.zeros_like(evals))
        W = evecs @ (inv.unsqueeze(1) * (evecs.T @ C[:, live]))
        weights[live] = W.T.to(out_dtype)
        return weights
    # G is shared by every neuron; a chunk's solve reads only G and its neurons' rows of C, so runs
    # of whole chunks can go to Ray tasks with the same result.
    shared = (G, C, usable, l1, l2, tol, max_iter, live, chunk_size)
    parts = map_neuron_ranges(_elastic_net_job, math.ceil(live.numel() / chunk_size), shared, engine=engine,
                              shards=shards, address=address, progress=progress, desc="elastic net")
    for chunks, solved in parts:
        for c, (W, kkt) in zip(chunks, solved):
            ks = live[c * chunk_size : (c + 1) * chunk_size]
            weights[ks] = W.to(out_dtype)
            bad = kkt > tol
            if bool(bad.any()):
                unconverged += ks[bad].tolist()
                worst = max(worst, float(kkt.max()))
    if unconverged:
        warnings.warn(
            f"elastic_net: {len(unconverged)} neuron(s) (e.g. {unconverged[:5]}) did not converge in "
            f"max_iter={max_iter} sweeps (largest optimality violation {worst:.2e} > tol={tol:g}); "
            "raise max_iter or tol",
            RuntimeWarning,
            stacklevel=2,
        )
    return weights


# ----------------------------------------------------------------------------------------------
# step 3: ranking


def rank_concepts(weights: torch.Tensor) -> torch.Tensor:
    """Concept indices of every neuron by signed weight, descending (LE step 3).

    Negative weights rank last (the released code sorts signed weights). Equal weights keep index
    order (a stable sort), so the ranking is deterministic.

    Args:
        weights (Tensor[K, M]): e.g. :func:`elastic_net`'s output.

    Returns:
        Tensor[K, M] int64: ``ranking[k, 0]`` is neuron k's highest-weighted concept.

    Raises:
        NeurocoreError: weights not a 2-D floating tensor, or holding NaN.

    Example:
        >>> rank_concepts(torch.tensor([[0.5, 0.0, -1.0, 0.5, 2.0]]))
        tensor([[4, 0, 3, 1, 2]])
    """
    if not isinstance(weights, torch.Tensor) or weights.dim() != 2 or not weights.is_floating_point():
        is_tensor = isinstance(weights, torch.Tensor)
        got = f"shape {tuple(weights.shape)}, dtype {weights.dtype}" if is_tensor else type(weights).__name__
        raise NeurocoreError(f"rank_concepts: weights must be a floating Tensor[K, M]; got {got}")
    if bool(torch.isnan(weights).any()):
        raise NeurocoreError("rank_concepts: weights hold NaN; a NaN weight has no rank (check the elastic-net inputs)")
    return torch.sort(weights, dim=1, descending=True, stable=True).indices


# ----------------------------------------------------------------------------------------------
# step 4: greedy search


@dataclass(frozen=True)
class GreedyResult:
    """One neuron's linear explanation from :func:`greedy_search`.

    Attributes:
        concepts: indices of the selected concepts (columns of P), in selection order.
        weights: the least-squares weight of each selected concept (raw activation scale), aligned
            with ``concepts``.
        bias: the model's intercept. For an empty explanation, the neuron's train mean (the best
            constant prediction).
        val_corr: Pearson correlation of the model's predictions with the activations on the
            validation split; NaN for an empty explanation (a constant prediction has no
            correlation).
    """

    concepts: tuple[int, ...]
    weights: tuple[float, ...]
    bias: float
    val_corr: float


def max_ranks_examined(max_length: int, width: int) -> int:
    """How many of a neuron's top-ranked concepts :func:`greedy_search` can ever try.

    Round t tries the first ``width`` ranks that are neither selected nor banned, so its candidates
    lie within the first ``u + width`` ranks, u being the number of concepts made unavailable
    before it. Round 1 bans nothing and selects one (u grows by 1); every later round that lets
    the search go on selects one of its candidates and bans at most the other ``width - 1`` (u
    grows by at most ``width``). Before round t >= 2, u <= 1 + (t-2)·width, so the candidates lie
    within the first ``(t-1)·width + 1`` ranks. Hence the bound
    ``max(width, (max_length - 1)·width + 1)``, reached when each round's best candidate is its
    last one: 91 for the defaults. A ranking may stop there.

    Example:
        >>> max_ranks_examined(10, 10), max_ranks_examined(1, 10), max_ranks_examined(4, 3)
        (91, 10, 10)
    """
    return max(width, (max_length - 1) * width + 1)


def greedy_search(
    train_P: torch.Tensor,
    val_P: torch.Tensor,
    train_acts: torch.Tensor,
    val_acts: torch.Tensor,
    ranking: torch.Tensor,
    max_length: int = 10,
    width: int = 10,
    tolerance: float = 0.02,
    progress: bool = False,
    *,
    engine: str = "local",
    shards: int | None = None,
    address: str | None = None,
) -> list[GreedyResult]:
    """Greedy forward selection of each neuron's explanation (LE step 4; paper Algorithm 1).

    Per neuron, starting from no concepts and a best correlation ``rho* = 0``, for at most
    ``max_length`` rounds:

    1. candidates: the first ``width`` concepts of the neuron's ranking that are neither selected
       nor banned (fewer when the ranking runs out; none ends the search);
    2. for each candidate, an ordinary least-squares model with intercept on the raw activations of
       the train split over selected + candidate, scored by the Pearson correlation ``rho`` of its
       predictions with the activations on the validation split;
    3. from the second round on, a candidate with ``rho - rho* < tolerance`` is banned for good;
       in the first round nothing is banned (the released code's rule: every explanation gets a
       first concept if any correlates positively);
    4. the candidate with the highest ``rho`` among those not banned is added if ``rho > rho*``
       (ties: the better-ranked one), and ``rho*`` becomes its ``rho``; otherwise the search ends.

    So the first concept is added when its correlation is positive, every later one when it raises
    the correlation by at least ``tolerance``. When nothing correlates positively the explanation
    is empty (the released code crashes there), and the returned weights always belong to the
    returned concepts (the released code mislabels the last concept when it reaches
    ``max_length``).

    All neurons advance together: each round is one :func:`neurocore.ops.lstsq_gram` call over
    every (neuron, candidate) pair, from :func:`neurocore.ops.gram_stats` of the train and
    validation splits computed once, restricted to the concepts any neuron can reach
    (:func:`max_ranks_examined` ranks each: at most 91 per neuron by default). A set with a
    constant or duplicated column gets a tiny ridge (see ``lstsq_gram``): such a column never
    raises the correlation, so it is never selected.

    Args:
        train_P (Tensor[n_tr, M]): concept activations of the train split.
        val_P (Tensor[n_val, M]): concept activations of the validation split.
        train_acts (Tensor[n_tr, K]): neuron activations of the train split (raw, not standardised).
        val_acts (Tensor[n_val, K]): neuron activations of the validation split.
        ranking (Tensor[K, L], int64): each neuron's concept indices, best first (e.g.
            :func:`rank_concepts`); distinct per row; only the first
            ``max_ranks_examined(max_length, width)`` are read, so ``L`` may stop there.
        max_length: most concepts per explanation, 1..32 (default 10, the paper's v).
        width: candidates tried per round (default 10, the paper's r).
        tolerance: least gain in validation correlation to add a concept (default 0.02, the paper's
            epsilon).
        progress: show a tqdm bar over rounds (over neuron ranges with ``engine="ray"``).
        engine: ``"local"`` (default) or ``"ray"``: the rounds of contiguous neuron ranges run as Ray
            tasks (:func:`neurocore.scale.map_neuron_ranges`) after the shared Gram statistics are
            computed here once; the results equal the local ones bit for bit (each neuron's rounds
            read only its own row of every array). CPU tensors only.
        shards: neuron ranges with ``engine="ray"``; None = one per Ray CPU.
        address: the Ray cluster to join (None: a local one; ``"auto"``; ``"host:port"``).

    Returns:
        list[GreedyResult]: one per neuron, in column order.

    Raises:
        NeurocoreError: mismatched shapes, NaN/inf values, fewer than 2 samples in a split, a
            ranking with indices out of range or repeated within a row, parameters out of range.

    Example:
        >>> P = torch.rand(300, 6)
        >>> acts = 2 * P[:, [1]] - P[:, [4]] + 0.05 * torch.randn(300, 1)
        >>> ranking = torch.tensor([[1, 0, 2, 3, 4, 5]])
        >>> r = greedy_search(P[:200], P[200:], acts[:200], acts[200:], ranking, width=6)[0]
        >>> r.concepts, [round(w, 1) for w in r.weights], r.val_corr > 0.95
        ((1, 4), [2.0, -1.0], True)
    """
    fn = "greedy_search"
    for x, name in ((train_P, "train_P"), (val_P, "val_P"), (train_acts, "train_acts"), (val_acts, "val_acts")):
        _check_matrix(x, name, fn)
    _check_rows(train_P, train_acts, ("train_P", "train_acts"), fn, at_least=2)
    _check_rows(val_P, val_acts, ("val_P", "val_acts"), fn, at_least=2)
    M, K = train_P.shape[1], train_acts.shape[1]
    if val_P.shape[1] != M:
        raise NeurocoreError(
            f"{fn}: train_P has {M} concept columns but val_P {val_P.shape[1]}; pass the same concepts"
        )
    if val_acts.shape[1] != K:
        raise NeurocoreError(
            f"{fn}: train_acts has {K} neurons but val_acts {val_acts.shape[1]}; pass the same neurons"
        )
    if M == 0:
        raise NeurocoreError(f"{fn}: train_P has no concept columns; pass a non-empty concept set")
    device = train_P.device
    for x, name in ((val_P, "val_P"), (train_acts, "train_acts"), (val_acts, "val_acts"), (ranking, "ranking")):
        if isinstance(x, torch.Tensor) and x.device != device:
            raise NeurocoreError(
                f"{fn}: train_P is on {device} but {name} on {x.device}; move all inputs to one device"
            )
    max_length = _check_int(max_length, "max_length", fn, 1, _MAX_SET)
    _check_engine(engine, shards, address, device, fn)
    width = _check_int(width, "width", fn, 1)
    tolerance = _check_number(tolerance, "tolerance", fn, 0.0)
    if not isinstance(ranking, torch.Tensor) or ranking.dtype != torch.int64 or ranking.dim() != 2:
        is_tensor = isinstance(ranking, torch.Tensor)
        got = f"{ranking.dtype} of shape {tuple(ranking.shape)}" if is_tensor else type(ranking).__name__
        raise NeurocoreError(
            f"{fn}: ranking must be an int64 Tensor[K, L] (e.g. rank_concepts(weights)); got {got}"
        )
    if ranking.shape[0] != K or ranking.shape[1] == 0:
        raise NeurocoreError(
            f"{fn}: ranking must have one row per neuron (K={K}) and at least one column; "
            f"got shape {tuple(ranking.shape)}"
        )
    B = min(ranking.shape[1], max_ranks_examined(max_length, width))
    top = ranking[:, :B]
    if int(top.min()) < 0 or int(top.max()) >= M:
        raise NeurocoreError(
            f"{fn}: ranking must hold concept indices in [0, {M}) (M = train_P.shape[1]); "
            f"got values in [{int(top.min())}, {int(top.max())}]"
        )
    ordered = top.sort(1).values
    repeated = (ordered[:, 1:] == ordered[:, :-1]).any(1)
    if bool(repeated.any()):
        k = int(repeated.nonzero()[0])
        raise NeurocoreError(f"{fn}: ranking row {k} repeats a concept; each row must list distinct concepts")

    # Only the concepts some neuron can reach need Gram statistics (B ranks per neuron). They are
    # shared by all neurons and computed once here; the rounds below are per neuron (every tensor
    # operation acts on a neuron's own row, lstsq_gram solves each system on its own), so a range of
    # neurons gives the same bits alone as within the whole layer: the Ray engine runs ranges.
    used, local = torch.unique(top, return_inverse=True)
    if used.numel() < M:
        train_P, val_P = train_P.index_select(1, used), val_P.index_select(1, used)
    train = ops.gram_stats(train_P, train_acts)
    val = ops.gram_stats(val_P, val_acts)
    shared = (train, val, local, used, max_length, width, tolerance, progress and engine == "local")
    parts = map_neuron_ranges(_greedy_job, K, shared, engine=engine, shards=shards, address=address,
                              progress=progress, desc="greedy search")
    return [r for _, results in parts for r in results]


def _slice_stats(stats: ops.GramStats, units: range) -> ops.GramStats:
    """The statistics of neurons ``units`` (the concept parts are shared)."""
    a, b = units.start, units.stop
    return ops.GramStats(stats.n, stats.mean, stats.cov, stats.target_mean[a:b], stats.cross[:, a:b],
                         stats.target_var[a:b])


def _greedy_job(units: range, shared) -> list[GreedyResult]:
    """Greedy rounds of neurons ``units`` (a :func:`~neurocore.scale.map_neuron_ranges` job)."""
    train, val, local, used, max_length, width, tolerance, progress = shared
    if len(units) != local.shape[0]:
        train, val, local = _slice_stats(train, units), _slice_stats(val, units), local[units.start : units.stop]
    return _greedy_rounds(train, val, local, used, max_length, width, tolerance, progress)


def _greedy_rounds(train, val, local, used, max_length: int, width: int, tolerance: float,
                   progress: bool) -> list[GreedyResult]:
    """The rounds of :func:`greedy_search` for the K neurons of ``train``/``val``, whose reachable
    concepts are ``local [K, B]`` (indices into ``used``, the columns of the statistics)."""
    K, B = local.shape
    device = local.device
    state = torch.zeros(K, B, dtype=torch.int8, device=device)  # 0 available, 1 selected, 2 banned
    selected = torch.full((K, max_length), -1, dtype=torch.int64, device=device)  # local concept ids
    weights = torch.zeros(K, max_length, dtype=torch.float64, device=device)
    bias = train.target_mean.clone()
    best = torch.zeros(K, dtype=torch.float64, device=device)
    length = torch.zeros(K, dtype=torch.int64, device=device)
    active = torch.ones(K, dtype=torch.bool, device=device)
    r = min(width, B)
    rank_pos = torch.arange(B, device=device)
    from tqdm.auto import tqdm

    for t in tqdm(range(1, max_length + 1), desc="greedy search", unit="round", disable=not progress):
        ks = active.nonzero().flatten()
        if ks.numel() == 0:
            break
        # every active neuron has t-1 concepts; candidates: its first r available ranks
        key = torch.where(state[ks] == 0, rank_pos, B)
        pos = key.sort(1).values[:, :r]  # rank positions; B = no candidate
        has = pos < B
        pos = pos.clamp(max=B - 1)
        cand = torch.where(has, local[ks].gather(1, pos), -1)
        sets = torch.full((K, r, t), -1, dtype=torch.int64, device=device)
        rows = torch.cat([selected[ks, : t - 1].unsqueeze(1).expand(-1, r, -1), cand.unsqueeze(2)], 2)
        sets[ks] = torch.where(has.unsqueeze(2), rows, -1)  # a missing candidate: an all-padding set
        fit = ops.lstsq_gram(train, val, sets)
        corr = fit.val_corr[ks]
        gain = corr - best[ks].unsqueeze(1)
        if t > 1:
            banned = has & (gain < tolerance)
            state[ks.unsqueeze(1).expand_as(pos)[banned], pos[banned]] = 2
        else:
            banned = torch.zeros_like(has)
        eligible = has & ~banned & (gain > 0)
        choice = torch.where(eligible, corr, -math.inf).argmax(1)  # first of equal maxima
        add = eligible.any(1)
        active[ks[~add]] = False
        ka, ca = ks[add], choice[add]
        selected[ka, t - 1] = cand[add, ca]
        state[ka, pos[add, ca]] = 1
        best[ka] = corr[add, ca]
        weights[ka, :t] = fit.weights[ka, ca]
        bias[ka] = fit.bias[ka, ca]
        length[ka] = t

    concepts = torch.where(selected >= 0, used[selected.clamp(min=0)], -1).tolist()
    weights, bias, best, length = weights.tolist(), bias.tolist(), best.tolist(), length.tolist()
    return [
        GreedyResult(
            concepts=tuple(concepts[k][: length[k]]),
            weights=tuple(weights[k][: length[k]]),
            bias=bias[k],
            val_corr=best[k] if length[k] else math.nan,
        )
        for k in range(K)
    ]
