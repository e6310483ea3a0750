// CPU SoftWPMI: per-image log-sum-exp over concepts once; then, per group of concept tiles, the
// softmax probabilities of those concepts, and per tile the neurons' products of gathered factors
// and the marginal over neurons. Never forms the N x M softmax: extra memory is N doubles plus, per
// thread, the group's [N, tiles x 64] probability panels (at most 32 MB) and a [K, 64] score buffer.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <type_traits>
#include <cmath>
#include <vector>

#include "kernels/soft_wpmi.h"
#include "op_checks.h"

namespace neurocore {
namespace {

using kernels::fast_exp;
using kernels::fast_log;

constexpr int64_t kTile = 64;            // concepts per tile: products and marginal
constexpr int64_t kTilesPerGroup = 8;    // tiles whose probabilities one pass over sims fills
constexpr int64_t kPanelBytes = 32 << 20;  // per-thread probability panels: at most 32 MB

// Concepts per tile: 64, fewer for very large N so one [N, tile] panel stays within kPanelBytes.
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

// Softmax probabilities of the concepts [m0, m0 + width) for all N images, as consecutive panels
// of tw concepts ([width / tw][N][tw]): reading a long stretch of each row at once keeps the pass over
// sims streaming, while each panel stays small enough for the cache during the products.
template <typename T>
NC_CLONE_BODY void fill_panels_body(const T* sims, int64_t N, int64_t M, const double* lse, double a,
                                    int64_t m0, int64_t width, int64_t tw, T* panels) {
  const T a_t = static_cast<T>(a);
  for (int64_t n = 0; n < N; ++n) {
    const T shift = static_cast<T>(lse[n]);
    for (int64_t t0 = 0; t0 < width; t0 += tw) {
      const T* s = sims + n * M + m0 + t0;
      T* out = panels + (t0 / tw) * N * tw + n * tw;
      const int64_t w = std::min(tw, width - t0);
      for (int64_t t = 0; t < w; ++t) out[t] = fast_exp(a_t * s[t] - shift);
    }
  }
}

NC_CPU_CLONES void fill_panels(const float* sims, int64_t N, int64_t M, const double* lse, double a,
                               int64_t m0, int64_t width, int64_t tw, float* panels) {
  fill_panels_body(sims, N, M, lse, a, m0, width, tw, panels);
}
NC_CPU_CLONES void fill_panels(const double* sims, int64_t N, int64_t M, const double* lse, double a,
                               int64_t m0, int64_t width, int64_t tw, double* panels) {
  fill_panels_body(sims, N, M, lse, a, m0, width, tw, panels);
}

// SoftWPMI scores L[j, t] of all K neurons for one tile of `width` concepts into buf ([K, width]):
// per neuron, the products of its gathered factors (panel rows of stride tw), one log per group.
// idx is neuron-major here ([K, k]): a neuron's top images are read contiguously.
template <typename T>
NC_CLONE_BODY void tile_scores_body(const T* panel, int64_t tw, const int64_t* idx, int64_t k,
                                    int64_t K, const double* p, double eps, int64_t group,
                                    int64_t width, double* buf) {
  T prod[kTile];
  for (int64_t j = 0; j < K; ++j) {
    const int64_t* rows = idx + j * k;
    double* acc = buf + j * width;
    for (int64_t t = 0; t < width; ++t) {
      acc[t] = 0.0;
      prod[t] = T(1);
    }
    int64_t until_log = group;  // a counter, not i % group: an integer division costs more than a step
    for (int64_t i = 0; i < k; ++i) {
      if (i + 2 < k) {  // the gathered rows are scattered over the panel: fetch ahead
        const char* ahead = reinterpret_cast<const char*>(panel + rows[i + 2] * tw);
        for (int64_t byte = 0; byte < width * static_cast<int64_t>(sizeof(T)); byte += 64)
          __builtin_prefetch(ahead + byte);
      }
      const T* prob = panel + rows[i] * tw;
      const T q = static_cast<T>(p[i]), base = static_cast<T>(1.0 - p[i] + eps);
      for (int64_t t = 0; t < width; ++t) prod[t] *= kernels::wpmi_factor(base, q, prob[t]);
      if (--until_log == 0 || i + 1 == k) {
        until_log = group;
        for (int64_t t = 0; t < width; ++t) {
          acc[t] += fast_log(static_cast<double>(prod[t]));
          prod[t] = T(1);
        }
      }
    }
  }
}

NC_CPU_CLONES void tile_scores(const float* panel, int64_t tw, const int64_t* idx, int64_t k, int64_t K,
                               const double* p, double eps, int64_t group, int64_t width, double* buf) {
  tile_scores_body(panel, tw, idx, k, K, p, eps, group, width, buf);
}
NC_CPU_CLONES void tile_scores(const double* panel, int64_t tw, const int64_t* idx, int64_t k, int64_t K,
                               const double* p, double eps, int64_t group, int64_t width, double* buf) {
  tile_scores_body(panel, tw, idx, k, K, p, eps, group, width, buf);
}

// out[j, m0 + t] = L[j, t] - lam * (logsumexp_j L[j, t] - log K)
template <typename T>
NC_CLONE_BODY void tile_marginal_body(const double* buf, int64_t K, int64_t width, double lam,
                                      int64_t M, int64_t m0, T* out) {
  double shift[kTile], mx[kTile];
  kernels::wpmi_marginal_shifts(buf, K, width, width, lam, shift, mx);
  for (int64_t j = 0; j < K; ++j)
    for (int64_t t = 0; t < width; ++t) out[j * M + m0 + t] = static_cast<T>(buf[j * width + t] - shift[t]);
}

NC_CPU_CLONES void tile_marginal(const double* buf, int64_t K, int64_t width, double lam, int64_t M,
                                 int64_t m0, float* out) {
  tile_marginal_body(buf, K, width, lam, M, m0, out);
}
NC_CPU_CLONES void tile_marginal(const double* buf, int64_t K, int64_t width, double lam, int64_t M,
                                 int64_t m0, double* out) {
  tile_marginal_body(buf, K, width, lam, M, m0, out);
}

at::Tensor soft_wpmi_cpu(const at::Tensor& sims_in, const at::Tensor& topk_idx_in,
                         const at::Tensor& p_in, double a, double lam, double eps) {
  check_soft_wpmi_args(sims_in, topk_idx_in, p_in, a, lam, eps);
  const at::Tensor sims = sims_in.contiguous();
  const at::Tensor idx = topk_idx_in.t().contiguous();  // [K, k]
  const at::Tensor p = p_in.to(at::kDouble).contiguous();
  const int64_t N = sims.size(0), M = sims.size(1), k = idx.size(1), K = idx.size(0);
  at::Tensor out = at::empty({K, M}, sims.options());
  if (K == 0 || M == 0) return out;

  const double* pp = p.data_ptr<double>();
  double min_factor = 1.0 + eps;
  for (int64_t i = 0; i < k; ++i) min_factor = std::min(min_factor, 1.0 - pp[i] + eps);

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
    const int64_t group =
        kernels::wpmi_group_size(min_factor, std::is_same<scalar_t, float>::value ? -30.0 : -290.0);
    const int64_t tw = tile_width(N, sizeof(scalar_t));
    const int64_t panel_bytes = N * tw * static_cast<int64_t>(sizeof(scalar_t));
    const int64_t per_group = std::max<int64_t>(1, std::min(kTilesPerGroup, kPanelBytes / std::max<int64_t>(1, panel_bytes)));
    const int64_t gw = tw * per_group;
    const int64_t groups = (M + gw - 1) / gw;
    at::parallel_for(0, groups, 1, [=](int64_t g0, int64_t g1) {
      std::vector<double> buf(K * tw);
      std::vector<scalar_t> panels(per_group * N * tw);
      for (int64_t g = g0; g < g1; ++g) {
        const int64_t m0 = g * gw, width = std::min(gw, M - m0);
        fill_panels(s, N, M, lp, a, m0, width, tw, panels.data());
        for (int64_t t0 = 0; t0 < width; t0 += tw) {
          const int64_t w = std::min(tw, width - t0);
          tile_scores(panels.data() + (t0 / tw) * N * tw, tw, ip, k, K, pp, eps, group, w, buf.data());
          tile_marginal(buf.data(), K, w, lam, M, m0 + t0, o);
        }
      }
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(neurocore, CPU, m) { m.impl("soft_wpmi", &soft_wpmi_cpu); }

}  // namespace neurocore
