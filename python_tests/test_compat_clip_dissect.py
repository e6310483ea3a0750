"""neurocore.compat.clip_dissect returns what CLIP-Dissect's released similarity.py returns.

The oracle is a transcription of the five released functions (Oikarinen & Weng's similarity.py: same
arguments, same order of operations, float64 inputs, device="cpu", the progress bars and cache calls
left out). Inputs include near-ties (values 1e-9 apart) of the activations, at the top-k boundary, and
of the concept scores, so ranks and top-image sets must agree exactly.
"""

from __future__ import annotations

import math

import pytest
import torch

from neurocore._errors import NeurocoreError
from neurocore.compat import clip_dissect as similarity
from neurocore.methods import clip_dissect as cd


# ---------------------------------------------------------------------------------------------
# transcription of the released functions


def released_cos_similarity_cubed(clip_feats, target_feats, device="cpu", batch_size=10000, min_norm=1e-3):
    clip_feats = clip_feats - torch.mean(clip_feats, dim=0, keepdim=True)
    target_feats = target_feats - torch.mean(target_feats, dim=0, keepdim=True)
    clip_feats = clip_feats**3
    target_feats = target_feats**3
    clip_feats = clip_feats / torch.clip(torch.norm(clip_feats, p=2, dim=0, keepdim=True), min_norm)
    target_feats = target_feats / torch.clip(torch.norm(target_feats, p=2, dim=0, keepdim=True), min_norm)
    rows = []
    for t in range(math.ceil(target_feats.shape[1] / batch_size)):
        target = target_feats[:, t * batch_size : (t + 1) * batch_size].T
        rows.append(torch.cat([target @ clip_feats[:, c * batch_size : (c + 1) * batch_size]
                               for c in range(math.ceil(clip_feats.shape[1] / batch_size))], dim=1))
    return torch.cat(rows, dim=0)


def released_cos_similarity(clip_feats, target_feats, device="cpu"):
    clip_feats = clip_feats / torch.norm(clip_feats, p=2, dim=0, keepdim=True)
    target_feats = target_feats / torch.norm(target_feats, p=2, dim=0, keepdim=True)
    return target_feats.T @ clip_feats


def released_soft_wpmi(clip_feats, target_feats, top_k=100, a=10, lam=1, device="cpu", min_prob=1e-7, p_start=0.998, p_end=0.97):
    clip_feats = torch.nn.functional.softmax(a * clip_feats, dim=1)
    inds = torch.topk(target_feats, dim=0, k=top_k)[1]
    p_in_examples = p_start - (torch.arange(start=0, end=top_k) / top_k * (p_start - p_end)).unsqueeze(1)
    rows = []
    for j in range(target_feats.shape[1]):
        cur = clip_feats.gather(0, inds[:, j : j + 1].expand(-1, clip_feats.shape[1]))
        cur = 1 + p_in_examples * (cur - 1)
        rows.append(torch.sum(torch.log(cur + min_prob), dim=0, keepdim=True))
    L = torch.cat(rows, dim=0)
    prob_d = torch.logsumexp(L, dim=0, keepdim=True) - torch.log(L.shape[0] * torch.ones([1]))
    return L - lam * prob_d


def released_wpmi(clip_feats, target_feats, top_k=28, a=2, lam=0.6, device="cpu", min_prob=1e-7):
    clip_feats = torch.nn.functional.softmax(a * clip_feats, dim=1)
    inds = torch.topk(target_feats, dim=0, k=top_k)[1]
    rows = []
    for j in range(target_feats.shape[1]):
        cur = clip_feats.gather(0, inds[:, j : j + 1].expand(-1, clip_feats.shape[1]))
        rows.append(torch.sum(torch.log(cur + min_prob), dim=0, keepdim=True))
    L = torch.cat(rows, dim=0)
    prob_d = torch.logsumexp(L, dim=0, keepdim=True) - torch.log(L.shape[0] * torch.ones([1]))
    return L - lam * prob_d


def released_rank_reorder(clip_feats, target_feats, device="cpu", p=3, top_fraction=0.05, scale_p=0.5):
    batch = 1500
    errors = []
    top_n = int(target_feats.shape[0] * top_fraction)
    target_feats, inds = torch.topk(target_feats, dim=0, k=top_n)
    for j in range(target_feats.shape[1]):
        cur = clip_feats.gather(0, inds[:, j : j + 1].expand([-1, clip_feats.shape[1]]))
        avg_clip = torch.mean(cur, dim=0, keepdim=True)
        ranks = torch.argsort(torch.argsort(cur, dim=0), dim=0)
        target = target_feats[:, j : j + 1]
        sorted_target = torch.flip(target, dims=[0])
        diff = sorted_target - torch.cat([sorted_target[torch.randperm(len(sorted_target))] for _ in range(5)], dim=1)
        baseline = torch.mean(torch.abs(diff) ** p)
        cur_err = []
        for i in range(math.ceil(ranks.shape[1] / batch)):
            rid = ranks[:, i * batch : (i + 1) * batch]
            reorg = sorted_target.expand(-1, batch).gather(dim=0, index=rid)
            cur_err.append(torch.mean(torch.abs(target - reorg) ** p, dim=0, keepdim=True) / baseline)
        errors.append(torch.cat(cur_err, dim=1) / avg_clip**scale_p)
    return -torch.cat(errors, dim=0)


# ---------------------------------------------------------------------------------------------
# inputs


def _inputs(N=400, M=37, K=9, seed=0, near_ties=True):
    g = torch.Generator().manual_seed(seed)
    clip = torch.rand(N, M, generator=g, dtype=torch.float64) * 0.3 + 0.1  # positive, like CLIP cosines
    acts = torch.randn(N, K, generator=g, dtype=torch.float64)
    if near_ties:
        # activations 1e-9 apart across the whole top of neuron 0 and at neuron 1's top-k boundaries
        acts[:60, 0] = 5.0 + 1e-9 * torch.arange(60, dtype=torch.float64)
        order = acts[:, 1].argsort(descending=True)
        for k in (10, 20, 28, 100):
            acts[order[k], 1] = acts[order[k - 1], 1] - 1e-9
        # concept scores 1e-9 apart among neuron 0's top images
        clip[:60, 3] = 0.2 + 1e-9 * torch.randperm(60, generator=g).double()
    return clip, acts


EXACT = dict(rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_soft_wpmi_equals_released(seed):
    clip, acts = _inputs(seed=seed)
    for kw in ({}, {"top_k": 20, "a": 5, "lam": 0.5, "p_start": 0.9, "p_end": 0.5, "min_prob": 1e-5}):
        out = similarity.soft_wpmi(clip, acts, device="cpu", **kw)
        torch.testing.assert_close(out, released_soft_wpmi(clip, acts, **kw), **EXACT)


@pytest.mark.parametrize("seed", [0, 1])
def test_wpmi_equals_released(seed):
    clip, acts = _inputs(seed=seed)
    for kw in ({}, {"top_k": 10, "a": 3, "lam": 1.0}):
        torch.testing.assert_close(similarity.wpmi(clip, acts, device="cpu", **kw), released_wpmi(clip, acts, **kw), **EXACT)


def test_cos_functions_equal_released():
    clip, acts = _inputs()
    torch.testing.assert_close(similarity.cos_similarity(clip, acts, device="cpu"), released_cos_similarity(clip, acts), **EXACT)
    for kw in ({}, {"batch_size": 5, "min_norm": 1e-2}):
        out = similarity.cos_similarity_cubed(clip, acts, device="cpu", **kw)
        torch.testing.assert_close(out, released_cos_similarity_cubed(clip, acts, **kw), **EXACT)


@pytest.mark.parametrize("kw", [{}, {"p": 2, "top_fraction": 0.2, "scale_p": 1.0}])
def test_rank_reorder_equals_released_with_the_same_seed(kw):
    clip, acts = _inputs()
    torch.manual_seed(7)
    expected = released_rank_reorder(clip, acts, **kw)
    torch.manual_seed(7)
    torch.testing.assert_close(similarity.rank_reorder(clip, acts, device="cpu", **kw), expected, **EXACT)


def test_rank_reorder_bug_is_matched_by_default_and_fixed_on_request():
    clip, acts = _inputs(near_ties=False)
    top = torch.topk(acts, k=20, dim=0)[1]
    clip[:, 0] = -0.5  # mean <= 0 over every neuron's images: NaN in the released code
    clip[:, 1] = 0.0  # mean 0: -inf (or NaN where the error is 0 too)
    acts[top[:, 2], 2] = 3.0  # neuron 2: its 20 top activations are equal, baseline 0 -> NaN
    acts[:, 2] = torch.where(acts[:, 2] == 3.0, acts[:, 2], acts[:, 2].clamp(max=2.0))
    torch.manual_seed(3)
    expected = released_rank_reorder(clip, acts, top_fraction=0.05)
    torch.manual_seed(3)
    out = similarity.rank_reorder(clip, acts, device="cpu", top_fraction=0.05)
    assert torch.isnan(expected[:, 0]).all() and not torch.isfinite(expected[:, 1]).any()
    assert torch.isnan(expected[2]).all()
    torch.testing.assert_close(out, expected, equal_nan=True, **EXACT)

    torch.manual_seed(3)
    fixed = similarity.rank_reorder(clip, acts, device="cpu", top_fraction=0.05, fixed=True)
    assert not torch.isnan(fixed).any()
    others = [k for k in range(acts.shape[1]) if k != 2]
    assert (fixed[others][:, :2] == -math.inf).all()
    assert (fixed[2][2:] == 0).all()
    torch.testing.assert_close(fixed[others][:, 2:], expected[others][:, 2:], **EXACT)
    # and the fixed convention is the one of neurocore's own rank_reorder (same random orderings aside)
    own = cd.rank_reorder(clip, acts, top_fraction=0.05)
    assert ((own == -math.inf) == (fixed == -math.inf)).all()


def test_float32_inputs_give_float32_close_to_released():
    clip, acts = _inputs(near_ties=False)
    clip32, acts32 = clip.float(), acts.float()
    out = similarity.soft_wpmi(clip32, acts32, device="cpu")
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, released_soft_wpmi(clip32, acts32), rtol=1e-4, atol=2e-4)


def test_defaults_and_signatures_are_the_released_ones():
    import inspect

    for name, released in (
        ("cos_similarity_cubed", released_cos_similarity_cubed),
        ("cos_similarity", released_cos_similarity),
        ("soft_wpmi", released_soft_wpmi),
        ("wpmi", released_wpmi),
        ("rank_reorder", released_rank_reorder),
    ):
        ours = inspect.signature(getattr(similarity, name)).parameters
        theirs = inspect.signature(released).parameters
        positional = [p for p in ours.values() if p.kind is not p.KEYWORD_ONLY]
        assert [p.name for p in positional] == list(theirs), name
        for p in positional:
            default = theirs[p.name].default
            assert p.default == (default if p.name != "device" else "cuda"), (name, p.name)


def test_errors_name_the_fix():
    clip, acts = _inputs(N=50, near_ties=False)
    with pytest.raises(NeurocoreError, match="top_k must be between 1 and the number of images N=50; got 100"):
        similarity.soft_wpmi(clip, acts, device="cpu")
    with pytest.raises(NeurocoreError, match="rows"):
        similarity.wpmi(clip[:10], acts, device="cpu")
    with pytest.raises(NeurocoreError, match="no image per neuron"):
        similarity.rank_reorder(clip, acts, device="cpu", top_fraction=0.01)
    if not torch.cuda.is_available():
        with pytest.raises(NeurocoreError, match="pass device='cpu'"):
            similarity.cos_similarity(clip, acts)
