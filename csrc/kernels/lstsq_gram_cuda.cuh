// CUDA batched least squares from Gram statistics (torch-free): one thread per (neuron, set).
#pragma once

#include <cuda_runtime.h>

#include "kernels/lstsq_gram.h"

namespace neurocore {
namespace kernels {

__global__ void lstsq_gram_kernel(GramView train, GramView val, int64_t M, int64_t K, int64_t R,
                                  const int64_t* __restrict__ sets, int64_t s, double ridge,
                                  double* __restrict__ weights, double* __restrict__ bias,
                                  double* __restrict__ corr) {
  const int64_t sys = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (sys >= K * R) return;
  lstsq_gram_one(train, val, M, K, sets + sys * s, s, sys / R, ridge, weights + sys * s, bias + sys,
                 corr + sys);
}

inline cudaError_t launch_lstsq_gram(const GramView& train, const GramView& val, int64_t M,
                                     int64_t K, int64_t R, const int64_t* sets, int64_t s,
                                     double ridge, double* weights, double* bias, double* corr,
                                     cudaStream_t stream) {
  const int64_t systems = K * R;
  if (systems == 0) return cudaSuccess;
  const int block = 128;
  lstsq_gram_kernel<<<static_cast<unsigned>((systems + block - 1) / block), block, 0, stream>>>(
      train, val, M, K, R, sets, s, ridge, weights, bias, corr);
  return cudaGetLastError();
}

}  // namespace kernels
}  // namespace neurocore
