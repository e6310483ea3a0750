// Argument checks shared by the CPU and CUDA implementations of every op: one place that says
// what each op accepts, with messages that name the argument, what was expected and what came.
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <string>

namespace neurocore {

inline std::string shape_str(const at::Tensor& t) {
  std::string s = "[";
  for (int64_t d = 0; d < t.dim(); ++d) s += (d ? ", " : "") + std::to_string(t.size(d));
  return s + "]";
}

inline void check_dim(const at::Tensor& t, int64_t dim, const char* name, const char* layout) {
  TORCH_CHECK(t.dim() == dim, "neurocore: ", name, " must be a ", dim, "-D tensor ", layout,
              "; got shape ", shape_str(t));
}

inline void check_floating(const at::Tensor& t, const char* name) {
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), "neurocore: ", name,
              " must be a floating-point tensor; got ", t.scalar_type());
}

inline void check_index(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kLong, "neurocore: ", name, " must be int64 (torch.long); got ",
              t.scalar_type());
}

inline void check_same_device(const at::Tensor& a, const char* name_a, const at::Tensor& b,
                              const char* name_b) {
  TORCH_CHECK(a.device() == b.device(), "neurocore: ", name_a, " is on ", a.device(), " but ",
              name_b, " is on ", b.device(), "; move them to one device");
}

// ---- per-op checks (shapes, dtypes, devices); the kernels rely on them ----

inline void check_topk_args(const at::Tensor& x, int64_t k) {
  check_dim(x, 2, "x", "[N images, K neurons]");
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), "neurocore.topk: x must be floating point; got ",
              x.scalar_type());
  TORCH_CHECK(k >= 0, "neurocore.topk: k must be >= 0; got ", k);
}

inline void check_topk_merge_args(const at::Tensor& values_a, const at::Tensor& indices_a,
                                  const at::Tensor& values_b, const at::Tensor& indices_b,
                                  int64_t k) {
  check_dim(values_a, 2, "values_a", "[k_a, K]");
  check_dim(values_b, 2, "values_b", "[k_b, K]");
  check_index(indices_a, "indices_a");
  check_index(indices_b, "indices_b");
  TORCH_CHECK(indices_a.sizes() == values_a.sizes() && indices_b.sizes() == values_b.sizes(),
              "neurocore.topk_merge: each indices tensor must have its values' shape; got values_a ",
              shape_str(values_a), ", indices_a ", shape_str(indices_a), ", values_b ",
              shape_str(values_b), ", indices_b ", shape_str(indices_b));
  TORCH_CHECK(values_a.size(1) == values_b.size(1),
              "neurocore.topk_merge: both parts must cover the same K neurons; got K=",
              values_a.size(1), " and K=", values_b.size(1));
  TORCH_CHECK(values_a.scalar_type() == values_b.scalar_type(),
              "neurocore.topk_merge: values_a and values_b must share a dtype; got ",
              values_a.scalar_type(), " and ", values_b.scalar_type());
  TORCH_CHECK(at::isFloatingType(values_a.scalar_type()),
              "neurocore.topk_merge: values must be floating point; got ", values_a.scalar_type());
  check_same_device(values_a, "values_a", values_b, "values_b");
  check_same_device(values_a, "values_a", indices_a, "indices_a");
  check_same_device(values_a, "values_a", indices_b, "indices_b");
  TORCH_CHECK(k >= 0, "neurocore.topk_merge: k must be >= 0; got ", k);
}

inline void check_soft_wpmi_args(const at::Tensor& sims, const at::Tensor& topk_idx,
                                 const at::Tensor& p, double a, double lam, double eps) {
  check_dim(sims, 2, "sims", "[N images, M concepts]");
  check_dim(topk_idx, 2, "topk_idx", "[k, K neurons] (rank-major, as neurocore.ops.topk returns)");
  check_dim(p, 1, "p", "[k]");
  TORCH_CHECK(sims.scalar_type() == at::kFloat || sims.scalar_type() == at::kDouble,
              "neurocore.soft_wpmi: sims must be float32 or float64; got ", sims.scalar_type());
  check_index(topk_idx, "topk_idx");
  check_floating(p, "p");
  TORCH_CHECK(p.size(0) == topk_idx.size(0), "neurocore.soft_wpmi: p must have one weight per rank (",
              topk_idx.size(0), " = topk_idx.shape[0]); got ", p.size(0));
  check_same_device(sims, "sims", topk_idx, "topk_idx");
  check_same_device(sims, "sims", p, "p");
  TORCH_CHECK(std::isfinite(a) && std::isfinite(lam), "neurocore.soft_wpmi: a and lam must be finite; got a=",
              a, ", lam=", lam);
  TORCH_CHECK(std::isfinite(eps) && eps >= 0, "neurocore.soft_wpmi: eps must be finite and >= 0; got ", eps);
  if (p.numel() > 0) {
    TORCH_CHECK(p.ge(0).logical_and(p.le(1)).all().item<bool>(),
                "neurocore.soft_wpmi: p (the per-rank weights) must lie in [0, 1]");
  }
  if (topk_idx.numel() > 0) {
    const int64_t lo = topk_idx.min().item<int64_t>(), hi = topk_idx.max().item<int64_t>();
    TORCH_CHECK(lo >= 0 && hi < sims.size(0), "neurocore.soft_wpmi: topk_idx must index rows of sims, in [0, ",
                sims.size(0), "); got values in [", lo, ", ", hi, "]");
  }
}

inline void check_all_finite_rows(bool finite, const char* op, const char* name) {
  TORCH_CHECK(finite, "neurocore.", op, ": ", name,
              " contains NaN or infinite values; similarities must be finite (check the encoder's "
              "output, or use torch.nan_to_num)");
}

// NaN ranks first in the top-k ordering, so checking the (small) output finds any NaN input.
inline void check_topk_output_finite(const at::Tensor& values, const char* op) {
  if (values.numel() == 0) return;
  TORCH_CHECK(!values.isnan().any().item<bool>(), "neurocore.", op,
              ": the input contains NaN activations; remove or replace them (torch.nan_to_num) "
              "before selecting the top k");
}

}  // namespace neurocore
