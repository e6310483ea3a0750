// CPU permutation Shapley: blocks of samples walk each permutation together, one sample per SIMD
// lane (every sample sees the same permutations, so the feature order is shared across lanes).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "kernels/shapley.h"
#include "op_checks.h"

namespace neurocore {
namespace {

using kernels::Link;

template <typename acc_t>
constexpr int lanes() {
  return sizeof(acc_t) == 4 ? 16 : 8;
}

// Samples [r0, r0 + count) (count <= lanes): phi[r, c, d] averaged over the P permutations.
template <typename acc_t>
NC_CLONE_BODY void shapley_block_body(const acc_t* dz_rows, const acc_t* start_rows, const acc_t* W,
                                      int64_t D, int64_t C, const int64_t* perms, int64_t P,
                                      Link link, int64_t r0, int64_t count, acc_t* phi) {
  constexpr int L = lanes<acc_t>();
  std::vector<acc_t> dz(D * L, acc_t(0)), start(C * L, acc_t(0)), scratch(3 * C * L);
  std::vector<acc_t> acc(D * C * L, acc_t(0));
  for (int64_t l = 0; l < count; ++l) {
    for (int64_t d = 0; d < D; ++d) dz[d * L + l] = dz_rows[(r0 + l) * D + d];
    for (int64_t c = 0; c < C; ++c) start[c * L + l] = start_rows[(r0 + l) * C + c];
  }
  acc_t* acc_ptr = acc.data();
  auto credit = [acc_ptr, C](int64_t d, int64_t c, int l, acc_t delta) {
    acc_ptr[(d * C + c) * L + l] += delta;
  };
  for (int64_t p = 0; p < P; ++p) {
    kernels::shapley_walk<acc_t, L>(perms + p * D, D, C, W, dz.data(), start.data(), link,
                                    scratch.data(), scratch.data() + C * L,
                                    scratch.data() + 2 * C * L, credit);
  }
  const acc_t scale = P > 0 ? acc_t(1) / static_cast<acc_t>(P) : acc_t(0);
  for (int64_t l = 0; l < count; ++l)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t d = 0; d < D; ++d)
        phi[((r0 + l) * C + c) * D + d] = acc[(d * C + c) * L + l] * scale;
}

NC_CPU_CLONES void shapley_block(const float* dz, const float* start, const float* W, int64_t D,
                                 int64_t C, const int64_t* perms, int64_t P, Link link, int64_t r0,
                                 int64_t count, float* phi) {
  shapley_block_body(dz, start, W, D, C, perms, P, link, r0, count, phi);
}
NC_CPU_CLONES void shapley_block(const double* dz, const double* start, const double* W, int64_t D,
                                 int64_t C, const int64_t* perms, int64_t P, Link link, int64_t r0,
                                 int64_t count, double* phi) {
  shapley_block_body(dz, start, W, D, C, perms, P, link, r0, count, phi);
}

at::Tensor shapley_permutation_cpu(const at::Tensor& x, const at::Tensor& weight,
                                   const at::Tensor& bias, const at::Tensor& background,
                                   const at::Tensor& perms, c10::string_view link) {
  const ShapleyCall call = prepare_shapley(x, weight, bias, background, perms, link);
  if (call.identity_result.defined()) return call.identity_result;
  const int64_t R = x.size(0), D = x.size(1), C = call.W.size(0), P = call.perms.size(0);
  at::Tensor phi = at::empty({R, C, D}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "neurocore_shapley", [&] {
    constexpr int64_t L = lanes<scalar_t>();
    const scalar_t* dz_ptr = call.dz.data_ptr<scalar_t>();
    const scalar_t* start_ptr = call.start.data_ptr<scalar_t>();
    const scalar_t* w_ptr = call.W.data_ptr<scalar_t>();
    const int64_t* perm_ptr = call.perms.data_ptr<int64_t>();
    const Link lk = call.link;
    scalar_t* phi_ptr = phi.data_ptr<scalar_t>();
    at::parallel_for(0, (R + L - 1) / L, 1, [=](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t r0 = b * L;
        shapley_block(dz_ptr, start_ptr, w_ptr, D, C, perm_ptr, P, lk, r0, std::min(L, R - r0), phi_ptr);
      }
    });
  });
  return phi;
}

}  // namespace

TORCH_LIBRARY_IMPL(neurocore, CPU, m) { m.impl("shapley_permutation", &shapley_permutation_cpu); }

}  // namespace neurocore
