#pragma once
// NGMG, the negative Gaussian mixture gradient (docs/method.md, "NGMG"), of one prediction y [D] against
// modes m_k [K, D] with weights w_k and widths sigma_k. With the log terms
//   a_k = log(w_k c_k) - ||y - m_k||^2 / (2 sigma_k^2),   c_k = 1 or (2 pi sigma_k^2)^(-D/2) (normalised),
//   potential: L = -G = -sum_k e^(a_k),     grad L = sum_k e^(a_k) (y - m_k) / sigma_k^2;
//   log:       L = -log sum_k e^(a_k),      grad L = sum_k r_k (y - m_k) / sigma_k^2,  r = softmax(a).
// Both are evaluated around M = max_k a_k (reductions.h's online LogSumExp): G = e^M sum_k e^(a_k - M), so a
// row far from every mode underflows to G = 0 and a zero gradient (never NaN), and the log kind stays finite.
// Shared by the CPU loop and the CUDA kernel (one row per call: one thread per row on the GPU).
#include "gaussian.h"
#include "reductions.h"

namespace mixdiff {

enum class NgmgKind : int { Potential = 0, Log = 1 };

// Per-component constants, formed once per call: offset = log w + log c (gaussian.h's spherical offset
// when normalised), half_prec = 1 / (2 sigma^2). log_weight is 0 when the weights are per row (they are
// added row by row in ngmg_log_term); log 0 = -inf makes a zero-weight component contribute nothing.
template <class T>
MIXDIFF_HD MIXDIFF_INLINE void ngmg_component(T sigma, T log_weight, bool normalized, int64_t D, T* offset,
                                              T* half_prec) {
  const T prec = T(1) / sigma;
  *offset = normalized ? log_gaussian_offset<T>(CovType::Spherical, log_weight, &prec, D) : log_weight;
  *half_prec = T(0.5) * prec * prec;
}

template <class T>
struct NgmgMixture {
  const T* modes;      // [K, D]
  const T* offset;     // [K], from ngmg_component
  const T* half_prec;  // [K], from ngmg_component
  int64_t K, D;
};

// ||y - m_k||^2 from differences (gaussian.h's identity distance: the CPU's tiles sum the same terms).
template <class T>
MIXDIFF_HD MIXDIFF_INLINE T ngmg_sq_dist(const NgmgMixture<T>& mix, const T* y, int64_t k) {
  return mahalanobis_sq<T>(CovType::Identity, y, mix.modes + k * mix.D, nullptr, mix.D);
}

// a_k from the squared distance; row_weights: the row's [K] weights, or null when they are in the offsets.
template <class T>
MIXDIFF_HD MIXDIFF_INLINE T ngmg_log_term(const NgmgMixture<T>& mix, T sq, const T* row_weights, int64_t k) {
  const T a = mix.offset[k] - mix.half_prec[k] * sq;
  return row_weights ? a + log(row_weights[k]) : a;
}

// The loss of row y; writes its gradient to grad [D]. sq_dist(k) = ||y - m_k||^2 (the CPU reads distances
// its tiles computed for a block of rows; a CUDA thread evaluates ngmg_sq_dist). Two passes over the
// components: the log-sum-exp (M and S = sum_k e^(a_k - M)), then the gradient. The second pass takes KC
// components at a time with their coefficients in registers.
template <class T, int KC, class SqDist>
MIXDIFF_HD MIXDIFF_INLINE T ngmg_row(NgmgKind kind, const NgmgMixture<T>& mix, const T* y, const T* row_weights,
                                     SqDist&& sq_dist, T* grad) {
  const int64_t K = mix.K, D = mix.D;
  LogSumExp<T> lse;
  for (int64_t k = 0; k < K; ++k) lse.push(ngmg_log_term(mix, sq_dist(k), row_weights, k));
  const T M = lse.max;
  if (M == -infinity<T>() && lse.sum == T(0)) {
    // G = 0: zero weights, or every distance beyond the dtype's range. (NaN terms leave sum NaN and go on.)
    for (int64_t d = 0; d < D; ++d) grad[d] = T(0);
    return kind == NgmgKind::Potential ? -T(0) : infinity<T>();
  }
  // Coefficients e^(a_k - shift) / sigma_k^2: e^(a_k) for the potential, r_k for the log kind. One
  // exponential each, never a product of two small factors: such products would be subnormal, which the
  // CPU computes at a fraction of its speed, where fast_exp flushes to 0 instead.
  const T shift = kind == NgmgKind::Potential ? T(0) : lse.value();
  for (int64_t k0 = 0; k0 < K; k0 += KC) {
    const int64_t kc = K - k0 < KC ? K - k0 : KC;
    T c[KC];
#if defined(__CUDA_ARCH__)
#pragma unroll  // c stays in registers (without it nvcc spills the float kernel to local memory)
#endif
    for (int j = 0; j < KC; ++j)
      c[j] = j < kc ? fast_exp(ngmg_log_term(mix, sq_dist(k0 + j), row_weights, k0 + j) - shift) *
                          (T(2) * mix.half_prec[k0 + j])
                    : T(0);
    const T* m = mix.modes + k0 * D;
    // Both loop orders add the terms of each element in increasing k: the same sums. A CUDA thread keeps
    // an element in a register across the chunk (its row is in global memory); the CPU walks the row once
    // per component, a vectorised loop over a row that stays in L1.
#if defined(__CUDA_ARCH__)
    for (int64_t d = 0; d < D; ++d) {
      T g = k0 == 0 ? T(0) : grad[d];
#pragma unroll
      for (int j = 0; j < KC; ++j)
        if (j < kc) g += c[j] * (y[d] - m[j * D + d]);
      grad[d] = g;
    }
#else
    if (k0 == 0)
      for (int64_t d = 0; d < D; ++d) grad[d] = T(0);
    for (int j = 0; j < kc; ++j)
      for (int64_t d = 0; d < D; ++d) grad[d] += c[j] * (y[d] - m[j * D + d]);
#endif
  }
  return kind == NgmgKind::Potential ? -(fast_exp(M) * lse.sum) : -shift;
}

}  // namespace mixdiff
