#pragma once
// Shared by host C++ (C++20) and CUDA (C++17): everything under csrc/include/mixdiff must compile in both.
#if defined(__CUDACC__)
#define MIXDIFF_HD __host__ __device__
#define MIXDIFF_INLINE __forceinline__
#else
#define MIXDIFF_HD
#define MIXDIFF_INLINE inline __attribute__((always_inline))
#endif

#include <cstdint>
#include <cstring>
#include <cmath>

namespace mixdiff {

// Bit-level float/int reinterpretation that works in both compilers (std::bit_cast is C++20-only).
MIXDIFF_HD MIXDIFF_INLINE float int_bits_to_float(int32_t i) {
#if defined(__CUDA_ARCH__)
  return __int_as_float(i);
#else
  float f;
  std::memcpy(&f, &i, sizeof f);
  return f;
#endif
}

MIXDIFF_HD MIXDIFF_INLINE int32_t float_bits_to_int(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_int(f);
#else
  int32_t i;
  std::memcpy(&i, &f, sizeof i);
  return i;
#endif
}

template <class T> MIXDIFF_HD MIXDIFF_INLINE T infinity() { return T(INFINITY); }

}  // namespace mixdiff
