// CUDA SoftWPMI (torch-free). Three kernels: per-image log-sum-exp over concepts (a block per
// image), per (neuron, concept) sums of gathered log-factors (a thread per concept, coalesced over
// concepts), then the marginal over neurons (a thread per concept).
#pragma once

#include <cuda_runtime.h>

#include <cmath>

#include "kernels/soft_wpmi.h"

namespace neurocore {
namespace kernels {

constexpr int kWpmiBlock = 256;

template <typename T>
__global__ void wpmi_row_logsumexp_kernel(const T* __restrict__ sims, int64_t N, int64_t M, double a,
                                          double* __restrict__ lse, int* __restrict__ nonfinite) {
  __shared__ double partial[kWpmiBlock];
  const int64_t r = blockIdx.x;
  if (r >= N) return;
  const T* row = sims + r * M;
  double mx = -INFINITY;
  bool bad = false;
  for (int64_t m = threadIdx.x; m < M; m += blockDim.x) {
    const double v = static_cast<double>(row[m]);
    bad = bad || !isfinite(v);
    mx = fmax(mx, a * v);
  }
  if (bad) *nonfinite = 1;
  partial[threadIdx.x] = mx;
  __syncthreads();
  for (int step = blockDim.x / 2; step > 0; step /= 2) {
    if (threadIdx.x < step) partial[threadIdx.x] = fmax(partial[threadIdx.x], partial[threadIdx.x + step]);
    __syncthreads();
  }
  mx = partial[0];
  __syncthreads();
  double total = 0.0;
  for (int64_t m = threadIdx.x; m < M; m += blockDim.x) total += exp(a * static_cast<double>(row[m]) - mx);
  partial[threadIdx.x] = total;
  __syncthreads();
  for (int step = blockDim.x / 2; step > 0; step /= 2) {
    if (threadIdx.x < step) partial[threadIdx.x] += partial[threadIdx.x + step];
    __syncthreads();
  }
  if (threadIdx.x == 0) lse[r] = mx + log(partial[0]);
}

template <typename T>
__global__ void wpmi_scores_kernel(const T* __restrict__ sims, int64_t M, const int64_t* __restrict__ idx,
                                   int64_t k, int64_t K, const double* __restrict__ p,
                                   const double* __restrict__ lse, double a, double eps, int64_t group,
                                   double* __restrict__ L) {
  const int64_t m = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (m >= M) return;
  for (int64_t j = blockIdx.y; j < K; j += gridDim.y) {
    double acc = 0.0, prod = 1.0;
    for (int64_t i = 0; i < k; ++i) {
      const int64_t row = idx[i * K + j];
      const double q = p[i];
      const double prob = exp(a * static_cast<double>(sims[row * M + m]) - lse[row]);
      prod *= wpmi_factor(1.0 - q + eps, q, prob);
      if ((i + 1) % group == 0 || i + 1 == k) {
        acc += log(prod);
        prod = 1.0;
      }
    }
    L[j * M + m] = acc;
  }
}

template <typename T>
__global__ void wpmi_marginal_kernel(const double* __restrict__ L, int64_t K, int64_t M, double lam,
                                     T* __restrict__ out) {
  const int64_t m = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (m >= M) return;
  double shift, mx;
  wpmi_marginal_shifts(L + m, K, M, 1, lam, &shift, &mx);
  for (int64_t j = 0; j < K; ++j) out[j * M + m] = static_cast<T>(L[j * M + m] - shift);
}

// Runs the three kernels; L is a [K, M] double workspace (may alias out when T is double).
template <typename T>
cudaError_t launch_soft_wpmi(const T* sims, int64_t N, int64_t M, const int64_t* idx, int64_t k,
                             int64_t K, const double* p, double a, double lam, double eps,
                             int64_t group, double* lse, int* nonfinite, double* L, T* out,
                             cudaStream_t stream) {
  if (N > 0) {
    wpmi_row_logsumexp_kernel<T><<<static_cast<unsigned>(N), kWpmiBlock, 0, stream>>>(
        sims, N, M, a, lse, nonfinite);
  }
  if (K == 0 || M == 0) return cudaGetLastError();
  const unsigned col_blocks = static_cast<unsigned>((M + kWpmiBlock - 1) / kWpmiBlock);
  const unsigned neuron_blocks = static_cast<unsigned>(K < 65535 ? K : 65535);
  wpmi_scores_kernel<T><<<dim3(col_blocks, neuron_blocks), kWpmiBlock, 0, stream>>>(
      sims, M, idx, k, K, p, lse, a, eps, group, L);
  wpmi_marginal_kernel<T><<<col_blocks, kWpmiBlock, 0, stream>>>(L, K, M, lam, out);
  return cudaGetLastError();
}

}  // namespace kernels
}  // namespace neurocore
