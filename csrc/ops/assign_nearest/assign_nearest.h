#pragma once
#include <ATen/ATen.h>
#include <tuple>

#include "mixdiff/cpu_tiles.h"

namespace mixdiff::ops {
// Validates the arguments and allocates (labels int64 [N], sqdist [N] in the compute dtype).
std::tuple<at::Tensor, at::Tensor> assign_nearest_checked(const at::Tensor& x, const at::Tensor& centres);

// CPU: nearest component of rows [begin, end) of x [N, D] (labels, squared distances), also used by
// q_sample's fused assignment. tab: the centres' table built for CovType::Identity.
void nearest_range(const float* x, int64_t D, const cpu::ComponentTable<float>& tab, int64_t begin, int64_t end,
                   int64_t* labels, float* sqdist);
void nearest_range(const double* x, int64_t D, const cpu::ComponentTable<double>& tab, int64_t begin, int64_t end,
                   int64_t* labels, double* sqdist);
}  // namespace mixdiff::ops
