// Argument checks shared by the CPU and CUDA implementations of every op: one place that says
// what each op accepts, with messages that name the argument, what was expected and what came.
#pragma once

#include <ATen/ATen.h>

#include "kernels/lstsq_gram.h"
#include "kernels/shapley.h"

#include <cmath>
#include <string>
#include <vector>

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

// NaN ranks first in the top-k ordering, so checking the (small) output finds any NaN input. With
// nothing selected (k = 0) the input itself is checked.
inline void check_topk_output_finite(const at::Tensor& values, const at::Tensor& input, const char* op) {
  const at::Tensor& seen = values.numel() > 0 || input.numel() == 0 ? values : input;
  if (seen.numel() == 0) return;
  TORCH_CHECK(!seen.isnan().any().item<bool>(), "neurocore.", op,
              ": the input contains NaN activations; remove or replace them (torch.nan_to_num) "
              "before selecting the top k");
}

// topk and topk_merge around a back end's `rows(values, optional indices, k)` selection: the checks
// and the NaN report are the same on every device.
template <typename Rows>
std::tuple<at::Tensor, at::Tensor> run_topk(const at::Tensor& x, int64_t k, Rows rows) {
  check_topk_args(x, k);
  auto out = rows(x, c10::nullopt, k);
  check_topk_output_finite(std::get<0>(out), x, "topk");
  return out;
}

template <typename Rows>
std::tuple<at::Tensor, at::Tensor> run_topk_merge(const at::Tensor& values_a, const at::Tensor& indices_a,
                                                  const at::Tensor& values_b, const at::Tensor& indices_b,
                                                  int64_t k, Rows rows) {
  check_topk_merge_args(values_a, indices_a, values_b, indices_b, k);
  const at::Tensor values = at::cat({values_a, values_b});
  auto out = rows(values, at::cat({indices_a, indices_b}), k);
  check_topk_output_finite(std::get<0>(out), values, "topk_merge");
  return out;
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

inline void check_lstsq_gram_args(const at::Tensor& train_cov, const at::Tensor& train_mean,
                                  const at::Tensor& train_cross, const at::Tensor& train_target_mean,
                                  const at::Tensor& val_cov, const at::Tensor& val_cross,
                                  const at::Tensor& val_target_var, const at::Tensor& sets,
                                  double ridge) {
  check_dim(sets, 3, "sets", "[K neurons, R candidates, s concepts]");
  check_index(sets, "sets");
  check_dim(train_cov, 2, "train.cov", "[M, M]");
  const int64_t M = train_cov.size(0), K = sets.size(0);
  const struct {
    const at::Tensor& t;
    const char* name;
    std::vector<int64_t> shape;
  } expected[] = {{train_cov, "train.cov", {M, M}},          {train_mean, "train.mean", {M}},
                  {train_cross, "train.cross", {M, K}},      {train_target_mean, "train.target_mean", {K}},
                  {val_cov, "val.cov", {M, M}},              {val_cross, "val.cross", {M, K}},
                  {val_target_var, "val.target_var", {K}}};
  for (const auto& e : expected) {
    check_floating(e.t, e.name);
    check_same_device(sets, "sets", e.t, e.name);
    TORCH_CHECK(e.t.sizes() == at::IntArrayRef(e.shape), "neurocore.lstsq_gram: ", e.name,
                " must have shape ", at::IntArrayRef(e.shape), " (M=", M, " concepts, K=", K,
                " neurons = sets.shape[0]); got ", shape_str(e.t));
  }
  TORCH_CHECK(sets.size(2) <= kernels::kMaxSetSize, "neurocore.lstsq_gram: sets may hold at most ",
              kernels::kMaxSetSize, " concepts; got s=", sets.size(2));
  TORCH_CHECK(std::isfinite(ridge) && ridge >= 0, "neurocore.lstsq_gram: ridge must be finite and >= 0; got ",
              ridge);
  if (sets.numel() > 0) {
    const int64_t lo = sets.min().item<int64_t>(), hi = sets.max().item<int64_t>();
    TORCH_CHECK(lo >= -1 && hi < M, "neurocore.lstsq_gram: sets must hold concept indices in [0, ", M,
                ") or -1 for an unused slot; got values in [", lo, ", ", hi, "]");
  }
}

// The checked, float64, contiguous inputs and the zeroed outputs of lstsq_gram, as both back ends
// need them.
struct LstsqGramCall {
  at::Tensor train_cov, train_mean, train_cross, train_target_mean, val_cov, val_cross, val_target_var;
  at::Tensor sets, weights, bias, corr;
  int64_t K, R, s, M;
  kernels::GramView train() const {
    return {train_cov.data_ptr<double>(), train_mean.data_ptr<double>(), train_cross.data_ptr<double>(),
            train_target_mean.data_ptr<double>(), nullptr};
  }
  kernels::GramView val() const {
    return {val_cov.data_ptr<double>(), nullptr, val_cross.data_ptr<double>(), nullptr,
            val_target_var.data_ptr<double>()};
  }
};

inline LstsqGramCall prepare_lstsq_gram(const at::Tensor& train_cov, const at::Tensor& train_mean,
                                        const at::Tensor& train_cross, const at::Tensor& train_target_mean,
                                        const at::Tensor& val_cov, const at::Tensor& val_cross,
                                        const at::Tensor& val_target_var, const at::Tensor& sets,
                                        double ridge) {
  check_lstsq_gram_args(train_cov, train_mean, train_cross, train_target_mean, val_cov, val_cross,
                        val_target_var, sets, ridge);
  auto f64 = [](const at::Tensor& t) { return t.to(at::kDouble).contiguous(); };
  LstsqGramCall call{f64(train_cov), f64(train_mean), f64(train_cross), f64(train_target_mean),
                     f64(val_cov),   f64(val_cross),  f64(val_target_var), sets.contiguous(),
                     {}, {}, {}, sets.size(0), sets.size(1), sets.size(2), train_cov.size(0)};
  const auto opts = call.train_cov.options();
  call.weights = at::zeros({call.K, call.R, call.s}, opts);
  call.bias = at::zeros({call.K, call.R}, opts);
  call.corr = at::zeros({call.K, call.R}, opts);
  return call;
}

inline void check_shapley_args(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                               const at::Tensor& background, const at::Tensor& perms,
                               const std::string& link) {
  check_dim(x, 2, "x", "[R samples, D features]");
  check_dim(weight, 2, "weight", "[C outputs, D features]");
  check_dim(bias, 1, "bias", "[C]");
  check_dim(perms, 2, "perms", "[P permutations, D features]");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "neurocore.shapley_permutation: x must be float32 or float64; got ", x.scalar_type());
  check_floating(weight, "weight");
  check_floating(bias, "bias");
  check_floating(background, "background");
  check_index(perms, "perms");
  const int64_t D = x.size(1), C = weight.size(0);
  TORCH_CHECK(background.sizes() == x.sizes(), "neurocore.shapley_permutation: background must have x's shape ",
              shape_str(x), "; got ", shape_str(background));
  TORCH_CHECK(weight.size(1) == D, "neurocore.shapley_permutation: weight must be [C, D] with D=", D,
              " (x.shape[1]); got ", shape_str(weight));
  TORCH_CHECK(bias.size(0) == C, "neurocore.shapley_permutation: bias must be [C] with C=", C,
              " (weight.shape[0]); got ", shape_str(bias));
  TORCH_CHECK(perms.size(1) == D, "neurocore.shapley_permutation: perms must be [P, D] with D=", D,
              "; got ", shape_str(perms));
  TORCH_CHECK(link == "identity" || link == "sigmoid" || link == "softmax",
              "neurocore.shapley_permutation: link must be identity, sigmoid or softmax; got '", link, "'");
  for (const auto* t : {&weight, &bias, &background, &perms}) check_same_device(x, "x", *t, "the other inputs");
  TORCH_CHECK(x.isfinite().all().item<bool>() && background.isfinite().all().item<bool>() &&
                  weight.isfinite().all().item<bool>() && bias.isfinite().all().item<bool>(),
              "neurocore.shapley_permutation: x, background, weight and bias must be finite (no NaN or inf)");
  if (perms.numel() > 0) {
    const at::Tensor expected = at::arange(D, perms.options()).expand_as(perms);
    TORCH_CHECK(std::get<0>(perms.sort(1)).equal(expected),
                "neurocore.shapley_permutation: every row of perms must be a permutation of range(", D,
                ") (use neurocore.ops.sample_permutations)");
  }
}

// The checked inputs of shapley_permutation in x's dtype: the per-feature changes dz = x - background,
// the background logits, the weight; for the identity link the exact answer instead.
struct ShapleyCall {
  kernels::Link link;
  at::Tensor W, dz, start, perms;
  at::Tensor identity_result;  // defined for the identity link: the walk telescopes to W * dz
};

inline ShapleyCall prepare_shapley(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                                   const at::Tensor& background, const at::Tensor& perms,
                                   c10::string_view link_name) {
  const std::string link(link_name);
  check_shapley_args(x, weight, bias, background, perms, link);
  const auto dtype = x.scalar_type();
  ShapleyCall call;
  call.W = weight.to(dtype).contiguous();
  call.dz = (x - background.to(dtype)).contiguous();
  if (link == "identity") {
    call.link = kernels::Link::Identity;
    call.identity_result = call.W.unsqueeze(0) * call.dz.unsqueeze(1);
    return call;
  }
  call.link = link == "sigmoid" ? kernels::Link::Sigmoid : kernels::Link::Softmax;
  call.start = at::addmm(bias.to(dtype), background.to(dtype), call.W.t()).contiguous();
  call.perms = perms.contiguous();
  return call;
}

inline void check_all_finite_rows(bool finite, const char* op, const char* name) {
  TORCH_CHECK(finite, "neurocore.", op, ": ", name,
              " contains NaN or infinite values; similarities must be finite (check the encoder's "
              "output, or use torch.nan_to_num)");
}

}  // namespace neurocore
