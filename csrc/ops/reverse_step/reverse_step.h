#pragma once
#include <ATen/ATen.h>
#include <optional>
#include <string>
#include <vector>

#include "mixdiff/sampling.h"

namespace mixdiff::ops {
// Validated inputs of reverse_step in the compute dtype, contiguous: x, model_output [B, D], labels int64
// [B] in [0, K), means [K, D], factor (gaussian.h layout), noise [B, D] (defined only when given); the
// step's coefficients; outputs prev [B, D] and x0 ([B, D] when return_x0, else [0]) allocated.
// draw_noise: z is needed (coef_noise != 0) and not given, so the kernel draws it.
struct ReverseStepArgs {
  CovType cov;
  at::Tensor x, model_output, labels, means, factor, noise;
  StepCoefficients<double> coefs;
  bool draw_noise;
  at::Tensor prev, x0;
};
ReverseStepArgs reverse_step_checked(const at::Tensor& x, const at::Tensor& model_output, const at::Tensor& labels,
                                     const at::Tensor& means, const at::Tensor& cov_factor,
                                     const std::string& covariance_type, const std::vector<double>& coefficients,
                                     std::optional<double> clip_min, std::optional<double> clip_max,
                                     const std::optional<at::Tensor>& noise, int64_t offset, int64_t step,
                                     bool return_x0);
}  // namespace mixdiff::ops
