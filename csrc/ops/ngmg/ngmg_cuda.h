#pragma once
// CUDA launchers of ngmg (raw pointers, no torch): compiled by nvcc, called by the torch glue.
#include <cuda_runtime_api.h>

#include <cstdint>

#include "mixdiff/ngmg.h"

namespace mixdiff::cuda {

// Everything the two launches of one ngmg need, built by the glue (ngmg_cuda.cpp) from the validated
// arguments. All arrays contiguous on the current device. The weights are either shared_weights or
// row_weights, the other null.
template <class T>
struct NgmgParams {
  NgmgKind kind;
  bool normalized;
  const T* pred;            // [N, D]
  const T* modes;           // [K, D]
  const T* sigma;           // [K]
  const T* shared_weights;  // [K], folded into offset by ngmg_prepare_launch
  const T* row_weights;     // [N, K]
  int64_t N, K, D;
  T* offset;                // [K] workspace: ngmg_prepare_launch's offsets
  T* half_prec;             // [K] workspace: ngmg_prepare_launch's 1 / (2 sigma^2)
  T* loss;                  // [N]
  T* grad;                  // [N, D]
};

// Prologue, one thread per component: offset[k], half_prec[k] from mixdiff/ngmg.h's ngmg_component with
// log_weight = log shared_weights[k], or 0 when shared_weights is null. K = 0 launches nothing.
template <class T>
cudaError_t ngmg_prepare_launch(const NgmgParams<T>& p, cudaStream_t stream);

// After ngmg_prepare_launch, per row n < N: loss[n] = ngmg_row(kind, ...) of pred[n, :] with its gradient in
// grad[n, :]. N = 0 launches nothing.
template <class T>
cudaError_t ngmg_launch(const NgmgParams<T>& p, cudaStream_t stream);

}  // namespace mixdiff::cuda
