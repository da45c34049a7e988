#pragma once
// CUDA launcher of reverse_step (raw pointers, no torch): compiled by nvcc, called by the torch glue.
#include <cuda_runtime_api.h>

#include <cstdint>

#include "mixdiff/sampling.h"

namespace mixdiff::cuda {

// Everything one launch needs, built by the glue (reverse_step_cuda.cpp) from the validated arguments.
// Row i in [0, n) exactly as the CPU op (sampling.h, normal.h), k = labels[i], for every element d:
//   prev[i, d] = reverse_element(c, mu_kd, x[i, d], O_d, (A_k z[i])_d, clip_lo[k, d], clip_hi[k, d],
//                                history[0][i, d], history[1][i, d], &x0[i, d]),
// O = A_k out[i] when output_in_factor, else out[i] (a "sample" prediction); the z term is 0 when
// c.cz == 0; otherwise z[i] is `noise`'s row when draw_noise is false, else the row's normals of stream
// `noise_stream` (step_stream(kStreamReverseNoise, step)), row offset + i, in normal.h's planar layout
// (row_normals). x0 is written only when not null.
template <class T>
struct ReverseStepParams {
  CovType cov;
  bool output_in_factor;
  StepCoefficients<T> c;
  const T* x;          // [n, D]
  const T* out;        // [n, D] the model output
  const int64_t* labels;  // [n] in [0, K)
  const T* means;      // [K, D]
  const T* factor;     // gaussian.h layout ([K] sigma, [K, D] sigma_d, [K, D, D] row-major lower L); null: identity
  const T* noise;      // [n, D] given z, null unless used
  const T* clip_lo;    // [K, D] when c.clip (an open side is -inf / +inf), else null
  const T* clip_hi;
  const T* history[2]; // [n, D] each, the first c.history of them (others null)
  bool draw_noise;
  int64_t n, D;
  uint64_t seed, offset;
  uint32_t noise_stream;
  T* prev;             // [n, D]
  T* x0;               // [n, D] or null: not asked for
  T* z_work;           // [n, D] scratch, needed (else null) when cov is full, draw_noise and c.cz != 0
};

// All arrays contiguous on the current device, outputs not aliasing inputs. n = 0 or D = 0 launches nothing.
template <class T>
cudaError_t reverse_step_launch(const ReverseStepParams<T>& p, cudaStream_t stream);

}  // namespace mixdiff::cuda
