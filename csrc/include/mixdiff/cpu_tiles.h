#pragma once
// CPU-only register-blocked tiles: scores of a few data rows against all mixture components.
// The per-element arithmetic is the one in gaussian.h (same expressions, same order over d); only the
// loop nest differs, so that the compiler keeps a P x KB block of accumulators in vector registers.
// Host code only (uses std::vector); the CUDA kernels call gaussian.h directly.
#include <algorithm>
#include <cstring>
#include <vector>

#include "gaussian.h"
#include "reductions.h"

// Hot CPU loops are compiled for AVX-512, AVX2 and baseline x86-64 and picked at load time, so one
// build runs fast on any x86-64 machine without -march=native.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define MIXDIFF_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MIXDIFF_CPU_CLONES
#endif

namespace mixdiff::cpu {

template <class T> constexpr int kLanes = 64 / sizeof(T);  // one 512-bit vector
constexpr int kBlockRows = 4;                               // data rows per register block

// Component parameters transposed to [D][Kp] (Kp = K rounded up to whole vectors, padding never read
// back), with the precision factors and the per-component log offsets precomputed once per call.
template <class T>
struct ComponentTable {
  CovType cov = CovType::Identity;
  int64_t K = 0, D = 0, Kp = 0;
  std::vector<T> mean_t;    // [D][Kp]
  std::vector<T> scale_t;   // [D][Kp]: diag precision factors (empty otherwise)
  std::vector<T> prec;      // [K][factor_size]: precision factors in gaussian.h layout
  int64_t Dp = 0;           // D rounded up to whole vectors (full covariance)
  std::vector<T> prec_t;    // [K][D][Dp]: full precision factors transposed, prec_t[k][j][i] = P_k[i][j]
  std::vector<T> offset;    // [K]: log w_k - D/2 log 2pi + log det P_k
  std::vector<T> sq_scale;  // [K]: spherical 1/sigma_k^2 (1 otherwise)

  // means [K][D]; factor [K][factor_size] (may be null for identity); log_weights [K] (may be null:
  // then offsets are not needed). Returns the index of a component whose factor has a non-positive
  // diagonal, or -1.
  int64_t build(CovType c, const T* means, const T* factor, const T* log_weights, int64_t K_, int64_t D_) {
    cov = c; K = K_; D = D_;
    Kp = (K + kLanes<T> - 1) / kLanes<T> * kLanes<T>;
    mean_t.assign(static_cast<size_t>(D * Kp), T(0));
    for (int64_t k = 0; k < K; ++k)
      for (int64_t d = 0; d < D; ++d) mean_t[d * Kp + k] = means[k * D + d];
    const int64_t fs = factor_size(c, D);
    prec.assign(static_cast<size_t>(K * fs), T(0));
    offset.assign(static_cast<size_t>(K), T(0));
    sq_scale.assign(static_cast<size_t>(K), T(1));
    int64_t bad = -1;
    for (int64_t k = 0; k < K; ++k) {
      if (!precision_factor(c, factor + k * fs, prec.data() + k * fs, D) && bad < 0) bad = k;
      if (log_weights) offset[k] = log_gaussian_offset(c, log_weights[k], prec.data() + k * fs, D);
      if (c == CovType::Spherical) sq_scale[k] = prec[k] * prec[k];
    }
    if (c == CovType::Diag) {
      scale_t.assign(static_cast<size_t>(D * Kp), T(0));
      for (int64_t k = 0; k < K; ++k)
        for (int64_t d = 0; d < D; ++d) scale_t[d * Kp + k] = prec[k * D + d];
    }
    if (c == CovType::Full) {
      constexpr int64_t L = 64 / sizeof(T);
      Dp = (D + L - 1) / L * L;
      prec_t.assign(static_cast<size_t>(K * D * Dp), T(0));
      for (int64_t k = 0; k < K; ++k)
        for (int64_t i = 0; i < D; ++i)
          for (int64_t j = 0; j <= i; ++j) prec_t[(k * D + j) * Dp + i] = prec[(k * D + i) * D + j];
    }
    return bad;
  }
};

// Explicit 512-bit vectors (GCC/clang vector extensions): the AVX-512 clone keeps them in zmm registers,
// the AVX2 and baseline clones split them into halves and quarters.
template <class T> struct Vec { typedef T type __attribute__((vector_size(64))); };

template <class T>
MIXDIFF_INLINE typename Vec<T>::type load_vec(const T* p) {
  typename Vec<T>::type v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// The first count (<= lanes) elements: partial vectors at row ends (the other lanes are zero / not
// written). Whole vectors take the fixed-size path, one vector load or store.
template <class T>
MIXDIFF_INLINE typename Vec<T>::type load_partial(const T* p, int64_t count) {
  typename Vec<T>::type v{};
  if (count == kLanes<T>) std::memcpy(&v, p, sizeof v);
  else std::memcpy(&v, p, static_cast<size_t>(count) * sizeof(T));
  return v;
}
template <class T>
MIXDIFF_INLINE void store_partial(T* p, const typename Vec<T>::type& v, int64_t count) {
  if (count == kLanes<T>) std::memcpy(p, &v, sizeof v);
  else std::memcpy(p, &v, static_cast<size_t>(count) * sizeof(T));
}

// ScalarFloatOps (reductions.h) on 16 float lanes: exp_poly and the normal transforms of normal.h.
struct VecFloatOps {
  using F = Vec<float>::type;
  typedef int32_t I __attribute__((vector_size(64)));
  typedef uint32_t U __attribute__((vector_size(64)));
  template <class M>
  MIXDIFF_INLINE static F select(M c, F a, F b) { return c ? a : b; }
  MIXDIFF_INLINE static F pow2_of_integral(F n) { return (F)((__builtin_convertvector(n, I) + 127) << 23); }
  MIXDIFF_INLINE static F u32_to_float(U w) { return __builtin_convertvector(w, F); }
  MIXDIFF_INLINE static F i32_to_float(I i) { return __builtin_convertvector(i, F); }
  MIXDIFF_INLINE static I float_to_i32(F x) { return __builtin_convertvector(x, I); }
  MIXDIFF_INLINE static I bits(F x) { return (I)x; }
  MIXDIFF_INLINE static F from_bits(I i) { return (F)i; }
  MIXDIFF_INLINE static F sqrt(F x) {
    F r;
    for (int l = 0; l < kLanes<float>; ++l) r[l] = __builtin_sqrtf(x[l]);  // vectorised to vsqrtps
    return r;
  }
};

// Rows of scores live in scratch buffers of Kp = whole vectors of columns; columns [K, Kp) hold the
// reduction's neutral value so whole vectors can be read.
template <class T>
MIXDIFF_INLINE void pad_row(T* row, int64_t K, int64_t Kp, T neutral) {
  for (int64_t k = K; k < Kp; ++k) row[k] = neutral;
}

// Index of the smallest (kMinimum) or largest entry, lowest index on ties; -1 when no entry compares
// (all NaN). Vector reduction for the value, then a scan for its first position.
template <class T, bool kMinimum>
MIXDIFF_INLINE int64_t row_best_index(const T* row, int64_t K, int64_t Kp, T* best) {
  using V = typename Vec<T>::type;
  constexpr int L = kLanes<T>;
  V acc = V{} + (kMinimum ? infinity<T>() : -infinity<T>());
  for (int64_t k = 0; k < Kp; k += L) {
    const V v = load_vec(row + k);
    acc = kMinimum ? (v < acc ? v : acc) : (v > acc ? v : acc);
  }
  T m = acc[0];
  for (int l = 1; l < L; ++l) m = kMinimum ? (acc[l] < m ? acc[l] : m) : (acc[l] > m ? acc[l] : m);
  *best = m;
  for (int64_t k = 0; k < K; ++k)  // an all-NaN row leaves m at the padding's value: not found
    if (row[k] == m) return k;
  return -1;
}

MIXDIFF_INLINE float sum_exp_shifted(const float* row, int64_t Kp, float shift) {
  using V = Vec<float>::type;
  V acc{};
  for (int64_t k = 0; k < Kp; k += kLanes<float>) acc += exp_poly<VecFloatOps>(load_vec(row + k) - shift);
  float s = 0.0f;
  for (int l = 0; l < kLanes<float>; ++l) s += acc[l];
  return s;
}
MIXDIFF_INLINE double sum_exp_shifted(const double* row, int64_t Kp, double shift) {
  double s = 0.0;
  for (int64_t k = 0; k < Kp; ++k) s += fast_exp(row[k] - shift);
  return s;
}

MIXDIFF_INLINE void exp_shifted_inplace(float* row, int64_t Kp, float shift) {
  using V = Vec<float>::type;
  for (int64_t k = 0; k < Kp; k += kLanes<float>) {
    const V e = exp_poly<VecFloatOps>(load_vec(row + k) - shift);
    std::memcpy(row + k, &e, sizeof e);
  }
}
MIXDIFF_INLINE void exp_shifted_inplace(double* row, int64_t Kp, double shift) {
  for (int64_t k = 0; k < Kp; ++k) row[k] = fast_exp(row[k] - shift);
}

// log sum_k exp(row[k]) with the arg-max (ties -> lowest index). Row padded with -inf.
// Returns -inf for an all -inf row and NaN when the row has NaN.
template <class T>
MIXDIFF_INLINE T row_logsumexp(const T* row, int64_t K, int64_t Kp, int64_t* argmax) {
  T m;
  const int64_t best = row_best_index<T, false>(row, K, Kp, &m);
  *argmax = best < 0 ? 0 : best;
  if (best < 0) return T(NAN);
  if (m == -infinity<T>()) return m;
  return m + std::log(sum_exp_shifted(row, Kp, m));
}

// out[p][k] = sum_d ((x[p][d] - mean[k][d]) * scale[k][d])^2 for P rows and the NV vectors of components
// from k0: a P x NV block of vector accumulators, one broadcast of x[p][d] per row and dimension.
template <class T, int P, int NV, bool kScaled>
MIXDIFF_INLINE void sq_dist_block(const T* __restrict x, int64_t ldx, const ComponentTable<T>& tab, int64_t k0,
                                  T* __restrict out, int64_t ldo) {
  using V = typename Vec<T>::type;
  constexpr int L = kLanes<T>;
  V acc[P][NV];
  for (int p = 0; p < P; ++p)
    for (int v = 0; v < NV; ++v) acc[p][v] = V{};
  const int64_t D = tab.D, Kp = tab.Kp;
  const T* __restrict mean = tab.mean_t.data() + k0;
  const T* __restrict scale = kScaled ? tab.scale_t.data() + k0 : nullptr;
  for (int64_t d = 0; d < D; ++d) {
    V m[NV], s[NV];
    for (int v = 0; v < NV; ++v) {
      m[v] = load_vec(mean + d * Kp + v * L);
      if constexpr (kScaled) s[v] = load_vec(scale + d * Kp + v * L);
    }
#pragma GCC unroll 8
    for (int p = 0; p < P; ++p) {
      const V xv = V{} + x[p * ldx + d];
      for (int v = 0; v < NV; ++v) {
        V t = xv - m[v];
        if constexpr (kScaled) t *= s[v];
        acc[p][v] += t * t;
      }
    }
  }
  for (int p = 0; p < P; ++p)
    for (int v = 0; v < NV; ++v) std::memcpy(out + p * ldo + v * L, &acc[p][v], sizeof(V));
}

// Squared Euclidean (kScaled = false) or diag-scaled distances of P rows to all components:
// out[p * ldo + k], k < Kp (columns >= K are padding). Blocks of two vectors, one for an odd remainder.
template <class T, int P, bool kScaled>
MIXDIFF_INLINE void sq_dist_rows(const T* x, int64_t ldx, const ComponentTable<T>& tab, T* out, int64_t ldo) {
  constexpr int L = kLanes<T>;
  int64_t k0 = 0;
  for (; k0 + 2 * L <= tab.Kp; k0 += 2 * L) sq_dist_block<T, P, 2, kScaled>(x, ldx, tab, k0, out + k0, ldo);
  if (k0 < tab.Kp) sq_dist_block<T, P, 1, kScaled>(x, ldx, tab, k0, out + k0, ldo);
}

// Nearest component (Euclidean) of P rows: labels and squared distances. scratch: P * Kp values.
template <class T, int P>
MIXDIFF_INLINE void nearest_rows(const T* x, int64_t D, const ComponentTable<T>& tab, T* scratch,
                                 int64_t* labels, T* sqdist) {
  sq_dist_rows<T, P, false>(x, D, tab, scratch, tab.Kp);
  for (int p = 0; p < P; ++p) {
    T* row = scratch + p * tab.Kp;
    pad_row(row, tab.K, tab.Kp, infinity<T>());
    T best;
    const int64_t k = row_best_index<T, true>(row, tab.K, tab.Kp, &best);
    // A NaN row compares with nothing: report NaN with label 0 rather than an invalid index.
    labels[p] = k < 0 ? 0 : k;
    sqdist[p] = k < 0 ? T(NAN) : best;
  }
}

// Full covariance: || P_k (x - mu_k) ||^2 for P rows, component by component; work: P * D scratch.
// y = P_k z is formed one vector of outputs i at a time from broadcast z_j times column j of P_k,
// skipping the j > i zeros of the lower triangle; the squares of y accumulate in vectors.
template <class T, int P>
MIXDIFF_INLINE void full_mahalanobis_rows(const T* x, int64_t ldx, const ComponentTable<T>& tab, T* out, int64_t ldo,
                                          T* __restrict work) {
  using V = typename Vec<T>::type;
  constexpr int L = kLanes<T>;
  const int64_t D = tab.D, Dp = tab.Dp;
  for (int64_t k = 0; k < tab.K; ++k) {
    const T* __restrict pt = tab.prec_t.data() + k * D * Dp;
    for (int p = 0; p < P; ++p)
      for (int64_t j = 0; j < D; ++j) work[p * D + j] = x[p * ldx + j] - tab.mean_t[j * tab.Kp + k];
    V sq[P];
    for (int p = 0; p < P; ++p) sq[p] = V{};
    for (int64_t i0 = 0; i0 < Dp; i0 += L) {
      V y[P];
      for (int p = 0; p < P; ++p) y[p] = V{};
      const int64_t jend = std::min<int64_t>(D, i0 + L);
      for (int64_t j = 0; j < jend; ++j) {
        const V col = load_vec(pt + j * Dp + i0);
#pragma GCC unroll 8
        for (int p = 0; p < P; ++p) y[p] += (V{} + work[p * D + j]) * col;
      }
      for (int p = 0; p < P; ++p) sq[p] += y[p] * y[p];
    }
    for (int p = 0; p < P; ++p) {
      T acc = T(0);
      for (int l = 0; l < L; ++l) acc += sq[p][l];
      out[p * ldo + k] = acc;
    }
  }
}

// log w_k + log N(x_p; mu_k, Sigma_k) for P rows: out[p * ldo + k], k < K. work: P * D scratch.
template <class T, int P>
MIXDIFF_INLINE void score_rows(const T* x, int64_t ldx, const ComponentTable<T>& tab, T* out, int64_t ldo, T* work) {
  switch (tab.cov) {
    case CovType::Diag: sq_dist_rows<T, P, true>(x, ldx, tab, out, ldo); break;
    case CovType::Full: full_mahalanobis_rows<T, P>(x, ldx, tab, out, ldo, work); break;
    default: sq_dist_rows<T, P, false>(x, ldx, tab, out, ldo); break;
  }
  for (int p = 0; p < P; ++p) {
    T* row = out + p * ldo;
    for (int64_t k = 0; k < tab.K; ++k) row[k] = tab.offset[k] - T(0.5) * tab.sq_scale[k] * row[k];
  }
}

}  // namespace mixdiff::cpu

namespace mixdiff::cpu {

// Which second moments the E-step accumulates.
enum class Moments : int { None = 0, Diag = 1, Full = 2 };

// Per-thread sufficient statistics around a per-component shift s_k:
//   n_k = sum g, S1_k = sum g (x - s_k), S2_k = sum g (x - s_k)^2 (diag) or sum g (x - s_k)(x - s_k)^T (full).
// Rows are summed in T into block partials that are flushed into float64 every kFlushRows rows, so
// float32 inputs keep float32 speed per row and float64 accuracy over millions of rows.
template <class T>
struct SuffStats {
  static constexpr int kFlushRows = 64;
  int64_t K = 0, D = 0;
  Moments moments = Moments::None;
  std::vector<T> nk_b, s1_b, s2_b;
  std::vector<double> nk, s1, s2;
  double total = 0.0;  // sum of per-row log-likelihoods (soft) or squared distances (hard)
  int rows = 0;

  void init(int64_t K_, int64_t D_, Moments m) {
    K = K_; D = D_; moments = m;
    const int64_t s2_size = m == Moments::Full ? K * D * D : m == Moments::Diag ? K * D : 0;
    nk_b.assign(K, T(0)); s1_b.assign(K * D, T(0)); s2_b.assign(s2_size, T(0));
    nk.assign(K, 0.0); s1.assign(K * D, 0.0); s2.assign(s2_size, 0.0);
  }

  // One row with weight g for component k (g = 0 contributes nothing and is skipped exactly).
  MIXDIFF_INLINE void add(const T* __restrict x, const T* __restrict shift_k, int64_t k, T g, T* __restrict z) {
    nk_b[k] += g;
    T* __restrict s1k = s1_b.data() + k * D;
    for (int64_t d = 0; d < D; ++d) {
      z[d] = x[d] - shift_k[d];
      s1k[d] += g * z[d];
    }
    if (moments == Moments::Diag) {
      T* __restrict s2k = s2_b.data() + k * D;
      for (int64_t d = 0; d < D; ++d) s2k[d] += g * z[d] * z[d];
    } else if (moments == Moments::Full) {
      for (int64_t d = 0; d < D; ++d) {
        const T gz = g * z[d];
        T* __restrict s2kd = s2_b.data() + (k * D + d) * D;
        for (int64_t e = 0; e < D; ++e) s2kd[e] += gz * z[e];
      }
    }
  }

  MIXDIFF_INLINE void end_row() {
    if (++rows == kFlushRows) flush();
  }

  void flush() {
    auto move = [](std::vector<T>& from, std::vector<double>& to) {
      for (size_t i = 0; i < from.size(); ++i) { to[i] += static_cast<double>(from[i]); from[i] = T(0); }
    };
    move(nk_b, nk); move(s1_b, s1); move(s2_b, s2);
    rows = 0;
  }

  // Adds another thread's totals (both flushed) into this one.
  void merge(const SuffStats& o) {
    for (size_t i = 0; i < nk.size(); ++i) nk[i] += o.nk[i];
    for (size_t i = 0; i < s1.size(); ++i) s1[i] += o.s1[i];
    for (size_t i = 0; i < s2.size(); ++i) s2[i] += o.s2[i];
    total += o.total;
  }
};

}  // namespace mixdiff::cpu
