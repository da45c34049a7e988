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
// A few kernels also have hand-written AVX-512 versions (MIXDIFF_AVX512_KERNELS), taken at run time
// where use_avx512() says so.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define MIXDIFF_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#define MIXDIFF_AVX512_KERNELS 1
#include <immintrin.h>
#include <cstdlib>
#else
#define MIXDIFF_CPU_CLONES
#define MIXDIFF_AVX512_KERNELS 0
#endif

namespace mixdiff::cpu {

#if MIXDIFF_AVX512_KERNELS
// True where the hand-written AVX-512 kernels run: the CPU has AVX-512 (x86-64-v4) and the environment
// variable MIXDIFF_NO_AVX512 is not set (it forces the portable versions; tests compare the two).
inline bool use_avx512() {
  static const bool on = __builtin_cpu_supports("x86-64-v4") && !std::getenv("MIXDIFF_NO_AVX512");
  return on;
}
#else
inline bool use_avx512() { return false; }
#endif

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

// ScalarFloatOps (reductions.h) on L float lanes: exp_poly and the normal transforms of normal.h.
template <class F_, class I_, class U_>
struct VecFloatOpsOf {
  using F = F_;
  using I = I_;
  using U = U_;
  static constexpr int L = sizeof(F) / sizeof(float);
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
    for (int l = 0; l < L; ++l) r[l] = __builtin_sqrtf(x[l]);  // vectorised to vsqrtps
    return r;
  }
};
namespace lanes {
typedef int32_t I16 __attribute__((vector_size(64)));
typedef uint32_t U16 __attribute__((vector_size(64)));
typedef float F8 __attribute__((vector_size(32)));
typedef int32_t I8 __attribute__((vector_size(32)));
typedef uint32_t U8 __attribute__((vector_size(32)));
}  // namespace lanes
using VecFloatOps = VecFloatOpsOf<Vec<float>::type, lanes::I16, lanes::U16>;
// Half a vector: the portable builds of the normals (cpu_random.h), whose targets have no 16-float registers.
using HalfVecFloatOps = VecFloatOpsOf<lanes::F8, lanes::I8, lanes::U8>;

// Elements [e0, e0 + count) of A z (scale_noise) and of base + A z (add_scaled_noise) for a separable
// factor f (gaussian.h layout: nothing for identity, sigma for spherical, sigma_d for diag). Scalar
// factors multiply the vector directly: a splatted factor vector was rebuilt through memory on every
// call in the AVX2 build. base + A z is one expression per case, so that every copy of a kernel fuses
// it into the same fma (rows drawn in pairs and singly must give the same bits).
template <class T>
MIXDIFF_INLINE typename Vec<T>::type scale_noise(CovType cov, const T* f, int64_t e0, int64_t count,
                                                 const typename Vec<T>::type& z) {
  if (cov == CovType::Diag) return load_partial(f + e0, count) * z;
  if (cov == CovType::Spherical) return f[0] * z;
  return z;
}
template <class T>
MIXDIFF_INLINE typename Vec<T>::type add_scaled_noise(CovType cov, const typename Vec<T>::type& base, const T* f,
                                                      int64_t e0, int64_t count, const typename Vec<T>::type& z) {
  if (cov == CovType::Diag) return base + load_partial(f + e0, count) * z;
  if (cov == CovType::Spherical) return base + f[0] * z;
  return base + z;
}

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

#if MIXDIFF_AVX512_KERNELS
#pragma GCC push_options
#pragma GCC target("avx512f")
// out[j] = column j of the 16 x 16 block rows[0..15] (out[j][i] = rows[i][j]): unpacks and shuffles within
// 128-bit lanes, then a 4 x 4 transpose of the 128-bit lanes; 64 shuffles.
MIXDIFF_INLINE void transpose16x16(const __m512 rows[16], __m512 out[16]) {
  __m512 t[16], u[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(rows[i], rows[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(rows[i], rows[i + 1]);
  }
  // u[4g + c], 128-bit lane L: rows 4g .. 4g + 3 at column 4L + c.
  for (int g = 0; g < 4; ++g) {
    const __m512 *lo = t + 4 * g, *hi = t + 4 * g + 2;
    u[4 * g + 0] = _mm512_shuffle_ps(lo[0], hi[0], 0x44);
    u[4 * g + 1] = _mm512_shuffle_ps(lo[0], hi[0], 0xEE);
    u[4 * g + 2] = _mm512_shuffle_ps(lo[1], hi[1], 0x44);
    u[4 * g + 3] = _mm512_shuffle_ps(lo[1], hi[1], 0xEE);
  }
  for (int c = 0; c < 4; ++c) {
    const __m512 v0 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x44), v1 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xEE);
    const __m512 v2 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x44),
                 v3 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xEE);
    out[c] = _mm512_shuffle_f32x4(v0, v2, 0x88);
    out[4 + c] = _mm512_shuffle_f32x4(v0, v2, 0xDD);
    out[8 + c] = _mm512_shuffle_f32x4(v1, v3, 0x88);
    out[12 + c] = _mm512_shuffle_f32x4(v1, v3, 0xDD);
  }
}

// acc[k] += (x - mu_k)^2 over dimensions d0 .. d0 + width - 1 of 16 rows, one row per lane. kFull: width
// is 16 (no exit inside the unrolled loop, which would keep the accumulators in memory).
template <int K, bool kFull>
MIXDIFF_INLINE void accumulate16(const float* x, int64_t ldx, const ComponentTable<float>& tab, int64_t d0,
                                 int64_t width, __m512 acc[K]) {
  const __mmask16 mask = kFull ? __mmask16(0xffff) : static_cast<__mmask16>((1u << width) - 1u);
  __m512 rows[16], cols[16];
  for (int i = 0; i < 16; ++i) rows[i] = _mm512_maskz_loadu_ps(mask, x + i * ldx + d0);
  transpose16x16(rows, cols);
#pragma GCC unroll 16
  for (int j = 0; j < 16; ++j) {
    if (!kFull && j >= width) break;
    const float* mu = tab.mean_t.data() + (d0 + j) * tab.Kp;
    for (int k = 0; k < K; ++k) {
      const __m512 t = _mm512_sub_ps(cols[j], _mm512_set1_ps(mu[k]));
      acc[k] = _mm512_fmadd_ps(t, t, acc[k]);
    }
  }
}

// nearest_rows for 16 float rows and K components (K <= 16), one row per lane. With components across
// the lanes, K = 10 left 6 of 16 lanes idle and cost a broadcast per row and dimension; here x is
// transposed 16 dimensions at a time and each dimension costs K subtract-and-fma pairs for all 16
// rows. Every (row, k) sum still runs over d in increasing order with the same fma, and the minimum
// is chosen by row_best_index's rule, so labels and distances equal nearest_rows' bit for bit.
template <int K>
void nearest16_few_components(const float* x, int64_t ldx, const ComponentTable<float>& tab, int64_t* labels,
                              float* sqdist) {
  const int64_t D = tab.D;
  __m512 acc[K];
  for (int k = 0; k < K; ++k) acc[k] = _mm512_setzero_ps();
  int64_t d0 = 0;
  for (; d0 + 16 <= D; d0 += 16) accumulate16<K, true>(x, ldx, tab, d0, 16, acc);
  if (d0 < D) accumulate16<K, false>(x, ldx, tab, d0, D - d0, acc);
  // row_best_index: the smallest value that compares (NaN never does), then its lowest index; no index
  // (label 0, distance NaN) when nothing compares.
  __m512 best = _mm512_set1_ps(infinity<float>());
  for (int k = 0; k < K; ++k) best = _mm512_min_ps(acc[k], best);  // (acc < best) ? acc : best
  __m512i index = _mm512_set1_epi32(-1);
  for (int k = K - 1; k >= 0; --k)
    index = _mm512_mask_mov_epi32(index, _mm512_cmp_ps_mask(acc[k], best, _CMP_EQ_OQ), _mm512_set1_epi32(k));
  alignas(64) float b[16];
  alignas(64) int32_t idx[16];
  _mm512_store_ps(b, best);
  _mm512_store_si512(idx, index);
  for (int i = 0; i < 16; ++i) {
    labels[i] = idx[i] < 0 ? 0 : idx[i];
    sqdist[i] = idx[i] < 0 ? NAN : b[i];
  }
}
#pragma GCC pop_options

// nearest16_few_components for the table's K; false (nothing written) when K > 16.
inline bool nearest16_avx512(const float* x, int64_t ldx, const ComponentTable<float>& tab, int64_t* labels,
                             float* sqdist) {
  switch (tab.K) {
#define MIXDIFF_NEAREST16_CASE(k) \
  case k:                         \
    nearest16_few_components<k>(x, ldx, tab, labels, sqdist); \
    return true;
    MIXDIFF_NEAREST16_CASE(1) MIXDIFF_NEAREST16_CASE(2) MIXDIFF_NEAREST16_CASE(3) MIXDIFF_NEAREST16_CASE(4)
    MIXDIFF_NEAREST16_CASE(5) MIXDIFF_NEAREST16_CASE(6) MIXDIFF_NEAREST16_CASE(7) MIXDIFF_NEAREST16_CASE(8)
    MIXDIFF_NEAREST16_CASE(9) MIXDIFF_NEAREST16_CASE(10) MIXDIFF_NEAREST16_CASE(11) MIXDIFF_NEAREST16_CASE(12)
    MIXDIFF_NEAREST16_CASE(13) MIXDIFF_NEAREST16_CASE(14) MIXDIFF_NEAREST16_CASE(15) MIXDIFF_NEAREST16_CASE(16)
#undef MIXDIFF_NEAREST16_CASE
    default:
      return false;
  }
}
#endif

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
