// CUDA permutation Shapley: torch-facing wrapper around csrc/kernels/shapley_cuda.cuh.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>

#include "kernels/shapley_cuda.cuh"
#include "op_checks.h"

namespace neurocore {
namespace {

constexpr int64_t kScratchElements = int64_t{1} << 25;  // walkers' logits and f values per launch

at::Tensor shapley_permutation_cuda(const at::Tensor& x, const at::Tensor& weight,
                                    const at::Tensor& bias, const at::Tensor& background,
                                    const at::Tensor& perms, c10::string_view link) {
  const c10::cuda::CUDAGuard guard(x.device());
  const ShapleyCall call = prepare_shapley(x, weight, bias, background, perms, link);
  if (call.identity_result.defined()) return call.identity_result;
  const int64_t R = x.size(0), D = x.size(1), C = call.W.size(0), P = call.perms.size(0);
  at::Tensor phi = at::zeros({R, C, D}, x.options());
  if (P == 0 || R == 0) return phi;
  // rows per launch so that the walkers' scratch (rows * P * 3C values) stays bounded
  const int64_t rows = std::max<int64_t>(1, std::min<int64_t>(R, kScratchElements / (P * 3 * C)));
  at::Tensor scratch = at::empty({rows * P * 3 * C}, x.options());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "neurocore_shapley_cuda", [&] {
    for (int64_t r0 = 0; r0 < R; r0 += rows) {
      C10_CUDA_CHECK(kernels::launch_shapley_walk<scalar_t>(
          call.dz.data_ptr<scalar_t>(), call.start.data_ptr<scalar_t>(), call.W.data_ptr<scalar_t>(),
          call.perms.data_ptr<int64_t>(), r0, std::min(rows, R - r0), P, D, C, call.link,
          scratch.data_ptr<scalar_t>(), phi.data_ptr<scalar_t>(), stream));
    }
  });
  return phi.div_(static_cast<double>(P));
}

}  // namespace

TORCH_LIBRARY_IMPL(neurocore, CUDA, m) { m.impl("shapley_permutation", &shapley_permutation_cuda); }

}  // namespace neurocore
