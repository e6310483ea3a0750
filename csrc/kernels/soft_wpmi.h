// SoftWPMI per-term math shared by the CPU and CUDA kernels (ALGORITHMS.md §1).
//
// A neuron's score for concept m sums log(1 + p_i (P[x_i, m] - 1) + eps) over its top images. Each
// factor lies in [1 - p_i + eps, 1 + eps], so a product of a few of them stays a normal number: the
// kernels multiply `group` factors and take one log (in double), which is exact to rounding and
// saves most logs. The CPU multiplies in the input's precision (float32 input: ~1e-6 absolute in
// a score of magnitude ~100), CUDA always in double.
#pragma once

#include <cmath>

#include "common.h"

namespace neurocore {
namespace kernels {

// How many factors may be multiplied before one log, given the smallest possible factor, so that
// the product stays above 10^floor_log10, far from the subnormal range of the product's type
// (-290 for double products, -30 for float).
inline int64_t wpmi_group_size(double min_factor, double floor_log10) {
  if (!(min_factor > 0.0)) return 1;  // a factor can be 0: log each one (exactly -inf)
  if (min_factor >= 1.0) return 64;
  const double g = std::floor(floor_log10 * std::log(10.0) / std::log(min_factor));
  return g < 1.0 ? 1 : (g > 64.0 ? 64 : static_cast<int64_t>(g));
}

// One factor 1 + q (P - 1) + eps, written as (1 - q + eps) + q P with base = 1 - q + eps.
template <typename T>
NC_HD T wpmi_factor(T base, T q, T prob) {
  return base + q * prob;
}

// shift[t] = lam * (logsumexp_j L[j, t] - log K) for `width` adjacent concepts, L[j, t] at
// L[j * stride + t]: what the marginal over the call's neurons subtracts from every neuron's score
// (the CPU passes a tile, vectorised over t; CUDA one concept per thread). When every L[j, t] is -inf
// (all factors 0) the marginal is -inf too; the shift is then 0 so the scores stay -inf, not NaN.
NC_HD void wpmi_marginal_shifts(const double* L, int64_t K, int64_t stride, int64_t width, double lam,
                                double* shift, double* mx) {
  for (int64_t t = 0; t < width; ++t) {
    mx[t] = -INFINITY;
    shift[t] = 0.0;
  }
  for (int64_t j = 0; j < K; ++j)
    for (int64_t t = 0; t < width; ++t) mx[t] = L[j * stride + t] > mx[t] ? L[j * stride + t] : mx[t];
  for (int64_t j = 0; j < K; ++j)
    for (int64_t t = 0; t < width; ++t)
      shift[t] += mx[t] == -INFINITY ? 0.0 : fast_exp(L[j * stride + t] - mx[t]);
  const double log_k = log(static_cast<double>(K));
  for (int64_t t = 0; t < width; ++t)
    shift[t] = mx[t] == -INFINITY ? 0.0 : lam * (mx[t] + fast_log(shift[t]) - log_k);
}

}  // namespace kernels
}  // namespace neurocore
