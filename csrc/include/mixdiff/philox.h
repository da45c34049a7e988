#pragma once
// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11): a counter-based
// generator, the same code on CPU and CUDA. A draw is addressed by (seed, stream, row, index), so the
// numbers of sample `row` never depend on the batch it is drawn in, the thread that draws it, or the
// device. Checked against the Random123 known-answer vectors in tests/cpp/header_math_test.cpp.
#include "config.h"

namespace mixdiff {

// Four words of W: uint32_t on CUDA and in scalar loops, a vector of uint32 lanes in the CPU kernels
// (cpu_random.h), which run one independent counter per lane through the same rounds.
template <class W>
struct Philox4 {
  W v[4];
};
using Philox4x32 = Philox4<uint32_t>;

// 32 x 32 -> 64-bit products of words by a constant (specialised for CPU vectors in cpu_random.h).
template <class W> struct PhiloxMul;
template <>
struct PhiloxMul<uint32_t> {
  MIXDIFF_HD MIXDIFF_INLINE static void mulhilo(uint32_t a, uint32_t b, uint32_t* hi, uint32_t* lo) {
    const uint64_t p = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
    *hi = static_cast<uint32_t>(p >> 32);
    *lo = static_cast<uint32_t>(p);
  }
};

// The 10-round Philox4x32 bijection of counter c under key (k0, k1). Mul: how the products are formed
// (the CPU's AVX-512 kernels pass an intrinsic version, cpu_random.h).
template <class W, class Mul = PhiloxMul<W>>
MIXDIFF_HD MIXDIFF_INLINE Philox4<W> philox4x32_10(Philox4<W> c, uint32_t k0, uint32_t k1) {
  const uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u, kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    W hi0, lo0, hi1, lo1;
    Mul::mulhilo(c.v[0], kM0, &hi0, &lo0);
    Mul::mulhilo(c.v[2], kM1, &hi1, &lo1);
    c = Philox4<W>{{hi1 ^ c.v[1] ^ k0, lo1, hi0 ^ c.v[3] ^ k1, lo0}};
    k0 += kW0;
    k1 += kW1;
  }
  return c;
}

// The four words for (seed, stream, row, index): counter = (index, stream, row low, row high), key = seed.
MIXDIFF_HD MIXDIFF_INLINE Philox4x32 philox_words(uint64_t seed, uint32_t stream, uint64_t row, uint32_t index) {
  return philox4x32_10(Philox4x32{{index, stream, static_cast<uint32_t>(row), static_cast<uint32_t>(row >> 32)}},
                       static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// Streams: independent sub-sequences of one seed, one per kind of draw. The reverse sampler's noise
// also carries the step, so every step of a trajectory draws fresh numbers: stream word = kind | step << 4.
enum RandomStream : uint32_t {
  kStreamComponent = 1,
  kStreamPriorNoise = 2,
  kStreamForwardNoise = 3,
  kStreamReverseNoise = 4,
};
constexpr int64_t kMaxStep = int64_t(1) << 28;
MIXDIFF_HD MIXDIFF_INLINE uint32_t step_stream(RandomStream kind, int64_t step) {
  return static_cast<uint32_t>(kind) | (static_cast<uint32_t>(step) << 4);
}

}  // namespace mixdiff
