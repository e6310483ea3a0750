// Per-column top-k selection: the ordering and the bounded heap shared by the CPU and CUDA kernels.
//
// A column's running top-k is a min-heap whose root is the worst kept entry, so a new value only
// has to beat the root. Entries live at base[j * stride] so the CUDA kernel can interleave the heaps
// of neighbouring columns (coalesced) while the CPU keeps each heap contiguous (stride 1).
#pragma once

#include "common.h"

namespace neurocore {
namespace kernels {

// Index of an empty heap slot: ranks below every real entry, even a -inf one.
constexpr int64_t kEmptyIndex = INT64_MAX;

// True when (va, ia) ranks before (vb, ib): larger value first, equal values by lower index.
// NaN ranks above everything so that it reaches the output, where the op reports it.
template <typename T>
NC_HD bool ranks_before(T va, int64_t ia, T vb, int64_t ib) {
  const bool nan_a = va != va, nan_b = vb != vb;
  if (nan_a || nan_b) return nan_a && (!nan_b || ia < ib);
  return va > vb || (va == vb && ia < ib);
}

// Restore the heap property below `pos` in a heap of n entries (the worst entry at the root).
template <typename T>
NC_HD void heap_sift_down(T* v, int64_t* idx, int64_t n, int64_t stride, int64_t pos) {
  const T val = v[pos * stride];
  const int64_t id = idx[pos * stride];
  while (true) {
    int64_t child = 2 * pos + 1;
    if (child >= n) break;
    // the worse of the two children moves up
    if (child + 1 < n && ranks_before(v[child * stride], idx[child * stride],
                                      v[(child + 1) * stride], idx[(child + 1) * stride])) {
      ++child;
    }
    if (!ranks_before(val, id, v[child * stride], idx[child * stride])) break;
    v[pos * stride] = v[child * stride];
    idx[pos * stride] = idx[child * stride];
    pos = child;
  }
  v[pos * stride] = val;
  idx[pos * stride] = id;
}

template <typename T>
NC_HD void heap_build(T* v, int64_t* idx, int64_t n, int64_t stride) {
  for (int64_t pos = n / 2 - 1; pos >= 0; --pos) heap_sift_down(v, idx, n, stride, pos);
}

// Offer (val, id) to a full heap of n entries; it replaces the root when it ranks before it.
template <typename T>
NC_HD void heap_offer(T* v, int64_t* idx, int64_t n, int64_t stride, T val, int64_t id) {
  if (n == 0 || !ranks_before(val, id, v[0], idx[0])) return;
  v[0] = val;
  idx[0] = id;
  heap_sift_down(v, idx, n, stride, 0);
}

// Sort a heap in place into ranking order (best first).
template <typename T>
NC_HD void heap_sort_best_first(T* v, int64_t* idx, int64_t n, int64_t stride) {
  for (int64_t end = n - 1; end > 0; --end) {
    // the root (worst of the remaining) goes to the back
    const T tv = v[0];
    const int64_t ti = idx[0];
    v[0] = v[end * stride];
    idx[0] = idx[end * stride];
    v[end * stride] = tv;
    idx[end * stride] = ti;
    heap_sift_down(v, idx, end, stride, 0);
  }
}

}  // namespace kernels
}  // namespace neurocore
