// SoftWPMI per-term math shared by the CPU and CUDA kernels (ALGORITHMS.md §1).
//
// A neuron's score for concept m sums log(1 + p_i (P[x_i, m] - 1) + eps) over its top images. Each
// factor lies in [1 - p_i + eps, 1 + eps], so a product of a few of them stays a normal double: the
// kernels multiply `group` factors and take one log, which is exact to rounding and saves most logs.
#pragma once

#include <cmath>

#include "common.h"

namespace neurocore {
namespace kernels {

// How many factors may be multiplied before one log, given the smallest possible factor.
inline int64_t wpmi_group_size(double min_factor) {
  if (!(min_factor > 0.0)) return 1;  // a factor can be 0: log each one (exactly -inf)
  if (min_factor >= 1.0) return 64;
  // keep the product above 1e-290, far from the subnormal range
  const double g = std::floor(-290.0 * std::log(10.0) / std::log(min_factor));
  return g < 1.0 ? 1 : (g > 64.0 ? 64 : static_cast<int64_t>(g));
}

// One factor 1 + q (P - 1) + eps, written as (1 - q + eps) + q P with base = 1 - q + eps.
NC_HD double wpmi_factor(double base, double q, double prob) { return base + q * prob; }

// lam * (logsumexp_j L[j] - log K) for one concept, with L[j] at L[j * stride]: what the marginal
// over the call's neurons subtracts from every neuron's score. When every L[j] is -inf (all
// factors 0) the marginal is -inf too; 0 is returned so the scores stay -inf rather than NaN.
NC_HD double wpmi_marginal_shift(const double* L, int64_t K, int64_t stride, double lam) {
  double mx = -INFINITY;
  for (int64_t j = 0; j < K; ++j) mx = L[j * stride] > mx ? L[j * stride] : mx;
  if (mx == -INFINITY) return 0.0;
  double total = 0.0;
  for (int64_t j = 0; j < K; ++j) total += fast_exp(L[j * stride] - mx);
  return lam * (mx + log(total) - log(static_cast<double>(K)));
}

}  // namespace kernels
}  // namespace neurocore
