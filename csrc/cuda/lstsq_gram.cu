// CUDA batched least squares: torch-facing wrapper around csrc/kernels/lstsq_gram_cuda.cuh.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "kernels/lstsq_gram_cuda.cuh"
#include "op_checks.h"

namespace neurocore {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> lstsq_gram_cuda(
    const at::Tensor& train_cov, const at::Tensor& train_mean, const at::Tensor& train_cross,
    const at::Tensor& train_target_mean, const at::Tensor& val_cov, const at::Tensor& val_cross,
    const at::Tensor& val_target_var, const at::Tensor& sets, double ridge) {
  const c10::cuda::CUDAGuard guard(sets.device());
  const LstsqGramCall call = prepare_lstsq_gram(train_cov, train_mean, train_cross, train_target_mean,
                                                val_cov, val_cross, val_target_var, sets, ridge);
  C10_CUDA_CHECK(kernels::launch_lstsq_gram(
      call.train(), call.val(), call.M, call.K, call.R, call.sets.data_ptr<int64_t>(), call.s, ridge,
      call.weights.data_ptr<double>(), call.bias.data_ptr<double>(), call.corr.data_ptr<double>(),
      c10::cuda::getCurrentCUDAStream()));
  return {call.weights, call.bias, call.corr};
}

}  // namespace

TORCH_LIBRARY_IMPL(neurocore, CUDA, m) { m.impl("lstsq_gram", &lstsq_gram_cuda); }

}  // namespace neurocore
