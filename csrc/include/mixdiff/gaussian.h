#pragma once
// Gaussian log-densities for the four covariance types, parameterised by the covariance factor A
// (Sigma = A A^T) and evaluated through its inverse ("precision factor"), as scikit-learn does:
//   log N(x; mu, Sigma) = -D/2 log(2 pi) - sum_i log A_ii - 1/2 || A^{-1} (x - mu) ||^2.
#include "config.h"

namespace mixdiff {

enum class CovType : int { Identity = 0, Spherical = 1, Diag = 2, Full = 3 };

constexpr double kLog2Pi = 1.83787706640934548356;

// Number of stored factor values per component.
MIXDIFF_HD MIXDIFF_INLINE int64_t factor_size(CovType c, int64_t D) {
  switch (c) {
    case CovType::Identity: return 0;
    case CovType::Spherical: return 1;
    case CovType::Diag: return D;
    default: return D * D;
  }
}

// Squared Mahalanobis distance || P (x - mu) ||^2 of one point to one component, where P is the
// precision factor of that component (nothing for identity, 1/sigma for spherical, 1/sigma_d for diag,
// the lower-triangular inverse of the Cholesky factor for full, row-major D x D).
template <class T>
MIXDIFF_HD MIXDIFF_INLINE T mahalanobis_sq(CovType c, const T* x, const T* mu, const T* prec, int64_t D) {
  T acc = T(0);
  switch (c) {
    case CovType::Identity:
      for (int64_t d = 0; d < D; ++d) { const T t = x[d] - mu[d]; acc += t * t; }
      return acc;
    case CovType::Spherical:
      for (int64_t d = 0; d < D; ++d) { const T t = x[d] - mu[d]; acc += t * t; }
      return acc * prec[0] * prec[0];
    case CovType::Diag:
      for (int64_t d = 0; d < D; ++d) { const T t = (x[d] - mu[d]) * prec[d]; acc += t * t; }
      return acc;
    default:
      for (int64_t i = 0; i < D; ++i) {
        T y = T(0);
        for (int64_t j = 0; j <= i; ++j) y += prec[i * D + j] * (x[j] - mu[j]);
        acc += y * y;
      }
      return acc;
  }
}

// The x-independent part of log w_k + log N(x; mu_k, Sigma_k): log w - D/2 log 2pi + log det P.
template <class T>
MIXDIFF_HD MIXDIFF_INLINE T log_gaussian_offset(CovType c, T log_weight, const T* prec, int64_t D) {
  T log_det_prec = T(0);
  switch (c) {
    case CovType::Identity: break;
    case CovType::Spherical: log_det_prec = T(D) * log(prec[0]); break;
    case CovType::Diag:
      for (int64_t d = 0; d < D; ++d) log_det_prec += log(prec[d]);
      break;
    default:
      for (int64_t d = 0; d < D; ++d) log_det_prec += log(prec[d * D + d]);
  }
  return log_weight - T(0.5) * T(D) * T(kLog2Pi) + log_det_prec;
}

// Precision factor of one component from its covariance factor (see mahalanobis_sq for the layout).
// Full: P = L^{-1} by forward substitution, column by column (L lower triangular, diagonal > 0; its
// upper triangle is ignored). Returns false when a diagonal entry is not positive.
template <class T>
MIXDIFF_HD MIXDIFF_INLINE bool precision_factor(CovType c, const T* factor, T* prec, int64_t D) {
  switch (c) {
    case CovType::Identity: return true;
    case CovType::Spherical:
      prec[0] = T(1) / factor[0];
      return factor[0] > T(0);
    case CovType::Diag: {
      bool ok = true;
      for (int64_t d = 0; d < D; ++d) { ok = ok && factor[d] > T(0); prec[d] = T(1) / factor[d]; }
      return ok;
    }
    default: {
      bool ok = true;
      for (int64_t d = 0; d < D; ++d) ok = ok && factor[d * D + d] > T(0);
      for (int64_t col = 0; col < D; ++col) {
        for (int64_t row = 0; row < D; ++row) {
          if (row < col) { prec[row * D + col] = T(0); continue; }
          // Solve L p = e_col for the rows at and below col.
          T s = row == col ? T(1) : T(0);
          for (int64_t j = col; j < row; ++j) s -= factor[row * D + j] * prec[j * D + col];
          prec[row * D + col] = s / factor[row * D + row];
        }
      }
      return ok;
    }
  }
}

}  // namespace mixdiff
