#pragma once
// Per-row math of the noise ops, identical on CPU and CUDA: the prior's component by inverse CDF of a
// Philox uniform, the factor A_j applied to noise, forward noising and the reverse step.
#include "gaussian.h"
#include "normal.h"

namespace mixdiff {

// First k with u * cdf[K-1] <= cdf[k] (u in (0, 1]), by bisection; zero-weight components (cdf[k] ==
// cdf[k-1]) are never chosen.
MIXDIFF_HD MIXDIFF_INLINE int64_t categorical_inverse_cdf(const double* cdf, int64_t K, double u) {
  const double target = u * cdf[K - 1];
  int64_t lo = 0, hi = K - 1;
  while (lo < hi) {
    const int64_t mid = (lo + hi) / 2;
    if (cdf[mid] < target) lo = mid + 1; else hi = mid;
  }
  return lo;
}

MIXDIFF_HD MIXDIFF_INLINE int64_t prior_component(const double* cdf, int64_t K, uint64_t seed, uint64_t row) {
  const Philox4x32 w = philox_words(seed, kStreamComponent, row, 0);
  return categorical_inverse_cdf(cdf, K, uniform_open0(w.v[0], w.v[1]));
}

// Separable factors (identity, spherical, diag) scale element d by this; full covariance uses lower_matvec.
template <class T>
MIXDIFF_HD MIXDIFF_INLINE T factor_scale(CovType c, const T* factor, int64_t d) {
  return c == CovType::Identity ? T(1) : c == CovType::Spherical ? factor[0] : factor[d];
}

// v = L v in place for a row-major lower-triangular L (upper triangle never read), from the last row up
// so that every v_j it reads is still unchanged; sums in increasing j.
template <class T>
MIXDIFF_HD MIXDIFF_INLINE void lower_matvec_inplace(const T* L, int64_t D, T* v) {
  for (int64_t i = D - 1; i >= 0; --i) {
    T s = T(0);
    for (int64_t j = 0; j <= i; ++j) s += L[i * D + j] * v[j];
    v[i] = s;
  }
}

// v = A v in place for the component's factor A (gaussian.h layout).
template <class T>
MIXDIFF_HD MIXDIFF_INLINE void apply_factor(CovType c, const T* factor, int64_t D, T* v) {
  if (c == CovType::Full) {
    lower_matvec_inplace(factor, D, v);
  } else if (c != CovType::Identity) {
    for (int64_t d = 0; d < D; ++d) v[d] *= factor_scale(c, factor, d);
  }
}

// x = mu + A eps in place (x holds eps on entry).
template <class T>
MIXDIFF_HD MIXDIFF_INLINE void affine_from_noise(CovType c, const T* mu, const T* factor, int64_t D, T* x) {
  apply_factor(c, factor, D, x);
  for (int64_t d = 0; d < D; ++d) x[d] += mu[d];
}

// Forward noising centred on the component (q_sample): x_t = mu + a (x_0 - mu) + b (A eps), with
// (a, b) = (sqrt(abar_t), sqrt(1 - abar_t)) in discrete time or (m(t), s(t)) in continuous time.
template <class T, class S = T>  // S: the coefficients' type (a scalar for the CPU's vectors)
MIXDIFF_HD MIXDIFF_INLINE T forward_element(T mu, T x0, S a, S b, T a_eps) {
  return mu + a * (x0 - mu) + b * a_eps;
}

// One reverse step of every sampler, in y = x - mu (docs/method.md gives each sampler's coefficients):
//   y0_hat = a0 y + b0 (A eps_hat), clipped to [clip_lo, clip_hi] in x space when clip is set,
//   y'     = cx y + c0 y0_hat + ce (A eps_hat) + cz (A z).
template <class T>
struct StepCoefficients {
  T a0, b0, cx, c0, ce, cz;
  T clip_lo, clip_hi;
  bool clip;
};

// The coefficients in the compute dtype (the op takes them as float64), for the CPU and CUDA kernels alike.
template <class T>
MIXDIFF_HD MIXDIFF_INLINE StepCoefficients<T> cast_coefficients(const StepCoefficients<double>& c) {
  return {T(c.a0), T(c.b0), T(c.cx), T(c.c0), T(c.ce), T(c.cz), T(c.clip_lo), T(c.clip_hi), c.clip};
}

// Returns x' = mu + y'; *x0_hat = mu + y0_hat (the clean-sample prediction). kClip: c.clip, fixed at
// compile time so that CPU loops specialised on it vectorise.
template <bool kClip, class T>
MIXDIFF_HD MIXDIFF_INLINE T reverse_element_fixed_clip(const StepCoefficients<T>& c, T mu, T x, T a_eps_hat, T a_z,
                                                       T* x0_hat) {
  const T y = x - mu;
  T y0 = c.a0 * y + c.b0 * a_eps_hat;
  if (kClip) {
    const T x0 = y0 + mu;
    y0 = (x0 < c.clip_lo ? c.clip_lo : x0 > c.clip_hi ? c.clip_hi : x0) - mu;
  }
  *x0_hat = mu + y0;
  return mu + (c.cx * y + c.c0 * y0 + c.ce * a_eps_hat + c.cz * a_z);
}

template <class T>
MIXDIFF_HD MIXDIFF_INLINE T reverse_element(const StepCoefficients<T>& c, T mu, T x, T a_eps_hat, T a_z, T* x0_hat) {
  return c.clip ? reverse_element_fixed_clip<true>(c, mu, x, a_eps_hat, a_z, x0_hat)
                : reverse_element_fixed_clip<false>(c, mu, x, a_eps_hat, a_z, x0_hat);
}

}  // namespace mixdiff
