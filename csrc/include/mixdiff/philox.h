#pragma once
// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11): a counter-based
// generator, the same code on CPU and CUDA. A draw is addressed by (seed, stream, row, index), so the
// numbers of sample `row` never depend on the batch it is drawn in, the thread that draws it, or the
// device. Checked against the Random123 known-answer vectors in tests/cpp/header_math_test.cpp.
#include "config.h"

namespace mixdiff {

struct Philox4x32 {
  uint32_t v[4];
};

MIXDIFF_HD MIXDIFF_INLINE void mulhilo32(uint32_t a, uint32_t b, uint32_t* hi, uint32_t* lo) {
  const uint64_t p = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  *hi = static_cast<uint32_t>(p >> 32);
  *lo = static_cast<uint32_t>(p);
}

// The 10-round Philox4x32 bijection of counter c under key (k0, k1).
MIXDIFF_HD MIXDIFF_INLINE Philox4x32 philox4x32_10(Philox4x32 c, uint32_t k0, uint32_t k1) {
  const uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u, kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo32(kM0, c.v[0], &hi0, &lo0);
    mulhilo32(kM1, c.v[2], &hi1, &lo1);
    c = Philox4x32{{hi1 ^ c.v[1] ^ k0, lo1, hi0 ^ c.v[3] ^ k1, lo0}};
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

// Uniform in (0, 1], never 0 (so log(u) is finite): (w + 1/2) 2^-32 for float, 53 bits of two words for double.
MIXDIFF_HD MIXDIFF_INLINE float uniform_open0(uint32_t w) { return (static_cast<float>(w) + 0.5f) * 2.3283064e-10f; }
MIXDIFF_HD MIXDIFF_INLINE double uniform_open0(uint32_t lo, uint32_t hi) {
  const uint64_t bits = ((static_cast<uint64_t>(hi) << 32) | lo) >> 11;  // 53 bits
  return (static_cast<double>(bits) + 0.5) * 1.1102230246251565e-16;  // 2^-53
}

// Two independent standard normals from one Philox block (Box-Muller). Element pair j of a row is
// block index j, so element e of sample `row` is the (e % 2)-th normal of block e / 2.
MIXDIFF_HD MIXDIFF_INLINE void normal_pair(const Philox4x32& w, float* z0, float* z1) {
  const float r = sqrtf(-2.0f * logf(uniform_open0(w.v[0])));
  const float theta = 6.28318530717958648f * uniform_open0(w.v[1]);
  *z0 = r * cosf(theta);
  *z1 = r * sinf(theta);
}
MIXDIFF_HD MIXDIFF_INLINE void normal_pair(const Philox4x32& w, double* z0, double* z1) {
  const double r = sqrt(-2.0 * log(uniform_open0(w.v[0], w.v[1])));
  const double theta = 6.28318530717958648 * uniform_open0(w.v[2], w.v[3]);
  *z0 = r * cos(theta);
  *z1 = r * sin(theta);
}

// Streams: independent sub-sequences of one seed, one per kind of draw.
enum RandomStream : uint32_t { kStreamComponent = 1, kStreamPriorNoise = 2 };

}  // namespace mixdiff
