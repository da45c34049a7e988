#pragma once
#include <ATen/ATen.h>
#include <tuple>

namespace mixdiff::ops {
// Validates the arguments and allocates (labels int64 [N], sqdist [N] in the compute dtype).
std::tuple<at::Tensor, at::Tensor> assign_nearest_checked(const at::Tensor& x, const at::Tensor& centres);
// CPU kernel on contiguous inputs in the compute dtype; fills labels and sqdist.
void assign_nearest_cpu_into(const at::Tensor& x, const at::Tensor& centres, at::Tensor& labels, at::Tensor& sqdist);
}  // namespace mixdiff::ops
