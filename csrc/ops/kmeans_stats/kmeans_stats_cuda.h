#pragma once
// CUDA launchers of kmeans_stats (raw pointers, no torch): compiled by nvcc, called by the torch glue.
#include <cuda_runtime_api.h>

#include <cstdint>

namespace mixdiff::cuda {

// Number of float64 workspace entries kmeans_stats_launch needs for these sizes on the current device.
cudaError_t kmeans_stats_workspace(int64_t N, int64_t K, int64_t D, int64_t* doubles);

// One fused Lloyd step: labels / sqdist as assign_nearest; counts[k] = #points labelled k (int64, must be
// zero-initialised: accumulated with integer atomics), sum_x[k, :] = sum of (x_n - c_k) over those points
// and inertia = sum_n sqdist[n] (float64, overwritten; summed in a fixed order, so run-to-run
// deterministic). workspace: kmeans_stats_workspace(N, K, D) doubles. N >= 1 (N = 0 launches nothing).
template <class T>
cudaError_t kmeans_stats_launch(const T* x, const T* centres, int64_t N, int64_t K, int64_t D, int64_t* labels,
                                T* sqdist, int64_t* counts, double* sum_x, double* inertia, double* workspace,
                                int64_t workspace_size, cudaStream_t stream);

}  // namespace mixdiff::cuda
