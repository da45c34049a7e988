#pragma once
#include <ATen/ATen.h>
#include <optional>
#include <string>
#include <vector>

#include "mixdiff/sampling.h"

namespace mixdiff::ops {
// Validated inputs of reverse_step in the compute dtype, contiguous: x, model_output [B, D], labels int64
// [B] in [0, K), means [K, D], factor (gaussian.h layout), noise [B, D] (defined only when used); clip_lo,
// clip_hi [K, D] (defined iff coefs.clip; an open side is filled with -inf / +inf); history[0 ..
// coefs.history) [B, D] the x0_history entries with nonzero coefficients, in order, their coefficients in
// coefs.h1, coefs.h2 (so an entry whose coefficient is 0 is never read); the step's coefficients; outputs
// prev [B, D] and x0 ([B, D] when return_x0, else [0]) allocated.
// output_in_factor: O = A out (epsilon, v_prediction); false for "sample" (O = out, A not applied).
// draw_noise: z is needed (coef_noise != 0) and not given, so the kernel draws it.
struct ReverseStepArgs {
  CovType cov;
  bool output_in_factor;
  at::Tensor x, model_output, labels, means, factor, noise, clip_lo, clip_hi;
  at::Tensor history[2];
  StepCoefficients<double> coefs;
  bool draw_noise;
  at::Tensor prev, x0;
};
ReverseStepArgs reverse_step_checked(const at::Tensor& x, const at::Tensor& model_output, const at::Tensor& labels,
                                     const at::Tensor& means, const at::Tensor& cov_factor,
                                     const std::string& covariance_type, const std::vector<double>& coefficients,
                                     const std::optional<at::Tensor>& clip_lo, const std::optional<at::Tensor>& clip_hi,
                                     const std::optional<at::Tensor>& noise, int64_t offset, int64_t step,
                                     bool return_x0, const std::string& prediction_type,
                                     at::TensorList x0_history);
}  // namespace mixdiff::ops
