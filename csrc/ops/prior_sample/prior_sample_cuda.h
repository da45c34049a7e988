#pragma once
// CUDA launcher of prior_sample (raw pointers, no torch): compiled by nvcc, called by the torch glue.
#include <cuda_runtime_api.h>

#include <cstdint>

#include "mixdiff/gaussian.h"

namespace mixdiff::cuda {

// Everything one launch needs, built by the glue (prior_sample_cuda.cpp) from the validated arguments.
// Sample i in [0, n) is Philox row offset + i of `seed`, exactly as the CPU op (sampling.h, normal.h):
// labels[i] = prior_component(cdf, K, seed, row), x[i, :] = mu_k + A_k eps with eps the row's normals of
// stream kStreamPriorNoise in normal.h's planar layout (row_normals).
template <class T>
struct PriorSampleParams {
  CovType cov;
  const T* means;      // [K, D]
  const T* factor;     // gaussian.h layout ([K] sigma, [K, D] sigma_d, [K, D, D] row-major lower L); null: identity
  const double* cdf;   // [K] cumulative weights, cdf[K-1] > 0
  int64_t n, K, D;
  uint64_t seed, offset;
  T* x;                // [n, D]
  int64_t* labels;     // [n]
};

// All arrays contiguous on the current device. K >= 1; n = 0 launches nothing.
template <class T>
cudaError_t prior_sample_launch(const PriorSampleParams<T>& p, cudaStream_t stream);

}  // namespace mixdiff::cuda
