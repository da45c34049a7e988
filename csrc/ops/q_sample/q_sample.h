#pragma once
#include <ATen/ATen.h>
#include <optional>
#include <string>

#include "mixdiff/gaussian.h"

namespace mixdiff::ops {
// Validated inputs of q_sample in the compute dtype, contiguous: x0 [B, D], signal and noise_scale [B],
// means [K, D], factor (gaussian.h layout), labels int64 [B] (defined only when given), noise [B, D]
// (defined only when given); outputs x_t, eps [B, D] and labels_out [B] allocated (labels_out aliases
// nothing: given labels are copied into it by the kernel).
struct QSampleArgs {
  CovType cov;
  at::Tensor x0, signal, noise_scale, means, factor, labels, noise;
  at::Tensor x_t, eps, labels_out;
};
QSampleArgs q_sample_checked(const at::Tensor& x0, const std::optional<at::Tensor>& labels, const at::Tensor& signal,
                             const at::Tensor& noise_scale, const at::Tensor& means, const at::Tensor& cov_factor,
                             const std::string& covariance_type, const std::optional<at::Tensor>& noise, int64_t offset);
}  // namespace mixdiff::ops
