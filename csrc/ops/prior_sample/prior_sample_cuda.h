#pragma once
// CUDA launcher of prior_sample (raw pointers, no torch): compiled by nvcc, called by the torch glue.
#include <cuda_runtime_api.h>

#include <cstdint>

#include "mixdiff/gaussian.h"

namespace mixdiff::cuda {

// Sample i in [0, n) is Philox row offset + i of `seed`, exactly as the CPU op (sampling.h, normal.h):
// labels[i] = prior_component(cdf, K, seed, row), x[i, :] = mu_k + A_k eps with eps the row's normals of
// stream kStreamPriorNoise in normal.h's planar layout (row_normals).
// means [K, D], factor in gaussian.h layout ([K] sigma, [K, D] sigma_d, [K, D, D] row-major lower-triangular
// L; unused for identity, may be null), cdf [K] float64 cumulative weights (cdf[K-1] > 0), x [n, D],
// labels [n]: all contiguous on the current device. K >= 1; n = 0 launches nothing.
template <class T>
cudaError_t prior_sample_launch(CovType cov, const T* means, const T* factor, const double* cdf, int64_t n, int64_t K,
                                int64_t D, uint64_t seed, uint64_t offset, T* x, int64_t* labels,
                                cudaStream_t stream);

}  // namespace mixdiff::cuda
