#pragma once
// CUDA launcher of q_sample (raw pointers, no torch): compiled by nvcc, called by the torch glue.
#include <cuda_runtime_api.h>

#include <cstdint>

#include "mixdiff/gaussian.h"

namespace mixdiff::cuda {

// Everything one launch needs, built by the glue (q_sample_cuda.cpp) from the validated arguments.
// Row i in [0, n) exactly as the CPU op (sampling.h, normal.h): k = labels[i] when labels is given, else
// the nearest mean (Euclidean, ties -> lowest k, an all-NaN row -> 0, with the CPU's distances);
// labels_out[i] = k; eps[i, :] = noise[i, :] when noise is given, else the row's normals of stream
// kStreamForwardNoise, row offset + i, in normal.h's planar layout (row_normals);
// x_t[i, :] = forward_element(mu_k, x0[i, :], signal[i], noise_scale[i], A_k eps[i, :]).
template <class T>
struct QSampleParams {
  CovType cov;
  const T* x0;             // [n, D]
  const int64_t* labels;   // [n] in [0, K), null: nearest mean
  const T* signal;         // [n]
  const T* noise_scale;    // [n]
  const T* means;          // [K, D]
  const T* factor;         // gaussian.h layout ([K] sigma, [K, D] sigma_d, [K, D, D] row-major lower L); null: identity
  const T* noise;          // [n, D] given eps, null: drawn
  int64_t n, K, D;
  uint64_t seed, offset;
  T* x_t;                  // [n, D]
  T* eps;                  // [n, D]; the full kernel re-reads it: never const __restrict__ (no non-coherent loads)
  int64_t* labels_out;     // [n]
};

// All arrays contiguous on the current device, outputs not aliasing inputs. K >= 1; n = 0 launches nothing.
template <class T>
cudaError_t q_sample_launch(const QSampleParams<T>& p, cudaStream_t stream);

}  // namespace mixdiff::cuda
