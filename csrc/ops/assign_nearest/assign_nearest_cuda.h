#pragma once
// CUDA launchers of assign_nearest (raw pointers, no torch): compiled by nvcc, called by the torch glue.
#include <cuda_runtime_api.h>

#include <cstdint>

namespace mixdiff::cuda {

// Everything one launch needs, built by the glue (assign_nearest_cuda.cpp) from the validated arguments.
// labels[n] = argmin_k ||x_n - c_k||^2 (ties -> lowest k; all-NaN rows -> 0), sqdist[n] = that minimum
// (NaN for such rows).
template <class T>
struct AssignNearestParams {
  const T* x;        // [N, D]
  const T* centres;  // [K, D]
  int64_t N, K, D;
  int64_t* labels;   // [N]
  T* sqdist;         // [N]
};

// All arrays contiguous on the current device; K >= 1, N = 0 launches nothing.
template <class T>
cudaError_t assign_nearest_launch(const AssignNearestParams<T>& p, cudaStream_t stream);

}  // namespace mixdiff::cuda
