#pragma once
#include <ATen/ATen.h>
#include <tuple>

namespace mixdiff::ops {
// Validates the arguments and allocates (labels int64 [N], sqdist [N] in the compute dtype).
std::tuple<at::Tensor, at::Tensor> assign_nearest_checked(const at::Tensor& x, const at::Tensor& centres);
}  // namespace mixdiff::ops
