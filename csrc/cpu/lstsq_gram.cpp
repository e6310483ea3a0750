// CPU batched least squares from Gram statistics: one small system per (neuron, candidate set),
// solved in parallel by csrc/kernels/lstsq_gram.h.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "kernels/lstsq_gram.h"
#include "op_checks.h"

namespace neurocore {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> lstsq_gram_cpu(
    const at::Tensor& train_cov, const at::Tensor& train_mean, const at::Tensor& train_cross,
    const at::Tensor& train_target_mean, const at::Tensor& val_cov, const at::Tensor& val_cross,
    const at::Tensor& val_target_var, const at::Tensor& sets, double ridge) {
  const LstsqGramCall call = prepare_lstsq_gram(train_cov, train_mean, train_cross, train_target_mean,
                                                val_cov, val_cross, val_target_var, sets, ridge);
  const kernels::GramView train = call.train(), val = call.val();
  const int64_t M = call.M, K = call.K, R = call.R, s = call.s;
  const int64_t* set_ptr = call.sets.data_ptr<int64_t>();
  double* w = call.weights.data_ptr<double>();
  double* b = call.bias.data_ptr<double>();
  double* c = call.corr.data_ptr<double>();
  at::parallel_for(0, K * R, 64, [=](int64_t begin, int64_t end) {
    for (int64_t sys = begin; sys < end; ++sys) {
      kernels::lstsq_gram_one(train, val, M, K, set_ptr + sys * s, s, sys / R, ridge, w + sys * s,
                              b + sys, c + sys);
    }
  });
  return {call.weights, call.bias, call.corr};
}

}  // namespace

TORCH_LIBRARY_IMPL(neurocore, CPU, m) { m.impl("lstsq_gram", &lstsq_gram_cpu); }

}  // namespace neurocore
