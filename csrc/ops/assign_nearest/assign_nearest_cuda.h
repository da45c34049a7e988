#pragma once
// CUDA launchers of assign_nearest (raw pointers, no torch): compiled by nvcc, called by the torch glue.
#include <cuda_runtime_api.h>

#include <cstdint>

namespace mixdiff::cuda {

// labels[n] = argmin_k ||x_n - c_k||^2 (ties -> lowest k; all-NaN rows -> 0), sqdist[n] = that minimum
// (NaN for such rows). x [N, D], centres [K, D] contiguous on the current device; N >= 1, K >= 1.
template <class T>
cudaError_t assign_nearest_launch(const T* x, const T* centres, int64_t N, int64_t K, int64_t D, int64_t* labels,
                                  T* sqdist, cudaStream_t stream);

}  // namespace mixdiff::cuda
