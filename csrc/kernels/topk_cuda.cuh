// CUDA top-k per column (torch-free: raw pointers, sizes and a stream).
//
// One thread per (column, row segment) keeps a bounded heap in the output buffer, with the heaps of
// neighbouring columns interleaved (entry j of column c at [j, c]) so that a warp's reads and writes
// are coalesced. Each pass turns [R, K] into [segments * k, K] candidates; passes repeat with the
// candidates' indices carried until one segment remains.
#pragma once

#include <cuda_runtime.h>

#include <cmath>

#include "kernels/topk.h"

namespace neurocore {
namespace kernels {

template <typename T>
__global__ void topk_segments_kernel(const T* __restrict__ x, const int64_t* __restrict__ xi,
                                     int64_t R, int64_t K, int64_t k, int64_t segments,
                                     int64_t seg_len, T* __restrict__ out_v,
                                     int64_t* __restrict__ out_i) {
  const int64_t tid = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (tid >= K * segments) return;
  const int64_t c = tid % K, s = tid / K;
  const int64_t r0 = s * seg_len < R ? s * seg_len : R;
  const int64_t r1 = r0 + seg_len < R ? r0 + seg_len : R;
  T* hv = out_v + s * k * K + c;
  int64_t* hi = out_i + s * k * K + c;
  const int64_t fill = k < r1 - r0 ? k : r1 - r0;
  for (int64_t j = 0; j < k; ++j) {
    if (j < fill) {
      const int64_t r = r0 + j;
      hv[j * K] = x[r * K + c];
      hi[j * K] = xi ? xi[r * K + c] : r;
    } else {
      hv[j * K] = static_cast<T>(-INFINITY);
      hi[j * K] = kEmptyIndex;
    }
  }
  if (k == 0) return;
  heap_build(hv, hi, k, K);
  T root_v = hv[0];
  int64_t root_i = hi[0];
  for (int64_t r = r0 + fill; r < r1; ++r) {
    const T v = x[r * K + c];
    const int64_t id = xi ? xi[r * K + c] : r;
    if (ranks_before(v, id, root_v, root_i)) {  // root kept in registers: most values lose here
      heap_offer(hv, hi, k, K, v, id);
      root_v = hv[0];
      root_i = hi[0];
    }
  }
  heap_sort_best_first(hv, hi, k, K);
}

// Segments for one pass: enough threads to fill a GPU, each scanning at least ~4k rows.
inline int64_t topk_cuda_segments(int64_t R, int64_t K, int64_t k) {
  int64_t by_threads = (65536 + K - 1) / (K > 0 ? K : 1);
  int64_t by_rows = R / (4 * (k > 0 ? k : 1));
  int64_t s = by_threads < by_rows ? by_threads : by_rows;
  return s < 1 ? 1 : (s > 1024 ? 1024 : s);
}

template <typename T>
cudaError_t launch_topk_segments(const T* x, const int64_t* xi, int64_t R, int64_t K, int64_t k,
                                 int64_t segments, T* out_v, int64_t* out_i,
                                 cudaStream_t stream) {
  const int64_t threads = K * segments;
  if (threads == 0) return cudaSuccess;
  const int block = 128;
  const int64_t grid = (threads + block - 1) / block;
  const int64_t seg_len = (R + segments - 1) / segments;
  topk_segments_kernel<T><<<static_cast<unsigned>(grid), block, 0, stream>>>(
      x, xi, R, K, k, segments, seg_len, out_v, out_i);
  return cudaGetLastError();
}

}  // namespace kernels
}  // namespace neurocore
