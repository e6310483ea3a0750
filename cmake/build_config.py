"""Build decisions for neurocore._C, kept out of setup.py so they can be read and tested alone.

* ``resolve_cuda(mode)``: whether the CUDA kernels are built (``NEUROCORE_CUDA=auto|1|0``).
* ``sources(root, with_cuda)``: the translation units.
* ``compile_flags(with_cuda)``: compiler flags (``-O3 -g0``; never a hard-coded ``-std=``).
"""

from __future__ import annotations

import glob
import os
import shutil
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class CudaDecision:
    enabled: bool
    reason: str
    home: str | None = None


def _is_toolkit(path: str | None) -> bool:
    return bool(path) and os.path.isfile(os.path.join(path, "bin", "nvcc")) and os.path.isfile(
        os.path.join(path, "include", "cuda_runtime.h")
    )


def find_cuda_home() -> str | None:
    """The CUDA toolkit root, or None.

    torch guesses it from ``which nvcc``; where that nvcc is a wrapper script (as on our machines:
    /usr/local/bin/nvcc execs /usr/local/cuda-13.0/bin/nvcc) the guess is its parent folder, which
    is wrong, so look at the usual places first.
    """
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    candidates += sorted(glob.glob("/usr/local/cuda-*"), reverse=True)
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    for path in candidates:
        if _is_toolkit(path):
            return os.path.realpath(path)
    return None


def resolve_cuda(mode: str) -> CudaDecision:
    """Decide whether to build the CUDA kernels and prepare the environment for it.

    Args:
        mode: ``"auto"`` builds them when torch is a CUDA build and a toolkit is found (no GPU
            needed); ``"1"`` does the same but fails with the reason when it cannot; ``"0"`` never.
    """
    mode = (mode or "auto").strip().lower()
    if mode not in ("auto", "1", "0"):
        raise SystemExit(f"NEUROCORE_CUDA must be auto, 1 or 0; got {mode!r}")
    if mode == "0":
        return _report(CudaDecision(False, "NEUROCORE_CUDA=0"))
    if torch.version.cuda is None:
        decision = CudaDecision(False, f"torch {torch.__version__} is a CPU-only build")
    else:
        home = find_cuda_home()
        if home is None:
            decision = CudaDecision(
                False, "no CUDA toolkit found (set CUDA_HOME to the folder holding bin/nvcc)"
            )
        else:
            decision = CudaDecision(True, f"torch CUDA {torch.version.cuda}, toolkit {home}", home)
    if mode == "1" and not decision.enabled:
        raise SystemExit(
            f"NEUROCORE_CUDA=1 but the CUDA kernels cannot be built: {decision.reason}. "
            "Install a CUDA build of torch and a CUDA toolkit, or build with NEUROCORE_CUDA=0."
        )
    if decision.enabled:
        os.environ["CUDA_HOME"] = decision.home
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not _gpu_visible():
            # Without a visible GPU torch cannot detect the architecture (it raises IndexError).
            os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0"
    return _report(decision)


def _gpu_visible() -> bool:
    try:
        return torch.cuda.is_available() and torch.cuda.device_count() > 0
    except Exception:  # a driver problem is the same as no GPU for the build
        return False


def _report(decision: CudaDecision) -> CudaDecision:
    state = "with" if decision.enabled else "without"
    print(f"neurocore: building {state} CUDA kernels ({decision.reason})")
    return decision


def sources(root: str, with_cuda: bool) -> list[str]:
    csrc = os.path.join(root, "csrc")
    files = sorted(glob.glob(os.path.join(csrc, "*.cpp")))
    files += sorted(glob.glob(os.path.join(csrc, "cpu", "*.cpp")))
    if with_cuda:
        files += sorted(glob.glob(os.path.join(csrc, "cuda", "*.cu")))
    return files


def compile_flags(with_cuda: bool) -> dict[str, list[str]]:
    # -g0 overrides Python's default -g (a 12 MB .so instead of 0.25 MB). No -march=native: a wheel
    # built that way crashes on older CPUs; the hot loops pick their instruction set at run time.
    defines = [f'-DNEUROCORE_TORCH_VERSION="{torch.__version__}"']
    if with_cuda:
        defines.append("-DNEUROCORE_WITH_CUDA")
    # -fno-trapping-math lets GCC vectorise the branch-free exp/log of csrc/kernels/common.h (we never
    # read floating-point exception flags); -ffp-contract=fast allows FMA in the AVX2/AVX-512 clones.
    # -mprefer-vector-width=512 lets the AVX-512 clones use full-width vectors (GCC's default tuning
    # stops at 256 bits): measured 2x on the Shapley walk here; it changes nothing for other clones.
    flags = {"cxx": ["-O3", "-g0", "-fopenmp", "-fno-trapping-math", "-ffp-contract=fast",
                     "-mprefer-vector-width=512", *defines]}
    if with_cuda:
        flags["nvcc"] = ["-O3", *defines]
    return flags
