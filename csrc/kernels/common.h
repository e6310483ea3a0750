// Torch-free helpers shared by the CPU and CUDA kernels of neurocore.
//
// Everything here compiles with a host compiler alone and with nvcc (as __host__ __device__), so the
// per-element math of every op is written once and used by both back ends.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define NC_HD __host__ __device__ __forceinline__
#else
#define NC_HD inline __attribute__((always_inline))
#endif

// The loops that call fast_exp/fast_log vectorise only with -fno-trapping-math (set by the build):
// otherwise GCC will not turn their range checks into branch-free selects.
//
// Hot CPU loops are compiled once per instruction-set level and the best one is picked when the
// library loads (GCC/Clang function multi-versioning): fast on new CPUs, safe on old ones, and no
// -march=native in the build.
#if !defined(__CUDACC__) && (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__) && \
    !defined(__clang__) && !defined(NEUROCORE_NO_TARGET_CLONES)
#define NC_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define NC_CPU_CLONES
#endif
// The bodies that NC_CPU_CLONES entry points call must be inlined into each clone (an out-of-line
// copy would be compiled for the baseline instruction set only).
#define NC_CLONE_BODY inline __attribute__((always_inline))

namespace neurocore {
namespace kernels {

template <typename To, typename From>
NC_HD To bit_cast(From from) {
  static_assert(sizeof(To) == sizeof(From), "bit_cast needs equal sizes");
  To to;
  memcpy(&to, &from, sizeof(To));
  return to;
}

// exp(x) written so that a compiler vectorises loops that call it (no branches, no libm call).
// Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2, Taylor polynomial for e^r, then 2^n through the
// exponent bits. Relative error ~1e-16 (double) / ~2e-7 (float) on the clamped range; results below
// the smallest normal number are flushed to 0, and NaN propagates.
NC_HD double fast_exp(double x) {
#if defined(__CUDA_ARCH__)
  return ::exp(x);
#else
  const double lo = -708.0, hi = 709.0;
  const double xc = x < lo ? lo : (x > hi ? hi : x);
  const double shifter = 6755399441055744.0;  // 1.5 * 2^52: adding it rounds to an integer
  const double t = xc * 1.4426950408889634 + shifter;
  const double n = t - shifter;
  const double r = (xc - n * 6.93147180369123816490e-01) - n * 1.90821492927058770002e-10;
  double p = 1.0 / 6227020800.0;  // 1/13!
  p = p * r + 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  // Unsigned arithmetic: a NaN input gives meaningless bits here but no undefined behaviour.
  const uint64_t ni = bit_cast<uint64_t>(t) - bit_cast<uint64_t>(shifter);
  const double scale = bit_cast<double>((ni + 1023u) << 52);
  const double result = p * scale;
  return x < lo ? 0.0 : result;
#endif
}

NC_HD float fast_exp(float x) {
#if defined(__CUDA_ARCH__)
  return ::expf(x);
#else
  const float lo = -87.0f, hi = 88.0f;
  const float xc = x < lo ? lo : (x > hi ? hi : x);
  const float shifter = 12582912.0f;  // 1.5 * 2^23
  const float t = xc * 1.44269504f + shifter;
  const float n = t - shifter;
  const float r = (xc - n * 0.693359375f) + n * 2.12194440e-4f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const uint32_t ni = bit_cast<uint32_t>(t) - bit_cast<uint32_t>(shifter);
  const float scale = bit_cast<float>((ni + 127u) << 23);
  const float result = p * scale;
  return x < lo ? 0.0f : result;
#endif
}

// log(x) for x >= 0, vectorisable like fast_exp: x = 2^e * m with m in [sqrt(1/2), sqrt(2)), then
// log(m) = 2 atanh(u), u = (m - 1) / (m + 1), |u| < 0.172, by its odd series. Relative error ~1e-16.
// log(0) = -inf, log(negative or NaN) = NaN, log(inf) = inf; subnormal inputs are not supported
// (callers keep products away from them).
NC_HD double fast_log(double x) {
#if defined(__CUDA_ARCH__)
  return ::log(x);
#else
  const uint64_t bits = bit_cast<uint64_t>(x);
  // exponent and mantissa, with the mantissa moved into [sqrt(1/2), sqrt(2))
  const uint64_t adj = bits + (uint64_t{0x3ff0000000000000} - uint64_t{0x3fe6a09e667f3bcd});
  // the biased exponent as a double without an int64 -> double conversion (AVX-512 only)
  const double e = bit_cast<double>((adj >> 52) | uint64_t{0x4330000000000000}) - (4503599627370496.0 + 1023.0);
  const double m = bit_cast<double>((adj & uint64_t{0x000fffffffffffff}) + uint64_t{0x3fe6a09e667f3bcd});
  const double u = (m - 1.0) / (m + 1.0);
  const double u2 = u * u;
  double p = 1.0 / 23.0;
  p = p * u2 + 1.0 / 21.0;
  p = p * u2 + 1.0 / 19.0;
  p = p * u2 + 1.0 / 17.0;
  p = p * u2 + 1.0 / 15.0;
  p = p * u2 + 1.0 / 13.0;
  p = p * u2 + 1.0 / 11.0;
  p = p * u2 + 1.0 / 9.0;
  p = p * u2 + 1.0 / 7.0;
  p = p * u2 + 1.0 / 5.0;
  p = p * u2 + 1.0 / 3.0;
  p = p * u2 + 1.0;
  const double result = e * 0.6931471805599453 + 2.0 * u * p;
  const double inf = bit_cast<double>(uint64_t{0x7ff0000000000000});
  const double nan = bit_cast<double>(uint64_t{0x7ff8000000000000});
  return x > 0.0 && x < inf ? result : (x == 0.0 ? -inf : (x == inf ? inf : nan));
#endif
}

}  // namespace kernels
}  // namespace neurocore
