// CPU top-k per column: one bounded heap per column. A task owns a block of columns and a range of
// rows; it streams the block's part of each row (contiguous, up to 2 KB) and compares it with the
// columns' current thresholds 16 at a time, a vectorisable test that is almost always false.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "kernels/topk.h"
#include "op_checks.h"

namespace neurocore {
namespace {

using kernels::heap_build;
using kernels::heap_offer;
using kernels::heap_sort_best_first;

constexpr int64_t kBlockCols = 512;
constexpr int64_t kSubCols = 16;

// Whether any of the n values may enter its column's heap (over-inclusive: heap_offer decides).
// With explicit indices an equal value may still enter (lower index); with row indices it may not.
template <typename T>
inline bool any_may_enter(const T* row, const T* thr, int64_t n, bool explicit_indices) {
  int any = 0;
  if (n == kSubCols && !explicit_indices) {
    for (int64_t c = 0; c < kSubCols; ++c) any |= !(row[c] <= thr[c]);  // also true for NaN
    return any != 0;
  }
  for (int64_t c = 0; c < n; ++c) any |= explicit_indices ? !(row[c] < thr[c]) : !(row[c] <= thr[c]);
  return any != 0;
}

// Top-k of rows [r0, r1) of columns [c0, c0 + B) of x (row-major, K columns). Row r's index is
// xi[r, c] when given (merging partial results), else r. Writes the k best per column, best first,
// to out_v/out_i (row-major, K columns); slots beyond the rows available are left empty.
template <typename T>
void topk_block(const T* x, const int64_t* xi, int64_t r0, int64_t r1, int64_t K, int64_t k,
                int64_t c0, int64_t B, T* out_v, int64_t* out_i) {
  std::vector<T> hv(B * k);
  std::vector<int64_t> hi(B * k);
  std::vector<T> thr(B);
  const int64_t fill = std::min(k, r1 - r0);
  for (int64_t j = 0; j < k; ++j) {
    for (int64_t c = 0; c < B; ++c) {
      if (j < fill) {
        const int64_t r = r0 + j;
        hv[c * k + j] = x[r * K + c0 + c];
        hi[c * k + j] = xi ? xi[r * K + c0 + c] : r;
      } else {
        hv[c * k + j] = -std::numeric_limits<T>::infinity();
        hi[c * k + j] = kernels::kEmptyIndex;
      }
    }
  }
  for (int64_t c = 0; c < B; ++c) {
    heap_build(&hv[c * k], &hi[c * k], k, 1);
    thr[c] = hv[c * k];
  }
  for (int64_t r = r0 + fill; r < r1; ++r) {
    const T* row = x + r * K + c0;
    for (int64_t s0 = 0; s0 < B; s0 += kSubCols) {
      const int64_t s1 = std::min(B, s0 + kSubCols);
      // Cheap pre-filter (over-inclusive); heap_offer does the exact comparison.
      if (!any_may_enter(row + s0, thr.data() + s0, s1 - s0, xi != nullptr)) continue;
      for (int64_t c = s0; c < s1; ++c) {
        const int64_t id = xi ? xi[r * K + c0 + c] : r;
        heap_offer(&hv[c * k], &hi[c * k], k, int64_t{1}, row[c], id);
        thr[c] = hv[c * k];
      }
    }
  }
  for (int64_t c = 0; c < B; ++c) {
    heap_sort_best_first(&hv[c * k], &hi[c * k], k, 1);
    for (int64_t j = 0; j < k; ++j) {
      out_v[j * K + c0 + c] = hv[c * k + j];
      out_i[j * K + c0 + c] = hi[c * k + j];
    }
  }
}

// Top-k over the R rows of x, split into `segments` row ranges; returns [segments * k, K].
template <typename T>
void topk_segments(const T* x, const int64_t* xi, int64_t R, int64_t K, int64_t k,
                   int64_t segments, T* out_v, int64_t* out_i) {
  const int64_t blocks = (K + kBlockCols - 1) / kBlockCols;
  const int64_t seg_len = (R + segments - 1) / segments;
  at::parallel_for(0, blocks * segments, 1, [=](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t s = task / blocks, b = task % blocks;
      const int64_t c0 = b * kBlockCols, B = std::min(kBlockCols, K - c0);
      const int64_t r0 = std::min(R, s * seg_len), r1 = std::min(R, r0 + seg_len);
      topk_block(x, xi, r0, r1, K, k, c0, B, out_v + s * k * K, out_i + s * k * K);
    }
  });
}

// values [R, K] with optional explicit indices -> the k best of each column, best first.
std::tuple<at::Tensor, at::Tensor> topk_rows_cpu(const at::Tensor& values,
                                                 const c10::optional<at::Tensor>& indices,
                                                 int64_t k) {
  const at::Tensor x = values.contiguous();
  const at::Tensor xi = indices ? indices->contiguous() : at::Tensor();
  const int64_t R = x.size(0), K = x.size(1);
  k = std::min(k, R);
  at::Tensor out_v = at::empty({k, K}, x.options());
  at::Tensor out_i = at::empty({k, K}, x.options().dtype(at::kLong));
  if (k == 0 || K == 0) return {out_v, out_i};

  // Fewer column blocks than threads can share: split the rows too and merge the partial results.
  const int64_t blocks = (K + kBlockCols - 1) / kBlockCols;
  const int64_t threads = at::get_num_threads();
  int64_t segments = 1;
  if (blocks < 2 * threads && R >= 16 * k * threads) segments = (2 * threads + blocks - 1) / blocks;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "neurocore_topk", [&] {
    const int64_t* xi_ptr = xi.defined() ? xi.data_ptr<int64_t>() : nullptr;
    if (segments == 1) {
      topk_segments<scalar_t>(x.data_ptr<scalar_t>(), xi_ptr, R, K, k, 1,
                              out_v.data_ptr<scalar_t>(), out_i.data_ptr<int64_t>());
      return;
    }
    at::Tensor part_v = at::empty({segments * k, K}, x.options());
    at::Tensor part_i = at::empty({segments * k, K}, out_i.options());
    topk_segments<scalar_t>(x.data_ptr<scalar_t>(), xi_ptr, R, K, k, segments,
                            part_v.data_ptr<scalar_t>(), part_i.data_ptr<int64_t>());
    topk_segments<scalar_t>(part_v.data_ptr<scalar_t>(), part_i.data_ptr<int64_t>(),
                            segments * k, K, k, 1, out_v.data_ptr<scalar_t>(),
                            out_i.data_ptr<int64_t>());
  });
  return {out_v, out_i};
}

std::tuple<at::Tensor, at::Tensor> topk_cpu(const at::Tensor& x, int64_t k) {
  return run_topk(x, k, topk_rows_cpu);
}

std::tuple<at::Tensor, at::Tensor> topk_merge_cpu(const at::Tensor& values_a, const at::Tensor& indices_a,
                                                  const at::Tensor& values_b, const at::Tensor& indices_b,
                                                  int64_t k) {
  return run_topk_merge(values_a, indices_a, values_b, indices_b, k, topk_rows_cpu);
}

}  // namespace

TORCH_LIBRARY_IMPL(neurocore, CPU, m) {
  m.impl("topk", &topk_cpu);
  m.impl("topk_merge", &topk_merge_cpu);
}

}  // namespace neurocore
