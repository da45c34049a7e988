#pragma once
// CUDA launchers of estep_stats (raw pointers, no torch): compiled by nvcc, called by the torch glue.
// The glue first runs gmm_prepare_launch and gmm_posterior_launch (gmm_posterior_cuda.h) to get the
// per-point log-likelihoods and per-block float64 sums of them, then this launcher for the sufficient
// statistics and the total.
#include <cuda_runtime_api.h>

#include <cstdint>

#include "mixdiff/gaussian.h"

namespace mixdiff::cuda {

// Which second moments to accumulate: 0 none, 1 diag [K, D], 2 full [K, D, D].
enum class EstepMoments : int { None = 0, Diag = 1, Full = 2 };

// Number of float64 workspace entries estep_stats_launch needs for these sizes on the current device.
cudaError_t estep_stats_workspace(int64_t N, int64_t K, int64_t D, EstepMoments moments, int64_t* doubles);

// With g_nk = exp(score_nk - log_lik[n]) (score as in gmm_posterior; prec / offset from
// gmm_prepare_launch; log_lik from gmm_posterior_launch), writes the float64 outputs
//   nk[k] = sum_n g_nk, sum_x[k, d] = sum_n g_nk (x_nd - shift_kd),
//   sum_xx[k, d] (diag) = sum_n g_nk (x_nd - shift_kd)^2, or sum_xx[k, d, e] (full) = sum_n g_nk z_nd z_ne,
//   log_lik_sum[0] = sum of block_ll[0, n_block_ll) (gmm_posterior_launch's per-block sums),
// all summed in a fixed order (run-to-run deterministic). sum_xx is unused (may be null) for None.
// workspace: estep_stats_workspace(...) doubles. N >= 1 (N = 0 launches nothing), K >= 1.
template <class T>
cudaError_t estep_stats_launch(CovType cov, EstepMoments moments, const T* x, const T* means, const T* prec,
                               const T* offset, const T* shift, const T* log_lik, const double* block_ll,
                               int64_t n_block_ll, int64_t N, int64_t K, int64_t D, double* nk, double* sum_x,
                               double* sum_xx, double* log_lik_sum, double* workspace, int64_t workspace_size,
                               cudaStream_t stream);

}  // namespace mixdiff::cuda
