#pragma once
// CUDA launchers of ngmg (raw pointers, no torch): compiled by nvcc, called by the torch glue.
#include <cuda_runtime_api.h>

#include <cstdint>

#include "mixdiff/ngmg.h"

namespace mixdiff::cuda {

// Prologue, one thread per component: offset[k], half_prec[k] from mixdiff/ngmg.h's ngmg_component with
// log_weight = log shared_weights[k], or 0 when shared_weights is null (weights given per row).
template <class T>
cudaError_t ngmg_prepare_launch(const T* sigma, const T* shared_weights, bool normalized, int64_t K, int64_t D,
                                T* offset, T* half_prec, cudaStream_t stream);

// Per row n < N: loss[n] = ngmg_row(kind, ...) of pred[n, :] with its gradient in grad[n, :]; row_weights
// [N, K] or null (shared weights folded into offset). pred, modes [K, D], offset, half_prec [K] contiguous
// on the current device; N = 0 launches nothing.
template <class T>
cudaError_t ngmg_launch(NgmgKind kind, const T* pred, const T* modes, const T* offset, const T* half_prec,
                        const T* row_weights, int64_t N, int64_t K, int64_t D, T* loss, T* grad, cudaStream_t stream);

}  // namespace mixdiff::cuda
