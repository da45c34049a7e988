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

// One reverse step of every sampler, in y = x - mu (docs/method.md gives each sampler's coefficients),
// from the model output's term O (A out for epsilon / v-prediction outputs, out itself for a sample
// prediction, which is y0 directly):
//   y0_hat = x0_from_x y + x0_from_out O, clipped to [lo, hi] in x space when clip is set,
//   e      = eps_from_x y + eps_from_out O                  (the step's A eps_hat),
//   y'     = cx y + c0 y0_hat + ce e + cz (A z) + h1 (H1 - mu) + h2 (H2 - mu),
// H1, H2 the earlier steps' x0_hat (multistep solvers). The clip bounds (per component and element, +-inf
// for an open side) and the history values are the element function's arguments.
template <class T>
struct StepCoefficients {
  T x0_from_x, x0_from_out, cx, c0, ce, cz, eps_from_x, eps_from_out, h1, h2;
  bool clip;
  int history;  // history terms read: 0, 1 (h1 H1) or 2 (also h2 H2); the coefficients of the others are 0
};

// The coefficients in the compute dtype (the op takes them as float64), for the CPU and CUDA kernels alike.
template <class T>
MIXDIFF_HD MIXDIFF_INLINE StepCoefficients<T> cast_coefficients(const StepCoefficients<double>& c) {
  return {T(c.x0_from_x), T(c.x0_from_out), T(c.cx), T(c.c0), T(c.ce), T(c.cz), T(c.eps_from_x), T(c.eps_from_out),
          T(c.h1), T(c.h2), c.clip, c.history};
}

// Returns x' = mu + y'; *x0_hat = mu + y0_hat (the clean-sample prediction). o: the output term O of the
// element; lo, hi: its bounds (read when kClip); h1v, h2v: its history values (read when kHistory >= 1, 2).
// kClip, kHistory: c.clip and c.history, fixed at compile time so that CPU loops specialised on them
// vectorise. A NaN x0_hat stays NaN (both comparisons are false).
template <bool kClip, int kHistory, class T>
MIXDIFF_HD MIXDIFF_INLINE T reverse_element_fixed(const StepCoefficients<T>& c, T mu, T x, T o, T a_z, T lo, T hi,
                                                  T h1v, T h2v, T* x0_hat) {
  const T y = x - mu;
  T y0 = c.x0_from_x * y + c.x0_from_out * o;
  const T e = c.eps_from_x * y + c.eps_from_out * o;
  if (kClip) {
    const T x0 = y0 + mu;
    y0 = (x0 < lo ? lo : x0 > hi ? hi : x0) - mu;
  }
  *x0_hat = mu + y0;
  T yp = c.cx * y + c.c0 * y0 + c.ce * e + c.cz * a_z;
  if (kHistory >= 1) yp += c.h1 * (h1v - mu);
  if (kHistory >= 2) yp += c.h2 * (h2v - mu);
  return mu + yp;
}

// reverse_element_fixed for the flags of c (the CUDA kernels: uniform branches).
template <class T>
MIXDIFF_HD MIXDIFF_INLINE T reverse_element(const StepCoefficients<T>& c, T mu, T x, T o, T a_z, T lo, T hi, T h1v,
                                            T h2v, T* x0_hat) {
  if (c.clip) {
    if (c.history == 0) return reverse_element_fixed<true, 0>(c, mu, x, o, a_z, lo, hi, h1v, h2v, x0_hat);
    if (c.history == 1) return reverse_element_fixed<true, 1>(c, mu, x, o, a_z, lo, hi, h1v, h2v, x0_hat);
    return reverse_element_fixed<true, 2>(c, mu, x, o, a_z, lo, hi, h1v, h2v, x0_hat);
  }
  if (c.history == 0) return reverse_element_fixed<false, 0>(c, mu, x, o, a_z, lo, hi, h1v, h2v, x0_hat);
  if (c.history == 1) return reverse_element_fixed<false, 1>(c, mu, x, o, a_z, lo, hi, h1v, h2v, x0_hat);
  return reverse_element_fixed<false, 2>(c, mu, x, o, a_z, lo, hi, h1v, h2v, x0_hat);
}

}  // namespace mixdiff
