#pragma once
#include <ATen/ATen.h>
#include <string>
#include <tuple>

namespace mixdiff::ops {
// Validates the arguments and allocates the float64 outputs (nk [K], sum_x [K, D], sum_xx [0] / [K, D] /
// [K, D, D], log_lik_sum []).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> estep_stats_checked(
    const at::Tensor& x, const at::Tensor& means, const at::Tensor& cov_factor, const at::Tensor& log_weights,
    const std::string& covariance_type, const at::Tensor& shift, const std::string& moments);
}  // namespace mixdiff::ops
