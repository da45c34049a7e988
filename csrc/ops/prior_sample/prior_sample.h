#pragma once
#include <ATen/ATen.h>
#include <string>
#include <tuple>

#include "mixdiff/gaussian.h"

namespace mixdiff::ops {
// Validated inputs of prior_sample: the covariance type, the parameters in the compute dtype and
// contiguous, the float64 cumulative weights, and the outputs x [n, D], labels int64 [n]: the given out
// tensors (prior_sample.out, checked: shape, dtype, the means' device, contiguous) or fresh ones.
struct PriorSampleArgs {
  CovType cov;
  at::Tensor means, factor, cdf, x, labels;
};
PriorSampleArgs prior_sample_checked(const at::Tensor& means, const at::Tensor& log_weights,
                                     const at::Tensor& cov_factor, const std::string& covariance_type, int64_t n,
                                     int64_t offset, const at::Tensor* x_out = nullptr,
                                     const at::Tensor* labels_out = nullptr);
}  // namespace mixdiff::ops
