// The one place where neurocore's op schemas are declared, and the Python module neurocore._C.
// Implementations register themselves per device in csrc/cpu/<op>.cpp and csrc/cuda/<op>.cu.
// cmake/ compiles this file with NEUROCORE_NO_PYTHON into a plain libtorch library (no Python module).
#ifndef NEUROCORE_NO_PYTHON
#include <Python.h>
#endif
#include <torch/library.h>

#ifndef NEUROCORE_NO_PYTHON
#include <pybind11/pybind11.h>
#endif

#ifndef NEUROCORE_TORCH_VERSION
#define NEUROCORE_TORCH_VERSION "unknown"
#endif

TORCH_LIBRARY(neurocore, m) {
  m.def("topk(Tensor x, int k) -> (Tensor values, Tensor indices)");
  m.def(
      "topk_merge(Tensor values_a, Tensor indices_a, Tensor values_b, Tensor indices_b, int k) "
      "-> (Tensor values, Tensor indices)");
  m.def("soft_wpmi(Tensor sims, Tensor topk_idx, Tensor p, float a, float lam, float eps) -> Tensor");
  m.def(
      "lstsq_gram(Tensor train_cov, Tensor train_mean, Tensor train_cross, Tensor train_target_mean, "
      "Tensor val_cov, Tensor val_cross, Tensor val_target_var, Tensor sets, float ridge) "
      "-> (Tensor weights, Tensor bias, Tensor val_corr)");
  m.def(
      "shapley_permutation(Tensor x, Tensor weight, Tensor bias, Tensor background, Tensor perms, "
      "str link) -> Tensor");
}

#ifndef NEUROCORE_NO_PYTHON
namespace {

bool built_with_cuda() {
#ifdef NEUROCORE_WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace

PYBIND11_MODULE(_C, module) {
  module.doc() = "neurocore's compiled kernels; call them through neurocore.ops";
  module.def("built_with_cuda", &built_with_cuda, "Whether the CUDA kernels were compiled in.");
  module.attr("torch_version") = NEUROCORE_TORCH_VERSION;
}
#endif  // NEUROCORE_NO_PYTHON
