#pragma once
// CUDA launchers of kmeans_stats (raw pointers, no torch): compiled by nvcc, called by the torch glue.
#include <cuda_runtime_api.h>

#include <cstdint>

namespace mixdiff::cuda {

// Number of float64 workspace entries kmeans_stats_launch needs for these sizes on the current device.
cudaError_t kmeans_stats_workspace(int64_t N, int64_t K, int64_t D, int64_t* doubles);

// Everything one launch needs, built by the glue (kmeans_stats_cuda.cpp) from the validated arguments.
// One fused Lloyd step: labels / sqdist as assign_nearest; counts[k] = #points labelled k (accumulated with
// integer atomics), sum_x[k, :] = sum of (x_n - c_k) over those points and inertia = sum_n sqdist[n]
// (overwritten; summed in a fixed order, so run-to-run deterministic).
template <class T>
struct KmeansStatsParams {
  const T* x;              // [N, D]
  const T* centres;        // [K, D]
  int64_t N, K, D;
  int64_t* labels;         // [N]
  T* sqdist;               // [N]
  int64_t* counts;         // [K], zero-initialised
  double* sum_x;           // [K, D]
  double* inertia;         // [1]
  double* workspace;       // kmeans_stats_workspace(N, K, D) doubles
  int64_t workspace_size;  // its length
};

// All arrays contiguous on the current device; N = 0 launches nothing.
template <class T>
cudaError_t kmeans_stats_launch(const KmeansStatsParams<T>& p, cudaStream_t stream);

}  // namespace mixdiff::cuda
