// CUDA SoftWPMI: torch-facing wrapper around csrc/kernels/soft_wpmi_cuda.cuh.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>

#include "kernels/soft_wpmi_cuda.cuh"
#include "op_checks.h"

namespace neurocore {
namespace {

at::Tensor soft_wpmi_cuda(const at::Tensor& sims_in, const at::Tensor& topk_idx_in,
                          const at::Tensor& p_in, double a, double lam, double eps) {
  check_soft_wpmi_args(sims_in, topk_idx_in, p_in, a, lam, eps);
  const c10::cuda::CUDAGuard guard(sims_in.device());
  const at::Tensor sims = sims_in.contiguous();
  const at::Tensor idx = topk_idx_in.contiguous();
  const at::Tensor p = p_in.to(at::kDouble).contiguous();
  const int64_t N = sims.size(0), M = sims.size(1), k = idx.size(0), K = idx.size(1);
  at::Tensor out = at::empty({K, M}, sims.options());
  const at::Tensor p_host = p.cpu();
  double min_factor = 1.0 + eps;
  for (int64_t i = 0; i < k; ++i) min_factor = std::min(min_factor, 1.0 - p_host.data_ptr<double>()[i] + eps);
  const int64_t group = kernels::wpmi_group_size(min_factor, -290.0);
  const auto f64 = sims.options().dtype(at::kDouble);
  at::Tensor lse = at::empty({N}, f64);
  at::Tensor nonfinite = at::zeros({1}, sims.options().dtype(at::kInt));
  const bool direct = sims.scalar_type() == at::kDouble;
  at::Tensor L = direct ? out : at::empty({K, M}, f64);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(sims.scalar_type(), "neurocore_soft_wpmi_cuda", [&] {
    C10_CUDA_CHECK(kernels::launch_soft_wpmi<scalar_t>(
        sims.data_ptr<scalar_t>(), N, M, idx.data_ptr<int64_t>(), k, K, p.data_ptr<double>(), a,
        lam, eps, group, lse.data_ptr<double>(), nonfinite.data_ptr<int>(), L.data_ptr<double>(),
        out.data_ptr<scalar_t>(), stream));
  });
  check_all_finite_rows(nonfinite.item<int>() == 0, "soft_wpmi", "sims");
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(neurocore, CUDA, m) { m.impl("soft_wpmi", &soft_wpmi_cuda); }

}  // namespace neurocore
