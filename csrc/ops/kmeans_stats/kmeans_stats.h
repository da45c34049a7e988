#pragma once
#include <ATen/ATen.h>
#include <tuple>

namespace mixdiff::ops {
// Validates the arguments and allocates (labels int64 [N], sqdist [N] compute dtype, counts int64 [K],
// sum_x float64 [K, D], inertia float64 []).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> kmeans_stats_checked(const at::Tensor& x,
                                                                                            const at::Tensor& centres);
}  // namespace mixdiff::ops
