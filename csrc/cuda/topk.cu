// CUDA top-k: torch-facing wrapper around csrc/kernels/topk_cuda.cuh.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>

#include "kernels/topk_cuda.cuh"
#include "op_checks.h"

namespace neurocore {
namespace {

std::tuple<at::Tensor, at::Tensor> topk_rows_cuda(const at::Tensor& values,
                                                  const c10::optional<at::Tensor>& indices,
                                                  int64_t k) {
  const c10::cuda::CUDAGuard guard(values.device());
  at::Tensor x = values.contiguous();
  at::Tensor xi = indices ? indices->contiguous() : at::Tensor();
  int64_t R = x.size(0);
  const int64_t K = x.size(1);
  k = std::min(k, R);
  at::Tensor out_v = at::empty({k, K}, x.options());
  at::Tensor out_i = at::empty({k, K}, x.options().dtype(at::kLong));
  if (k == 0 || K == 0) return {out_v, out_i};
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "neurocore_topk_cuda", [&] {
    while (true) {
      const int64_t segments = kernels::topk_cuda_segments(R, K, k);
      at::Tensor part_v = segments == 1 ? out_v : at::empty({segments * k, K}, x.options());
      at::Tensor part_i = segments == 1 ? out_i : at::empty({segments * k, K}, out_i.options());
      C10_CUDA_CHECK(kernels::launch_topk_segments<scalar_t>(
          x.data_ptr<scalar_t>(), xi.defined() ? xi.data_ptr<int64_t>() : nullptr, R, K, k,
          segments, part_v.data_ptr<scalar_t>(), part_i.data_ptr<int64_t>(), stream));
      if (segments == 1) break;
      x = part_v;
      xi = part_i;
      R = segments * k;
    }
  });
  return {out_v, out_i};
}

std::tuple<at::Tensor, at::Tensor> topk_cuda(const at::Tensor& x, int64_t k) {
  return run_topk(x, k, topk_rows_cuda);
}

std::tuple<at::Tensor, at::Tensor> topk_merge_cuda(const at::Tensor& values_a, const at::Tensor& indices_a,
                                                   const at::Tensor& values_b, const at::Tensor& indices_b,
                                                   int64_t k) {
  return run_topk_merge(values_a, indices_a, values_b, indices_b, k, topk_rows_cuda);
}

}  // namespace

TORCH_LIBRARY_IMPL(neurocore, CUDA, m) {
  m.impl("topk", &topk_cuda);
  m.impl("topk_merge", &topk_merge_cuda);
}

}  // namespace neurocore
