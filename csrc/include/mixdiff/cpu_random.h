#pragma once
// CPU-only: the normals of normal.h sixteen Philox blocks at a time. Lane l runs the counter of block
// j0 + l through the same rounds (philox.h) and the same float transforms (normal.h) as a CUDA thread,
// so the integers are identical and the float normals equal the scalar path's up to contraction.
#include <type_traits>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "cpu_tiles.h"
#include "normal.h"

namespace mixdiff {

using VecU32 = cpu::VecFloatOps::U;
using HalfVecU32 = cpu::HalfVecFloatOps::U;

// 32 x 32 -> 64-bit products of the lanes of U by a constant, as even and odd 64-bit halves.
template <class U>
struct LanesMul {
  MIXDIFF_INLINE static void mulhilo(U a, uint32_t b, U* hi, U* lo) {
    typedef uint64_t U64 __attribute__((vector_size(sizeof(U))));
    const U64 even = ((U64)a & 0xffffffffu) * b, odd = ((U64)a >> 32) * b;
    *hi = (U)((even >> 32) | (odd & 0xffffffff00000000u));
    *lo = (U)((even & 0xffffffffu) | (odd << 32));
  }
};
template <> struct PhiloxMul<VecU32> : LanesMul<VecU32> {};
template <> struct PhiloxMul<HalfVecU32> : LanesMul<HalfVecU32> {};

namespace cpu {

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
// The same products by vpmuludq. For the 32 x 32 -> 64-bit products above, GCC emits vpmullq (a full
// 64-bit multiply, 3 uops on Intel) wherever AVX-512DQ exists; vpmuludq needs the intrinsic, which only
// code compiled for AVX-512 may inline: with_philox_mul gives it to a flattened AVX-512 copy of the
// kernel. Measured 30% faster normals on an Intel Xeon (2.05 -> 1.49 ns per float normal, one thread),
// identical numbers. The odd lanes move down by a shuffle and the halves are gathered by two-source
// permutes, all on port 5: shifts would compete with the multiplies for port 0 (5% faster again).
#pragma GCC push_options
#pragma GCC target("avx512f")
struct PhiloxMulAvx512 {
  static inline void mulhilo(VecU32 a, uint32_t b, VecU32* hi, VecU32* lo) {
    const __m512i bv = _mm512_set1_epi32(static_cast<int>(b));
    const __m512i even = _mm512_mul_epu32((__m512i)a, bv);  // products of lanes 0, 2, ..., 64 bits each
    const __m512i odd = _mm512_mul_epu32(_mm512_shuffle_epi32((__m512i)a, _MM_PERM_CDAB), bv);  // lanes 1, 3, ...
    // Index i < 16 selects 32-bit word i of even, 16 + i word i of odd.
    const __m512i high_words = _mm512_set_epi32(31, 15, 29, 13, 27, 11, 25, 9, 23, 7, 21, 5, 19, 3, 17, 1);
    const __m512i low_words = _mm512_set_epi32(30, 14, 28, 12, 26, 10, 24, 8, 22, 6, 20, 4, 18, 2, 16, 0);
    *hi = (VecU32)_mm512_permutex2var_epi32(even, high_words, odd);
    *lo = (VecU32)_mm512_permutex2var_epi32(even, low_words, odd);
  }
};
#pragma GCC pop_options

template <class Body>
__attribute__((target("arch=x86-64-v4"), flatten)) void run_with_avx512_mul(const Body& body) {
  body(PhiloxMulAvx512{});
}
template <class Body>
__attribute__((target_clones("arch=x86-64-v3", "default"), flatten)) void run_with_portable_mul(const Body& body) {
  body(PhiloxMul<VecU32>{});
}

// Runs body(mul) for the kernels that draw normals, mul being the Philox product to use (passed on to
// rows_normals / each_row_normals): on AVX-512 machines a copy of body compiled for AVX-512 with
// vpmuludq products, else body compiled for AVX2 or baseline x86-64 (the MIXDIFF_CPU_CLONES targets).
// MIXDIFF_NO_AVX512=1 forces the second (use_avx512, cpu_tiles.h).
template <class Body>
void with_philox_mul(const Body& body) {
  if (use_avx512()) run_with_avx512_mul(body);
  else run_with_portable_mul(body);
}
#else
template <class Body>
void with_philox_mul(const Body& body) {
  body(PhiloxMul<VecU32>{});
}
#endif

// The Philox counters (block, stream, row) of philox_words for the blocks in the lanes of `blocks`.
template <class U>
MIXDIFF_INLINE Philox4<U> block_counters(U blocks, uint32_t stream, uint64_t row) {
  return Philox4<U>{{blocks, U{} + stream, U{} + static_cast<uint32_t>(row), U{} + static_cast<uint32_t>(row >> 32)}};
}

// The normals of rows row0 .. row0 + NR - 1 (normal.h layout per row), handed out a vector at a time:
// store(r, e, count, z) receives elements [e, e + count) of row row0 + r in the first count lanes of z
// (count <= 16), so callers can combine them with other row data while in registers. float: 16 Philox
// blocks per row and step, the NR rows' Philox chains computed together so that their latencies overlap
// (NR = 2: 20% faster normals on an Intel Xeon); double: libm, 8 blocks per step.
template <int NR, class Mul = PhiloxMul<VecU32>, class Store>
MIXDIFF_INLINE void rows_normals_apply(uint64_t seed, uint32_t stream, uint64_t row0, int64_t D, float*,
                                       Store&& store) {
  using F = VecFloatOps::F;
  constexpr int L = kLanes<float>;
  const int64_t B = normal_blocks<float>(D);
  const uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  // Hands out the four normals vectors of row r's blocks j0 .. j0 + 15.
  const auto hand_out = [&](int r, int64_t j0, const F* z) {
    const int64_t lanes = B - j0 < L ? B - j0 : L;
    for (int m = 0; m < 4; ++m) {
      const int64_t e = m * B + j0, count = std::min<int64_t>(lanes, D - e);
      if (count <= 0) break;
      store(r, e, count, z[m]);
    }
  };
  if constexpr (std::is_same_v<Mul, PhiloxMul<VecU32>>) {
    // Portable builds (AVX2, baseline x86-64, other CPUs): the same counters in two half vectors. Their
    // registers are narrower than 16 floats, and GCC then keeps a 16-lane Philox state in memory (AVX2
    // build of prior_sample on an Intel Xeon: 14 ns a normal; 6.6 with half vectors).
    using H = HalfVecFloatOps;
    constexpr int HL = L / 2;
    HalfVecU32 lane;
    for (int l = 0; l < HL; ++l) lane[l] = static_cast<uint32_t>(l);
    for (int64_t j0 = 0; j0 < B; j0 += L)
      for (int r = 0; r < NR; ++r) {
        const uint64_t row = row0 + static_cast<uint64_t>(r);
        H::F half[2][4];
        for (int h = 0; h < 2; ++h) {
          const Philox4<HalfVecU32> w =
              philox4x32_10<HalfVecU32>(block_counters(lane + static_cast<uint32_t>(j0 + h * HL), stream, row), k0, k1);
          box_muller<H>(w.v[0], w.v[1], &half[h][0], &half[h][1]);
          box_muller<H>(w.v[2], w.v[3], &half[h][2], &half[h][3]);
        }
        F z[4];
        for (int m = 0; m < 4; ++m)
          z[m] = __builtin_shufflevector(half[0][m], half[1][m], 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        hand_out(r, j0, z);
      }
  } else {
    VecU32 lane;
    for (int l = 0; l < L; ++l) lane[l] = static_cast<uint32_t>(l);
    for (int64_t j0 = 0; j0 < B; j0 += L) {
      Philox4<VecU32> w[NR];
      for (int r = 0; r < NR; ++r) {
        const uint64_t row = row0 + static_cast<uint64_t>(r);
        w[r] = philox4x32_10<VecU32, Mul>(block_counters(lane + static_cast<uint32_t>(j0), stream, row), k0, k1);
      }
      for (int r = 0; r < NR; ++r) {
        F z[4];
        box_muller<VecFloatOps>(w[r].v[0], w[r].v[1], &z[0], &z[1]);
        box_muller<VecFloatOps>(w[r].v[2], w[r].v[3], &z[2], &z[3]);
        hand_out(r, j0, z);
      }
    }
  }
}

template <int NR, class Mul = PhiloxMul<VecU32>, class Store>
MIXDIFF_INLINE void rows_normals_apply(uint64_t seed, uint32_t stream, uint64_t row0, int64_t D, double*,
                                       Store&& store) {
  using V = Vec<double>::type;
  constexpr int L = kLanes<double>;
  const int64_t B = normal_blocks<double>(D);
  for (int r = 0; r < NR; ++r) {
    const uint64_t row = row0 + static_cast<uint64_t>(r);
    for (int64_t j0 = 0; j0 < B; j0 += L) {
      const int64_t lanes = B - j0 < L ? B - j0 : L;
      V z[2] = {};
      for (int64_t l = 0; l < lanes; ++l) {
        double pair[2];
        block_normals(philox_words(seed, stream, row, static_cast<uint32_t>(j0 + l)), pair);
        z[0][l] = pair[0];
        z[1][l] = pair[1];
      }
      for (int m = 0; m < 2; ++m) {
        const int64_t e = m * B + j0, count = std::min<int64_t>(lanes, D - e);
        if (count <= 0) break;
        store(r, e, count, z[m]);
      }
    }
  }
}

// The normals of the rows i in [i0, i1), row i being Philox row row_of_i0 + (i - i0), two rows at a time:
// store(i, e, count, z) as in rows_normals_apply.
template <class T, class Mul = PhiloxMul<VecU32>, class Store>
MIXDIFF_INLINE void each_row_normals(uint64_t seed, uint32_t stream, uint64_t row_of_i0, int64_t i0, int64_t i1,
                                     int64_t D, Store&& store) {
  int64_t i = i0;
  const auto row_of = [&](int64_t i) { return row_of_i0 + static_cast<uint64_t>(i - i0); };
  for (; i + 2 <= i1; i += 2)
    rows_normals_apply<2, Mul>(seed, stream, row_of(i), D, static_cast<T*>(nullptr),
                               [&](int r, int64_t e, int64_t count, const typename Vec<T>::type& z) {
                                 store(i + r, e, count, z);
                               });
  if (i < i1)
    rows_normals_apply<1, Mul>(seed, stream, row_of(i), D, static_cast<T*>(nullptr),
                               [&](int, int64_t e, int64_t count, const typename Vec<T>::type& z) {
                                 store(i, e, count, z);
                               });
}

// True when a row has too few float blocks to fill half a vector: rows_normals then puts (row, block)
// pairs in the lanes instead of one row's blocks, which would leave most lanes idle (D = 2 used 1 of 16).
template <class T>
constexpr bool short_rows(int64_t D) {
  return std::is_same_v<T, float> && normal_blocks<float>(D) * 2 <= kLanes<float>;
}

// The normals of rows row0 .. row0 + nrows - 1 into out [nrows, D] (row-major, normal.h layout per row);
// the same numbers as normal.h's row_normals row by row.
template <class T, class Mul = PhiloxMul<VecU32>>
MIXDIFF_INLINE void rows_normals(uint64_t seed, uint32_t stream, uint64_t row0, int64_t nrows, int64_t D, T* out) {
  if constexpr (std::is_same_v<T, float>) {
    if (short_rows<float>(D)) {
      constexpr int L = kLanes<float>;
      const int64_t B = normal_blocks<float>(D), total = nrows * B;
      for (int64_t p0 = 0; p0 < total; p0 += L) {
        const int lanes = static_cast<int>(std::min<int64_t>(L, total - p0));
        int64_t r[L], j[L];
        VecU32 block{}, lo{}, hi{};
        for (int l = 0; l < L; ++l) {
          const int64_t p = p0 + std::min(l, lanes - 1);
          r[l] = p / B;
          j[l] = p - r[l] * B;
          const uint64_t row = row0 + static_cast<uint64_t>(r[l]);
          block[l] = static_cast<uint32_t>(j[l]);
          lo[l] = static_cast<uint32_t>(row);
          hi[l] = static_cast<uint32_t>(row >> 32);
        }
        const Philox4<VecU32> w = philox4x32_10<VecU32, Mul>(Philox4<VecU32>{{block, VecU32{} + stream, lo, hi}},
                                                static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
        VecFloatOps::F z[4];
        box_muller<VecFloatOps>(w.v[0], w.v[1], &z[0], &z[1]);
        box_muller<VecFloatOps>(w.v[2], w.v[3], &z[2], &z[3]);
        for (int l = 0; l < lanes; ++l)
          for (int m = 0; m < 4; ++m) {
            const int64_t e = m * B + j[l];
            if (e < D) out[r[l] * D + e] = z[m][l];
          }
      }
      return;
    }
  }
  each_row_normals<T, Mul>(seed, stream, row0, 0, nrows, D,
                           [&](int64_t r, int64_t e, int64_t count, const typename Vec<T>::type& z) {
                             store_partial(out + r * D + e, z, count);
                           });
}

}  // namespace cpu
}  // namespace mixdiff
