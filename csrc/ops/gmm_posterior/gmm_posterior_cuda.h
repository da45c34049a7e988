#pragma once
// CUDA launchers of gmm_posterior (raw pointers, no torch): compiled by nvcc, called by the torch glue.
// estep_stats reuses both (its first pass is the posterior's log-likelihood).
#include <cuda_runtime_api.h>

#include <cstdint>

#include "mixdiff/gaussian.h"

namespace mixdiff::cuda {

// Everything the two launches of a posterior need, built by the glue (gmm_posterior_cuda.cpp,
// estep_stats_cuda.cpp) from the validated arguments. All arrays contiguous on the current device.
template <class T>
struct GmmPosteriorParams {
  CovType cov;
  const T* x;            // [N, D]
  const T* means;        // [K, D]
  const T* factor;       // gaussian.h layout ([K] sigma, [K, D] sigma_d, [K, D, D] lower L); null: identity
  const T* log_weights;  // [K]
  int64_t N, K, D;
  T* prec;               // [K, factor_size(cov, D)] workspace: gmm_prepare_launch's precision factors
  T* offset;             // [K] workspace: gmm_prepare_launch's log offsets
  int64_t* labels;       // [N] or null
  T* log_lik;            // [N]
  T* resp;               // [N, K] or null
  double* block_ll;      // [gmm_posterior_blocks(N)] or null
};

// Prologue, one thread per component: prec_k = precision_factor(factor_k) and
// offset[k] = log_gaussian_offset(cov, log_weights[k], prec_k). K = 0 launches nothing.
template <class T>
cudaError_t gmm_prepare_launch(const GmmPosteriorParams<T>& p, cudaStream_t stream);

// Per point, after gmm_prepare_launch: labels[n] = MAP component (ties -> lowest; all-NaN rows -> 0),
// log_lik[n] = log sum_k exp(score_nk), resp[n, k] = exp(score_nk - log_lik[n]); labels and resp when not
// null. When block_ll is given, block b of the launch stores the float64 sum of its points' log_lik there
// (add them with a fixed-order sum for a deterministic total). K >= 1; N = 0 launches nothing.
template <class T>
cudaError_t gmm_posterior_launch(const GmmPosteriorParams<T>& p, cudaStream_t stream);

// Number of blocks (hence of block_ll entries) of gmm_posterior_launch for N points (0 for N = 0).
int64_t gmm_posterior_blocks(int64_t N);

}  // namespace mixdiff::cuda
