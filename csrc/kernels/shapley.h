// Monte-Carlo permutation Shapley values of f(z) = link(W z + b): one walk through a permutation,
// shared by the CPU kernel (L samples in SIMD lanes) and the CUDA kernel (one sample per thread).
//
// Starting from the background's logits, feature d = perm[j] switches from background to sample,
// which moves every logit by W[c, d] * (x[d] - background[d]); the change of f is credited to d.
#pragma once

#include "common.h"

namespace neurocore {
namespace kernels {

enum class Link : int { Identity = 0, Sigmoid = 1, Softmax = 2 };

// f = link(logits) for the [C][L] arrays (L lanes side by side).
template <typename acc_t, int L>
NC_HD void apply_link(Link link, int64_t C, const acc_t* logits, acc_t* f) {
  if (link == Link::Sigmoid) {
    for (int64_t i = 0; i < C * L; ++i) f[i] = acc_t(1) / (acc_t(1) + fast_exp(-logits[i]));
  } else if (link == Link::Softmax) {
    acc_t mx[L], total[L];
    for (int l = 0; l < L; ++l) {
      mx[l] = logits[l];
      total[l] = 0;
    }
    for (int64_t c = 1; c < C; ++c)
      for (int l = 0; l < L; ++l) mx[l] = logits[c * L + l] > mx[l] ? logits[c * L + l] : mx[l];
    for (int64_t c = 0; c < C; ++c)
      for (int l = 0; l < L; ++l) {
        f[c * L + l] = fast_exp(logits[c * L + l] - mx[l]);
        total[l] += f[c * L + l];
      }
    for (int64_t c = 0; c < C; ++c)
      for (int l = 0; l < L; ++l) f[c * L + l] /= total[l];
  } else {
    for (int64_t i = 0; i < C * L; ++i) f[i] = logits[i];
  }
}

// Walk one permutation for L samples. W: [C, D] row-major; dz: [D][L] feature changes x - bg;
// start: [C][L] background logits; logits, f_old, f_new: [C][L] scratch. credit(d, c, l, delta)
// receives each change of f_c.
#if defined(__CUDACC__)
#pragma nv_exec_check_disable  // credit may be device-only (atomicAdd); instantiated per back end
#endif
template <typename acc_t, int L, typename Credit>
NC_HD void shapley_walk(const int64_t* perm, int64_t D, int64_t C, const acc_t* W, const acc_t* dz,
                        const acc_t* start, Link link, acc_t* logits, acc_t* f_old, acc_t* f_new,
                        Credit credit) {
  if (C == 1) {
    // One output (a binary classifier, one class score): the walk's state fits in registers.
    acc_t lg[L], f0[L], f1[L];
    for (int l = 0; l < L; ++l) lg[l] = start[l];
    apply_link<acc_t, L>(link, 1, lg, f0);
    for (int64_t j = 0; j < D; ++j) {
      const int64_t d = perm[j];
      const acc_t w = W[d];
      for (int l = 0; l < L; ++l) lg[l] += w * dz[d * L + l];
      apply_link<acc_t, L>(link, 1, lg, f1);
      for (int l = 0; l < L; ++l) {
        credit(d, 0, l, f1[l] - f0[l]);
        f0[l] = f1[l];
      }
    }
    return;
  }
  for (int64_t i = 0; i < C * L; ++i) logits[i] = start[i];
  apply_link<acc_t, L>(link, C, logits, f_old);
  for (int64_t j = 0; j < D; ++j) {
    const int64_t d = perm[j];
    for (int64_t c = 0; c < C; ++c) {
      const acc_t wcd = W[c * D + d];
      for (int l = 0; l < L; ++l) logits[c * L + l] += wcd * dz[d * L + l];
    }
    apply_link<acc_t, L>(link, C, logits, f_new);
    for (int64_t c = 0; c < C; ++c)
      for (int l = 0; l < L; ++l) {
        credit(d, c, l, f_new[c * L + l] - f_old[c * L + l]);
        f_old[c * L + l] = f_new[c * L + l];
      }
  }
}

}  // namespace kernels
}  // namespace neurocore
