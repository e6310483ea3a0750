"""Build neurocore._C: the C++ (and, where possible, CUDA) kernels behind neurocore.ops.

Build with ``pip install --no-build-isolation [-e] .`` after installing torch.
``NEUROCORE_CUDA=auto|1|0`` selects the CUDA kernels (see cmake/build_config.py).
"""

import os
import sys

from setuptools import setup

try:
    import torch  # noqa: F401
except ImportError:
    sys.exit(
        "neurocore builds against the torch that is installed: install torch first, "
        "then run `pip install --no-build-isolation .`"
    )

ROOT = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(ROOT, "cmake"))
import build_config  # noqa: E402  (cmake/build_config.py: the build decisions, kept testable)

cuda = build_config.resolve_cuda(os.environ.get("NEUROCORE_CUDA", "auto"))

# CUDA_HOME must be set before cpp_extension is imported: it caches its own guess at import time.
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402

sources = build_config.sources(ROOT, with_cuda=cuda.enabled)
flags = build_config.compile_flags(with_cuda=cuda.enabled)
Extension = CUDAExtension if cuda.enabled else CppExtension

setup(
    ext_modules=[
        Extension(
            "neurocore._C",
            sources=[os.path.relpath(s, ROOT) for s in sources],
            include_dirs=[os.path.join(ROOT, "csrc")],
            extra_compile_args=flags,
            extra_link_args=["-fopenmp"],
        )
    ],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
