// CPU SoftWPMI: per-image log-sum-exp over concepts once; then, per tile of concepts, the softmax
// probabilities of that panel, the neurons' products of gathered factors, and the marginal over
// neurons. Never forms the N x M softmax: extra memory is N doubles plus, per thread, an [N, tile]
// panel (at most 32 MB) and a [K, tile] score buffer.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <vector>

#include "kernels/soft_wpmi.h"
#include "op_checks.h"

namespace neurocore {
namespace {

using kernels::fast_exp;
using kernels::fast_log;

constexpr int64_t kTile = 64;               // concepts per tile at most
constexpr int64_t kPanelBytes = 32 << 20;    // per-thread probability panel: [N, tile] at most 32 MB

// Concepts per tile: 64, fewer for very large N so the [N, tile] panel stays within kPanelBytes.
inline int64_t tile_width(int64_t N, int64_t elem_size) {
  const int64_t fit = kPanelBytes / std::max<int64_t>(1, N * elem_size);
  return std::max<int64_t>(1, std::min(kTile, fit));
}

// lse[n] = log sum_m exp(a * sims[n, m]) for rows [r0, r1); returns false on a non-finite value.
// The exponentials are taken in T's precision (float for float input), the sum in double.
template <typename T>
NC_CLONE_BODY bool row_logsumexp_body(const T* sims, int64_t M, double a, int64_t r0, int64_t r1,
                                      double* lse) {
  int finite = 1;
  const T a_t = static_cast<T>(a);
  for (int64_t r = r0; r < r1; ++r) {
    const T* row = sims + r * M;
    T mx = -INFINITY;
#pragma omp simd reduction(max : mx) reduction(& : finite)
    for (int64_t m = 0; m < M; ++m) {
      const T v = a_t * row[m];
      mx = v > mx ? v : mx;
      finite &= (row[m] - row[m]) == 0;  // false for inf and NaN
    }
    double total = 0.0;
#pragma omp simd reduction(+ : total)
    for (int64_t m = 0; m < M; ++m) total += static_cast<double>(fast_exp(a_t * row[m] - mx));
    lse[r] = static_cast<double>(mx) + std::log(total);
  }
  return finite != 0;
}

NC_CPU_CLONES bool row_logsumexp(const float* s, int64_t M, double a, int64_t r0, int64_t r1, double* lse) {
  return row_logsumexp_body(s, M, a, r0, r1, lse);
}
NC_CPU_CLONES bool row_logsumexp(const double* s, int64_t M, double a, int64_t r0, int64_t r1, double* lse) {
  return row_logsumexp_body(s, M, a, r0, r1, lse);
}

// SoftWPMI scores L[j, t] of all K neurons for the concepts [m0, m0 + width) into buf ([K, width]).
// First the softmax probabilities of this concept panel for all N images (panel: [N, width], the
// only place probabilities are stored), then per neuron the products of its gathered factors.
template <typename T>
NC_CLONE_BODY void tile_scores_body(const T* sims, int64_t N, int64_t M, const int64_t* idx,
                                    int64_t k, int64_t K, const double* p, const double* lse,
                                    double a, double eps, int64_t group, int64_t m0, int64_t width,
                                    T* panel, double* buf) {
  const T a_t = static_cast<T>(a);
  for (int64_t n = 0; n < N; ++n) {
    const T* s = sims + n * M + m0;
    T* out = panel + n * width;
    const T shift = static_cast<T>(lse[n]);
    for (int64_t t = 0; t < width; ++t) out[t] = fast_exp(a_t * s[t] - shift);
  }
  double prod[kTile];
  for (int64_t j = 0; j < K; ++j) {
    double* acc = buf + j * width;
    for (int64_t t = 0; t < width; ++t) {
      acc[t] = 0.0;
      prod[t] = 1.0;
    }
    for (int64_t i = 0; i < k; ++i) {
      const T* prob = panel + idx[i * K + j] * width;
      const double q = p[i], base = 1.0 - q + eps;
      for (int64_t t = 0; t < width; ++t)
        prod[t] *= kernels::wpmi_factor(base, q, static_cast<double>(prob[t]));
      if ((i + 1) % group == 0 || i + 1 == k) {
        for (int64_t t = 0; t < width; ++t) {
          acc[t] += fast_log(prod[t]);
          prod[t] = 1.0;
        }
      }
    }
  }
}

NC_CPU_CLONES void tile_scores(const float* sims, int64_t N, int64_t M, const int64_t* idx, int64_t k,
                               int64_t K, const double* p, const double* lse, double a, double eps,
                               int64_t group, int64_t m0, int64_t width, float* panel, double* buf) {
  tile_scores_body(sims, N, M, idx, k, K, p, lse, a, eps, group, m0, width, panel, buf);
}
NC_CPU_CLONES void tile_scores(const double* sims, int64_t N, int64_t M, const int64_t* idx, int64_t k,
                               int64_t K, const double* p, const double* lse, double a, double eps,
                               int64_t group, int64_t m0, int64_t width, double* panel, double* buf) {
  tile_scores_body(sims, N, M, idx, k, K, p, lse, a, eps, group, m0, width, panel, buf);
}

// out[j, m0 + t] = L[j, t] - lam * (logsumexp_j L[j, t] - log K)
template <typename T>
void tile_marginal(const double* buf, int64_t K, int64_t width, double lam, int64_t M, int64_t m0,
                   T* out) {
  for (int64_t t = 0; t < width; ++t) {
    const double shift = kernels::wpmi_marginal_shift(buf + t, K, width, lam);
    for (int64_t j = 0; j < K; ++j) out[j * M + m0 + t] = static_cast<T>(buf[j * width + t] - shift);
  }
}

at::Tensor soft_wpmi_cpu(const at::Tensor& sims_in, const at::Tensor& topk_idx_in,
                         const at::Tensor& p_in, double a, double lam, double eps) {
  check_soft_wpmi_args(sims_in, topk_idx_in, p_in, a, lam, eps);
  const at::Tensor sims = sims_in.contiguous();
  const at::Tensor idx = topk_idx_in.contiguous();
  const at::Tensor p = p_in.to(at::kDouble).contiguous();
  const int64_t N = sims.size(0), M = sims.size(1), k = idx.size(0), K = idx.size(1);
  at::Tensor out = at::empty({K, M}, sims.options());
  if (K == 0 || M == 0) return out;

  const double* pp = p.data_ptr<double>();
  double min_factor = 1.0 + eps;
  for (int64_t i = 0; i < k; ++i) min_factor = std::min(min_factor, 1.0 - pp[i] + eps);
  const int64_t group = kernels::wpmi_group_size(min_factor);

  std::vector<double> lse(N);
  AT_DISPATCH_FLOATING_TYPES(sims.scalar_type(), "neurocore_soft_wpmi", [&] {
    const scalar_t* s = sims.data_ptr<scalar_t>();
    std::atomic<bool> finite{true};
    at::parallel_for(0, N, 64, [&](int64_t r0, int64_t r1) {
      if (!row_logsumexp(s, M, a, r0, r1, lse.data())) finite = false;
    });
    check_all_finite_rows(finite, "soft_wpmi", "sims");

    const int64_t* ip = idx.data_ptr<int64_t>();
    const double* lp = lse.data();
    scalar_t* o = out.data_ptr<scalar_t>();
    const int64_t tw = tile_width(N, sizeof(scalar_t));
    const int64_t tiles = (M + tw - 1) / tw;
    at::parallel_for(0, tiles, 1, [=](int64_t t0, int64_t t1) {
      std::vector<double> buf(K * tw);
      std::vector<scalar_t> panel(N * tw);
      for (int64_t tile = t0; tile < t1; ++tile) {
        const int64_t m0 = tile * tw, width = std::min(tw, M - m0);
        tile_scores(s, N, M, ip, k, K, pp, lp, a, eps, group, m0, width, panel.data(), buf.data());
        tile_marginal(buf.data(), K, width, lam, M, m0, o);
      }
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(neurocore, CPU, m) { m.impl("soft_wpmi", &soft_wpmi_cpu); }

}  // namespace neurocore
