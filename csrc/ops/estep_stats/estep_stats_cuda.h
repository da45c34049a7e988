#pragma once
// CUDA launchers of estep_stats (raw pointers, no torch): compiled by nvcc, called by the torch glue.
// The glue first runs gmm_prepare_launch and gmm_posterior_launch (gmm_posterior_cuda.h) to get the
// per-point log-likelihoods and per-block float64 sums of them, then estep_stats_launch for the sufficient
// statistics and the total.
#include <cuda_runtime_api.h>

#include <cstdint>

#include "gmm_posterior/gmm_posterior_cuda.h"
#include "mixdiff/gaussian.h"

namespace mixdiff::cuda {

// Which second moments to accumulate: 0 none, 1 diag [K, D], 2 full [K, D, D].
enum class EstepMoments : int { None = 0, Diag = 1, Full = 2 };

// Number of float64 workspace entries estep_stats_launch needs for these sizes on the current device.
cudaError_t estep_stats_workspace(int64_t N, int64_t K, int64_t D, EstepMoments moments, int64_t* doubles);

// Everything the launches of one E-step need, built by the glue (estep_stats_cuda.cpp) from the validated
// arguments: the posterior pass's parameters (labels and resp null, block_ll given), then this launcher's.
// With g_nk = exp(score_nk - log_lik[n]) (score as in gmm_posterior, log_lik from gmm_posterior_launch),
// estep_stats_launch writes the float64 outputs
//   nk[k] = sum_n g_nk, sum_x[k, d] = sum_n g_nk (x_nd - shift_kd),
//   sum_xx[k, d] (diag) = sum_n g_nk (x_nd - shift_kd)^2, or sum_xx[k, d, e] (full) = sum_n g_nk z_nd z_ne,
//   log_lik_sum[0] = sum of block_ll[0, n_block_ll) (gmm_posterior_launch's per-block sums),
// all summed in a fixed order (run-to-run deterministic).
template <class T>
struct EstepStatsParams : GmmPosteriorParams<T> {
  EstepMoments moments;
  const T* shift;          // [K, D]
  int64_t n_block_ll;      // gmm_posterior_blocks(N)
  double* nk;              // [K]
  double* sum_x;           // [K, D]
  double* sum_xx;          // [K, D] (diag) or [K, D, D] (full); null for None
  double* log_lik_sum;     // [1]
  double* workspace;       // estep_stats_workspace(...) doubles
  int64_t workspace_size;  // its length
};

// After gmm_prepare_launch and gmm_posterior_launch on the same parameters. K >= 1; N = 0 launches nothing.
template <class T>
cudaError_t estep_stats_launch(const EstepStatsParams<T>& p, cudaStream_t stream);

}  // namespace mixdiff::cuda
