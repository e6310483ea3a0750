// CUDA permutation Shapley (torch-free): one thread per (sample, permutation) walks the
// permutation with csrc/kernels/shapley.h and adds each credit to phi atomically.
#pragma once

#include <cuda_runtime.h>

#include "kernels/shapley.h"

namespace neurocore {
namespace kernels {

template <typename acc_t>
struct AtomicCredit {
  acc_t* phi_r;  // [C, D] block of sample r
  int64_t D;
  __device__ void operator()(int64_t d, int64_t c, int, acc_t delta) const {
    atomicAdd(phi_r + c * D + d, delta);
  }
};

// Samples [r0, r0 + rows), all P permutations. dz: [R, D] x - background; start: [R, C]
// background logits; scratch: [rows * P, 3, C]; phi: [R, C, D] accumulated sums (not averaged).
template <typename acc_t>
__global__ void shapley_walk_kernel(const acc_t* __restrict__ dz, const acc_t* __restrict__ start,
                                    const acc_t* __restrict__ W, const int64_t* __restrict__ perms,
                                    int64_t r0, int64_t rows, int64_t P, int64_t D, int64_t C,
                                    Link link, acc_t* __restrict__ scratch, acc_t* __restrict__ phi) {
  const int64_t tid = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (tid >= rows * P) return;
  const int64_t r = r0 + tid / P, p = tid % P;
  acc_t* mine = scratch + tid * 3 * C;
  shapley_walk<acc_t, 1>(perms + p * D, D, C, W, dz + r * D, start + r * C, link, mine, mine + C,
                         mine + 2 * C, AtomicCredit<acc_t>{phi + r * C * D, D});
}

template <typename acc_t>
cudaError_t launch_shapley_walk(const acc_t* dz, const acc_t* start, const acc_t* W,
                                const int64_t* perms, int64_t r0, int64_t rows, int64_t P,
                                int64_t D, int64_t C, Link link, acc_t* scratch, acc_t* phi,
                                cudaStream_t stream) {
  const int64_t threads = rows * P;
  if (threads == 0) return cudaSuccess;
  const int block = 128;
  shapley_walk_kernel<acc_t><<<static_cast<unsigned>((threads + block - 1) / block), block, 0, stream>>>(
      dz, start, W, perms, r0, rows, P, D, C, link, scratch, phi);
  return cudaGetLastError();
}

}  // namespace kernels
}  // namespace neurocore
