#pragma once
#include <ATen/ATen.h>
#include <string>

#include "mixdiff/ngmg.h"

namespace mixdiff::ops {
// Validated inputs of ngmg in the compute dtype of pred, contiguous: pred [N, D], modes [K, D], weights
// [K] (shared by the rows) or [N, K], sigma [K] (a single value expanded); outputs loss [N] and grad [N, D]
// allocated. normalized is the effective flag: kind "log" always uses normalised densities.
struct NgmgArgs {
  NgmgKind kind;
  bool normalized, row_weights;
  at::Tensor pred, modes, weights, sigma;
  at::Tensor loss, grad;
};
NgmgArgs ngmg_checked(const at::Tensor& pred, const at::Tensor& modes, const at::Tensor& weights,
                      const at::Tensor& sigma, bool normalized, const std::string& kind);
}  // namespace mixdiff::ops
