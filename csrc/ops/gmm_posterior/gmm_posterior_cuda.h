#pragma once
// CUDA launchers of gmm_posterior (raw pointers, no torch): compiled by nvcc, called by the torch glue.
// estep_stats reuses both (its first pass is the posterior's log-likelihood).
#include <cuda_runtime_api.h>

#include <cstdint>

#include "mixdiff/gaussian.h"

namespace mixdiff::cuda {

// Prologue, one thread per component: prec [K, factor_size(cov, D)] = precision_factor(cov_factor_k) and
// offset [K] = log_gaussian_offset(cov, log_weights_k, prec_k). factor may be null for identity.
template <class T>
cudaError_t gmm_prepare_launch(CovType cov, const T* factor, const T* log_weights, int64_t K, int64_t D, T* prec,
                               T* offset, cudaStream_t stream);

// Per point: labels[n] = MAP component (ties -> lowest; all-NaN rows -> 0), log_lik[n] = log sum_k
// exp(score_nk), resp[n, k] = exp(score_nk - log_lik[n]). labels, resp and block_ll may be null; when
// block_ll is given, block b of the launch stores the float64 sum of its points' log_lik there
// (gmm_posterior_blocks(N) entries; add them with a fixed-order sum for a deterministic total). prec /
// offset come from gmm_prepare_launch. N >= 1 (N = 0 launches nothing), K >= 1.
template <class T>
cudaError_t gmm_posterior_launch(CovType cov, const T* x, const T* means, const T* prec, const T* offset, int64_t N,
                                 int64_t K, int64_t D, int64_t* labels, T* log_lik, T* resp, double* block_ll,
                                 cudaStream_t stream);

// Number of blocks (hence of block_ll entries) of gmm_posterior_launch for N points (0 for N = 0).
int64_t gmm_posterior_blocks(int64_t N);

}  // namespace mixdiff::cuda
