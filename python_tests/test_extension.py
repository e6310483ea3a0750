"""Loading neurocore._C, the errors that say how to fix a broken build, and the docstring examples."""

from __future__ import annotations

import doctest
import re
import subprocess
import sys
import types
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import neurocore
from neurocore import _extension, ops

REPO_ROOT = Path(__file__).resolve().parent.parent
OPS = ("topk", "topk_merge", "soft_wpmi", "lstsq_gram", "shapley_permutation")


def test_built_with_cuda_is_a_bool():
    assert isinstance(neurocore.built_with_cuda(), bool)
    assert isinstance(_extension.built_with_cuda(), bool)


def test_extension_was_built_against_the_installed_torch():
    assert neurocore._C.torch_version == torch.__version__


def test_load_is_cached():
    assert _extension.load() is _extension.load() is neurocore._C


@pytest.mark.parametrize("name", OPS)
def test_every_op_is_registered_with_a_wrapper(name):
    assert hasattr(torch.ops.neurocore, name)
    assert callable(getattr(ops, name)) and name in ops.__all__


def test_public_names_exist():
    for name in neurocore.__all__:
        assert hasattr(neurocore, name), name
    for name in ops.__all__:
        assert hasattr(ops, name), name
    assert issubclass(neurocore.ExtensionError, ImportError)


# ----------------------------------------------------------------------------------------------
# ExtensionError: what a broken or stale build reports


@pytest.fixture
def unloaded(monkeypatch):
    """Forget the loaded module for one test; monkeypatch puts it (and importlib) back afterwards."""
    monkeypatch.setattr(_extension, "_module", None)
    return monkeypatch


def fake_importlib(result=None, error: Exception | None = None):
    def import_module(name, package=None):
        assert name == "neurocore._C"
        if error is not None:
            raise error
        return result

    return types.SimpleNamespace(import_module=import_module)


@pytest.mark.parametrize(
    "text, reason",
    [
        pytest.param(
            "undefined symbol: foo",
            "does not match the installed torch " + re.escape(torch.__version__),
            id="undefined-symbol",
        ),
        pytest.param(
            "module compiled against ABI version 0x1000009", r"does not match the installed torch", id="abi-version"
        ),
        pytest.param("No module named 'neurocore._C'", r"neurocore._C is not built", id="not-built"),
    ],
)
def test_load_failure_says_how_to_rebuild(unloaded, text, reason):
    error = ImportError(text)
    unloaded.setattr(_extension, "importlib", fake_importlib(error=error))
    with pytest.raises(neurocore.ExtensionError, match=reason) as info:
        _extension.load()
    message = str(info.value)
    assert "pip install --no-build-isolation" in message
    assert text in message  # the original error is kept in the message ...
    assert info.value.__cause__ is error  # ... and chained


def test_load_rejects_a_build_for_another_torch(unloaded):
    stale = types.SimpleNamespace(torch_version="1.0.0", built_with_cuda=lambda: False)
    unloaded.setattr(_extension, "importlib", fake_importlib(result=stale))
    match = r"built against torch 1\.0\.0 but torch " + re.escape(torch.__version__)
    with pytest.raises(neurocore.ExtensionError, match=match) as info:
        _extension.load()
    assert "pip install --no-build-isolation" in str(info.value)
    assert _extension._module is None  # a rejected module is not cached


def test_load_failure_leaves_a_later_load_possible(unloaded):
    unloaded.setattr(_extension, "importlib", fake_importlib(error=ImportError("undefined symbol: foo")))
    with pytest.raises(neurocore.ExtensionError):
        _extension.load()
    unloaded.undo()  # the real importlib and module again
    unloaded.setattr(_extension, "_module", None)
    assert _extension.load() is neurocore._C


def test_setup_py_without_torch_says_install_torch_first():
    code = (
        "import sys; sys.modules['torch'] = None; sys.argv = ['setup.py', '--version']; "
        "exec(open('setup.py').read())"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "install torch first" in proc.stderr
    assert "pip install --no-build-isolation" in proc.stderr


# ----------------------------------------------------------------------------------------------
# a CUDA tensor given to a build without the CUDA kernels: the wrapper names the fix
#
# The wrapper decides from neurocore.built_with_cuda() and the tensor's device, so this runs on every
# machine: built_with_cuda is patched to say "CPU-only build", and the CUDA tensor is a fake one
# (torch's FakeTensorMode: a tensor on the CUDA device with no GPU behind it) or, on a GPU machine, a
# real one. The control below shows the same fake tensors pass the check when the build has CUDA.


def cuda_like(t: torch.Tensor, device: str, mode=None) -> torch.Tensor:
    if device == "cuda":
        return t.cuda()
    from torch._subclasses.fake_tensor import FakeTensorMode

    with mode or FakeTensorMode():
        return torch.empty(t.shape, dtype=t.dtype, device="cuda")


def op_arguments():
    """``{op: (call, tensors, checked)}``: each op's tensor arguments (valid CPU tensors) and those the
    wrapper checks, by the names its errors use."""
    x = torch.randn(6, 3)
    v, i = ops.topk(x, 2)
    st = ops.gram_stats(torch.randn(20, 4), torch.randn(20, 3))
    stats = {f: getattr(st, f) for f in ("mean", "cov", "target_mean", "cross", "target_var")}

    def lstsq(sets, **t):
        def split(prefix):
            return ops.GramStats(20, **{f: t[f"{prefix}.{f}"] for f in stats})

        return ops.lstsq_gram(split("train"), split("val"), sets)

    shapley = dict(x=torch.randn(2, 4), weight=torch.randn(1, 4), bias=torch.zeros(1), background=torch.zeros(2, 4),
                   perms=ops.sample_permutations(3, 4))
    return {
        "topk": (lambda x: ops.topk(x, 2), {"x": x}, ["x"]),
        "topk_merge": (ops.topk_merge, {"values_a": v, "indices_a": i, "values_b": v, "indices_b": i},
                       ["values_a", "indices_a", "values_b", "indices_b"]),
        "soft_wpmi": (lambda sims, topk_idx, p: ops.soft_wpmi(sims, topk_idx, p, 10.0, 1.0),
                      {"sims": torch.randn(6, 4), "topk_idx": i, "p": ops.soft_wpmi_weights(2)}, ["sims", "topk_idx"]),
        "lstsq_gram": (lambda **t: lstsq(**t),
                       {"sets": torch.tensor([[[0, 1]], [[2, -1]], [[3, 0]]]),
                        **{f"{s}.{f}": t for s in ("train", "val") for f, t in stats.items()}},
                       ["sets", "train.cov", "val.cov"]),
        "shapley_permutation": (lambda **kw: ops.shapley_permutation(**kw, link="sigmoid"), shapley, list(shapley)),
    }


CASES = [(op, name) for op, (_, _, checked) in op_arguments().items() for name in checked]


@pytest.mark.parametrize("op, name", CASES, ids=[f"{op}-{name}" for op, name in CASES])
def test_cuda_tensor_on_cpu_only_build_names_the_fix(op, name, device, monkeypatch):
    call, args, _ = op_arguments()[op]
    monkeypatch.setattr(_extension, "built_with_cuda", lambda: False)
    args = dict(args, **{name: cuda_like(args[name], device)})
    with pytest.raises(RuntimeError, match=(
        rf"neurocore\.ops\.{op}: {re.escape(name)} is a CUDA tensor but neurocore was built without its CUDA "
        r"kernels; .*`NEUROCORE_CUDA=1 pip install --no-build-isolation -e \.`, or pass CPU tensors \(\.cpu\(\)\)"
    )):
        call(**args)


@pytest.mark.parametrize("op", list(op_arguments()))
def test_cuda_tensors_pass_the_check_on_a_cuda_build(op, monkeypatch):
    # The control: the same fake CUDA tensors, all of them, reach the op (its fake kernel) when the
    # build has CUDA, so the error above comes from the build check and nothing else.
    call, args, _ = op_arguments()[op]
    monkeypatch.setattr(_extension, "built_with_cuda", lambda: True)
    from torch._subclasses.fake_tensor import FakeTensorMode

    mode = FakeTensorMode()
    with mode:  # one mode for all inputs
        out = call(**{k: cuda_like(t, "cpu", mode) for k, t in args.items()})
    first = out[0] if isinstance(out, tuple) else out
    assert first.device.type == "cuda"


# ----------------------------------------------------------------------------------------------
# docstring examples


@pytest.mark.parametrize("module", [ops, _extension], ids=lambda m: m.__name__)
def test_docstring_examples(module):
    torch.manual_seed(0)
    result = doctest.testmod(module, verbose=False, report=True)
    assert result.attempted > 0, f"{module.__name__} has no examples"
    assert result.failed == 0, f"{result.failed} of {result.attempted} doctest examples failed (see stdout)"
