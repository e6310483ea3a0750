"""LE's greedy search (ALGORITHMS.md §2 step 4; paper Algorithm 1 with the released code's first
round) against a plain per-neuron loop written here: torch.linalg.lstsq (gelsd) with an intercept
column on the train samples, Pearson correlation of the predictions on the validation samples, and
the selection rules transcribed one candidate at a time."""

from __future__ import annotations

import math

import dataclasses

import pytest
import torch

from neurocore._errors import NeurocoreError
from neurocore.methods._linear_learn import (
    GreedyResult,
    elastic_net,
    greedy_search,
    max_ranks_examined,
    rank_concepts,
)

N_TRAIN, N_VAL = 240, 120


def fit_and_score(train_P, train_y, val_P, val_y, cols):
    """OLS with intercept on the train samples (min-norm via SVD), Pearson correlation on val
    (0 when either side is constant, as the kernel's convention)."""
    X = torch.cat([train_P[:, cols].double(), torch.ones(train_P.shape[0], 1, dtype=torch.float64)], 1)
    sol = torch.linalg.lstsq(X, train_y.double().unsqueeze(1), driver="gelsd").solution.squeeze(1)
    pred = val_P[:, cols].double() @ sol[:-1] + sol[-1]
    corr = torch.corrcoef(torch.stack([pred, val_y.double()]))[0, 1]
    return sol[:-1], float(sol[-1]), 0.0 if torch.isnan(corr) else float(corr)


def greedy_loop(train_P, val_P, train_y, val_y, ranking, max_length=10, width=10, tolerance=0.02):
    """One neuron, the way the released code walks it (without its two bugs)."""
    selected, banned = [], set()
    best, weights, bias = 0.0, [], float(train_y.double().mean())
    while len(selected) < max_length:
        candidates = [c for c in ranking if c not in selected and c not in banned][:width]
        if not candidates:
            break
        round_best, choice = best, None
        for c in candidates:
            w, b, rho = fit_and_score(train_P, train_y, val_P, val_y, selected + [c])
            if selected and rho - best < tolerance:
                banned.add(c)
            elif rho > round_best:
                round_best, choice, choice_fit = rho, c, (w, b)
        if choice is None:
            break
        selected.append(choice)
        best = round_best
        weights, bias = choice_fit[0].tolist(), choice_fit[1]
    return GreedyResult(tuple(selected), tuple(weights), bias, best if selected else math.nan)


def loop_all(train_P, val_P, train_acts, val_acts, ranking, **kw):
    # one thread: LAPACK's threading costs ~30x on these tiny systems
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return [
            greedy_loop(train_P, val_P, train_acts[:, k], val_acts[:, k], ranking[k].tolist(), **kw)
            for k in range(train_acts.shape[1])
        ]
    finally:
        torch.set_num_threads(threads)


def assert_same(ours, ref, atol=1e-7):
    assert len(ours) == len(ref)
    for k, (a, b) in enumerate(zip(ours, ref)):
        assert a.concepts == b.concepts, f"neuron {k}: {a.concepts} != {b.concepts}"
        assert len(a.weights) == len(a.concepts)
        torch.testing.assert_close(torch.tensor(a.weights, dtype=torch.float64), torch.tensor(b.weights, dtype=torch.float64),
                                   atol=atol, rtol=1e-6, msg=f"neuron {k} weights")
        assert a.bias == pytest.approx(b.bias, abs=atol, rel=1e-6), f"neuron {k} bias"
        if math.isnan(b.val_corr):
            assert math.isnan(a.val_corr)
        else:
            assert a.val_corr == pytest.approx(b.val_corr, abs=1e-9), f"neuron {k} val_corr"


def planted(seed: int, M: int = 30, K: int = 8, max_terms: int = 5, noise: float = 0.5):
    """Concepts with shared factors (correlated columns) and neurons that are sparse positive and
    negative combinations of them plus noise."""
    g = torch.Generator().manual_seed(seed)
    n = N_TRAIN + N_VAL
    factors = torch.randn(n, 6, generator=g, dtype=torch.float64)
    P = torch.sigmoid(factors @ torch.randn(6, M, generator=g, dtype=torch.float64)
                      + torch.randn(n, M, generator=g, dtype=torch.float64))
    W = torch.zeros(M, K, dtype=torch.float64)
    for k in range(K):
        terms = 1 + k % max_terms
        cols = torch.randperm(M, generator=g)[:terms]
        W[cols, k] = torch.randn(terms, generator=g, dtype=torch.float64) * 2
    acts = P @ W + noise * torch.randn(n, K, generator=g, dtype=torch.float64) + 1.0
    return P, acts, g


def splits(P, acts):
    return P[:N_TRAIN], P[N_TRAIN:], acts[:N_TRAIN], acts[N_TRAIN:]


def random_ranking(K, M, g):
    return torch.stack([torch.randperm(M, generator=g) for _ in range(K)])


# ----------------------------------------------------------------------------------------------
# against the per-neuron loop


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_loop_with_elastic_net_ranking(seed):
    P, acts, _ = planted(seed)
    tr_P, va_P, tr_a, va_a = splits(P, acts)
    ranking = rank_concepts(elastic_net(tr_P, tr_a))
    ours = greedy_search(tr_P, va_P, tr_a, va_a, ranking)
    assert_same(ours, loop_all(tr_P, va_P, tr_a, va_a, ranking))
    assert sum(len(r.concepts) for r in ours) > len(ours)  # multi-concept explanations happen


@pytest.mark.parametrize("width,max_length,tolerance", [(10, 10, 0.02), (3, 4, 0.0), (1, 6, 0.01), (5, 2, 0.05)])
def test_matches_loop_with_random_ranking(width, max_length, tolerance):
    # a random ranking puts weak concepts first: many bans, short and long searches
    P, acts, g = planted(3, M=25, K=8)
    tr_P, va_P, tr_a, va_a = splits(P, acts)
    ranking = random_ranking(8, 25, g)
    kw = dict(width=width, max_length=max_length, tolerance=tolerance)
    assert_same(greedy_search(tr_P, va_P, tr_a, va_a, ranking, **kw), loop_all(tr_P, va_P, tr_a, va_a, ranking, **kw))


def test_device_follows_inputs(device):
    P, acts, g = planted(18, M=20, K=5)
    tr_P, va_P, tr_a, va_a = splits(P, acts)
    ranking = random_ranking(5, 20, g)
    ref = greedy_search(tr_P, va_P, tr_a, va_a, ranking)
    moved = [t.to(device) for t in (tr_P, va_P, tr_a, va_a, ranking)]
    assert_same(greedy_search(*moved), ref, atol=1e-9)


def test_progress_bar_changes_nothing(capsys):
    P, acts, g = planted(19, M=12, K=3)
    args = list(splits(P, acts)) + [random_ranking(3, 12, g)]
    assert greedy_search(*args, progress=True) == greedy_search(*args)
    assert "greedy search" in capsys.readouterr().err


def test_float32_inputs_select_like_float64():
    P, acts, _ = planted(4)
    tr_P, va_P, tr_a, va_a = splits(P, acts)
    ranking = rank_concepts(elastic_net(tr_P, tr_a))
    ours = greedy_search(tr_P.float(), va_P.float(), tr_a.float(), va_a.float(), ranking)
    ref = loop_all(tr_P.float(), va_P.float(), tr_a.float(), va_a.float(), ranking)
    assert_same(ours, ref, atol=1e-5)


def test_restricted_concepts_match_loop_on_all_concepts():
    # M far above the ranks any neuron can reach (max_ranks_examined(3, 4) = 9): the Gram statistics
    # cover only the union of the neurons' first 9 ranks, and the answer must not change
    P, acts, g = planted(5, M=120, K=6, noise=0.3)
    tr_P, va_P, tr_a, va_a = splits(P, acts)
    ranking = random_ranking(6, 120, g)
    kw = dict(width=4, max_length=3, tolerance=0.0)
    assert max_ranks_examined(3, 4) == 9
    ours = greedy_search(tr_P, va_P, tr_a, va_a, ranking, **kw)
    assert_same(ours, loop_all(tr_P, va_P, tr_a, va_a, ranking, **kw))
    # a ranking cut after the ranks the search can reach gives the same answer
    assert_same(greedy_search(tr_P, va_P, tr_a, va_a, ranking[:, :9].contiguous(), **kw), ours)


def test_rank_bound_is_reached():
    # Worst case for the bound: every round's best candidate is its last one and the others get
    # banned. The neuron is the sum of concepts 0..v-1 (each adds >= 0.13 correlation); the ranking
    # puts width-1 useless concepts (independent noise) before each useful one, so the useful ones
    # sit on ranks width-1, width, 2·width, ..., (v-1)·width: the last reachable rank.
    g = torch.Generator().manual_seed(6)
    v, r = 4, 3
    bound = max_ranks_examined(v, r)
    assert bound == (v - 1) * r + 1
    n = N_TRAIN + N_VAL
    M = bound + 5
    P = torch.rand(n, M, generator=g, dtype=torch.float64)
    acts = P[:, :v].sum(1, keepdim=True)
    noise = iter(range(v, M))
    order = [next(noise) for _ in range(r - 1)] + [0, 1]
    for useful in range(2, v):
        order += [next(noise) for _ in range(r - 1)] + [useful]
    order += list(noise)
    assert order.index(v - 1) == bound - 1
    ranking = torch.tensor([order])
    tr_P, va_P, tr_a, va_a = splits(P, acts)
    kw = dict(max_length=v, width=r)
    ours = greedy_search(tr_P, va_P, tr_a, va_a, ranking, **kw)
    assert ours[0].concepts == tuple(range(v))
    assert_same(ours, loop_all(tr_P, va_P, tr_a, va_a, ranking, **kw))
    # the ranks past the bound are never read
    assert_same(greedy_search(tr_P, va_P, tr_a, va_a, ranking[:, :bound].contiguous(), **kw), ours)


# ----------------------------------------------------------------------------------------------
# tricky cases


def test_duplicate_concepts_tie_goes_to_better_rank_and_copy_is_banned():
    P, _, g = planted(7, M=12, K=1)
    n = N_TRAIN + N_VAL
    acts = torch.stack([2 * P[:, 5], 2 * P[:, 5] + P[:, 8], 2 * P[:, 5]], 1)
    acts += 0.2 * torch.randn(n, 3, generator=g, dtype=torch.float64)
    P = torch.cat([P, P[:, [5]]], 1)  # column 12 duplicates column 5
    rest = [c for c in range(12) if c not in (5, 8)]
    ranking = torch.stack([
        torch.tensor([12, 5, 8] + rest),  # the copy ranks first: it wins the exact tie
        torch.tensor([5, 12, 8] + rest),
        torch.tensor([8, 5] + rest + [12]),
    ])
    tr_P, va_P, tr_a, va_a = splits(P, acts)
    ours = greedy_search(tr_P, va_P, tr_a, va_a, ranking)
    assert_same(ours, loop_all(tr_P, va_P, tr_a, va_a, ranking))
    assert ours[0].concepts[0] == 12 and 5 not in ours[0].concepts
    assert ours[1].concepts[:2] == (5, 8) and 12 not in ours[1].concepts
    assert 5 in ours[2].concepts and 12 not in ours[2].concepts


def test_constant_columns_are_never_selected():
    P, acts, g = planted(8, M=15, K=5)
    P[:, 3] = 0.7
    P[:, 9] = 0.0
    ranking = torch.stack([torch.tensor([3, 9] + [c for c in torch.randperm(15, generator=g).tolist() if c not in (3, 9)])
                           for _ in range(5)])
    tr_P, va_P, tr_a, va_a = splits(P, acts)
    ours = greedy_search(tr_P, va_P, tr_a, va_a, ranking)
    assert_same(ours, loop_all(tr_P, va_P, tr_a, va_a, ranking))
    for res in ours:
        assert 3 not in res.concepts and 9 not in res.concepts
        assert all(math.isfinite(w) for w in res.weights)


def test_nothing_correlates_positively_gives_empty_explanations():
    # the released code crashes here (bug #2); we return an empty explanation
    g = torch.Generator().manual_seed(9)
    x = torch.rand(N_TRAIN + N_VAL, 3, generator=g, dtype=torch.float64)
    sign = torch.ones(N_TRAIN + N_VAL, 1, dtype=torch.float64)
    sign[N_TRAIN:] = -1.0  # the relation flips between train and val
    acts = torch.cat([
        sign * x.sum(1, keepdim=True),  # every model correlates negatively on val
        torch.full((N_TRAIN + N_VAL, 1), 2.5, dtype=torch.float64),  # a constant (dead) neuron
        x[:, :1],  # a normal neuron next to them
    ], 1)
    acts[N_TRAIN:, 1] = 2.5
    tr_P, va_P, tr_a, va_a = splits(x, acts)
    ranking = torch.arange(3).repeat(3, 1)
    ours = greedy_search(tr_P, va_P, tr_a, va_a, ranking)
    assert_same(ours, loop_all(tr_P, va_P, tr_a, va_a, ranking))
    for k in (0, 1):
        assert ours[k].concepts == () and ours[k].weights == () and math.isnan(ours[k].val_corr)
        assert ours[k].bias == pytest.approx(float(tr_a[:, k].mean()))
    assert ours[2].concepts == (0,) and ours[2].val_corr == pytest.approx(1.0)


def test_first_concept_needs_only_a_positive_correlation():
    # the first concept is kept even though its correlation is below the tolerance (released code)
    g = torch.Generator().manual_seed(10)
    n = N_TRAIN + N_VAL
    P = torch.rand(n, 4, generator=g, dtype=torch.float64)
    acts = 0.15 * P[:, :1] + torch.rand(n, 1, generator=g, dtype=torch.float64)
    tr_P, va_P, tr_a, va_a = splits(P, acts)
    ranking = torch.tensor([[0, 1, 2, 3]])
    ref = loop_all(tr_P, va_P, tr_a, va_a, ranking, tolerance=0.5)
    assert len(ref[0].concepts) == 1 and 0 < ref[0].val_corr < 0.5
    assert_same(greedy_search(tr_P, va_P, tr_a, va_a, ranking, tolerance=0.5), ref)


def test_fewer_candidates_than_width():
    P, acts, _ = planted(11, M=4, K=4, noise=0.1)
    tr_P, va_P, tr_a, va_a = splits(P, acts)
    ranking = torch.stack([torch.roll(torch.arange(4), k) for k in range(4)])
    ours = greedy_search(tr_P, va_P, tr_a, va_a, ranking, width=10, tolerance=0.0)
    assert_same(ours, loop_all(tr_P, va_P, tr_a, va_a, ranking, width=10, tolerance=0.0))
    # and a ranking shorter than width (one concept) when M is larger
    ours = greedy_search(tr_P, va_P, tr_a, va_a, ranking[:, :1].contiguous())
    assert_same(ours, loop_all(tr_P, va_P, tr_a, va_a, ranking[:, :1]))
    assert all(r.concepts in ((), (int(ranking[k, 0]),)) for k, r in enumerate(ours))


def test_max_length_reached_keeps_names_aligned_with_weights():
    # the released code's bug #1: on reaching max_length it names the last *candidate* tried instead
    # of the last concept selected. Neurons with 12 equal terms reach 10 concepts (the 10th still
    # adds sqrt(10/12) - sqrt(9/12) = 0.047 correlation).
    g = torch.Generator().manual_seed(12)
    n_train, n = 1500, 2100  # enough validation samples that every gain of 0.047 shows
    M = 30
    P = torch.rand(n, M, generator=g, dtype=torch.float64)
    coef = torch.zeros(M, 2, dtype=torch.float64)
    coef[:12, 0] = 1.0
    coef[10:22, 1] = 1.0
    coef[[12, 17], 1] = -1.0
    acts = P @ coef + 0.05 * torch.randn(n, 2, generator=g, dtype=torch.float64)
    tr_P, va_P, tr_a, va_a = P[:n_train], P[n_train:], acts[:n_train], acts[n_train:]
    ranking = rank_concepts(elastic_net(tr_P, tr_a))
    ours = greedy_search(tr_P, va_P, tr_a, va_a, ranking)
    assert_same(ours, loop_all(tr_P, va_P, tr_a, va_a, ranking))
    for k, res in enumerate(ours):
        assert len(res.concepts) == 10
        w, b, rho = fit_and_score(tr_P, tr_a[:, k], va_P, va_a[:, k], list(res.concepts))
        torch.testing.assert_close(torch.tensor(res.weights, dtype=torch.float64), w, atol=1e-8, rtol=1e-7)
        assert res.val_corr == pytest.approx(rho, abs=1e-10)
        # the planted signs come back with the names
        assert all((coef[c, k] > 0) == (wt > 0) for c, wt in zip(res.concepts, res.weights))


def test_planted_single_concept_is_found():
    # STYLE.md §9: activations equal to one concept's column are explained by that concept alone
    P, _, g = planted(13, M=20, K=1)
    acts = 3.0 * P[:, [7]] - 1.0
    tr_P, va_P, tr_a, va_a = splits(P, acts)
    res = greedy_search(tr_P, va_P, tr_a, va_a, rank_concepts(elastic_net(tr_P, tr_a)))[0]
    assert res.concepts == (7,)
    assert res.weights[0] == pytest.approx(3.0) and res.bias == pytest.approx(-1.0)
    assert res.val_corr == pytest.approx(1.0)


def test_permuting_neurons_permutes_results():
    P, acts, g = planted(14, M=20, K=6)
    tr_P, va_P, tr_a, va_a = splits(P, acts)
    ranking = random_ranking(6, 20, g)
    perm = torch.randperm(6, generator=g)
    ours = greedy_search(tr_P, va_P, tr_a, va_a, ranking)
    permuted = greedy_search(tr_P, va_P, tr_a[:, perm], va_a[:, perm], ranking[perm])
    assert permuted == [ours[int(k)] for k in perm]


def test_inputs_are_not_mutated():
    P, acts, g = planted(15, M=10, K=3)
    tr_P, va_P, tr_a, va_a = splits(P, acts)
    ranking = random_ranking(3, 10, g)
    copies = [t.clone() for t in (tr_P, va_P, tr_a, va_a, ranking)]
    greedy_search(tr_P, va_P, tr_a, va_a, ranking)
    for before, after in zip(copies, (tr_P, va_P, tr_a, va_a, ranking)):
        assert torch.equal(before, after)


def test_result_is_frozen_and_typed():
    P, acts, g = planted(16, M=10, K=2)
    res = greedy_search(*splits(P, acts), random_ranking(2, 10, g))
    assert all(isinstance(c, int) for r in res for c in r.concepts)
    assert all(isinstance(w, float) for r in res for w in r.weights)
    with pytest.raises(dataclasses.FrozenInstanceError):
        res[0].bias = 1.0  # type: ignore[misc]


# ----------------------------------------------------------------------------------------------
# bad input


def good_inputs():
    P, acts, g = planted(17, M=10, K=3)
    return list(splits(P, acts)) + [random_ranking(3, 10, g)]


@pytest.mark.parametrize("change,match", [
    (lambda a: a.__setitem__(1, a[1][:, :8]), "val_P"),
    (lambda a: a.__setitem__(3, a[3][:, :2]), "val_acts"),
    (lambda a: a.__setitem__(2, a[2][:100]), "same number of rows"),
    (lambda a: a.__setitem__(4, a[4][:2]), "one row per neuron"),
    (lambda a: a.__setitem__(4, a[4].int()), "int64"),
    (lambda a: a.__setitem__(4, a[4] + 1), r"in \[0, 10\)"),
    (lambda a: a.__setitem__(4, torch.zeros(3, 10, dtype=torch.int64)), "repeats a concept"),
    (lambda a: a[0].__setitem__((0, 0), math.nan), "NaN"),
    (lambda a: (a.__setitem__(1, a[1][:1]), a.__setitem__(3, a[3][:1])), "at least 2 samples"),
])
def test_bad_input_names_the_problem(change, match):
    args = good_inputs()
    args = [a.clone() for a in args]
    change(args)
    with pytest.raises(NeurocoreError, match=match):
        greedy_search(*args)


@pytest.mark.parametrize("kw,match", [
    (dict(max_length=33), "max_length"),
    (dict(max_length=0), "max_length"),
    (dict(width=0), "width"),
    (dict(tolerance=-0.1), "tolerance"),
    (dict(tolerance=math.nan), "tolerance"),
])
def test_bad_parameters(kw, match):
    with pytest.raises(NeurocoreError, match=match):
        greedy_search(*good_inputs(), **kw)


def test_max_ranks_examined_formula():
    assert max_ranks_examined(10, 10) == 91
    assert max_ranks_examined(1, 5) == 5
    assert max_ranks_examined(3, 1) == 3  # width 1: no bans in a round that goes on


# ----------------------------------------------------------------------------------------------
# row-chunk boundary of the Gram statistics greedy_search streams (ops.gram_stats's chunk_size,
# from python_tests/_constants.py)

from _constants import GRAM_STATS_CHUNK  # noqa: E402


@pytest.mark.parametrize("n_train", [GRAM_STATS_CHUNK, GRAM_STATS_CHUNK + 1, 2 * GRAM_STATS_CHUNK + 3], ids=lambda n: f"train{n}")
def test_matches_loop_past_one_gram_chunk(n_train):
    g = torch.Generator().manual_seed(n_train)
    n, M, K = n_train + 300, 12, 3
    P = torch.sigmoid(torch.randn(n, M, generator=g, dtype=torch.float64))
    acts = P[:, [0, 3, 5]] * torch.tensor([2.0, -1.5, 1.0], dtype=torch.float64) + P[:, [1, 1, 2]]
    acts = acts + 0.5 * torch.randn(n, K, generator=g, dtype=torch.float64)
    tr_P, va_P, tr_a, va_a = P[:n_train], P[n_train:], acts[:n_train], acts[n_train:]
    ranking = random_ranking(K, M, g)
    kw = dict(width=4, max_length=3, tolerance=0.001)
    ours = greedy_search(tr_P, va_P, tr_a, va_a, ranking, **kw)
    assert_same(ours, loop_all(tr_P, va_P, tr_a, va_a, ranking, **kw))
    assert sum(len(r.concepts) for r in ours) > K
