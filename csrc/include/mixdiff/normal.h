#pragma once
// Standard normals from Philox words, identical in structure on CPU and CUDA.
//
// Layout: a Philox block (4 words) gives R normals, R = 4 for float (one word per uniform) and R = 2 for
// double (two words per uniform). A row of D elements uses blocks j = 0 .. B-1, B = ceil(D / R), and
// element e = m * B + j is normal m of block j ("planar"): consecutive blocks fill consecutive elements,
// so CPU lanes and CUDA threads that take consecutive blocks store contiguous memory.
//
// float: Box-Muller with branch-free polynomial log and sin/cos (Cephes coefficients, about 1 ulp),
// templated on the element operations (ScalarFloatOps) so that the CPU's 16-lane vectors (cpu_random.h) and CUDA threads
// run the same expressions. double keeps libm: the float64 path is the accuracy path.
#include "philox.h"
#include "reductions.h"

namespace mixdiff {

template <class T> constexpr int kNormalsPerBlock = sizeof(T) == 4 ? 4 : 2;

// Uniform in (0, 1], never 0 (so log(u) is finite): (w + 1/2) 2^-32, rounded to float.
template <class Ops>
MIXDIFF_HD MIXDIFF_INLINE typename Ops::F uniform_open0(typename Ops::U w) {
  return (Ops::u32_to_float(w) + 0.5f) * 2.3283064365386963e-10f;
}
MIXDIFF_HD MIXDIFF_INLINE float uniform_open0(uint32_t w) { return uniform_open0<ScalarFloatOps>(w); }
// 53 bits of two words for double.
MIXDIFF_HD MIXDIFF_INLINE double uniform_open0(uint32_t lo, uint32_t hi) {
  const uint64_t bits = ((static_cast<uint64_t>(hi) << 32) | lo) >> 11;
  return (static_cast<double>(bits) + 0.5) * 1.1102230246251565e-16;  // 2^-53
}

// log(u) for a positive normal float u: u = m 2^e with m in [sqrt(1/2), sqrt(2)) split off through the
// exponent bits, log(m) = f - f^2/2 + f^3 P(f) with f = m - 1, and e ln 2 added in two parts.
template <class Ops>
MIXDIFF_HD MIXDIFF_INLINE typename Ops::F log_poly(typename Ops::F u) {
  using F = typename Ops::F;
  using I = typename Ops::I;
  const I b = Ops::bits(u);
  const I e = (b - 0x3f3504f3) >> 23;  // 0x3f3504f3 = bits of sqrt(1/2)
  const F f = Ops::from_bits(b - e * (1 << 23)) - 1.0f;  // e <= 0: a multiply, not a shift of a negative
  const F ef = Ops::i32_to_float(e);
  const F z = f * f;
  F p = F{} + 7.0376836292e-2f;
  p = p * f - 1.1514610310e-1f;
  p = p * f + 1.1676998740e-1f;
  p = p * f - 1.2420140846e-1f;
  p = p * f + 1.4249322787e-1f;
  p = p * f - 1.6668057665e-1f;
  p = p * f + 2.0000714765e-1f;
  p = p * f - 2.4999993993e-1f;
  p = p * f + 3.3333331174e-1f;
  F y = f * z * p;
  y = y + ef * -2.12194440e-4f;
  y = y - 0.5f * z;
  return (f + y) + ef * 0.693359375f;
}

// cos(2 pi u) and sin(2 pi u) for u in [0, 1]: quadrant q = round(4u), x = (pi/2)(4u - q) in
// [-pi/4, pi/4] (4u - q is exact), minimax polynomials there, then the quadrant's swap and signs.
template <class Ops>
MIXDIFF_HD MIXDIFF_INLINE void sincos_2pi(typename Ops::F u, typename Ops::F* cos_out, typename Ops::F* sin_out) {
  using F = typename Ops::F;
  using I = typename Ops::I;
  const float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to the nearest integer
  const F u4 = u * 4.0f;
  const F q = (u4 + kRound) - kRound;
  const F x = (u4 - q) * 1.57079632679489662f;
  const F z = x * x;
  F sp = F{} - 1.9515295891e-4f;
  sp = sp * z + 8.3321608736e-3f;
  sp = sp * z - 1.6666654611e-1f;
  const F s = x + x * z * sp;
  F cp = F{} + 2.443315711809948e-5f;
  cp = cp * z - 1.388731625493765e-3f;
  cp = cp * z + 4.166664568298827e-2f;
  const F c = (1.0f - 0.5f * z) + z * z * cp;
  const I qi = Ops::float_to_i32(q);
  const auto odd = (qi & 1) != 0;
  const F sin_mag = Ops::select(odd, c, s), cos_mag = Ops::select(odd, s, c);
  // Sign bits (INT32_MIN) where bit 1 of q (sin: quadrants 2, 3) or of q + 1 (cos: quadrants 1, 2) is set.
  *sin_out = Ops::from_bits(Ops::bits(sin_mag) ^ (-((qi >> 1) & 1) & INT32_MIN));
  *cos_out = Ops::from_bits(Ops::bits(cos_mag) ^ (-(((qi + 1) >> 1) & 1) & INT32_MIN));
}

// Box-Muller: two independent standard normals from two words.
template <class Ops>
MIXDIFF_HD MIXDIFF_INLINE void box_muller(typename Ops::U w0, typename Ops::U w1, typename Ops::F* z0,
                                          typename Ops::F* z1) {
  using F = typename Ops::F;
  const F r = Ops::sqrt(-2.0f * log_poly<Ops>(uniform_open0<Ops>(w0)));
  F c, s;
  sincos_2pi<Ops>(uniform_open0<Ops>(w1), &c, &s);
  *z0 = r * c;
  *z1 = r * s;
}

// The R normals of one Philox block, in layout order m = 0 .. R-1.
MIXDIFF_HD MIXDIFF_INLINE void block_normals(const Philox4x32& w, float* z) {
  box_muller<ScalarFloatOps>(w.v[0], w.v[1], &z[0], &z[1]);
  box_muller<ScalarFloatOps>(w.v[2], w.v[3], &z[2], &z[3]);
}
MIXDIFF_HD MIXDIFF_INLINE void block_normals(const Philox4x32& w, double* z) {
  const double r = sqrt(-2.0 * log(uniform_open0(w.v[0], w.v[1])));
  const double theta = 6.28318530717958648 * uniform_open0(w.v[2], w.v[3]);
  z[0] = r * cos(theta);
  z[1] = r * sin(theta);
}

// Blocks per row of D elements.
template <class T>
MIXDIFF_HD MIXDIFF_INLINE int64_t normal_blocks(int64_t D) {
  return (D + kNormalsPerBlock<T> - 1) / kNormalsPerBlock<T>;
}

// Block j of row `row`: writes its normals to eps[m * B + j] (those below D).
template <class T>
MIXDIFF_HD MIXDIFF_INLINE void store_block_normals(uint64_t seed, uint32_t stream, uint64_t row, int64_t j,
                                                   int64_t D, T* eps) {
  constexpr int R = kNormalsPerBlock<T>;
  const int64_t B = normal_blocks<T>(D);
  T z[R];
  block_normals(philox_words(seed, stream, row, static_cast<uint32_t>(j)), z);
  for (int m = 0; m < R; ++m)
    if (m * B + j < D) eps[m * B + j] = z[m];
}

// The whole row, one block at a time (CUDA threads; the CPU uses the vector version in cpu_random.h).
template <class T>
MIXDIFF_HD MIXDIFF_INLINE void row_normals(uint64_t seed, uint32_t stream, uint64_t row, int64_t D, T* eps) {
  const int64_t B = normal_blocks<T>(D);
  for (int64_t j = 0; j < B; ++j) store_block_normals(seed, stream, row, j, D, eps);
}

}  // namespace mixdiff
