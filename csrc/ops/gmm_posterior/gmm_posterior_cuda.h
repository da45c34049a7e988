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
// exp(score_nk), resp[n, k] = exp(score_nk - log_lik[n]). labels, resp and log_lik_sum may be null;
// when log_lik_sum is given, sum_n log_lik[n] is atomically added to it (float64). prec / offset come
// from gmm_prepare_launch. N >= 1 (N = 0 launches nothing), K >= 1.
template <class T>
cudaError_t gmm_posterior_launch(CovType cov, const T* x, const T* means, const T* prec, const T* offset, int64_t N,
                                 int64_t K, int64_t D, int64_t* labels, T* log_lik, T* resp, double* log_lik_sum,
                                 cudaStream_t stream);

}  // namespace mixdiff::cuda
