"""Every op runs inside compiled graphs: torch.compile(fullgraph=True) without a graph break, with
static and dynamic shapes, torch.export (saved and loaded again), and TorchScript through
``torch.ops.neurocore.*``; compiled results equal eager ones.

``aot_eager`` traces each op through its fake kernel (shapes and dtypes from ``neurocore/ops.py``) and
functionalisation, as inductor does, without spending the seconds of a C++ compile; one case runs the
real inductor backend.
"""

from __future__ import annotations

import io

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

from neurocore import ops


def _topk(x):
    return ops.topk(x, 5)


def _topk_merge(x):
    va, ia = ops.topk(x[:20], 5)
    vb, ib = ops.topk(x[20:], 5)
    return ops.topk_merge(va, ia, vb, ib + 20)


def _soft_wpmi(sims, x):
    idx = ops.topk(x, 6)[1]
    return ops.soft_wpmi(sims, idx, ops.soft_wpmi_weights(6), a=10.0, lam=1.0)


def _lstsq_gram(P, Y):
    train, val = ops.gram_stats(P[:60], Y[:60]), ops.gram_stats(P[60:], Y[60:])
    sets = torch.tensor([[[0, 1], [2, -1]], [[3, 4], [5, 0]]])
    return ops.lstsq_gram(train, val, sets)


_PERMS = ops.sample_permutations(4, 5, seed=0)  # drawn outside: a torch.Generator cannot be made in a graph


def _shapley(x, weight, bias, perms=_PERMS):
    return ops.shapley_permutation(x, weight, bias, torch.zeros_like(x), perms, "softmax")


def _cases():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 4, generator=g)
    return {
        "topk": (_topk, (x,)),
        "topk_merge": (_topk_merge, (x,)),
        "soft_wpmi": (_soft_wpmi, (torch.randn(40, 7, generator=g) / 10, x)),
        "lstsq_gram": (_lstsq_gram, (torch.randn(100, 6, generator=g, dtype=torch.float64), torch.randn(100, 2, generator=g, dtype=torch.float64))),
        "shapley_permutation": (_shapley, (torch.randn(3, 5, generator=g), torch.randn(4, 5, generator=g), torch.randn(4, generator=g))),
    }


CASES = _cases()
OPS = ["topk", "topk_merge", "soft_wpmi", "lstsq_gram", "shapley_permutation"]


def _assert_same(a, b):
    for x, y in zip(torch.utils._pytree.tree_leaves(a), torch.utils._pytree.tree_leaves(b)):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_every_op_has_a_case():
    schemas = {s.name.split("::")[1] for s in torch._C._jit_get_all_schemas() if s.name.startswith("neurocore::")}
    assert schemas == set(OPS)


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
@pytest.mark.parametrize("name", OPS)
def test_torch_compile_fullgraph(name, dynamic):
    fn, args = CASES[name]
    torch._dynamo.reset()
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(fn, fullgraph=True, dynamic=dynamic, backend=counter)
    torch._dynamo.utils.counters.clear()
    _assert_same(compiled(*args), fn(*args))
    assert not torch._dynamo.utils.counters["graph_break"]  # fullgraph=True raises on one; be explicit
    # the op itself is in the graph (not run eagerly around it)
    targets = {str(n.target) for g in counter.graphs for n in g.graph.nodes}
    assert any(f"neurocore.{name}" in t for t in targets), targets


def test_dynamic_shapes_reuse_the_graph():
    torch._dynamo.reset()
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(_soft_wpmi, fullgraph=True, dynamic=True, backend=counter)
    sims, x = torch.randn(30, 7) / 10, torch.randn(30, 3)
    _assert_same(compiled(sims, x), _soft_wpmi(sims, x))
    frames = counter.frame_count
    for n in (45, 80):
        sims, x = torch.randn(n, 7) / 10, torch.randn(n, 3)
        _assert_same(compiled(sims, x), _soft_wpmi(sims, x))
    assert counter.frame_count == frames  # other image counts reuse the compiled graph


def test_inductor_backend():
    fn, args = CASES["topk"]
    torch._dynamo.reset()
    _assert_same(torch.compile(fn, fullgraph=True)(*args), fn(*args))


class _Wrap(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


@pytest.mark.parametrize("name", OPS)
def test_torch_export_and_reload(name):
    fn, args = CASES[name]
    program = torch.export.export(_Wrap(fn), args)
    assert any(f"neurocore.{name}" in str(n.target) for n in program.graph.nodes)
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    buffer.seek(0)
    _assert_same(torch.export.load(buffer).module()(*args), fn(*args))


def test_torch_export_with_a_dynamic_image_count():
    n = torch.export.Dim("n", min=8)
    sims, x = CASES["soft_wpmi"][1]
    program = torch.export.export(_Wrap(_soft_wpmi), (sims, x), dynamic_shapes=(({0: n}, {0: n}),))
    sims2, x2 = torch.randn(90, 7) / 10, torch.randn(90, 4)
    _assert_same(program.module()(sims2, x2), _soft_wpmi(sims2, x2))


def test_torchscript_calls_the_ops():
    @torch.jit.script
    def scripted(x: torch.Tensor, sims: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        idx = torch.ops.neurocore.topk(x, 6)[1]
        return torch.ops.neurocore.soft_wpmi(sims, idx, p, 10.0, 1.0, 1e-7)

    sims, x = CASES["soft_wpmi"][1]
    _assert_same(scripted(x, sims, ops.soft_wpmi_weights(6)), _soft_wpmi(sims, x))
