#pragma once
// Exponentials and streaming reductions shared by the CPU and CUDA kernels.
#include "config.h"

namespace mixdiff {

// Scalar float element operations for the branch-free polynomials (exp_poly here, the normal transforms
// in normal.h); the CPU kernels supply a 16-lane version with the same members (cpu_tiles.h).
struct ScalarFloatOps {
  using F = float;
  using I = int32_t;
  using U = uint32_t;
  MIXDIFF_HD MIXDIFF_INLINE static F select(bool c, F a, F b) { return c ? a : b; }
  MIXDIFF_HD MIXDIFF_INLINE static F pow2_of_integral(F n) {  // 2^n for an integer-valued n in [-126, 127]
    return int_bits_to_float((static_cast<int32_t>(n) + 127) << 23);
  }
  MIXDIFF_HD MIXDIFF_INLINE static F u32_to_float(U w) { return static_cast<float>(w); }  // round to nearest
  MIXDIFF_HD MIXDIFF_INLINE static F i32_to_float(I i) { return static_cast<float>(i); }
  MIXDIFF_HD MIXDIFF_INLINE static I float_to_i32(F x) { return static_cast<int32_t>(x); }  // x integral
  MIXDIFF_HD MIXDIFF_INLINE static I bits(F x) { return float_bits_to_int(x); }
  MIXDIFF_HD MIXDIFF_INLINE static F from_bits(I i) { return int_bits_to_float(i); }
  MIXDIFF_HD MIXDIFF_INLINE static F sqrt(F x) { return sqrtf(x); }
};

// exp(x) for float, branch-free so that CPU loops vectorise and CUDA and CPU compute the same bits:
// Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2, degree-6 Taylor polynomial (truncation < 1.2e-7
// relative), scaled by 2^n through the exponent bits. Returns exactly 0 below the float range (so
// exp(-inf) = 0, which zero-weight components rely on), +inf above it, NaN for NaN.
template <class Ops>
MIXDIFF_HD MIXDIFF_INLINE typename Ops::F exp_poly(typename Ops::F x) {
  using F = typename Ops::F;
  const float kLog2e = 1.44269504088896341f;
  const float kLn2Hi = 0.693145751953125f;  // ln 2 split so that n * kLn2Hi is exact
  const float kLn2Lo = 1.42860682030941723e-6f;
  const float kRound = 12582912.0f;         // 1.5 * 2^23: adding it rounds to the nearest integer
  F xc = Ops::select(x < -87.0f, F{} - 87.0f, x);
  xc = Ops::select(xc > 88.0f, F{} + 88.0f, xc);
  const F n = (xc * kLog2e + kRound) - kRound;
  const F r = (xc - n * kLn2Hi) - n * kLn2Lo;
  F p = F{} + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  F y = p * Ops::pow2_of_integral(n);
  y = Ops::select(x < -87.0f, F{}, y);
  y = Ops::select(x > 88.0f, F{} + infinity<float>(), y);
  return Ops::select(x != x, x, y);  // NaN stays NaN
}

MIXDIFF_HD MIXDIFF_INLINE float fast_exp(float x) { return exp_poly<ScalarFloatOps>(x); }

// Double keeps the libm exponential: the float64 path is the accuracy path, not the fast one.
MIXDIFF_HD MIXDIFF_INLINE double fast_exp(double x) { return exp(x); }

// Max-shifted log-sum-exp accumulated one term at a time (online softmax normaliser): never
// exponentiates a positive number, so tight Gaussians whose log-densities are far from 0 neither
// overflow nor underflow. Two partial accumulators merge, which is how CUDA threads combine.
template <class T>
struct LogSumExp {
  T max = -infinity<T>();
  T sum = T(0);  // sum of exp(term - max)

  MIXDIFF_HD MIXDIFF_INLINE void push(T v) {
    if (v == -infinity<T>()) return;  // exp(-inf) adds nothing; while max is -inf, -inf - max would be NaN
    if (v > max) {
      sum = sum * fast_exp(max - v) + T(1);
      max = v;
    } else {
      sum += fast_exp(v - max);  // v = -inf gives exp(-inf) = 0
    }
  }
  MIXDIFF_HD MIXDIFF_INLINE void merge(const LogSumExp& o) {
    if (o.max > max) {
      sum = sum * fast_exp(max - o.max) + o.sum;
      max = o.max;
    } else if (o.max > -infinity<T>()) {
      sum += o.sum * fast_exp(o.max - max);
    }
  }
  MIXDIFF_HD MIXDIFF_INLINE T value() const {
    return max == -infinity<T>() ? max : max + log(sum);
  }
};

// Best value with its index; on equal values the lowest index wins, also across merges, so the result
// does not depend on how the index range was split between threads.
template <class T, bool kMinimum>
struct ArgBest {
  T value = kMinimum ? infinity<T>() : -infinity<T>();
  int64_t index = -1;

  MIXDIFF_HD MIXDIFF_INLINE static bool better(T a, int64_t ia, T b, int64_t ib) {
    if (kMinimum ? a < b : a > b) return true;
    return a == b && ia >= 0 && (ib < 0 || ia < ib);
  }
  MIXDIFF_HD MIXDIFF_INLINE void push(T v, int64_t i) {
    if (better(v, i, value, index)) { value = v; index = i; }
  }
  MIXDIFF_HD MIXDIFF_INLINE void merge(const ArgBest& o) { push(o.value, o.index); }
};
template <class T> using ArgMin = ArgBest<T, true>;
template <class T> using ArgMax = ArgBest<T, false>;

}  // namespace mixdiff
