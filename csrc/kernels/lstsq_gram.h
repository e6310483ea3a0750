// One small least-squares system of LE's greedy search, solved from Gram statistics (shared by the
// CPU and CUDA kernels; ALGORITHMS.md §2 step 4).
//
// For neuron k and concept set S: w = (C_SS + delta I)^-1 c_Sk with the train split's centred
// covariance C and cross-covariance c (the intercept drops out of centred statistics), bias from
// the means, and the validation Pearson correlation of the fitted predictor from the validation
// split's covariances: corr = w.c'_Sk / sqrt(w^T C'_SS w * var'_k). No per-sample data is touched.
#pragma once

#include <cmath>

#include "common.h"

namespace neurocore {
namespace kernels {

constexpr int kMaxSetSize = 32;

struct GramView {
  const double* cov;          // [M, M]
  const double* mean;         // [M] (train only)
  const double* cross;        // [M, K]
  const double* target_mean;  // [K] (train only)
  const double* target_var;   // [K] (val only)
};

// Solve the system of `set` (s slots, -1 = unused) for neuron k. Writes w_out[s] (0 in unused
// slots), *bias_out and *corr_out.
NC_HD void lstsq_gram_one(const GramView& train, const GramView& val, int64_t M, int64_t K,
                          const int64_t* set, int64_t s, int64_t k, double ridge, double* w_out,
                          double* bias_out, double* corr_out) {
  int64_t cols[kMaxSetSize];
  int64_t slot[kMaxSetSize];
  double A[kMaxSetSize * kMaxSetSize];
  double w[kMaxSetSize];
  int64_t n = 0;
  for (int64_t i = 0; i < s; ++i) {
    w_out[i] = 0.0;
    if (set[i] >= 0) {
      cols[n] = set[i];
      slot[n] = i;
      ++n;
    }
  }
  double diag = 0.0;
  for (int64_t a = 0; a < n; ++a) {
    for (int64_t c = 0; c < n; ++c) A[a * n + c] = train.cov[cols[a] * M + cols[c]];
    w[a] = train.cross[cols[a] * K + k];
    diag += A[a * n + a];
  }
  diag = n > 0 ? diag / n : 0.0;
  // Tiny relative ridge: duplicate or constant concepts give a finite, minimum-norm-like answer.
  const double delta = diag > 0.0 ? ridge * diag : 1.0;
  for (int64_t a = 0; a < n; ++a) A[a * n + a] += delta;
  // Cholesky A = L L^T in place (lower triangle); a pivot lost to rounding is floored at delta.
  for (int64_t j = 0; j < n; ++j) {
    double d = A[j * n + j];
    for (int64_t l = 0; l < j; ++l) d -= A[j * n + l] * A[j * n + l];
    d = d > delta * 1e-3 ? d : delta;
    const double root = sqrt(d);
    A[j * n + j] = root;
    for (int64_t i = j + 1; i < n; ++i) {
      double v = A[i * n + j];
      for (int64_t l = 0; l < j; ++l) v -= A[i * n + l] * A[j * n + l];
      A[i * n + j] = v / root;
    }
  }
  // forward (L y = c) then backward (L^T w = y) substitution, in place in w
  for (int64_t i = 0; i < n; ++i) {
    double v = w[i];
    for (int64_t l = 0; l < i; ++l) v -= A[i * n + l] * w[l];
    w[i] = v / A[i * n + i];
  }
  for (int64_t i = n - 1; i >= 0; --i) {
    double v = w[i];
    for (int64_t l = i + 1; l < n; ++l) v -= A[l * n + i] * w[l];
    w[i] = v / A[i * n + i];
  }
  double bias = train.target_mean[k];
  double cov_pred = 0.0, var_pred = 0.0;
  for (int64_t a = 0; a < n; ++a) {
    w_out[slot[a]] = w[a];
    bias -= train.mean[cols[a]] * w[a];
    cov_pred += w[a] * val.cross[cols[a] * K + k];
    double row = 0.0;
    for (int64_t c = 0; c < n; ++c) row += val.cov[cols[a] * M + cols[c]] * w[c];
    var_pred += w[a] * row;
  }
  const double denom = sqrt((var_pred > 0.0 ? var_pred : 0.0) * val.target_var[k]);
  *bias_out = bias;
  *corr_out = denom > 0.0 ? cov_pred / denom : 0.0;
}

}  // namespace kernels
}  // namespace neurocore
