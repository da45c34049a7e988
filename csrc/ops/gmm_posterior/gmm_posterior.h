#pragma once
#include <ATen/ATen.h>
#include <string>
#include <tuple>

namespace mixdiff::ops {
// Validates the arguments and allocates (labels int64 [N], log_lik [N], resp [N, K] or [0]) in the
// compute dtype.
std::tuple<at::Tensor, at::Tensor, at::Tensor> gmm_posterior_checked(const at::Tensor& x, const at::Tensor& means,
                                                                     const at::Tensor& cov_factor,
                                                                     const at::Tensor& log_weights,
                                                                     const std::string& covariance_type,
                                                                     bool return_resp);
}  // namespace mixdiff::ops
