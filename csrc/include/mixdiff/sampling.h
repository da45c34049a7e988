#pragma once
// Drawing from the mixture prior, one sample row at a time, identically on CPU and CUDA: the component
// by inverse CDF of a Philox uniform, the noise by Box-Muller pairs, then x = mu_j + A_j eps.
#include "gaussian.h"
#include "philox.h"

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

// Standard normals eps[e], e in [e0, e1) (e0 even), of sample `row`.
template <class T>
MIXDIFF_HD MIXDIFF_INLINE void prior_noise(uint64_t seed, uint64_t row, int64_t e0, int64_t e1, T* eps) {
  for (int64_t e = e0; e < e1; e += 2) {
    T z0, z1;
    normal_pair(philox_words(seed, kStreamPriorNoise, row, static_cast<uint32_t>(e / 2)), &z0, &z1);
    eps[e - e0] = z0;
    if (e + 1 < e1) eps[e + 1 - e0] = z1;
  }
}

// x = mu + A eps in place (x holds eps on entry). factor: the component's A in gaussian.h layout
// (sigma, sigma_d, or row-major lower-triangular L). Full works from the last row up, so every eps_j
// it reads is still unchanged.
template <class T>
MIXDIFF_HD MIXDIFF_INLINE void affine_from_noise(CovType c, const T* mu, const T* factor, int64_t D, T* x) {
  switch (c) {
    case CovType::Identity:
      for (int64_t d = 0; d < D; ++d) x[d] = mu[d] + x[d];
      break;
    case CovType::Spherical:
      for (int64_t d = 0; d < D; ++d) x[d] = mu[d] + factor[0] * x[d];
      break;
    case CovType::Diag:
      for (int64_t d = 0; d < D; ++d) x[d] = mu[d] + factor[d] * x[d];
      break;
    default:
      for (int64_t i = D - 1; i >= 0; --i) {
        T s = T(0);
        for (int64_t j = 0; j <= i; ++j) s += factor[i * D + j] * x[j];
        x[i] = mu[i] + s;
      }
  }
}

}  // namespace mixdiff
