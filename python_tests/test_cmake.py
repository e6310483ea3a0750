"""The CMake package in cmake/ (a libtorch library of the same ops, for programs outside Python) loads
with ``torch.ops.load_library`` in a process that never imports neurocore, and its ops compute what
neurocore's do.

The library is built by ``.ci/run`` (``cmake -S cmake -B build/cmake && cmake --build build/cmake``,
which also runs its C++ test with ctest). Here: ``NEUROCORE_CMAKE_LIB`` names the library, else
``build/cmake/libneurocore.so``; without it the test skips, except under CI (``CI=true``), where a
missing library is a failure.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _library() -> Path:
    path = Path(os.environ.get("NEUROCORE_CMAKE_LIB", ROOT / "build" / "cmake" / "libneurocore.so"))
    if not path.is_file():
        reason = (
            f"the CMake library {path} is not built: `cmake -S cmake -B build/cmake -DCMAKE_PREFIX_PATH=$(python -c "
            "'import torch; print(torch.utils.cmake_prefix_path)') && cmake --build build/cmake` (as .ci/run does)"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["neurocore"] = None  # any import of neurocore now fails: the library must stand alone
    import torch

    torch.ops.load_library(sys.argv[1])
    nc = torch.ops.neurocore
    torch.manual_seed(0)

    x = torch.tensor([[1., 5.], [3., 5.], [2., 0.]])
    values, indices = nc.topk(x, 2)
    assert values.tolist() == [[3.0, 5.0], [2.0, 5.0]] and indices.tolist() == [[1, 0], [2, 1]]

    r = torch.randn(300, 6, dtype=torch.float64)
    va, ia = nc.topk(r[:100], 10)
    vb, ib = nc.topk(r[100:], 10)
    v, i = nc.topk_merge(va, ia, vb, ib + 100, 10)
    assert torch.equal(v, r.sort(0, descending=True).values[:10]) and torch.equal(r.gather(0, i), v)

    sims, k = torch.rand(300, 9, dtype=torch.float64) * 0.3, 12
    idx = nc.topk(r, k)[1]
    p = 0.998 - torch.arange(k, dtype=torch.float64) / k * (0.998 - 0.97)
    out = nc.soft_wpmi(sims, idx, p, 10.0, 1.0, 1e-7)
    P = torch.softmax(10.0 * sims, 1)
    L = torch.log(1 + p.view(-1, 1, 1) * (P[idx] - 1) + 1e-7).sum(0)
    expected = L - (torch.logsumexp(L, 0, keepdim=True) - torch.log(torch.tensor(6.0, dtype=torch.float64)))
    assert torch.allclose(out, expected, rtol=1e-10, atol=1e-10), (out - expected).abs().max()

    w, b = torch.randn(3, 5, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    xs, bg = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    perms = torch.argsort(torch.rand(8, 5), 1)
    assert torch.allclose(nc.shapley_permutation(xs, w, b, bg, perms, "identity"), w * (xs - bg).unsqueeze(1))
    phi = nc.shapley_permutation(xs, w, b, bg, perms, "softmax")
    f = lambda z: torch.softmax(z @ w.T + b, -1)
    assert torch.allclose(phi.sum(-1), f(xs) - f(bg))

    Pm = torch.randn(200, 4, dtype=torch.float64)
    Y = (2 * Pm[:, 0] - Pm[:, 2] + 0.5).unsqueeze(1)
    def stats(p, y):
        pc, yc = p - p.mean(0), y - y.mean(0)
        return p.mean(0), pc.T @ pc / len(p), y.mean(0), pc.T @ yc / len(p), (yc * yc).sum(0) / len(p)
    mt, ct, tmt, crt, _ = stats(Pm[:150], Y[:150])
    _, cv, _, crv, tvv = stats(Pm[150:], Y[150:])
    weights, bias, corr = nc.lstsq_gram(ct, mt, crt, tmt, cv, crv, tvv, torch.tensor([[[0, 2]]]), 1e-10)
    assert torch.allclose(weights.flatten(), torch.tensor([2., -1.], dtype=torch.float64), atol=1e-6)
    assert abs(float(bias) - 0.5) < 1e-6 and abs(float(corr) - 1) < 1e-9

    unit = torch.jit.CompilationUnit("def scripted(x: Tensor):\\n    return torch.ops.neurocore.topk(x, 2)[1]\\n")
    assert unit.scripted(x).tolist() == [[1, 0], [2, 1]]  # TorchScript reaches the ops too

    assert not any(name.startswith("neurocore") and sys.modules[name] is not None for name in sys.modules)
    print("all ops OK")
    """
)


def test_library_loads_without_neurocore_and_computes_the_ops():
    library = _library()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(library)], capture_output=True, text=True, timeout=300, cwd="/", env=env
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "all ops OK" in out.stdout


def test_package_files_are_installed_with_the_library():
    # the build tree is itself a CMake package (find_package(neurocore) with neurocore_DIR=build dir)
    build = _library().parent
    for name in ("neurocoreConfig.cmake", "neurocoreConfigVersion.cmake", "neurocoreTargets.cmake", "neurocoreFindTorch.cmake"):
        assert (build / name).is_file(), name
    assert "neurocore::neurocore" in (build / "neurocoreTargets.cmake").read_text()
