#pragma once
// The mixture part of GmmPosteriorParams, built from validated torch arguments by the CUDA glue of
// gmm_posterior and of estep_stats (whose first pass is the posterior's). Host code only.
#include "common.h"
#include "gmm_posterior/gmm_posterior_cuda.h"

namespace mixdiff::ops {

// The inputs in the compute dtype, and the precision-factor and log-offset workspace [K * fs + K] at the
// head of `ws`, which the caller allocates (with room for its own workspaces after it).
template <class T>
void fill_mixture_params(cuda::GmmPosteriorParams<T>& p, const PreparedMixture& m, CovType cov, const at::Tensor& ws) {
  const int64_t K = m.means.size(0), D = m.x.size(1);
  p.cov = cov;
  p.x = m.x.data_ptr<T>();
  p.means = m.means.data_ptr<T>();
  p.factor = cov == CovType::Identity ? nullptr : m.factor.data_ptr<T>();
  p.log_weights = m.log_weights.data_ptr<T>();
  p.N = m.x.size(0);
  p.K = K;
  p.D = D;
  p.prec = ws.data_ptr<T>();
  p.offset = p.prec + K * factor_size(cov, D);
}

}  // namespace mixdiff::ops
